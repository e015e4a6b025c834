"""COCO AP evaluation (masks or boxes) with pycocotools (the reference) or faster-coco-eval.

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
            base, base_rle, altered_ids, sizes = self.reuse  # base_rle: this run's result id -> RLE
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
                # results may have moved to another category: the pairs with results are taken afresh
                gt_pairs = base.gt_pairs
                self._nonempty_iou_pairs = gt_pairs & {(d["image_id"], d["category_id"]) for d in dts}

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
    """Evaluates AP (masks or boxes) for several result sets against one ground truth, loaded once.

    Only the area range "all" and at most 100 detections per image are evaluated: the numbers reported
    (AP, AP50, AP75) are exactly those of a default COCOeval run, at a fraction of its cost.

    The first call of :meth:`precision` is the base evaluation. Later calls may say which of their results
    are unchanged copies of base results (``origin``); the IoUs of every (image, category) pair whose
    results are exactly the base's are then taken from the base, and with faster-coco-eval the unchanged
    results' masks and the ground truth are not prepared again.

    Args:
        backend: "pycocotools" or "faster-coco-eval".
        data: the validated inputs; their images, categories and annotations form the ground truth.
        keep: bool array (A,) of the annotations to keep (default: all); an evaluator with fewer
            annotations serves the oracles that drop ground truth.
    """

    def __init__(self, backend: str, data: Prepared, *, keep: np.ndarray | None = None) -> None:
        self.backend = backend
        self.iou_type = data.iou_type
        self.images = data.images
        self.categories = data.categories
        self.sizes = data.sizes
        annotations = data.annotations if keep is None else [a for a, k in zip(data.annotations, keep) if k]
        # Shallow copies: the evaluators add keys ("ignore", "rle") to annotation dicts.
        gt = {
            "images": data.images,
            "categories": data.categories,
            "annotations": [dict(a) for a in annotations],
        }
        self.gt = _coco(backend, gt)
        self._base: Any = None
        self._base_results: list[dict[str, Any]] | None = None
        self._base_rle: dict[int, Any] | None = None  # faster-coco-eval: result id -> its prepared RLE

    def precision(
        self,
        results: Sequence[dict[str, Any]],
        *,
        altered: np.ndarray | None = None,
        origin: np.ndarray | None = None,
    ) -> np.ndarray:
        """COCOeval's precision for area "all", 100 detections.

        Args:
            results: result dicts with ``image_id``, ``category_id``, ``score``, ``area`` and a
                ``segmentation`` (RLE) or ``bbox``; they are copied, not mutated.
            altered: bool array (N,) for a variant of the base results in which only these results' masks
                differ: same order, images, categories, scores and number of results. Shorthand for
                ``origin = where(altered, -1, arange(N))``.
            origin: int array (N,) for a variant of the base results: the index of the base result that
                ``results[i]`` equals (same image, category, score and mask or box), or -1 for a changed
                or new result; the named indices must increase. Base results that no entry names count
                as removed.
                ``None`` (and no ``altered``) evaluates from scratch and makes these results the base.

        Returns:
            float64 array (T, R, K), -1 where a category has no ground truth.
        """
        if altered is not None:
            if self._base_results is not None and len(altered) != len(results):
                raise ValueError(f"altered has {len(altered)} entries for {len(results)} results")
            origin = np.where(np.asarray(altered, dtype=bool), -1, np.arange(len(altered)))
        geometry = "segmentation" if self.iou_type == "segm" else "bbox"
        anns = [
            {
                "id": i + 1,
                "image_id": r["image_id"],
                "category_id": r["category_id"],
                "score": r["score"],
                "area": r["area"],
                geometry: r[geometry],
                "iscrowd": 0,
            }
            for i, r in enumerate(results)
        ]
        dt = _coco(self.backend, {"images": self.images, "categories": self.categories, "annotations": anns})
        base = self._base if origin is not None else None
        with contextlib.redirect_stdout(io.StringIO()):
            if self.backend == "pycocotools":
                from pycocotools.cocoeval import COCOeval

                ev = COCOeval(self.gt, dt, iouType=self.iou_type)
            else:
                ev = _faster_eval_class()(
                    self.gt, dt, iouType=self.iou_type, print_function=lambda *a, **k: None
                )
                # faster-coco-eval >= 1.8 computes IoUs in a thread pool; the IoU routine holds the GIL,
                # so the threads only add overhead (measured: 0.83 s vs 0.66 s per evaluation).
                ev.rle_iou_max_workers = 1
            ev.params.areaRng = [list(_AREA_ALL)]
            ev.params.areaRngLbl = ["all"]
            ev.params.maxDets = [100]
            if base is not None and origin is not None and self._base_results is not None:
                self._reuse_base(ev, base, anns, np.asarray(origin, dtype=np.int64))
            ev.evaluate()
            ev.accumulate()
        if origin is None:
            ev.gt_pairs = {(g["image_id"], g["category_id"]) for g in self.gt.dataset["annotations"]}
            self._base = ev
            self._base_results = anns
            reusable = self.backend == "faster-coco-eval" and _reusable(ev) and all("rle" in a for a in anns)
            self._base_rle = {a["id"]: a["rle"] for a in anns} if reusable else None
        return np.asarray(ev.eval["precision"], dtype=np.float64)[:, :, :, 0, -1]

    def _reuse_base(self, ev: Any, base: Any, anns: list[dict[str, Any]], origin: np.ndarray) -> None:
        """Make ``ev`` take from ``base`` the IoUs (and prepared masks) of whatever did not change."""
        assert self._base_results is not None
        if len(origin) != len(anns):
            raise ValueError(f"origin has {len(origin)} entries for {len(anns)} results")
        base_anns = self._base_results
        kept = origin >= 0
        if kept.any() and (origin.max() >= len(base_anns) or (np.diff(origin[kept]) <= 0).any()):
            raise ValueError("origin must name base results in increasing order, each at most once")
        changed = {(a["image_id"], a["category_id"]) for a, o in zip(anns, origin) if o < 0}
        dropped = np.ones(len(base_anns), dtype=bool)
        dropped[origin[kept]] = False
        changed |= {(base_anns[i]["image_id"], base_anns[i]["category_id"]) for i in np.flatnonzero(dropped)}
        base_ious = base.ious
        compute = ev.computeIoU

        def compute_iou(img_id: int, cat_id: int) -> Any:
            pair = (img_id, cat_id)
            return base_ious[pair] if pair in base_ious and pair not in changed else compute(*pair)

        ev.computeIoU = compute_iou
        if self._base_rle is not None:
            rle = {i + 1: self._base_rle[int(o) + 1] for i, o in enumerate(origin) if o >= 0}
            ev.reuse = (base, rle, {i + 1 for i in np.flatnonzero(~kept).tolist()}, self.sizes)


def mean_valid(values: np.ndarray) -> float:
    """Mean of the entries > -1 (COCO's convention for "no ground truth"); NaN if there are none."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else math.nan


def ap_triple(precision: np.ndarray) -> tuple[float, float, float]:
    """(AP@[.50:.95], AP50, AP75) from a precision array (T, R, ...)."""
    return mean_valid(precision), mean_valid(precision[0]), mean_valid(precision[5])
