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

from ._inputs import Rle, rle_areas

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


def _empty(height: int, width: int) -> Rle:
    return mask_utils.frPyObjects({"size": [height, width], "counts": [height * width]}, height, width)


def _union(rles: Sequence[Rle], height: int, width: int) -> Rle:
    if not rles:
        return _empty(height, width)
    return mask_utils.merge(list(rles), intersect=False) if len(rles) > 1 else rles[0]


def rle_counts(rle: Rle) -> np.ndarray:
    """The run lengths of a compressed COCO RLE (the inverse of pycocotools' string coding), vectorised.

    Each count is coded as 5-bit groups (little-endian, ``0x20`` = more groups follow, ``0x10`` in the last
    group = negative) offset by 48; counts after the third are stored as differences to the count two
    places before.

    Returns:
        int64 array of the counts: zeros first, then ones, alternating.
    """
    counts = rle["counts"]
    raw = np.frombuffer(counts.encode("ascii") if isinstance(counts, str) else counts, dtype=np.uint8)
    if raw.size == 0:
        return np.zeros(0, dtype=np.int64)
    v = raw.astype(np.int64) - 48
    last = (v & 0x20) == 0  # the last group of each count
    group = np.concatenate(([0], np.cumsum(last[:-1])))
    starts = np.flatnonzero(np.concatenate(([True], last[:-1])))
    k = np.arange(v.size) - starts[group]
    x = np.add.reduceat((v & 0x1F) << (5 * k), starts)
    ends = np.flatnonzero(last)
    negative = (v[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * (k[ends[negative]] + 1))
    x[1::2] = np.cumsum(x[1::2])  # undo the differences: x[i] += x[i - 2] for i > 2
    x[2::2] = np.cumsum(x[2::2])
    return x


def _complement(rle: Rle) -> Rle:
    """The complement of a compressed RLE, by shifting its run lengths by one place."""
    counts = rle_counts(rle)
    counts = counts[1:] if counts.size and counts[0] == 0 else np.concatenate(([0], counts))
    h, w = (int(s) for s in rle["size"])
    return mask_utils.frPyObjects({"size": [h, w], "counts": counts.tolist()}, h, w)


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
    fg = _union([r for r, c in zip(gt_rles, gt_crowd) if not c], height, width)
    crowd = _union(crowd_rles, height, width) if crowd_rles else None
    fg_or_crowd = fg if crowd is None else mask_utils.merge([fg, crowd], intersect=False)
    outside = [_complement(fg)] + ([] if crowd is None else [crowd])  # Ḡ ∪ C, as a list to merge
    not_crowd = None if crowd is None else _complement(crowd)

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
        rle_areas([*dts, *(corrected[run][k] for run in RUNS for k in range(n)), *in_crowd])
    )
    d_area = all_areas[:n].astype(np.int64)
    for r, run in enumerate(RUNS):
        areas[run] = all_areas[(r + 1) * n : (r + 2) * n].astype(np.int64)
    counts = np.stack([d_area - areas["fFP"], d_area - areas["bFP"], areas["FN"] - d_area], axis=1)
    pixels[matched] = counts
    d_in_crowd = all_areas[5 * n :].astype(np.int64) if in_crowd else 0
    tp[matched] = d_area - d_in_crowd - counts[:, 0] - counts[:, 1]
    return ImageErrors(match, pixels, tp, corrected, areas)
