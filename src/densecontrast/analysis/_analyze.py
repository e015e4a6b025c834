"""The error analysis: ΔAP per detection and pixel error type, each by full re-evaluation.

Shape letters: N predictions (results), K categories.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from ._backend import Evaluator, ap_triple, mean_valid, resolve_backend
from ._detection import _FP_CODES, DETECTION_TYPES, FIX_RUNS, SPECIAL_TYPES, DetectionErrors, classify, fix
from ._errors import ERROR_TYPES, RUNS, image_errors
from ._inputs import Prepared, prepare
from ._report import CategoryErrors, SegmentationErrorReport

ProgressFn = Callable[[str, int, int], None]


def evaluate_segm_ap(
    gt: Any, results: Any, *, backend: str = "auto", iou_type: str = "segm"
) -> dict[str, float]:
    """COCO AP of instance-segmentation (or box) results, read from the evaluator's precision array.

    Args:
        gt: a COCO ground-truth dict or a path to one (see :func:`analyze`).
        results: a list of COCO result dicts or a path to one (see :func:`analyze`).
        backend: "auto" (faster-coco-eval when installed), "pycocotools" or "faster-coco-eval".
        iou_type: "segm" (mask AP) or "bbox" (box AP).

    Returns:
        {"AP": AP@[.50:.95], "AP50": ..., "AP75": ...} as fractions (0 for empty results; NaN if the
        ground truth has no non-crowd annotation).

    Examples:
        >>> from densecontrast.analysis import evaluate_segm_ap
        >>> evaluate_segm_ap("gt.json", "results.json")  # doctest: +SKIP
        {'AP': 0.371, 'AP50': 0.588, 'AP75': 0.397}
    """
    data = prepare(gt, results, iou_type=iou_type)
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


def _check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def analyze(
    gt: Any,
    results: Any,
    *,
    min_iou: float = 0.1,
    backend: str = "auto",
    progress: ProgressFn | None = None,
    iou_type: str = "segm",
    fg_iou: float = 0.5,
    bg_iou: float = 0.1,
    skip_degenerate: bool = False,
    detection: bool = True,
) -> SegmentationErrorReport:
    """Where the AP went: detection errors (TIDE's six types) and, for masks, the pixel errors (fFP, bFP, FN).

    **Detection errors** (Bolya et al., ECCV 2020). Results are matched as COCOeval matches them at
    ``fg_iou``; each unmatched result is a cls, loc, both, dupe or bkg error by the ground truth it
    overlaps most (``bg_iou`` separates "near" from "background"), and each unmatched ground truth that no
    cls or loc error points at is missed. Each type's ΔAP is the AP after an oracle that fixes that type
    only (relabel, take the ground truth's mask or box, suppress, or drop the missed ground truth), minus
    the AP; "FalsePos" removes every false positive, "FalseNeg" every unmatched ground truth. The
    detection upper bound fixes the six types at once (its AP50 is 1).

    **Pixel errors** (``iou_type="segm"`` only; paper section 3). Each prediction is matched to the non-crowd
    ground truth of its category in its image with the largest mask IoU (ties: the lowest annotation
    index); below ``min_iou`` it stays unmatched and unchanged. For a matched prediction D with ground truth
    G*, G the union of the image's non-crowd ground truth and crowd pixels excluded: fFP = D ∩ (G − G*),
    bFP = D − G, FN = G* − D. ΔAP of a type is the AP after correcting that type in every matched
    prediction (each one on its own, each type separately) minus the AP as given.

    No ΔAP is ever clamped: fixing one type can lower AP.

    Args:
        gt: a COCO ground-truth dict or a path to one. Annotations need a non-zero unique ``id``,
            ``image_id``, ``category_id`` and ``segmentation`` (polygons or RLE; for "bbox" a ``bbox``
            will do); a missing ``area`` is computed from the mask, a missing ``iscrowd`` is 0.
        results: a list of COCO result dicts (``image_id``, ``category_id``, ``score`` and a
            ``segmentation``, polygons or RLE, for "segm"; a ``bbox`` [x, y, w, h] for "bbox") or a path
            to one, as detectron2, MMDetection, Ultralytics (``save_json``) or
            :func:`results_from_outputs` write them. May be empty.
        min_iou: the pixel analysis' matching threshold in [0, 1].
        backend: "auto" (faster-coco-eval when installed), "pycocotools" or "faster-coco-eval".
        progress: called as ``progress(stage, done, total)`` after each image ("corrections") and each
            evaluation ("evaluation").
        iou_type: "segm" (masks: detection and pixel errors) or "bbox" (boxes: detection errors).
        fg_iou: the detection errors' foreground threshold t_f.
        bg_iou: the detection errors' background threshold t_b (<= ``fg_iou``).
        skip_degenerate: leave out ground-truth annotations with a polygon of fewer than 3 points or a
            mask of zero area (listed in the report's ``skipped``) instead of raising.
        detection: analyse the detection errors (False: pixel errors only, about 0.65x the time; the
            report's detection fields are then empty or NaN).

    Returns:
        The :class:`SegmentationErrorReport`. Neither ``gt`` nor ``results`` is modified.

    Raises:
        ValueError: for invalid inputs, naming the file and the offending entry.

    Examples:
        >>> from densecontrast.analysis import analyze
        >>> report = analyze("instances_val.json", "segm_results.json")  # doctest: +SKIP
        >>> print(report.table())  # doctest: +SKIP
    """
    min_iou = _check_fraction(min_iou, "min_iou")
    fg_iou = _check_fraction(fg_iou, "fg_iou")
    bg_iou = _check_fraction(bg_iou, "bg_iou")
    if bg_iou > fg_iou:
        raise ValueError(f"bg_iou must be <= fg_iou, got bg_iou={bg_iou} and fg_iou={fg_iou}")
    backend = resolve_backend(backend)
    data = prepare(gt, results, iou_type=iou_type, skip_degenerate=bool(skip_degenerate))
    pixel_runs = RUNS if iou_type == "segm" else ()
    total = (
        (len(data.res_by_image) if pixel_runs else 0)
        + 1
        + len(pixel_runs)
        + (len(FIX_RUNS) if detection else 0)
    )
    done = 0

    def step(stage: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(stage, done, total)

    evaluator = Evaluator(backend, data)
    precisions: dict[str, np.ndarray] = {"base": evaluator.precision(data.results)}
    step("evaluation")
    n = len(data.results)
    matched, pixels = np.zeros(n, dtype=bool), np.zeros((n, 3), dtype=np.int64)
    if pixel_runs:
        runs, matched, pixels = _corrections(data, min_iou, lambda *_: step("corrections"), total)
        altered = {run: pixels[:, k] > 0 for k, run in enumerate(ERROR_TYPES)}
        altered["all"] = np.asarray(pixels.any(axis=1))
        for run, res in runs.items():
            precisions[run] = evaluator.precision(res, altered=altered[run])
            step("evaluation")
    errors: DetectionErrors | None = None
    if detection:
        errors = classify(data, fg_iou=fg_iou, bg_iou=bg_iou)
        evaluators: dict[bytes, Evaluator] = {}  # one per ground-truth subset (missed, FalseNeg, all)
        for run in FIX_RUNS:
            fixed = fix(data, errors, run)
            if fixed.keep_gt is None:
                precisions["det:" + run] = evaluator.precision(fixed.results, origin=fixed.origin)
            else:
                key = fixed.keep_gt.tobytes()
                if key not in evaluators:
                    evaluators[key] = Evaluator(backend, data, keep=fixed.keep_gt)
                precisions["det:" + run] = evaluators[key].precision(fixed.results)
            step("evaluation")
    return _build_report(data, precisions, matched, pixels, errors, min_iou, backend, fg_iou, bg_iou)


def _build_report(
    data: Prepared,
    precisions: dict[str, np.ndarray],
    matched: np.ndarray,
    pixels: np.ndarray,
    errors: DetectionErrors | None,
    min_iou: float,
    backend: str,
    fg_iou: float,
    bg_iou: float,
) -> SegmentationErrorReport:
    segm = data.iou_type == "segm"
    base = ap_triple(precisions["base"])
    nan3 = (math.nan, math.nan, math.nan)
    fixed = {run: ap_triple(precisions[run]) if segm else nan3 for run in RUNS}
    deltas = [{t: fixed[t][m] - base[m] for t in ERROR_TYPES} for m in range(3)]
    det = {run: ap_triple(precisions["det:" + run]) for run in FIX_RUNS if "det:" + run in precisions}
    det_types = [t for t in (*DETECTION_TYPES, *SPECIAL_TYPES) if t in det]
    det_deltas = [{t: det[t][m] - base[m] for t in det_types} for m in range(3)]

    cat_of = np.asarray([r["category_id"] for r in data.results], dtype=np.int64)
    ann_cat = np.asarray([a["category_id"] for a in data.annotations], dtype=np.int64)
    num_gt = Counter(a["category_id"] for a in data.annotations if not a["iscrowd"])
    per_category: dict[int, CategoryErrors] = {}
    for k, cat in enumerate(data.categories):
        sel = cat_of == cat["id"]
        ap_k = mean_valid(precisions["base"][:, :, k])
        counts: dict[str, int] = {}
        if errors is not None:
            counts = {t: int((errors.kind[sel] == code).sum()) for t, code in _FP_CODES.items()}
            counts["missed"] = int(errors.missed[ann_cat == cat["id"]].sum())
        per_category[cat["id"]] = CategoryErrors(
            name=cat["name"],
            num_gt=num_gt[cat["id"]],
            ap=ap_k,
            delta={t: (mean_valid(precisions[t][:, :, k]) if segm else math.nan) - ap_k for t in ERROR_TYPES},
            ap_upper=mean_valid(precisions["all"][:, :, k]) if segm else math.nan,
            pixels={t: int(pixels[sel, i].sum()) for i, t in enumerate(ERROR_TYPES)},
            num_matched=int(matched[sel].sum()),
            num_unmatched=int((~matched[sel]).sum()) if segm else 0,
            detection={t: mean_valid(precisions["det:" + t][:, :, k]) - ap_k for t in det_types},
            detection_counts={t: counts[t] for t in DETECTION_TYPES if t in counts},
            detection_upper=mean_valid(precisions["det:all"][:, :, k]) if "all" in det else math.nan,
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
        num_unmatched=int((~matched).sum()) if segm else 0,
        per_category=per_category,
        min_iou=min_iou,
        backend=backend,
        detection=det_deltas[0],
        detection50=det_deltas[1],
        detection75=det_deltas[2],
        detection_upper=det.get("all", nan3)[0],
        detection50_upper=det.get("all", nan3)[1],
        detection75_upper=det.get("all", nan3)[2],
        detection_counts=errors.counts() if errors is not None else {},
        iou_type=data.iou_type,
        fg_iou=fg_iou,
        bg_iou=bg_iou,
        skipped=tuple(data.skipped),
    )
