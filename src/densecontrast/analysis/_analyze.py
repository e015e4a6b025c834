"""The segmentation-error analysis: ΔAP per error type by full re-evaluation (paper, section 3).

Shape letters: N predictions (results), K categories.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from ._backend import Evaluator, ap_triple, mean_valid, resolve_backend
from ._errors import ERROR_TYPES, RUNS, image_errors
from ._inputs import Prepared, prepare
from ._report import CategoryErrors, SegmentationErrorReport

ProgressFn = Callable[[str, int, int], None]


def evaluate_segm_ap(gt: Any, results: Any, *, backend: str = "auto") -> dict[str, float]:
    """COCO mask AP of instance-segmentation results, read from the evaluator's precision array.

    Args:
        gt: a COCO ground-truth dict or a path to one (see :func:`analyze`).
        results: a list of COCO result dicts with RLE ``segmentation``, or a path to one.
        backend: "auto" (faster-coco-eval when installed), "pycocotools" or "faster-coco-eval".

    Returns:
        {"AP": AP@[.50:.95], "AP50": ..., "AP75": ...} as fractions (0 for empty results; NaN if the
        ground truth has no non-crowd annotation).

    Examples:
        >>> from densecontrast.analysis import evaluate_segm_ap
        >>> evaluate_segm_ap("gt.json", "results.json")  # doctest: +SKIP
        {'AP': 0.371, 'AP50': 0.588, 'AP75': 0.397}
    """
    data = prepare(gt, results)
    ap, ap50, ap75 = ap_triple(Evaluator(resolve_backend(backend), data).precision(data.results))
    return {"AP": ap, "AP50": ap50, "AP75": ap75}


def _corrections(
    data: Prepared, min_iou: float, progress: ProgressFn | None, total: int
) -> tuple[dict[str, list[dict[str, Any]]], np.ndarray, np.ndarray]:
    """Corrected result lists per run, match flags (N,) and error pixels (N, 3)."""
    n = len(data.results)
    runs = {run: [dict(r) for r in data.results] for run in RUNS}
    matched = np.zeros(n, dtype=bool)
    pixels = np.zeros((n, 3), dtype=np.int64)
    anns, res = data.annotations, data.results
    for k, (image_id, idx) in enumerate(data.res_by_image.items()):
        if idx:
            g_idx = data.gt_by_image[image_id]
            err = image_errors(
                [res[i]["segmentation"] for i in idx],
                [res[i]["category_id"] for i in idx],
                [anns[j]["segmentation"] for j in g_idx],
                [anns[j]["category_id"] for j in g_idx],
                [anns[j]["iscrowd"] for j in g_idx],
                *data.sizes[image_id],
                min_iou,
            )
            idx_arr = np.asarray(idx)
            hit = idx_arr[err.match >= 0]
            matched[idx_arr] = err.match >= 0
            pixels[idx_arr] = err.pixels
            for run in RUNS:
                for i, rle, area in zip(hit, err.corrected[run], err.corrected_area[run]):
                    runs[run][i]["segmentation"] = rle
                    runs[run][i]["area"] = float(area)
        if progress is not None:
            progress("corrections", k + 1, total)
    return runs, matched, pixels


def analyze(
    gt: Any,
    results: Any,
    *,
    min_iou: float = 0.1,
    backend: str = "auto",
    progress: ProgressFn | None = None,
) -> SegmentationErrorReport:
    """Segmentation-error analysis: how much AP each error type (fFP, bFP, FN) costs.

    Each prediction is matched to the non-crowd ground truth of its category in its image with the largest
    mask IoU (ties: the lowest annotation index); below ``min_iou`` it stays unmatched and unchanged.
    For a matched prediction D with ground truth G*, G the union of the image's non-crowd ground truth
    and crowd pixels excluded: fFP = D ∩ (G − G*), bFP = D − G, FN = G* − D. ΔAP of a type is the COCO
    mask AP after correcting that type in every matched prediction (each one on its own, each type
    separately) minus the AP as given; it is never clamped.

    Args:
        gt: a COCO ground-truth dict or a path to one. Annotations need a non-zero unique ``id``,
            ``image_id``, ``category_id`` and ``segmentation`` (polygons or RLE); a missing ``area``
            is computed from the mask, a missing ``iscrowd`` is 0.
        results: a list of COCO result dicts (``image_id``, ``category_id``, ``score``, RLE
            ``segmentation``; a ``bbox`` is ignored) or a path to one. May be empty.
        min_iou: the matching threshold in [0, 1].
        backend: "auto" (faster-coco-eval when installed), "pycocotools" or "faster-coco-eval".
        progress: called as ``progress(stage, done, total)`` after each image ("corrections") and
            each evaluation ("evaluation"), ``total`` = images + 5.

    Returns:
        The :class:`SegmentationErrorReport`. Neither ``gt`` nor ``results`` is modified.

    Raises:
        ValueError: for invalid inputs, naming the offending entry.

    Examples:
        >>> from densecontrast.analysis import analyze
        >>> report = analyze("instances_val.json", "segm_results.json")  # doctest: +SKIP
        >>> print(report.table())  # doctest: +SKIP
    """
    if isinstance(min_iou, bool) or not isinstance(min_iou, (int, float)) or not 0.0 <= min_iou <= 1.0:
        raise ValueError(f"min_iou must be a number in [0, 1], got {min_iou!r}")
    backend = resolve_backend(backend)
    data = prepare(gt, results)
    total = len(data.res_by_image) + len(RUNS) + 1
    evaluator = Evaluator(backend, data)
    runs, matched, pixels = _corrections(data, float(min_iou), progress, total)

    altered = {run: pixels[:, k] > 0 for k, run in enumerate(ERROR_TYPES)}
    altered["all"] = np.asarray(pixels.any(axis=1))
    precisions: dict[str, np.ndarray] = {}
    for k, (run, res) in enumerate((("base", data.results), *runs.items())):
        precisions[run] = evaluator.precision(res, altered=None if run == "base" else altered[run])
        if progress is not None:
            progress("evaluation", len(data.res_by_image) + k + 1, total)
    return _build_report(data, precisions, matched, pixels, float(min_iou), backend)


def _build_report(
    data: Prepared,
    precisions: dict[str, np.ndarray],
    matched: np.ndarray,
    pixels: np.ndarray,
    min_iou: float,
    backend: str,
) -> SegmentationErrorReport:
    base = ap_triple(precisions["base"])
    fixed = {run: ap_triple(precisions[run]) for run in RUNS}
    deltas = [{t: fixed[t][m] - base[m] for t in ERROR_TYPES} for m in range(3)]

    cat_of = np.asarray([r["category_id"] for r in data.results], dtype=np.int64)
    num_gt = Counter(a["category_id"] for a in data.annotations if not a["iscrowd"])
    per_category: dict[int, CategoryErrors] = {}
    for k, cat in enumerate(data.categories):
        sel = cat_of == cat["id"]
        ap_k = mean_valid(precisions["base"][:, :, k])
        per_category[cat["id"]] = CategoryErrors(
            name=cat["name"],
            num_gt=num_gt[cat["id"]],
            ap=ap_k,
            delta={t: mean_valid(precisions[t][:, :, k]) - ap_k for t in ERROR_TYPES},
            ap_upper=mean_valid(precisions["all"][:, :, k]),
            pixels={t: int(pixels[sel, i].sum()) for i, t in enumerate(ERROR_TYPES)},
            num_matched=int(matched[sel].sum()),
            num_unmatched=int((~matched[sel]).sum()),
        )
    return SegmentationErrorReport(
        ap=base[0],
        ap50=base[1],
        ap75=base[2],
        delta=deltas[0],
        delta50=deltas[1],
        delta75=deltas[2],
        ap_upper=fixed["all"][0],
        ap50_upper=fixed["all"][1],
        ap75_upper=fixed["all"][2],
        pixels={t: int(pixels[:, i].sum()) for i, t in enumerate(ERROR_TYPES)},
        num_matched=int(matched.sum()),
        num_unmatched=int((~matched).sum()),
        per_category=per_category,
        min_iou=min_iou,
        backend=backend,
    )
