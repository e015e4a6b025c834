"""Detection error types (Bolya, Foley, Hays, Hoffman, "TIDE", ECCV 2020) and the oracles that fix them.

Shape letters: N results, A ground-truth annotations (of the whole data set); D results and G annotations
of one image.

Every result is first matched exactly as COCOeval matches at the foreground threshold ``fg_iou`` (per image
and category, results by decreasing score, the top 100 only, each taking the free ground truth with the
largest IoU >= ``fg_iou``, crowd regions last). A result left without a match (a false positive) is then
classified by the ground truth it overlaps most, IoU_max, over the image's non-crowd ground truth of every
category (ties: the lowest annotation index):

======== ============================================================================
type     condition on the best-overlapping ground truth
======== ============================================================================
cls      another category, IoU_max >= fg_iou
loc      its category, bg_iou <= IoU_max < fg_iou
both     another category, bg_iou <= IoU_max < fg_iou
dupe     its category, IoU_max >= fg_iou (that object was taken by a higher-scoring result)
bkg      IoU_max < bg_iou (or no ground truth in the image)
missed   (ground truth) not matched, and no cls or loc error points at it
======== ============================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ._inputs import Prepared

DETECTION_TYPES: tuple[str, ...] = ("cls", "loc", "both", "dupe", "bkg", "missed")
SPECIAL_TYPES: tuple[str, ...] = ("FalsePos", "FalseNeg")
# Oracle runs: each type alone, the two special ones, and all six types at once.
FIX_RUNS: tuple[str, ...] = (*DETECTION_TYPES, *SPECIAL_TYPES, "all")
MAX_DETS = 100

# Codes of the per-result kind.
TP, IGNORED, CLS, LOC, BOTH, DUPE, BKG = 0, 1, 2, 3, 4, 5, 6
_FP_CODES = {"cls": CLS, "loc": LOC, "both": BOTH, "dupe": DUPE, "bkg": BKG}


@dataclass
class DetectionErrors:
    """The classification of every result and ground truth.

    Attributes:
        kind: int8 array (N,): TP (matched), IGNORED (matched to a crowd region or beyond the 100
            highest-scoring results of its image and category) or the false-positive type code.
        target: int64 array (N,): the annotation index the error refers to (the best-overlapping ground
            truth; the matched one for TP), -1 for bkg and ignored results.
        matched_gt: bool array (A,): non-crowd annotations matched at ``fg_iou``.
        missed: bool array (A,): annotations counted as missed.
        fg_iou, bg_iou: the thresholds used.
    """

    kind: np.ndarray
    target: np.ndarray
    matched_gt: np.ndarray
    missed: np.ndarray
    fg_iou: float
    bg_iou: float

    def counts(self) -> dict[str, int]:
        """Type -> number of errors (results for the five false-positive types, annotations for missed)."""
        out = {t: int((self.kind == code).sum()) for t, code in _FP_CODES.items()}
        out["missed"] = int(self.missed.sum())
        return {t: out[t] for t in DETECTION_TYPES}


def _geometry(entries: Sequence[dict[str, Any]], iou_type: str) -> list[Any]:
    return [e["segmentation"] if iou_type == "segm" else e["bbox"] for e in entries]


def coco_match(ious: np.ndarray, scores: np.ndarray, crowd: np.ndarray, threshold: float) -> np.ndarray:
    """COCOeval's greedy matching of one image and category at one IoU threshold.

    Args:
        ious: float (D, G) IoUs (crowd columns: intersection over the result's area).
        scores: float (D,) the results' scores.
        crowd: bool (G,) crowd regions.
        threshold: the IoU threshold.

    Returns:
        int64 (D,): the matched ground-truth column, -1 for none, -2 for results beyond the 100 best
        (not evaluated).
    """
    d, g = ious.shape
    match = np.full(d, -1, dtype=np.int64)
    order = np.argsort(-scores, kind="mergesort")
    match[order[MAX_DETS:]] = -2
    gt_order = np.argsort(crowd, kind="mergesort")  # non-crowd first, as COCOeval sorts them
    taken = np.zeros(g, dtype=bool)
    for dind in order[:MAX_DETS]:
        best_iou, m = min(threshold, 1 - 1e-10), -1
        for gind in gt_order:
            if taken[gind] and not crowd[gind]:
                continue
            if m > -1 and not crowd[m] and crowd[gind]:
                break
            if ious[dind, gind] < best_iou:
                continue
            best_iou, m = ious[dind, gind], gind
        if m > -1:
            match[dind] = m
            taken[m] = True
    return match


def classify(data: Prepared, *, fg_iou: float = 0.5, bg_iou: float = 0.1) -> DetectionErrors:
    """Match every result at ``fg_iou`` as COCOeval does and classify each false positive and miss."""
    n, a = len(data.results), len(data.annotations)
    kind = np.full(n, TP, dtype=np.int8)
    target = np.full(n, -1, dtype=np.int64)
    matched_gt = np.zeros(a, dtype=bool)
    res, anns = data.results, data.annotations
    for image_id, r_idx in data.res_by_image.items():
        if not r_idx:
            continue
        g_idx = data.gt_by_image[image_id]
        r_arr, g_arr = np.asarray(r_idx), np.asarray(g_idx, dtype=np.int64)
        crowd = np.asarray([anns[j]["iscrowd"] for j in g_idx], dtype=bool)
        if g_idx:
            ious = np.asarray(
                mask_utils.iou(
                    _geometry([res[i] for i in r_idx], data.iou_type),
                    _geometry([anns[j] for j in g_idx], data.iou_type),
                    crowd.astype(np.uint8).tolist(),
                ),
                dtype=np.float64,
            ).reshape(len(r_idx), len(g_idx))
        else:
            ious = np.zeros((len(r_idx), 0))
        r_cat = np.asarray([res[i]["category_id"] for i in r_idx])
        g_cat = np.asarray([anns[j]["category_id"] for j in g_idx], dtype=np.int64)
        scores = np.asarray([res[i]["score"] for i in r_idx], dtype=np.float64)
        for cat in np.unique(r_cat):
            rows, cols = np.flatnonzero(r_cat == cat), np.flatnonzero(g_cat == cat)
            match = coco_match(ious[np.ix_(rows, cols)], scores[rows], crowd[cols], fg_iou)
            for row, m in zip(rows, match):
                if m == -2 or (m >= 0 and crowd[cols[m]]):
                    kind[r_arr[row]] = IGNORED
                elif m >= 0:
                    target[r_arr[row]] = g_arr[cols[m]]
                    matched_gt[g_arr[cols[m]]] = True
                else:
                    kind[r_arr[row]] = BKG  # a false positive, classified below
        fp = np.flatnonzero(kind[r_arr] == BKG)
        solid = np.flatnonzero(~crowd)
        if fp.size == 0 or solid.size == 0:
            continue
        sub = ious[np.ix_(fp, solid)]
        best = sub.argmax(axis=1)
        iou_max = sub[np.arange(fp.size), best]
        best_gt = g_arr[solid[best]]
        same = g_cat[solid[best]] == r_cat[fp]
        codes = np.select(
            [iou_max < bg_iou, same & (iou_max >= fg_iou), same, iou_max >= fg_iou],
            [BKG, DUPE, LOC, CLS],
            default=BOTH,
        )
        kind[r_arr[fp]] = codes
        target[r_arr[fp]] = np.where(codes == BKG, -1, best_gt)
    crowd_all = np.asarray([bool(x["iscrowd"]) for x in anns], dtype=bool)
    pointed = np.zeros(a, dtype=bool)
    pointed[target[(kind == CLS) | (kind == LOC)]] = True
    missed = ~crowd_all & ~matched_gt & ~pointed
    return DetectionErrors(kind, target, matched_gt, missed, float(fg_iou), float(bg_iou))


@dataclass
class Fixed:
    """One oracle's results and ground truth.

    Attributes:
        results: the fixed result list (results in their original order; suppressed ones left out).
        origin: int64 (len(results),): the original index of an unchanged result, -1 for a changed one.
        keep_gt: bool (A,) the annotations kept, or None for all.
    """

    results: list[dict[str, Any]]
    origin: np.ndarray
    keep_gt: np.ndarray | None


def _fixers(err: DetectionErrors, scores: np.ndarray, codes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(fix, suppress) bool masks (N,) for the errors of ``codes`` fixed by taking their target over.

    An error whose target is already matched is suppressed (it would be a duplicate); of several errors
    pointing at the same free target, the highest-scoring one (the first on ties) is fixed and the others
    are suppressed.
    """
    sel = np.isin(err.kind, codes)
    fix = np.zeros_like(sel)
    suppress = sel & err.matched_gt[np.maximum(err.target, 0)]
    free = np.flatnonzero(sel & ~suppress)
    order = free[np.lexsort((free, -scores[free]))]  # by score, ties by index
    seen: set[int] = set()
    for i in order.tolist():
        if int(err.target[i]) in seen:
            suppress[i] = True
        else:
            seen.add(int(err.target[i]))
            fix[i] = True
    return fix, suppress


def fix(data: Prepared, err: DetectionErrors, run: str) -> Fixed:
    """Apply the oracle ``run`` (one of :data:`FIX_RUNS`), starting from the original results.

    - cls: the result takes its target's category (suppressed if that object is matched already, or
      claimed by a higher-scoring cls error);
    - loc: the result takes its target's mask (segm) or box (bbox), same suppression rule;
    - both, dupe, bkg: the results are removed;
    - missed: the missed annotations are removed from the ground truth;
    - FalsePos: every false positive is removed; FalseNeg: every unmatched non-crowd annotation is removed;
    - all: cls, loc, both, dupe, bkg and missed at once (one fixer per target over cls and loc).
    """
    if run not in FIX_RUNS:
        raise ValueError(f"run must be one of {FIX_RUNS}, got {run!r}")
    n = len(data.results)
    scores = np.asarray([r["score"] for r in data.results], dtype=np.float64)
    remove = np.zeros(n, dtype=bool)
    relabel = np.zeros(n, dtype=bool)
    relocate = np.zeros(n, dtype=bool)
    keep_gt: np.ndarray | None = None
    crowd = np.asarray([bool(a["iscrowd"]) for a in data.annotations], dtype=bool)
    if run in ("cls", "loc", "all"):
        codes = {"cls": [CLS], "loc": [LOC], "all": [CLS, LOC]}[run]
        fixers, suppress = _fixers(err, scores, codes)
        remove |= suppress
        relabel = fixers & (err.kind == CLS)
        relocate = fixers & (err.kind == LOC)
    if run in ("both", "dupe", "bkg"):
        remove |= err.kind == _FP_CODES[run]
    if run == "all":
        remove |= np.isin(err.kind, [BOTH, DUPE, BKG])
    if run in ("missed", "all"):
        keep_gt = ~err.missed
    if run == "FalsePos":
        remove |= err.kind >= CLS
    if run == "FalseNeg":
        keep_gt = crowd | err.matched_gt
    geometry = "segmentation" if data.iou_type == "segm" else "bbox"
    results: list[dict[str, Any]] = []
    origin: list[int] = []
    for i, r in enumerate(data.results):
        if remove[i]:
            continue
        if relabel[i] or relocate[i]:
            g = data.annotations[err.target[i]]
            r = dict(r)
            if relabel[i]:
                r["category_id"] = g["category_id"]
            else:
                r[geometry] = g[geometry]
                r["area"] = g["area"] if data.iou_type == "segm" else g["bbox"][2] * g["bbox"][3]
            origin.append(-1)
        else:
            origin.append(i)
        results.append(r)
    return Fixed(results, np.asarray(origin, dtype=np.int64), keep_gt)
