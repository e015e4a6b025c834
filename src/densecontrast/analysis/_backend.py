"""COCO mask-AP evaluation with pycocotools (the reference) or faster-coco-eval.

Shape letters: T = 10 IoU thresholds (.50:.05:.95), R = 101 recall thresholds, K categories.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
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
    if backend == "pycocotools":
        return backend
    try:
        importlib.import_module("faster_coco_eval")
    except ImportError:
        if backend == "auto":
            return "pycocotools"
        raise ImportError(
            "backend 'faster-coco-eval' needs faster-coco-eval: pip install 'densecontrast[fast]'"
        ) from None
    return "faster-coco-eval"


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


@functools.cache
def _faster_eval_class() -> type:
    """A ``COCOeval_faster`` that can reuse a base evaluation's preparation (built on first use).

    faster-coco-eval's ``_prepare`` turns every mask of the ground truth and of the results into its
    internal RLE on each evaluation. When ``reuse`` is set to ``(base, base_rle, altered_ids, sizes)``, the
    subclass takes the ground truth from ``base`` (a finished evaluation of the same ground truth and of
    results with the same ids, images, categories and scores) and the RLE of every result whose id is not
    in ``altered_ids`` from ``base_rle`` (result id -> RLE); only the altered results are prepared again,
    ``sizes`` giving their images' (H, W). Without ``reuse`` it is ``COCOeval_faster``.
    """
    from faster_coco_eval import COCOeval_faster
    from faster_coco_eval.core import mask as fce_mask

    class ReusingEval(COCOeval_faster):
        reuse: tuple[Any, dict[int, Any], set[int], dict[int, tuple[int, int]]] | None = None

        def _prepare(self) -> None:
            if self.reuse is None:
                super()._prepare()
                return
            base, base_rle, altered_ids, sizes = self.reuse
            p = self.params
            self.gt_dataset = base.gt_dataset  # read-only from here on
            self.dt_dataset.clean()
            dts = self.cocoDt.loadAnns(self.cocoDt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds or None))
            fresh = []
            for dt in dts:
                if dt["id"] in altered_ids:
                    fresh.append(dt)
                else:
                    dt["rle"] = base_rle[dt["id"]]
            fce_mask.calculateRleForAllAnnotations(
                fresh, sizes, True, False, self.boundary_dilation_ratio, self.boundary_cpu_count
            )
            for dt in dts:
                self.dt_dataset.append_ref(dt["image_id"], dt["category_id"], dt)
            if hasattr(base, "_nonempty_iou_pairs"):
                self._nonempty_iou_pairs = base._nonempty_iou_pairs

    return ReusingEval


def _reusable(ev: Any) -> bool:
    """Whether a finished faster-coco-eval evaluation exposes what :func:`_faster_eval_class` reuses."""
    p = ev.params
    return (
        hasattr(ev, "gt_dataset")
        and all(hasattr(ev.dt_dataset, name) for name in ("append_ref", "clean"))
        and getattr(p, "compute_rle", False)
        and not getattr(p, "compute_boundary", True)
        and not getattr(ev, "lvis_style", True)
    )


class Evaluator:
    """Evaluates mask AP for several result sets against one ground truth, loaded once.

    Only the area range "all" and at most 100 detections per image are evaluated: the numbers reported
    (AP, AP50, AP75) are exactly those of a default COCOeval run, at a fraction of its cost.

    The first call of :meth:`precision` is the base evaluation. Later calls may name the results that
    differ from it (``altered``); the mask IoUs of every (image, category) pair without an altered result
    are then taken from the base, and with faster-coco-eval the unaltered results' masks and the ground
    truth are not prepared again.

    Args:
        backend: "pycocotools" or "faster-coco-eval".
        data: the validated inputs; their images, categories and annotations form the ground truth.
    """

    def __init__(self, backend: str, data: Prepared) -> None:
        self.backend = backend
        self.images = data.images
        self.categories = data.categories
        self.sizes = data.sizes
        # Shallow copies: the evaluators add keys ("ignore", "rle") to annotation dicts.
        gt = {
            "images": data.images,
            "categories": data.categories,
            "annotations": [dict(a) for a in data.annotations],
        }
        self.gt = _coco(backend, gt)
        self._base: Any = None
        self._base_rle: dict[int, Any] | None = None  # faster-coco-eval: result id -> its prepared RLE

    def precision(
        self, results: Sequence[dict[str, Any]], *, altered: np.ndarray | None = None
    ) -> np.ndarray:
        """COCOeval's precision for area "all", 100 detections.

        Args:
            results: result dicts with ``image_id``, ``category_id``, ``score``, ``segmentation`` (RLE)
                and ``area``; they are copied, not mutated.
            altered: bool array (N,) for a variant of the base results (the first evaluated) in which only
                these results' masks differ: same order, images, categories, scores and number of results.
                ``None`` evaluates from scratch and makes these results the base.

        Returns:
            float64 array (T, R, K), -1 where a category has no ground truth.
        """
        anns = [{**r, "id": i + 1, "iscrowd": 0} for i, r in enumerate(results)]
        dt = _coco(self.backend, {"images": self.images, "categories": self.categories, "annotations": anns})
        base = self._base if altered is not None else None
        if base is not None and len(altered) != len(anns):  # type: ignore[arg-type]
            raise ValueError(f"altered has {len(altered)} entries for {len(anns)} results")  # type: ignore[arg-type]
        with contextlib.redirect_stdout(io.StringIO()):
            if self.backend == "pycocotools":
                from pycocotools.cocoeval import COCOeval

                ev = COCOeval(self.gt, dt, iouType="segm")
            else:
                ev = _faster_eval_class()(self.gt, dt, iouType="segm", print_function=lambda *a, **k: None)
                # faster-coco-eval >= 1.8 computes IoUs in a thread pool; the IoU routine holds the GIL,
                # so the threads only add overhead (measured: 0.83 s vs 0.66 s per evaluation).
                ev.rle_iou_max_workers = 1
            ev.params.areaRng = [list(_AREA_ALL)]
            ev.params.areaRngLbl = ["all"]
            ev.params.maxDets = [100]
            if base is not None:
                assert altered is not None
                altered_idx = np.flatnonzero(altered).tolist()
                changed = {(anns[i]["image_id"], anns[i]["category_id"]) for i in altered_idx}
                base_ious = base.ious
                compute = ev.computeIoU

                def compute_iou(img_id: int, cat_id: int) -> Any:
                    pair = (img_id, cat_id)
                    return base_ious[pair] if pair in base_ious and pair not in changed else compute(*pair)

                ev.computeIoU = compute_iou
                if self._base_rle is not None:
                    ev.reuse = (base, self._base_rle, {i + 1 for i in altered_idx}, self.sizes)
            ev.evaluate()
            ev.accumulate()
        if altered is None:
            self._base = ev
            reusable = self.backend == "faster-coco-eval" and _reusable(ev) and all("rle" in a for a in anns)
            self._base_rle = {a["id"]: a["rle"] for a in anns} if reusable else None
        return np.asarray(ev.eval["precision"], dtype=np.float64)[:, :, :, 0, -1]


def mean_valid(values: np.ndarray) -> float:
    """Mean of the entries > -1 (COCO's convention for "no ground truth"); NaN if there are none."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else math.nan


def ap_triple(precision: np.ndarray) -> tuple[float, float, float]:
    """(AP@[.50:.95], AP50, AP75) from a precision array (T, R, ...)."""
    return mean_valid(precision), mean_valid(precision[0]), mean_valid(precision[5])
