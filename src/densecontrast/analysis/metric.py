"""The error analysis as a metric for validation loops (torchmetrics' ``update``/``compute``/``reset``).

Shape letters: N detections (or instances) of an image, H x W the image size.

Each :meth:`ErrorAnalysis.update` turns a batch of torchvision-style predictions and targets into compact
COCO entries (RLE masks, xywh boxes) kept on the CPU; :meth:`ErrorAnalysis.compute` gathers them from every
process of the default ``torch.distributed`` group (``all_gather_object``, any backend) and runs
:func:`~densecontrast.analysis.analyze` on the whole set, so each rank gets the same report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _rle
from ._analyze import analyze
from ._inputs import IOU_TYPES
from ._report import SegmentationErrorReport

_PRED_KEYS = ("scores", "labels")
_TARGET_KEYS = ("labels",)


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _xywh(boxes: np.ndarray) -> list[list[float]]:
    return [[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1 in boxes.reshape(-1, 4)]


class ErrorAnalysis:
    """Accumulates detections and ground truth over batches; :meth:`compute` returns the error report.

    Args:
        iou_type: "segm" (masks: detection and pixel errors) or "bbox" (boxes: detection errors).
        categories: category id -> name; by default every label seen, named by its id.
        mask_threshold: a predicted mask pixel is in the mask when its value is greater than this.
        min_iou: the pixel analysis' matching threshold (see :func:`~densecontrast.analysis.analyze`).
        fg_iou: the detection errors' foreground threshold.
        bg_iou: the detection errors' background threshold.
        backend: the COCO evaluator, "auto", "pycocotools" or "faster-coco-eval".
        sync: gather the states of every process of the default ``torch.distributed`` group in
            :meth:`compute` when one is initialised (each rank then returns the same report; with NCCL,
            set each rank's CUDA device first, as ``all_gather_object`` requires).

    Examples:
        >>> import torch
        >>> from densecontrast.analysis import ErrorAnalysis
        >>> metric = ErrorAnalysis(iou_type="bbox")
        >>> target = {"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]]), "labels": torch.tensor([1])}
        >>> pred = {**target, "scores": torch.tensor([0.9])}
        >>> metric.update([pred], [target])
        >>> report = metric.compute()
        >>> round(report.ap, 6), report.detection["missed"]
        (1.0, 0.0)
    """

    def __init__(
        self,
        *,
        iou_type: str = "segm",
        categories: Mapping[int, str] | None = None,
        mask_threshold: float = 0.5,
        min_iou: float = 0.1,
        fg_iou: float = 0.5,
        bg_iou: float = 0.1,
        backend: str = "auto",
        sync: bool = True,
    ) -> None:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
        self.iou_type = iou_type
        self.categories = None if categories is None else {int(k): str(v) for k, v in categories.items()}
        self.mask_threshold = float(mask_threshold)
        self.min_iou, self.fg_iou, self.bg_iou, self.backend = min_iou, fg_iou, bg_iou, backend
        self.sync = sync
        self.images: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Forget every image seen."""
        self.images = []

    def update(self, preds: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]) -> None:
        """Add one batch.

        Args:
            preds: one dict per image: ``scores`` (N,), ``labels`` (N,) int category ids, ``masks``
                (N, H, W) or (N, 1, H, W) bool or probabilities (for "segm"), ``boxes`` (N, 4) xyxy (for
                "bbox"; without boxes, the masks' bounding boxes).
            targets: one dict per image: ``labels`` (N,), ``masks`` (N, H, W) (for "segm"), ``boxes``
                (N, 4) xyxy (for "bbox"; else from the masks), optionally ``iscrowd`` (N,).
                Tensors or numpy arrays.

        Raises:
            ValueError: naming the batch entry and what is missing or mismatched.
        """
        if len(preds) != len(targets):
            raise ValueError(
                f"preds and targets must have one entry per image; got {len(preds)} and {len(targets)}"
            )
        for b, (pred, target) in enumerate(zip(preds, targets)):
            self.images.append(self._image(pred, target, b))

    def _entries(self, item: Mapping[str, Any], name: str, n_key: str, masks_key: bool) -> dict[str, Any]:
        labels = _numpy(item[n_key]).reshape(-1)
        n = labels.shape[0]
        out: dict[str, Any] = {"labels": [int(v) for v in labels]}
        masks = None
        if "masks" in item:
            masks = _numpy(item["masks"])
            if masks.ndim == 4 and masks.shape[1] == 1:
                masks = masks[:, 0]
            if masks.ndim != 3 or masks.shape[0] != n:
                raise ValueError(
                    f"{name}: 'masks' must be (N, H, W) or (N, 1, H, W) with N = {n}; got {masks.shape}"
                )
            if masks.dtype != bool:
                masks = masks > self.mask_threshold if masks_key else masks > 0
            out["size"] = [int(masks.shape[1]), int(masks.shape[2])]
            out["segmentation"] = _rle.encode(masks)
        elif self.iou_type == "segm":
            raise ValueError(f"{name}: iou_type 'segm' needs 'masks' (N, H, W); got keys {sorted(item)}")
        if "boxes" in item:
            boxes = _numpy(item["boxes"]).astype(np.float64)
            if boxes.shape != (n, 4):
                raise ValueError(f"{name}: 'boxes' must be (N, 4) xyxy with N = {n}; got {boxes.shape}")
            out["bbox"] = _xywh(boxes)
            if "size" not in out:
                out["size"] = [max(1, int(np.ceil(boxes[:, 3].max(initial=0)))),
                               max(1, int(np.ceil(boxes[:, 2].max(initial=0))))]  # fmt: skip
        elif masks is None:
            raise ValueError(f"{name}: needs 'boxes' (N, 4) or 'masks' (N, H, W); got keys {sorted(item)}")
        return out

    def _image(self, pred: Mapping[str, Any], target: Mapping[str, Any], b: int) -> dict[str, Any]:
        for item, name, keys in ((pred, f"preds[{b}]", _PRED_KEYS), (target, f"targets[{b}]", _TARGET_KEYS)):
            if not isinstance(item, Mapping) or any(k not in item for k in keys):
                got = sorted(item) if isinstance(item, Mapping) else type(item).__name__
                raise ValueError(f"{name} must be a dict with {list(keys)}; got {got}")
        p = self._entries(pred, f"preds[{b}]", "labels", True)
        t = self._entries(target, f"targets[{b}]", "labels", False)
        p["scores"] = [float(s) for s in _numpy(pred["scores"]).reshape(-1)]
        if len(p["scores"]) != len(p["labels"]):
            raise ValueError(f"preds[{b}]: 'scores' and 'labels' must have the same length N")
        crowd = _numpy(target["iscrowd"]).reshape(-1) if "iscrowd" in target else np.zeros(len(t["labels"]))
        t["iscrowd"] = [int(c) for c in crowd]
        size = t.get("size", p.get("size"))
        if "size" in p and "size" in t and p["size"] != t["size"] and self.iou_type == "segm":
            raise ValueError(f"preds[{b}] masks are {p['size']} but targets[{b}] masks are {t['size']}")
        return {"size": size, "pred": p, "target": t}

    def _gathered(self) -> list[dict[str, Any]]:
        if not self.sync:
            return self.images
        try:
            import torch.distributed as dist
        except ImportError:  # pragma: no cover - torch is a core dependency
            return self.images
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.images
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, self.images)
        return [image for part in parts for image in part]

    def coco(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The COCO ground truth and results of every image seen (by every rank when synced).

        Images are numbered from 1 in the order rank 0's images, rank 1's, ...
        """
        images = self._gathered()
        gt: dict[str, Any] = {"images": [], "annotations": [], "categories": []}
        results: list[dict[str, Any]] = []
        seen: set[int] = set()
        for image_id, image in enumerate(images, start=1):
            h, w = image["size"]
            gt["images"].append({"id": image_id, "height": h, "width": w})
            t, p = image["target"], image["pred"]
            for k, label in enumerate(t["labels"]):
                ann = {"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": label,
                       "iscrowd": t["iscrowd"][k]}  # fmt: skip
                if "segmentation" in t:
                    ann["segmentation"] = t["segmentation"][k]
                if "bbox" in t:
                    ann["bbox"] = t["bbox"][k]
                gt["annotations"].append(ann)
                seen.add(label)
            for k, label in enumerate(p["labels"]):
                res: dict[str, Any] = {"image_id": image_id, "category_id": label, "score": p["scores"][k]}
                if "segmentation" in p:
                    res["segmentation"] = p["segmentation"][k]
                if "bbox" in p:
                    res["bbox"] = p["bbox"][k]
                results.append(res)
                seen.add(label)
        names = self.categories if self.categories is not None else {c: str(c) for c in sorted(seen)}
        gt["categories"] = [{"id": c, "name": n} for c, n in names.items()]
        return gt, results

    def compute(self) -> SegmentationErrorReport:
        """The :class:`SegmentationErrorReport` of every image seen (gathered from every rank)."""
        gt, results = self.coco()
        return analyze(
            gt,
            results,
            iou_type=self.iou_type,
            min_iou=self.min_iou,
            fg_iou=self.fg_iou,
            bg_iou=self.bg_iou,
            backend=self.backend,
        )
