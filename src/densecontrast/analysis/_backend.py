"""COCO mask-AP evaluation with pycocotools (the reference) or faster-coco-eval.

Shape letters: T = 10 IoU thresholds (.50:.05:.95), R = 101 recall thresholds, K categories.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._inputs import Prepared

BACKENDS: tuple[str, ...] = ("auto", "pycocotools", "faster-coco-eval")
_AREA_ALL = [0.0, 1e5**2]


def resolve_backend(backend: str) -> str:
    """Return the concrete backend for ``backend`` ("auto" prefers faster-coco-eval when installed)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    fast_ok = importlib.util.find_spec("faster_coco_eval") is not None
    if backend == "auto":
        return "faster-coco-eval" if fast_ok else "pycocotools"
    if backend == "faster-coco-eval" and not fast_ok:
        raise ImportError("backend 'faster-coco-eval' needs the faster-coco-eval package (extra 'fast')")
    return backend


def _coco(backend: str, dataset: dict[str, Any]) -> Any:
    if backend == "pycocotools":
        from pycocotools.coco import COCO
    else:
        from faster_coco_eval import COCO
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class Evaluator:
    """Evaluates mask AP for several result sets against one ground truth, loaded once.

    Only the area range "all" and at most 100 detections per image are evaluated: the numbers reported
    (AP, AP50, AP75) are exactly those of a default COCOeval run, at a fraction of its cost.

    Args:
        backend: "pycocotools" or "faster-coco-eval".
        data: the validated inputs; their images, categories and annotations form the ground truth.
    """

    def __init__(self, backend: str, data: Prepared) -> None:
        self.backend = backend
        self.images = data.images
        self.categories = data.categories
        # Shallow copies: the evaluators add keys ("ignore", "rle") to annotation dicts.
        gt = {
            "images": data.images,
            "categories": data.categories,
            "annotations": [dict(a) for a in data.annotations],
        }
        self.gt = _coco(backend, gt)
        self._base_ious: dict[tuple[int, int], Any] | None = None

    def precision(
        self, results: Sequence[dict[str, Any]], *, changed: set[tuple[int, int]] | None = None
    ) -> np.ndarray:
        """COCOeval's precision for area "all", 100 detections.

        Args:
            results: result dicts with ``image_id``, ``category_id``, ``score``, ``segmentation`` (RLE)
                and ``area``; they are copied, not mutated.
            changed: for a variant of the first (base) results in which only the masks of these
                (image id, category id) pairs differ (same order, scores and number of results): the
                mask IoUs of every other pair are taken from the base evaluation instead of recomputed.
                ``None`` evaluates from scratch and makes these results the base.

        Returns:
            float64 array (T, R, K), -1 where a category has no ground truth.
        """
        anns = [{**r, "id": i + 1, "iscrowd": 0} for i, r in enumerate(results)]
        dt = _coco(self.backend, {"images": self.images, "categories": self.categories, "annotations": anns})
        with contextlib.redirect_stdout(io.StringIO()):
            if self.backend == "pycocotools":
                from pycocotools.cocoeval import COCOeval

                ev = COCOeval(self.gt, dt, iouType="segm")
            else:
                from faster_coco_eval import COCOeval_faster

                ev = COCOeval_faster(self.gt, dt, iouType="segm", print_function=lambda *a, **k: None)
            ev.params.areaRng = [list(_AREA_ALL)]
            ev.params.areaRngLbl = ["all"]
            ev.params.maxDets = [100]
            base = self._base_ious
            if changed is not None and base is not None:
                compute = ev.computeIoU

                def compute_iou(img_id: int, cat_id: int) -> Any:
                    pair = (img_id, cat_id)
                    return base[pair] if pair in base and pair not in changed else compute(img_id, cat_id)

                ev.computeIoU = compute_iou
            ev.evaluate()
            ev.accumulate()
        if changed is None:
            self._base_ious = ev.ious
        return np.asarray(ev.eval["precision"], dtype=np.float64)[:, :, :, 0, -1]


def mean_valid(values: np.ndarray) -> float:
    """Mean of the entries > -1 (COCO's convention for "no ground truth"); NaN if there are none."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else math.nan


def ap_triple(precision: np.ndarray) -> tuple[float, float, float]:
    """(AP@[.50:.95], AP50, AP75) from a precision array (T, R, ...)."""
    return mean_valid(precision), mean_valid(precision[0]), mean_valid(precision[5])
