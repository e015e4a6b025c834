"""Write an instance-segmentation dataset in the YOLO format that Ultralytics trains on.

The layout (one folder per split)::

    root/
        data.yaml                 path, train, val, names
        images/train/000001.png   ...
        labels/train/000001.txt   one line per instance: class x1 y1 x2 y2 ... (polygon, normalised)

Needs ``pillow`` (images), ``opencv-python`` (mask contours) and ``ultralytics`` (joining a mask's parts
into one polygon the way Ultralytics does); all come with ``pip install 'densecontrast[ultralytics]'``.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["export_yolo", "mask_to_polygon"]


def _imports() -> tuple[Any, Any, Any]:
    try:
        import cv2
        from PIL import Image
        from ultralytics.data.converter import merge_multi_segment
    except ImportError as err:
        raise ImportError(
            f"exporting to the YOLO format needs opencv-python, pillow and ultralytics ({err.name} is "
            "missing); install them with `pip install 'densecontrast[ultralytics]'`"
        ) from err
    return cv2, Image, merge_multi_segment


def mask_to_polygon(mask: Tensor) -> list[float]:
    """One polygon outlining a binary mask, as ``[x1, y1, x2, y2, ...]`` normalised to [0, 1].

    The outline runs through the mask's boundary pixels (pixel ``(x, y)`` is written ``x / W, y / H``,
    so that filling the polygon at that size gives the mask back up to its boundary). A mask in several parts
    (an object split by an occluder) gives one polygon that visits every part, joining them by zero-width
    bridges (the way Ultralytics converts COCO masks in several parts).

    Args:
        mask: tensor (H, W), nonzero on the instance.

    Returns:
        The flat list of normalised coordinates (empty for an empty mask).
    """
    cv2, _, merge_multi_segment = _imports()

    array = (mask != 0).to(torch.uint8).cpu().numpy()
    height, width = array.shape
    contours, _ = cv2.findContours(array, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    parts = [c.reshape(-1, 2) for c in contours if len(c) >= 1]
    if not parts:
        return []
    if len(parts) == 1:
        points = parts[0]
    else:
        import numpy as np

        points = np.concatenate(merge_multi_segment([p.reshape(-1).tolist() for p in parts]), axis=0)
    # Pixel indices over the size: Ultralytics scales back and fills the polygon through these pixels.
    xs = points[:, 0] / width
    ys = points[:, 1] / height
    return [float(v) for xy in zip(xs.tolist(), ys.tolist()) for v in xy]


def _write_split(dataset: Any, root: pathlib.Path, split: str, num_classes: int | None) -> int:
    """Write one split; returns the largest label seen (0 for none). Labels must lie in [1, num_classes]."""
    _, image_cls, _ = _imports()
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    top = 0
    from .datasets import iterate_items  # datasets imports this module at its top

    for index, (image, target) in enumerate(iterate_items(dataset)):
        values = [int(v) for v in target["labels"].tolist()]
        bad = [v for v in values if v < 1 or (num_classes is not None and v > num_classes)]
        if bad:
            expected = f"[1, {num_classes}]" if num_classes is not None else ">= 1"
            raise ValueError(
                f"{split} image {index}: labels must lie in {expected} (categories numbered from 1; YOLO "
                f"class = label - 1); got {sorted(set(bad))}"
            )
        top = max([top, *values])
        stem = f"{index + 1:06d}"
        pixels = torch.round(image.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).contiguous()
        image_cls.fromarray(pixels.numpy()).save(images / f"{stem}.png")
        lines = []
        for mask, label in zip(target["masks"], values):
            polygon = mask_to_polygon(mask)
            if len(polygon) >= 6:  # at least three points
                lines.append(" ".join([str(label - 1), *(f"{v:.6f}" for v in polygon)]))
        (labels / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    return top


def export_yolo(
    dataset: Any,
    root: str | os.PathLike[str],
    *,
    val_dataset: Any | None = None,
    names: Sequence[str] | None = None,
) -> pathlib.Path:
    """Write ``dataset`` (and optionally a validation set) as a YOLO-format segmentation dataset.

    Args:
        dataset: items ``(image, target)`` with image float (3, H, W) in [0, 1] and target holding
            ``masks`` (N, H, W) and ``labels`` (N,) int, categories numbered from 1 (as
            ``SyntheticInstances`` gives them); YOLO classes are ``label - 1``.
        root: the folder to write (created if missing).
        val_dataset: the validation split; None writes ``dataset`` as both splits' source (``val``
            points at the training images).
        names: the class names, index ``label - 1``; default ``dataset.categories``' names, else
            ``class0``, ``class1``, ... up to the largest label.

    Returns:
        The path of ``data.yaml``, to pass as ``YOLO(...).train(data=...)``.

    Raises:
        ValueError: a label outside ``[1, len(names)]`` (the message names the split and image index).
        ImportError: opencv-python, pillow or ultralytics missing.

    From :data:`WORKER_MIN_ITEMS` items on, the items are generated in a DataLoader worker process
    (:func:`iterate_items`); the files are the same either way.

    Examples:
        >>> import tempfile
        >>> from densecontrast.datasets import SyntheticInstances
        >>> ds = SyntheticInstances(2, image_size=32, num_categories=2, seed=0)
        >>> path = export_yolo(ds, tempfile.mkdtemp())
        >>> sorted(p.name for p in (path.parent / "labels" / "train").iterdir())
        ['000001.txt', '000002.txt']
    """
    _imports()  # fail before writing anything
    root = pathlib.Path(root).resolve()
    if names is None:
        categories = getattr(dataset, "categories", None)
        if categories:
            names = [str(c["name"]) for c in sorted(categories, key=lambda c: c["id"])]
    num_classes = None if names is None else len(names)
    top = _write_split(dataset, root, "train", num_classes)
    if val_dataset is not None:
        top = max(top, _write_split(val_dataset, root, "val", num_classes))
    if names is None:
        names = [f"class{i}" for i in range(max(top, 1))]
    val = "images/val" if val_dataset is not None else "images/train"
    lines = [
        f"path: {json.dumps(str(root))}",
        'train: "images/train"',
        f"val: {json.dumps(val)}",
        "names:",
        *(f"  {i}: {json.dumps(str(n))}" for i, n in enumerate(names)),
    ]
    path = root / "data.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path
