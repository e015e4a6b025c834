"""COCO instances ground truth of a detection dataset, in memory or written to disk with its images.

Shape letters: N instances of an image, H x W the image size.

Works on any map-style dataset of ``(image, target)`` items with image float (3, H, W) in [0, 1] and a
torchvision detection target (``masks`` (N, H, W), ``labels`` (N,), optionally ``boxes``, ``iscrowd``,
``image_id``). Needs the ``analysis`` extra (numpy, pycocotools; Pillow, which comes with matplotlib, to
write images).
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .._coco import coco_from_targets
from .iterate import iterate_items

__all__ = ["coco_ground_truth", "export_coco"]


def _categories(dataset: Any, categories: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    if categories is None:
        categories = getattr(dataset, "categories", None)
    if categories is None:
        raise ValueError(
            "categories must be given (COCO category dicts with 'id' and 'name') when the dataset has no "
            f"'categories' attribute; got a {type(dataset).__name__} without one"
        )
    return [dict(c) for c in categories]


def _ground_truth(
    dataset: Any,
    categories: Sequence[Mapping[str, Any]] | None,
    info: Mapping[str, Any] | None,
    save: Callable[[Tensor, str], None] | None,
) -> dict[str, Any]:
    """The COCO dict of ``dataset``; ``save(image, file_name)`` is called for every image if given."""
    cats = _categories(dataset, categories)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index, (image, target) in enumerate(iterate_items(dataset)):
        image_id = int(target["image_id"]) if "image_id" in target else index + 1
        file_name = f"{image_id:06d}.png"
        if save is not None:
            save(image, file_name)
        one = coco_from_targets([target], [image_id], cats)
        images.append({**one["images"][0], "file_name": file_name})
        for ann in one["annotations"]:
            annotations.append({**ann, "id": len(annotations) + 1})
    return {
        "info": dict(info) if info is not None else {},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": cats,
    }


def coco_ground_truth(
    dataset: Any,
    *,
    categories: Sequence[Mapping[str, Any]] | None = None,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole dataset as a COCO instances dict with compressed-RLE segmentations.

    Image ids are the targets' ``image_id`` (else ``index + 1``), file names ``{image_id:06d}.png``;
    annotation ids start at 1; ``area`` is the mask's pixel count and ``bbox`` the target's box as
    ``[x, y, width, height]`` (the mask's box without ``boxes``). The annotations are those of
    :func:`densecontrast.analysis.coco_from_targets`. From
    :data:`~densecontrast.data.iterate.WORKER_MIN_ITEMS` items on, the items are generated in a DataLoader
    worker (:func:`~densecontrast.data.iterate_items`); the result is the same.

    Args:
        dataset: a map-style dataset of ``(image, target)`` items (see the module docstring).
        categories: COCO category dicts (``id``, ``name``); default ``dataset.categories``.
        info: the dict's ``info`` entry (default empty).

    Raises:
        ValueError: no ``categories`` and none on the dataset, or a label that is not a category id.

    Examples:
        >>> from densecontrast.data import SyntheticInstances
        >>> gt = coco_ground_truth(SyntheticInstances(2, image_size=32, seed=0))
        >>> [image["file_name"] for image in gt["images"]], gt["annotations"][0]["id"]
        (['000001.png', '000002.png'], 1)
    """
    return _ground_truth(dataset, categories, info, None)


def export_coco(
    dataset: Any,
    root: str | os.PathLike[str],
    *,
    categories: Sequence[Mapping[str, Any]] | None = None,
    info: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """Write ``root/images/000001.png ...`` and ``root/annotations.json`` (:func:`coco_ground_truth`).

    The images are written as 8-bit RGB PNGs, ``round(image * 255)``: lossless for images that are
    multiples of 1/255, as ``SyntheticInstances`` makes them.

    Returns:
        ``root`` as a ``pathlib.Path``.

    Raises:
        ImportError: Pillow is missing (before anything is written).
    """
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("export_coco needs Pillow: pip install 'densecontrast[analysis]'") from None
    root = pathlib.Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)

    def save(image: Tensor, file_name: str) -> None:
        pixels = torch.round(image.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        Image.fromarray(pixels).save(root / "images" / file_name)

    gt = _ground_truth(dataset, categories, info, save)
    (root / "annotations.json").write_text(json.dumps(gt))
    return root
