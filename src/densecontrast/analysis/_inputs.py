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

from pycocotools import mask as mask_utils

from . import _rle

IOU_TYPES: tuple[str, ...] = ("segm", "bbox")


@dataclass
class Prepared:
    """Validated, copied inputs.

    Attributes:
        images: image dicts (``id``, ``height``, ``width``), in the ground truth's order.
        categories: category dicts (``id``, ``name``), in the ground truth's order.
        annotations: ground-truth dicts with ``id``, ``image_id``, ``category_id``, compressed RLE
            ``segmentation``, ``area`` and ``iscrowd``.
        results: result dicts with ``image_id``, ``category_id``, ``score`` (float), ``area``, and a
            compressed RLE ``segmentation`` (``iou_type`` "segm") or a ``bbox`` [x, y, w, h] ("bbox").
        sizes: image id -> (H, W).
        gt_by_image: image id -> indices into ``annotations``, in annotation order.
        res_by_image: image id -> indices into ``results``, in result order.
        iou_type: "segm" (masks) or "bbox" (boxes): what the evaluations compare.
        skipped: one line per degenerate ground-truth annotation left out (``skip_degenerate``).
    """

    images: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    annotations: list[dict[str, Any]]
    results: list[dict[str, Any]]
    sizes: dict[int, tuple[int, int]]
    gt_by_image: dict[int, list[int]] = field(default_factory=dict)
    res_by_image: dict[int, list[int]] = field(default_factory=dict)
    iou_type: str = "segm"
    skipped: list[str] = field(default_factory=list)


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
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: cannot read {name}: {err}") from None
        if not text.strip():
            raise ValueError(f"{path}: the {name} file is empty")
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: the {name} file is not JSON ({err})") from None
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


def _bbox(value: Any, where: str) -> list[float]:
    """A COCO box [x, y, w, h] of finite numbers with w, h >= 0, as floats."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ValueError(f"{where}: 'bbox' must be [x, y, width, height], got {value!r}")
    box = [_as_finite(v, where, "bbox") for v in value]
    if box[2] < 0 or box[3] < 0:
        raise ValueError(f"{where}: 'bbox' width and height must be >= 0, got {value!r}")
    return box


def _short_polygons(segmentation: Any) -> list[int]:
    """Indices of the polygons with fewer than 3 points (empty for an RLE or a malformed value)."""
    if not isinstance(segmentation, list):
        return []
    return [p for p, poly in enumerate(segmentation) if isinstance(poly, list) and len(poly) < 6]


def _annotations(
    gt: Mapping[str, Any],
    sizes: Mapping[int, tuple[int, int]],
    cat_ids: set[int],
    *,
    iou_type: str,
    skip_degenerate: bool,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Validated ground-truth annotations, and one line per degenerate annotation left out."""
    annotations: list[dict[str, Any]] = []
    seen: set[int] = set()
    names: list[str] = []
    degenerate: list[str] = []
    for i, ann in enumerate(gt["annotations"]):
        where = f"gt['annotations'][{i}]"
        boxes_only = iou_type == "bbox" and isinstance(ann, Mapping) and "bbox" in ann
        _require(ann, ("id", "image_id", "category_id", *(() if boxes_only else ("segmentation",))), where)
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
        segmentation = None if boxes_only else ann["segmentation"]
        if segmentation is not None:
            short = _short_polygons(segmentation)
            if short:
                degenerate.append(f"{where}: polygon {short[0]} has fewer than 3 points")
                continue
            _rle.check_segmentation(segmentation, *sizes[image_id], where, polygons=True)
        area = ann.get("area")
        area = None if area is None else _as_finite(area, where, "area")
        names.append(where)
        annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": segmentation,
                "area": area,
                "iscrowd": int(iscrowd),
                "bbox": _bbox(ann["bbox"], where) if boxes_only else None,
            }
        )
    masked = [a for a in annotations if a["segmentation"] is not None]
    for a in masked:  # rasterised only once every polygon has been checked
        a["segmentation"] = _rle.to_compressed(a["segmentation"], *sizes[a["image_id"]])
    _rle.check_compressed(
        [a["segmentation"] for a in masked], [n for n, a in zip(names, annotations) if a["segmentation"]]
    )
    pixels = dict(zip((id(a) for a in masked), _rle.areas([a["segmentation"] for a in masked])))
    kept = []
    for name, ann in zip(names, annotations):
        if iou_type == "segm" and pixels[id(ann)] == 0:
            degenerate.append(f"{name}: the mask has zero area")
            continue
        if ann["area"] is None:
            ann["area"] = pixels[id(ann)] if id(ann) in pixels else ann["bbox"][2] * ann["bbox"][3]
        if ann["bbox"] is None:
            ann["bbox"] = [float(v) for v in mask_utils.toBbox(ann["segmentation"])]
        if ann["segmentation"] is None:
            del ann["segmentation"]
        kept.append(ann)
    if degenerate and not skip_degenerate:
        more = f" (and {len(degenerate) - 3} more)" if len(degenerate) > 3 else ""
        raise ValueError(
            f"{len(degenerate)} degenerate ground-truth annotation(s): {'; '.join(degenerate[:3])}{more}; "
            "pass skip_degenerate=True (command line: --skip-degenerate) to leave them out"
        )
    return kept, degenerate


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


def _results(
    results: Any, sizes: Mapping[int, tuple[int, int]], cat_ids: set[int], *, iou_type: str
) -> list[dict[str, Any]]:
    if not isinstance(results, list):
        raise TypeError(
            f"results must be a list of dicts or a path to a JSON list, got {type(results).__name__}"
        )
    out: list[dict[str, Any]] = []
    names: list[str] = []
    for i, res in enumerate(results):
        where = f"results[{i}]"
        if iou_type == "segm" and isinstance(res, Mapping) and "segmentation" not in res and "bbox" in res:
            raise ValueError(
                f"{where}: a box-only result (a 'bbox', no 'segmentation'); box results are analysed with "
                "iou_type='bbox' (command line: --iou-type bbox)"
            )
        from_mask = (
            iou_type == "bbox" and isinstance(res, Mapping) and "bbox" not in res and "segmentation" in res
        )
        geometry = "bbox" if iou_type == "bbox" and not from_mask else "segmentation"
        _require(res, ("image_id", "category_id", "score", geometry), where)
        image_id, category_id = _known_ids(res, where, sizes, cat_ids)
        where = f"{where} (image_id {image_id})"
        score = _as_finite(res["score"], where, "score")
        entry: dict[str, Any] = {"image_id": image_id, "category_id": category_id, "score": score}
        if iou_type == "segm":
            _rle.check_segmentation(res["segmentation"], *sizes[image_id], where, polygons=True)
            entry["segmentation"] = _rle.to_compressed(res["segmentation"], *sizes[image_id])
            names.append(where)
        elif from_mask:  # a box is the mask's bounding box
            _rle.check_segmentation(res["segmentation"], *sizes[image_id], where, polygons=True)
            rle = _rle.to_compressed(res["segmentation"], *sizes[image_id])
            _rle.check_compressed([rle], [where])
            entry["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
        else:
            entry["bbox"] = _bbox(res["bbox"], where)
        if iou_type == "bbox":
            entry["area"] = entry["bbox"][2] * entry["bbox"][3]
        out.append(entry)
    if iou_type == "segm":
        _rle.check_compressed([r["segmentation"] for r in out], names)
        for r, a in zip(out, _rle.areas([r["segmentation"] for r in out])):
            r["area"] = a
    return out


def prepare(gt: Any, results: Any, *, iou_type: str = "segm", skip_degenerate: bool = False) -> Prepared:
    """Load (if paths), validate and copy the ground truth and the results.

    Args:
        gt: a COCO ground-truth dict (``images``, ``annotations``, ``categories``) or a path to one.
            Annotations need ``id`` (non-zero, unique), ``image_id``, ``category_id`` and
            ``segmentation`` (polygons or RLE; with ``iou_type`` "bbox" a ``bbox`` may replace it); a
            missing ``area`` is computed from the mask, a missing ``iscrowd`` is taken as 0 and a missing
            ``bbox`` is the mask's bounding box.
        results: a list of COCO result dicts (``image_id``, ``category_id``, ``score``, and
            ``segmentation`` as polygons or RLE for "segm", ``bbox`` [x, y, w, h] for "bbox") or a path to
            one. For "segm" a ``bbox`` is ignored; for "bbox" a result without one takes its mask's
            bounding box.
        iou_type: "segm" or "bbox".
        skip_degenerate: leave out ground-truth annotations with a polygon of fewer than 3 points or (for
            "segm") a mask of zero area, listing them in ``skipped``, instead of raising.

    Raises:
        ValueError: naming the file (when a path was given) and the offending entry, for missing fields,
            unknown ids, annotation id 0, duplicate ids, masks whose size differs from their image's,
            degenerate annotations, empty or non-JSON files.
        TypeError: if ``gt`` is not a dict or ``results`` not a list.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    gt_file = os.fspath(gt) if isinstance(gt, (str, os.PathLike)) else None
    res_file = os.fspath(results) if isinstance(results, (str, os.PathLike)) else None
    gt = load_json(gt, "gt")
    results = load_json(results, "results")
    try:
        if not isinstance(gt, Mapping):
            raise TypeError(f"gt must be a COCO dict or a path to one, got {type(gt).__name__}")
        _require(gt, ("images", "annotations", "categories"), "gt")
        images, sizes = _images(gt)
        categories = _categories(gt)
        cat_ids = {c["id"] for c in categories}
        annotations, skipped = _annotations(
            gt, sizes, cat_ids, iou_type=iou_type, skip_degenerate=skip_degenerate
        )
    except (ValueError, TypeError) as err:
        raise type(err)(f"{gt_file}: {err}" if gt_file else str(err)) from None
    try:
        res = _results(results, sizes, cat_ids, iou_type=iou_type)
    except (ValueError, TypeError) as err:
        raise type(err)(f"{res_file}: {err}" if res_file else str(err)) from None
    data = Prepared(images, categories, annotations, res, sizes, iou_type=iou_type, skipped=skipped)
    data.gt_by_image = {image_id: [] for image_id in sizes}
    data.res_by_image = {image_id: [] for image_id in sizes}
    for j, ann in enumerate(annotations):
        data.gt_by_image[ann["image_id"]].append(j)
    for i, r in enumerate(res):
        data.res_by_image[r["image_id"]].append(i)
    return data
