"""Write an instance-segmentation dataset in the YOLO format that Ultralytics trains on.

Shape letters: N instances of an image, H x W the image size.

The layout (one folder per split)::

    root/
        data.yaml                 path, train, val, names
        images/train/000001.png   ...
        labels/train/000001.txt   one line per instance: class x1 y1 x2 y2 ... (polygon, normalised)
        report.json               how faithfully each split's polygons give the masks back

**One polygon per instance, holes and parts included** (:func:`~densecontrast.data.polygons.mask_to_polygon`):
filled the way Ultralytics fills it, the polygon gives the mask back exactly, except the pixels under
the bridges that join an instance's parts.

**The round trip is measured, never assumed.** After writing a split, every instance's polygon is read
back from the label file and filled the way Ultralytics' ``YOLODataset`` does (its own resampling and
``polygon2mask``), in both ``overlap_mask`` modes (one mask per instance, and one index map per image
with smaller instances drawn over larger ones), and compared with the instance's mask. ``report.json``
gives the figures; instances whose IoU falls below ``min_iou`` in either mode, and masks that could not be
written (empty ones), are listed there and in a :class:`YoloExportWarning`.

Needs ``pillow`` (images), ``opencv-python`` (outlines, filling) and ``ultralytics`` (its resampling and
rasterisation, for the round trip); all come with ``pip install 'densecontrast[ultralytics]'``.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from .iterate import iterate_items
from .polygons import normalise, outline

__all__ = ["DEFAULT_MIN_IOU", "YoloExportWarning", "export_yolo"]

DEFAULT_MIN_IOU = 0.9
"""The IoU under which an instance's written polygon counts as unfaithful to its mask (and is reported)."""

_DECIMALS = 6  # normalised coordinates are written with this many decimals


class YoloExportWarning(UserWarning):
    """An export that is not faithful everywhere, or a validation split that is the training split."""


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside this package, for a warning of the calling function."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here:
        frame, level = frame.f_back, level + 1
    return level


def _imports() -> tuple[Any, Any, Any]:
    try:
        import cv2
        import numpy as np
        from PIL import Image
        from ultralytics.data.utils import polygon2mask  # noqa: F401  (checked here, used in _round_trip)
    except ImportError as err:
        raise ImportError(
            f"exporting to the YOLO format needs opencv-python, pillow and ultralytics ({err.name} is "
            "missing); install them with `pip install 'densecontrast[ultralytics]'`"
        ) from err
    return cv2, np, Image


def _round_trip(polygons: list[list[float]], height: int, width: int) -> tuple[Any, Any]:
    """The masks Ultralytics' YOLODataset makes of one image's label polygons, bool (N, H, W) each:
    one mask per instance (``overlap_mask=False``) and the instances' regions of the index map
    (``overlap_mask=True``)."""
    _, np, _ = _imports()
    from ultralytics.data.utils import polygon2mask, polygons2masks_overlap
    from ultralytics.utils.ops import resample_segments

    count = len(polygons)
    single = np.zeros((count, height, width), dtype=bool)
    overlap = np.zeros((count, height, width), dtype=bool)
    if not count:
        return single, overlap
    # As YOLODataset: float32 normalised points, resampled to one length per image, then scaled.
    segments = [np.array(p, dtype=np.float32).reshape(-1, 2) for p in polygons]
    longest = max(len(s) for s in segments)
    length = longest + 1 if longest > 1000 else 1000
    segments = resample_segments(segments, n=length)
    scale = np.array([width, height], dtype=np.float32)
    segments = [s * scale for s in segments]
    for k, s in enumerate(segments):
        single[k] = polygon2mask((height, width), [s.reshape(-1)], color=1).astype(bool)
    index_map, order = polygons2masks_overlap((height, width), segments)
    for rank, k in enumerate(order.tolist()):
        overlap[k] = index_map == rank + 1
    return single, overlap


def _iou(a: Any, b: Any) -> Any:
    """IoU of bool masks (N, H, W) pairwise by index, float64 (N,); 1 where both are empty."""
    inter = (a & b).reshape(len(a), -1).sum(axis=1)
    union = (a | b).reshape(len(a), -1).sum(axis=1)
    return inter / union.clip(min=1) + (union == 0)


def _write_split(
    dataset: Any, root: pathlib.Path, split: str, num_classes: int | None, min_iou: float
) -> tuple[int, dict[str, Any]]:
    """Write one split; returns the largest label seen (0 for none) and the split's report."""
    _, np, image_cls = _imports()
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    top = 0
    ious: list[float] = []
    ious_overlap: list[float] = []
    unfaithful: list[dict[str, Any]] = []
    with_holes = with_parts = count = 0
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
        count += 1
        stem = f"{index + 1:06d}"
        pixels = torch.round(image.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).contiguous()
        image_cls.fromarray(pixels.numpy()).save(images / f"{stem}.png")
        height, width = target["masks"].shape[-2:]
        lines, written, shapes = [], [], []
        for k, (mask, label) in enumerate(zip(target["masks"], values)):
            path, parts, holes = outline(mask)
            with_parts += parts > 1
            with_holes += holes > 0
            if len(path) == 0:
                unfaithful.append({"image": stem, "instance": k, "label": label, "pixels": 0,
                                   "reason": "empty mask: no polygon written"})  # fmt: skip
                continue
            text = [f"{v:.{_DECIMALS}f}" for v in normalise(path, height, width).reshape(-1).tolist()]
            lines.append(" ".join([str(label - 1), *text]))
            written.append(k)
            shapes.append((parts, holes))
        (labels / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        # Read back what was written, as text, and fill it the way Ultralytics does.
        polygons = [[float(v) for v in line.split()[1:]] for line in lines]
        single, overlap = _round_trip(polygons, int(height), int(width))
        truth = target["masks"][written].bool().cpu().numpy()
        for j, (iou, iou_overlap) in enumerate(
            zip(_iou(single, truth).tolist(), _iou(overlap, truth).tolist())
        ):
            k, (parts, holes) = written[j], shapes[j]
            ious.append(iou)
            ious_overlap.append(iou_overlap)
            if min(iou, iou_overlap) < min_iou:
                if parts > 1:
                    reason = f"in {parts} parts: the bridges joining them cover pixels between them"
                elif iou >= min_iou:
                    reason = "overlap_mask: a smaller instance's bridge is drawn over it"
                else:
                    reason = "the polygon's filling differs from the mask"
                unfaithful.append({
                    "image": stem, "instance": k, "label": values[k], "pixels": int(truth[j].sum()),
                    "parts": parts, "holes": holes, "iou": iou, "iou_overlap": iou_overlap, "reason": reason,
                })  # fmt: skip
    report = {
        "images": count,
        "instances": len(ious),
        "with_holes": with_holes,
        "in_parts": with_parts,
        "min_iou": min(ious, default=1.0),
        "min_iou_overlap": min(ious_overlap, default=1.0),
        "mean_iou": float(np.mean(ious)) if ious else 1.0,
        "mean_iou_overlap": float(np.mean(ious_overlap)) if ious_overlap else 1.0,
        "unfaithful": unfaithful,
    }
    return top, report


def export_yolo(
    dataset: Any,
    root: str | os.PathLike[str],
    *,
    val_dataset: Any | None = None,
    names: Sequence[str] | None = None,
    min_iou: float = DEFAULT_MIN_IOU,
) -> pathlib.Path:
    """Write ``dataset`` (and a validation set) as a YOLO-format segmentation dataset.

    Every instance becomes one polygon that keeps its holes and parts (:func:`mask_to_polygon`); after
    writing, each polygon is read back and filled as Ultralytics does, and ``root/report.json`` records
    the IoU with the instance's mask (see the module docstring).

    Args:
        dataset: items ``(image, target)`` with image float (3, H, W) in [0, 1] and target holding
            ``masks`` (N, H, W) and ``labels`` (N,) int, categories numbered from 1 (as
            ``SyntheticInstances`` gives them); YOLO classes are ``label - 1``.
        root: the folder to write (created if missing).
        val_dataset: the validation split, written to ``images/val``. None points ``val`` at the
            training images and warns (validation metrics then measure the fit to the training set);
            pass ``val_dataset=dataset`` to choose that on purpose, without the warning.
        names: the class names, index ``label - 1``; default ``dataset.categories``' names, else
            ``class0``, ``class1``, ... up to the largest label.
        min_iou: an instance whose round-trip IoU falls below this (in either ``overlap_mask`` mode) is
            listed in ``report.json`` and in a :class:`YoloExportWarning`.

    Returns:
        The path of ``data.yaml``, to pass as ``YOLO(...).train(data=...)``; ``report.json`` lies beside it.

    Raises:
        ValueError: a label outside ``[1, len(names)]`` (the message names the split and image index), or
            ``min_iou`` outside [0, 1].
        ImportError: opencv-python, pillow or ultralytics missing (before anything is written).

    Warns:
        YoloExportWarning: no ``val_dataset``; or instances whose polygon does not give their mask back
            within ``min_iou``, or masks that could not be written (the warning names the worst ones).

    From :data:`~densecontrast.data.iterate.WORKER_MIN_ITEMS` items on, the items are generated in a
    DataLoader worker process (:func:`~densecontrast.data.iterate_items`); the files are the same either way.

    Examples:
        >>> import tempfile
        >>> from densecontrast.data import SyntheticInstances
        >>> train = SyntheticInstances(2, image_size=32, num_categories=2, seed=0)
        >>> val = SyntheticInstances(1, image_size=32, num_categories=2, seed=0, split="val")
        >>> path = export_yolo(train, tempfile.mkdtemp(), val_dataset=val)
        >>> sorted(p.name for p in (path.parent / "labels" / "train").iterdir())
        ['000001.txt', '000002.txt']
    """
    _imports()  # fail before writing anything
    if isinstance(min_iou, bool) or not isinstance(min_iou, (int, float)) or not 0.0 <= min_iou <= 1.0:
        raise ValueError(f"min_iou must be a number in [0, 1]; got {min_iou!r}")
    root = pathlib.Path(root).resolve()
    if names is None:
        categories = getattr(dataset, "categories", None)
        if categories:
            names = [str(c["name"]) for c in sorted(categories, key=lambda c: c["id"])]
    num_classes = None if names is None else len(names)
    top, train_report = _write_split(dataset, root, "train", num_classes, min_iou)
    reports = {"train": train_report}
    separate_val = val_dataset is not None and val_dataset is not dataset
    if separate_val:
        val_top, reports["val"] = _write_split(val_dataset, root, "val", num_classes, min_iou)
        top = max(top, val_top)
    if names is None:
        names = [f"class{i}" for i in range(max(top, 1))]
    val = "images/val" if separate_val else "images/train"
    lines = [
        f"path: {json.dumps(str(root))}",
        'train: "images/train"',
        f"val: {json.dumps(val)}",
        "names:",
        *(f"  {i}: {json.dumps(str(n))}" for i, n in enumerate(names)),
    ]
    path = root / "data.yaml"
    path.write_text("\n".join(lines) + "\n")
    report_path = root / "report.json"
    report_path.write_text(json.dumps({"min_iou": min_iou, "val": val, "splits": reports}, indent=1))
    if val_dataset is None:
        warnings.warn(
            f"export_yolo: no val_dataset, so {path} points 'val' at the training images: validation "
            "metrics will measure the fit to the training set. Pass val_dataset=<another split> (or "
            "val_dataset=dataset to validate on the training images on purpose).",
            YoloExportWarning,
            stacklevel=_user_stacklevel(),
        )
    _warn_unfaithful(reports, min_iou, report_path)
    return path


def _warn_unfaithful(reports: dict[str, dict[str, Any]], min_iou: float, report_path: pathlib.Path) -> None:
    listed = [(split, entry) for split, report in reports.items() for entry in report["unfaithful"]]
    if not listed:
        return
    listed.sort(key=lambda item: min(item[1].get("iou", 0.0), item[1].get("iou_overlap", 0.0)))
    total = sum(report["instances"] for report in reports.values())

    def describe(split: str, entry: dict[str, Any]) -> str:
        where = f"{split} image {entry['image']} instance {entry['instance']}"
        if "iou" not in entry:
            return f"{where}: {entry['reason']}"
        return f"{where}: IoU {min(entry['iou'], entry['iou_overlap']):.3f} ({entry['reason']})"

    worst = "; ".join(describe(split, entry) for split, entry in listed[:3])
    warnings.warn(
        f"export_yolo: {len(listed)} of {total} instances are not written faithfully (round-trip IoU "
        f"< {min_iou}, or nothing written); worst: {worst}. Every one is listed in {report_path}.",
        YoloExportWarning,
        stacklevel=_user_stacklevel(),
    )
