"""Turn torchvision-style Mask R-CNN targets and outputs into COCO ground truth and RLE results.

Shape letters: N instances (or detections) of an image, H x W the image size.
Tensors are read with ``.detach().cpu().numpy()``; numpy arrays work as well.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from . import _rle


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_ids(image_ids: Sequence[int], n: int, name: str) -> list[int]:
    ids = [int(i) for i in image_ids]
    if len(ids) != n:
        raise ValueError(f"image_ids must have one id per entry of {name} ({n}), got {len(ids)}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"image_ids must be unique, got {ids}")
    return ids


def _category_list(categories: Mapping[int, str] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(categories, Mapping):
        return [{"id": int(k), "name": str(v)} for k, v in categories.items()]
    out = []
    for i, c in enumerate(categories):
        if not isinstance(c, Mapping) or "id" not in c:
            raise ValueError(f"categories[{i}] must be a dict with an 'id' (and a 'name'), got {c!r}")
        out.append({"id": int(c["id"]), "name": str(c.get("name", c["id"]))})
    return out


def coco_from_targets(
    targets: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int],
    categories: Mapping[int, str] | Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Build a COCO ground-truth dict from torchvision detection targets.

    Args:
        targets: one dict per image with ``masks``: uint8/bool (N, H, W), ``labels``: int (N,) category ids,
            optionally ``boxes``: float (N, 4) xyxy and ``iscrowd``: int (N,). The image size is read
            from ``masks``, so give it even when N = 0 (shape (0, H, W)).
        image_ids: one id per target.
        categories: category id -> name, or COCO category dicts (``id``, ``name``).

    Returns:
        A COCO dict (``images``, ``annotations``, ``categories``) with RLE segmentations, ``area`` = mask
        pixels, ``bbox`` (xywh) and ``iscrowd``; annotation ids run from 1.

    Examples:
        >>> import numpy as np
        >>> masks = np.zeros((1, 4, 5), dtype=np.uint8); masks[0, 1:3, 1:4] = 1
        >>> gt = coco_from_targets([{"masks": masks, "labels": np.array([3])}], [7], {3: "car"})
        >>> gt["images"], gt["annotations"][0]["area"], gt["annotations"][0]["bbox"]
        ([{'id': 7, 'height': 4, 'width': 5}], 6.0, [1.0, 1.0, 3.0, 2.0])
    """
    ids = _check_ids(image_ids, len(targets), "targets")
    cats = _category_list(categories)
    cat_ids = {c["id"] for c in cats}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for t, (image_id, target) in enumerate(zip(ids, targets)):
        if "masks" not in target or "labels" not in target:
            raise ValueError(
                f"targets[{t}] needs 'masks' (N, H, W) and 'labels' (N,); got keys {sorted(target)}"
            )
        masks = _numpy(target["masks"]).astype(bool)
        labels = _numpy(target["labels"]).reshape(-1)
        if masks.ndim != 3 or labels.shape[0] != masks.shape[0]:
            raise ValueError(
                f"targets[{t}]: masks must be (N, H, W) and labels (N,); "
                f"got masks {masks.shape}, labels {labels.shape}"
            )
        n, h, w = masks.shape
        boxes = _numpy(target["boxes"]).reshape(n, 4).astype(float) if "boxes" in target else None
        crowd = _numpy(target["iscrowd"]).reshape(n) if "iscrowd" in target else np.zeros(n, dtype=np.int64)
        images.append({"id": image_id, "height": int(h), "width": int(w)})
        rles = _rle.encode(masks)
        areas = masks.reshape(n, h * w).sum(axis=1)
        for k in range(n):
            if int(labels[k]) not in cat_ids:
                raise ValueError(
                    f"targets[{t}]['labels'][{k}] = {int(labels[k])} is not a category id {sorted(cat_ids)}"
                )
            if boxes is not None:
                x0, y0, x1, y1 = boxes[k]
                bbox = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            else:
                bbox = [float(v) for v in mask_utils.toBbox(rles[k])]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(labels[k]),
                    "segmentation": rles[k],
                    "area": float(areas[k]),
                    "bbox": bbox,
                    "iscrowd": int(crowd[k]),
                }
            )
    return {"images": images, "annotations": annotations, "categories": cats}


def results_from_outputs(
    outputs: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int],
    *,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Build COCO segmentation results (RLE) from torchvision Mask R-CNN outputs in eval mode.

    Args:
        outputs: one dict per image with ``masks``: float (N, 1, H, W) or (N, H, W) probabilities,
            ``scores``: float (N,), ``labels``: int (N,) category ids.
        image_ids: one id per output.
        mask_threshold: a pixel belongs to the mask when its probability is greater than this.

    Returns:
        A list of result dicts (``image_id``, ``category_id``, ``score``, ``segmentation``) ready for
        :func:`~densecontrast.analysis.analyze` or ``json.dump``.

    Examples:
        >>> import numpy as np
        >>> probs = np.zeros((1, 1, 2, 2), dtype=np.float32); probs[0, 0, 0, :] = 0.9
        >>> out = {"masks": probs, "scores": np.array([0.8]), "labels": np.array([1])}
        >>> res = results_from_outputs([out], [5])
        >>> r = res[0]
        >>> r["image_id"], r["category_id"], round(r["score"], 2), r["segmentation"]["size"]
        (5, 1, 0.8, [2, 2])
    """
    ids = _check_ids(image_ids, len(outputs), "outputs")
    results: list[dict[str, Any]] = []
    for t, (image_id, out) in enumerate(zip(ids, outputs)):
        if not all(k in out for k in ("masks", "scores", "labels")):
            raise ValueError(f"outputs[{t}] needs 'masks', 'scores' and 'labels'; got keys {sorted(out)}")
        probs = _numpy(out["masks"])
        if probs.ndim == 4 and probs.shape[1] == 1:
            probs = probs[:, 0]
        scores = _numpy(out["scores"]).reshape(-1)
        labels = _numpy(out["labels"]).reshape(-1)
        if probs.ndim != 3 or not probs.shape[0] == scores.shape[0] == labels.shape[0]:
            raise ValueError(
                f"outputs[{t}]: masks must be (N, 1, H, W) or (N, H, W) with scores and labels (N,); "
                f"got masks {probs.shape}, scores {scores.shape}, labels {labels.shape}"
            )
        rles = _rle.encode(probs > mask_threshold)
        for k, rle in enumerate(rles):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(labels[k]),
                    "score": float(scores[k]),
                    "segmentation": rle,
                }
            )
    return results
