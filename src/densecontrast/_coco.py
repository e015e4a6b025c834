"""COCO ground truth from torchvision-style targets, and the RLE coding of binary masks (private).

Shape letters: N masks (instances of an image), H x W the image size.

This module sits below both :mod:`densecontrast.data` (which writes COCO ground truth of its datasets) and
:mod:`densecontrast.analysis` (which evaluates it), so that neither imports the other. numpy and
pycocotools (the ``analysis`` extra) are imported inside the functions: importing this module needs torch
alone. Tensors are read with ``.detach().cpu().numpy()``; numpy arrays work as well.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Rle = dict[str, Any]

# pycocotools' area() fails on more than 255 masks at once.
_AREA_CHUNK = 255


def as_numpy(x: Any) -> Any:
    """``x`` as a numpy array (a tensor is detached and moved to the CPU first)."""
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def encode(masks: Any) -> list[Rle]:
    """Compressed RLEs of bool masks (N, H, W), their ``counts`` a str (JSON-serialisable).

    Examples:
        >>> import numpy as np
        >>> encode(np.array([[[0, 1], [0, 1]]], dtype=bool))
        [{'size': [2, 2], 'counts': '22'}]
    """
    import numpy as np
    from pycocotools import mask as mask_utils

    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def areas(rles: Sequence[Rle]) -> list[float]:
    """Pixel counts (ones) of compressed RLEs."""
    from pycocotools import mask as mask_utils

    out: list[float] = []
    for start in range(0, len(rles), _AREA_CHUNK):
        out.extend(float(a) for a in mask_utils.area(list(rles[start : start + _AREA_CHUNK])))
    return out


def check_image_ids(image_ids: Sequence[int], n: int, name: str) -> list[int]:
    """``image_ids`` as ints; ValueError unless there is one per entry of ``name`` (``n``) and all differ."""
    ids = [int(i) for i in image_ids]
    if len(ids) != n:
        raise ValueError(f"image_ids must have one id per entry of {name} ({n}), got {len(ids)}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"image_ids must be unique, got {ids}")
    return ids


def category_list(categories: Mapping[int, str] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """COCO category dicts (``id``, ``name``) from a mapping id -> name or from category dicts."""
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
    import numpy as np
    from pycocotools import mask as mask_utils

    ids = check_image_ids(image_ids, len(targets), "targets")
    cats = category_list(categories)
    cat_ids = {c["id"] for c in cats}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for t, (image_id, target) in enumerate(zip(ids, targets)):
        if "masks" not in target or "labels" not in target:
            raise ValueError(
                f"targets[{t}] needs 'masks' (N, H, W) and 'labels' (N,); got keys {sorted(target)}"
            )
        masks = as_numpy(target["masks"]).astype(bool)
        labels = as_numpy(target["labels"]).reshape(-1)
        if masks.ndim != 3 or labels.shape[0] != masks.shape[0]:
            raise ValueError(
                f"targets[{t}]: masks must be (N, H, W) and labels (N,); "
                f"got masks {masks.shape}, labels {labels.shape}"
            )
        n, h, w = masks.shape
        boxes = as_numpy(target["boxes"]).reshape(n, 4).astype(float) if "boxes" in target else None
        crowd = as_numpy(target["iscrowd"]).reshape(n) if "iscrowd" in target else np.zeros(n, dtype=np.int64)
        images.append({"id": image_id, "height": int(h), "width": int(w)})
        rles = encode(masks)
        pixels = masks.reshape(n, h * w).sum(axis=1)
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
                    "area": float(pixels[k]),
                    "bbox": bbox,
                    "iscrowd": int(crowd[k]),
                }
            )
    return {"images": images, "annotations": annotations, "categories": cats}
