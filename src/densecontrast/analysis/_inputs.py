"""Loading and validating COCO ground truth and instance-segmentation results.

Everything handed on to the evaluators is a fresh copy: the caller's dictionaries are never mutated.
Masks are kept as compressed COCO run-length encodings (RLE) of size (H, W), the image's height and width;
every mask is checked (:mod:`._rle`) before anything is rasterised or evaluated.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _rle


@dataclass
class Prepared:
    """Validated, copied inputs.

    Attributes:
        images: image dicts (``id``, ``height``, ``width``), in the ground truth's order.
        categories: category dicts (``id``, ``name``), in the ground truth's order.
        annotations: ground-truth dicts with ``id``, ``image_id``, ``category_id``, compressed RLE
            ``segmentation``, ``area`` and ``iscrowd``.
        results: result dicts with ``image_id``, ``category_id``, ``score`` (float), compressed RLE
            ``segmentation`` and ``area``.
        sizes: image id -> (H, W).
        gt_by_image: image id -> indices into ``annotations``, in annotation order.
        res_by_image: image id -> indices into ``results``, in result order.
    """

    images: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    annotations: list[dict[str, Any]]
    results: list[dict[str, Any]]
    sizes: dict[int, tuple[int, int]]
    gt_by_image: dict[int, list[int]] = field(default_factory=dict)
    res_by_image: dict[int, list[int]] = field(default_factory=dict)


def load_json(source: Any, name: str) -> Any:
    """Return ``source`` itself, or the JSON content of the file it names.

    Args:
        source: a dict/list, or a path (``str`` or ``os.PathLike``) to a JSON file.
        name: the argument's name, for error messages.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{name}: expected a JSON file, got a path that is not a file: {path}")
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    return source


def _as_int(value: Any, where: str, key: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{where}: {key!r} must be an integer, got {value!r}")
    return int(value.__index__())


def _as_finite(value: Any, where: str, key: str) -> float:
    if (
        isinstance(value, (bool, str, bytes))
        or not hasattr(value, "__float__")
        or not math.isfinite(float(value))
    ):
        raise ValueError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def _require(entry: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a dict, got {type(entry).__name__}")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}; got keys {sorted(entry)}")


def _images(gt: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[int, tuple[int, int]]]:
    images, sizes = [], {}
    for i, img in enumerate(gt["images"]):
        where = f"gt['images'][{i}]"
        _require(img, ("id", "height", "width"), where)
        image_id = _as_int(img["id"], where, "id")
        h, w = _as_int(img["height"], where, "height"), _as_int(img["width"], where, "width")
        if h <= 0 or w <= 0:
            raise ValueError(f"{where}: height and width must be positive, got {h} x {w}")
        if image_id in sizes:
            raise ValueError(f"{where}: duplicate image id {image_id}")
        sizes[image_id] = (h, w)
        images.append({"id": image_id, "height": h, "width": w})
    return images, sizes


def _categories(gt: Mapping[str, Any]) -> list[dict[str, Any]]:
    categories: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i, cat in enumerate(gt["categories"]):
        where = f"gt['categories'][{i}]"
        _require(cat, ("id",), where)
        cat_id = _as_int(cat["id"], where, "id")
        if cat_id in seen:
            raise ValueError(f"{where}: duplicate category id {cat_id}")
        seen.add(cat_id)
        categories.append({"id": cat_id, "name": str(cat.get("name", cat_id))})
    return categories


def _annotations(
    gt: Mapping[str, Any], sizes: Mapping[int, tuple[int, int]], cat_ids: set[int]
) -> list[dict[str, Any]]:
    annotations: list[dict[str, Any]] = []
    seen: set[int] = set()
    names: list[str] = []
    for i, ann in enumerate(gt["annotations"]):
        where = f"gt['annotations'][{i}]"
        _require(ann, ("id", "image_id", "category_id", "segmentation"), where)
        ann_id = _as_int(ann["id"], where, "id")
        if ann_id == 0:
            raise ValueError(f"{where}: annotation id 0 is not allowed (COCOeval reads 0 as 'unmatched')")
        if ann_id in seen:
            raise ValueError(f"{where}: duplicate annotation id {ann_id}")
        seen.add(ann_id)
        where = f"{where} (id {ann_id})"
        image_id, category_id = _known_ids(ann, where, sizes, cat_ids)
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1):
            raise ValueError(f"{where}: iscrowd must be 0 or 1, got {iscrowd!r}")
        _rle.check_segmentation(ann["segmentation"], *sizes[image_id], where, polygons=True)
        names.append(where)
        area = ann.get("area")
        area = None if area is None else _as_finite(area, where, "area")
        annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": ann["segmentation"],
                "area": area,
                "iscrowd": int(iscrowd),
            }
        )
    for a in annotations:  # rasterised only once every polygon has been checked
        a["segmentation"] = _rle.to_compressed(a["segmentation"], *sizes[a["image_id"]])
    _rle.check_compressed([a["segmentation"] for a in annotations], names)
    missing = [a for a in annotations if a["area"] is None]
    for ann, area in zip(missing, _rle.areas([a["segmentation"] for a in missing])):
        ann["area"] = area
    return annotations


def _known_ids(
    entry: Mapping[str, Any], where: str, sizes: Mapping[int, tuple[int, int]], cat_ids: set[int]
) -> tuple[int, int]:
    """``(image_id, category_id)`` of an annotation or result, checked against the ground truth's ids."""
    image_id = _as_int(entry["image_id"], where, "image_id")
    category_id = _as_int(entry["category_id"], where, "category_id")
    if image_id not in sizes:
        raise ValueError(f"{where}: image_id {image_id} is not in gt['images']")
    if category_id not in cat_ids:
        raise ValueError(f"{where}: category_id {category_id} is not in gt['categories']")
    return image_id, category_id


def _results(results: Any, sizes: Mapping[int, tuple[int, int]], cat_ids: set[int]) -> list[dict[str, Any]]:
    if not isinstance(results, list):
        raise TypeError(
            f"results must be a list of dicts or a path to a JSON list, got {type(results).__name__}"
        )
    out: list[dict[str, Any]] = []
    names: list[str] = []
    for i, res in enumerate(results):
        where = f"results[{i}]"
        _require(res, ("image_id", "category_id", "segmentation", "score"), where)
        image_id, category_id = _known_ids(res, where, sizes, cat_ids)
        where = f"{where} (image_id {image_id})"
        score = _as_finite(res["score"], where, "score")
        _rle.check_segmentation(res["segmentation"], *sizes[image_id], where, polygons=False)
        rle = _rle.to_compressed(res["segmentation"], *sizes[image_id])
        out.append({"image_id": image_id, "category_id": category_id, "score": score, "segmentation": rle})
        names.append(where)
    _rle.check_compressed([r["segmentation"] for r in out], names)
    for r, a in zip(out, _rle.areas([r["segmentation"] for r in out])):
        r["area"] = a
    return out


def prepare(gt: Any, results: Any) -> Prepared:
    """Load (if paths), validate and copy the ground truth and the results.

    Args:
        gt: a COCO ground-truth dict (``images``, ``annotations``, ``categories``) or a path to one.
            Annotations need ``id`` (non-zero, unique), ``image_id``, ``category_id`` and
            ``segmentation`` (polygons or RLE); a missing ``area`` is computed from the mask and a
            missing ``iscrowd`` is taken as 0.
        results: a list of COCO result dicts (``image_id``, ``category_id``, ``score``, RLE
            ``segmentation``) or a path to one. A ``bbox`` is ignored.

    Raises:
        ValueError: naming the offending entry, for missing fields, unknown ids, annotation id 0,
            duplicate ids and masks whose size differs from their image's.
        TypeError: if ``gt`` is not a dict or ``results`` not a list.
    """
    gt = load_json(gt, "gt")
    results = load_json(results, "results")
    if not isinstance(gt, Mapping):
        raise TypeError(f"gt must be a COCO dict or a path to one, got {type(gt).__name__}")
    _require(gt, ("images", "annotations", "categories"), "gt")
    images, sizes = _images(gt)
    categories = _categories(gt)
    cat_ids = {c["id"] for c in categories}
    annotations = _annotations(gt, sizes, cat_ids)
    res = _results(results, sizes, cat_ids)
    data = Prepared(images, categories, annotations, res, sizes)
    data.gt_by_image = {image_id: [] for image_id in sizes}
    data.res_by_image = {image_id: [] for image_id in sizes}
    for j, ann in enumerate(annotations):
        data.gt_by_image[ann["image_id"]].append(j)
    for i, r in enumerate(res):
        data.res_by_image[r["image_id"]].append(i)
    return data
