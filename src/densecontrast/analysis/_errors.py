"""Matching predictions to ground truth and splitting their error pixels (paper, section 3).

Shape letters: H x W the image size; N predictions of one image; M ground-truth masks of one image;
n matched predictions. Masks are compressed COCO RLEs of size (H, W); they are never decoded here.

For a prediction D matched to the ground truth G* (the same category's non-crowd mask with the largest IoU),
with G the union of the image's non-crowd ground-truth masks and C the union of its crowd masks:

.. math::

    fFP = D \\cap (G - G^*) - C, \\quad bFP = D \\cap \\bar G - C, \\quad FN = G^* - D - C.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from . import _rle
from ._rle import Rle

ERROR_TYPES: tuple[str, ...] = ("fFP", "bFP", "FN")
RUNS: tuple[str, ...] = ("fFP", "bFP", "FN", "all")


@dataclass
class ImageErrors:
    """Errors of one image's predictions.

    Attributes:
        match: int array (N,): index of the matched ground truth in the image's list, -1 if unmatched.
        pixels: int64 array (N, 3): fFP, bFP and FN pixel counts (zero for unmatched predictions).
        tp: int64 array (N,): |D ∩ G*| outside crowd regions (zero for unmatched predictions).
        corrected: run name ("fFP", "bFP", "FN", "all") -> list of n compressed RLEs, one per matched
            prediction in index order.
        corrected_area: run name -> int64 array (n,) of the corrected masks' areas.
    """

    match: np.ndarray
    pixels: np.ndarray
    tp: np.ndarray
    corrected: dict[str, list[Rle]]
    corrected_area: dict[str, np.ndarray]


def match_predictions(
    dt_rles: Sequence[Rle],
    dt_cats: Sequence[int],
    gt_rles: Sequence[Rle],
    gt_cats: Sequence[int],
    gt_crowd: Sequence[int],
    min_iou: float,
) -> np.ndarray:
    """Match each prediction to the non-crowd ground truth of its category with the largest mask IoU.

    Ties go to the lowest ground-truth index; an IoU below ``min_iou`` leaves the prediction unmatched.

    Returns:
        int64 array (N,): the matched index into ``gt_rles``, or -1.
    """
    match = np.full(len(dt_rles), -1, dtype=np.int64)
    g_idx = [j for j, crowd in enumerate(gt_crowd) if not crowd]
    if not g_idx or not dt_rles:
        return match
    ious = np.asarray(
        mask_utils.iou(list(dt_rles), [gt_rles[j] for j in g_idx], [0] * len(g_idx)), dtype=np.float64
    ).reshape(len(dt_rles), len(g_idx))
    same_cat = (
        np.asarray(dt_cats, dtype=np.int64)[:, None] == np.asarray([gt_cats[j] for j in g_idx])[None, :]
    )
    ious[~same_cat] = -1.0
    best = ious.argmax(axis=1)  # the first maximum: the lowest annotation index
    ok = ious[np.arange(len(dt_rles)), best] >= min_iou
    match[ok] = np.asarray(g_idx, dtype=np.int64)[best[ok]]
    return match


def image_errors(
    dt_rles: Sequence[Rle],
    dt_cats: Sequence[int],
    gt_rles: Sequence[Rle],
    gt_cats: Sequence[int],
    gt_crowd: Sequence[int],
    height: int,
    width: int,
    min_iou: float,
) -> ImageErrors:
    """Match one image's predictions, count their error pixels and build the four corrected mask sets.

    Each matched prediction is corrected on its own (duplicates too): the run "fFP" removes its fFP pixels,
    "bFP" its bFP pixels, "FN" adds its FN pixels and "all" does all three. Crowd pixels never change.
    Everything is computed with run-length set operations, without decoding the predictions:

    - fFP-corrected: D ∩ (Ḡ ∪ G* ∪ C);  bFP-corrected: D ∩ (G ∪ C);  FN-corrected: D ∪ (G* − C);
    - all corrected: (G* − C) ∪ (D ∩ C);
    - |fFP| = |D| − |D_fFP|, |bFP| = |D| − |D_bFP|, |FN| = |D_FN| − |D|, TP = |D − C| − |fFP| − |bFP|.
    """
    n_dt = len(dt_rles)
    match = match_predictions(dt_rles, dt_cats, gt_rles, gt_cats, gt_crowd, min_iou)
    pixels = np.zeros((n_dt, 3), dtype=np.int64)
    tp = np.zeros(n_dt, dtype=np.int64)
    matched = np.flatnonzero(match >= 0)
    corrected: dict[str, list[Rle]] = {run: [] for run in RUNS}
    areas: dict[str, np.ndarray] = {run: np.zeros(0, dtype=np.int64) for run in RUNS}
    if matched.size == 0:
        return ImageErrors(match, pixels, tp, corrected, areas)

    crowd_rles = [r for r, c in zip(gt_rles, gt_crowd) if c]
    fg = _rle.union([r for r, c in zip(gt_rles, gt_crowd) if not c], height, width)
    crowd = _rle.union(crowd_rles, height, width) if crowd_rles else None
    fg_or_crowd = fg if crowd is None else mask_utils.merge([fg, crowd], intersect=False)
    outside = [_rle.complement(fg)] + ([] if crowd is None else [crowd])  # Ḡ ∪ C, as a list to merge
    not_crowd = None if crowd is None else _rle.complement(crowd)

    merge = mask_utils.merge
    kept: dict[int, Rle] = {}  # G* − C
    allowed: dict[int, Rle] = {}  # Ḡ ∪ G* ∪ C
    for j in set(match[matched].tolist()):
        kept[j] = gt_rles[j] if not_crowd is None else merge([gt_rles[j], not_crowd], intersect=True)
        allowed[j] = merge([*outside, gt_rles[j]], intersect=False)

    dts = [dt_rles[i] for i in matched.tolist()]
    gts = match[matched].tolist()
    corrected["fFP"] = [merge([d, allowed[j]], intersect=True) for d, j in zip(dts, gts)]
    corrected["bFP"] = [merge([d, fg_or_crowd], intersect=True) for d in dts]
    corrected["FN"] = [merge([d, kept[j]], intersect=False) for d, j in zip(dts, gts)]
    in_crowd = [] if crowd is None else [merge([d, crowd], intersect=True) for d in dts]
    if crowd is None:
        corrected["all"] = [kept[j] for j in gts]
    else:
        corrected["all"] = [merge([kept[j], dc], intersect=False) for j, dc in zip(gts, in_crowd)]

    n = len(dts)
    all_areas = np.asarray(
        _rle.areas([*dts, *(corrected[run][k] for run in RUNS for k in range(n)), *in_crowd])
    )
    d_area = all_areas[:n].astype(np.int64)
    for r, run in enumerate(RUNS):
        areas[run] = all_areas[(r + 1) * n : (r + 2) * n].astype(np.int64)
    counts = np.stack([d_area - areas["fFP"], d_area - areas["bFP"], areas["FN"] - d_area], axis=1)
    pixels[matched] = counts
    d_in_crowd = all_areas[5 * n :].astype(np.int64) if in_crowd else 0
    tp[matched] = d_area - d_in_crowd - counts[:, 0] - counts[:, 1]
    return ImageErrors(match, pixels, tp, corrected, areas)
