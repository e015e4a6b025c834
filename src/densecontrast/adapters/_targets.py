"""Mask targets shared by the adapters: the ground truth of each RoI on the loss's grid.

Shapes: B images, G ground-truth instances of an image, N instances of a batch, P positive proposals of
an image, R RoIs, h x w the RoI grid, Hi x Wi an image, Hm x Wm a batch's mask maps.

- :func:`masks_from_soft` turns soft RoI masks into the loss's 1 / 0 / -1 masks;
- :func:`match_positives`, :func:`project_masks` and :func:`positive_mask_targets` rebuild the ground
  truth of proposal RoIs the way two-stage detectors do (torchvision's Mask R-CNN: each positive
  proposal matched to its best-IoU ground truth, whose mask is cropped and resized to the RoI grid);
- :func:`boxes_from_masks` gives the tight boxes of masks, for ground-truth-box RoIs;
- :func:`instance_masks` reads per-segment labels with an ignore value (Hugging Face's mask labels) as
  instance masks;
- :func:`batch_instances` reads the per-image masks and boxes of a batch laid out as Ultralytics'
  segmentation dataloader lays it out (index maps or per-instance masks, normalised boxes).

This module is private and imports torch only (torchvision's ops are imported where used); the framework
modules re-export what users need.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor


def masks_from_soft(soft: Tensor, *, ignore_band: float | None = None) -> Tensor:
    """Threshold soft RoI masks at 0.5, optionally marking uncertain pixels as ignored.

    Args:
        soft: float tensor (R, h, w) with values in [0, 1].
        ignore_band: when given, pixels with ``|soft - 0.5| < ignore_band`` become -1 (ignore).

    Returns:
        bool tensor (R, h, w) when ``ignore_band`` is None, else int8 with 1 / 0 / -1.

    Examples:
        >>> import torch
        >>> soft = torch.tensor([[[0.0, 0.45, 0.5, 0.9]]])
        >>> masks_from_soft(soft).int().tolist()
        [[[0, 0, 1, 1]]]
        >>> masks_from_soft(soft, ignore_band=0.1).tolist()
        [[[0, -1, -1, 1]]]
    """
    inside = soft >= 0.5
    if ignore_band is None:
        return inside
    masks = inside.to(torch.int8)
    return masks.masked_fill((soft - 0.5).abs() < ignore_band, -1)


def boxes_from_masks(masks: Tensor) -> tuple[Tensor, Tensor]:
    """Tight boxes around each mask's instance pixels (value 1, or > 0.5), in pixel-edge coordinates.

    Args:
        masks: tensor (G, H, W).

    Returns:
        ``(boxes, nonempty)``: float32 (G, 4) boxes (x1, y1, x2, y2) with pixel ``i`` covering
        ``[i, i + 1)``, and bool (G,) telling which masks hold at least one instance pixel (the boxes of
        the others are meaningless).
    """
    inst = masks > 0.5
    rows = inst.any(dim=2)  # (G, H)
    cols = inst.any(dim=1)  # (G, W)
    h, w = masks.shape[-2:]
    y1 = rows.to(torch.uint8).argmax(dim=1)
    y2 = h - rows.flip(1).to(torch.uint8).argmax(dim=1)
    x1 = cols.to(torch.uint8).argmax(dim=1)
    x2 = w - cols.flip(1).to(torch.uint8).argmax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).to(torch.float32)
    return boxes, rows.any(dim=1)


def match_positives(gt_boxes: Tensor, boxes: Tensor) -> Tensor:
    """Index of the ground truth each positive proposal was matched to, as torchvision's ``Matcher`` does.

    torchvision matches every proposal to the ground truth of largest IoU (first one on ties); for the
    positives (IoU >= 0.5) that index is kept, so the column-wise maximum recovers it.

    Args:
        gt_boxes: float tensor (G, 4), ground-truth boxes (x1, y1, x2, y2) of one image.
        boxes: float tensor (P, 4), the image's positive proposals.

    Returns:
        int64 tensor (P,) with values in [0, G).

    Raises:
        ValueError: there are proposals but no ground truth.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    if gt_boxes.shape[0] == 0:
        raise ValueError(
            f"gt_boxes is empty (shape {tuple(gt_boxes.shape)}) but boxes holds {boxes.shape[0]} positive "
            "proposals; positives need a ground truth to match. Pass the image's ground-truth boxes (G, 4) "
            "with G >= 1, or no positive proposals"
        )
    from torchvision.ops import box_iou

    iou = box_iou(gt_boxes.to(boxes.dtype), boxes)  # (G, P)
    return iou.max(dim=0).indices


def project_masks(gt_masks: Tensor, boxes: Tensor, matched: Tensor, size: tuple[int, int]) -> Tensor:
    """Crop and resize each proposal's matched ground-truth mask to the mask grid (soft values).

    The same computation as torchvision's mask targets: ``roi_align`` with spatial scale 1.0 and the
    default sampling ratio, in the dtype of ``boxes``.

    Args:
        gt_masks: tensor (G, Hi, Wi), the image's instance masks (uint8, bool or float).
        boxes: float tensor (P, 4), the proposals in image coordinates.
        matched: int64 tensor (P,), the ground truth of each proposal.
        size: (h, w), the grid.

    Returns:
        float tensor (P, h, w) with values in [0, 1].
    """
    from torchvision.ops import roi_align

    rois = torch.cat([matched[:, None].to(boxes), boxes], dim=1)  # (P, 5)
    return roi_align(gt_masks[:, None].to(rois), rois, size, 1.0)[:, 0]


def positive_mask_targets(
    targets: list[dict[str, Tensor]], proposals: list[Tensor], size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Soft ground-truth masks and labels of a batch's positive proposals, in torchvision's order.

    Args:
        targets: B dicts with ``"boxes"`` (G, 4), ``"labels"`` (G,) and ``"masks"`` (G, Hi, Wi), as
            produced by the model's transform (the input of ``roi_heads``).
        proposals: B float tensors (P, 4), the positive proposals (the input of ``mask_roi_pool``).
        size: (h, w), the mask grid.

    Returns:
        ``(soft, labels)``: float tensor (R, h, w) and int64 tensor (R,), R = sum of the P.
    """
    if len(targets) != len(proposals):
        raise ValueError(
            f"targets and proposals must hold one entry per image; got {len(targets)} targets and "
            f"{len(proposals)} proposal tensors"
        )
    soft, labels = [], []
    for target, boxes in zip(targets, proposals):
        matched = match_positives(target["boxes"], boxes)
        if boxes.shape[0] == 0:
            soft.append(boxes.new_zeros((0, *size)))
        else:
            soft.append(project_masks(target["masks"], boxes, matched, size))
        labels.append(target["labels"][matched])
    return torch.cat(soft), torch.cat(labels)


def instance_masks(
    mask_labels: Sequence[Tensor],
    class_labels: Sequence[Tensor],
    *,
    instance_classes: Collection[int] | None = None,
    pixel_mask: Tensor | None = None,
) -> list[Tensor]:
    """The instance segments of a batch's labels as 1 / 0 / -1 masks, the ignore value never foreground.

    A label pixel in [0.5, 1] is the instance (1), one in [0, 0.5) is not (0), and any other value, such
    as the image processor's padding with ``ignore_index=255``, is ignored (-1). Where ``pixel_mask`` is 0
    (padding) every segment is -1 too. Segments whose class is not in ``instance_classes`` (stuff,
    background) are left out.

    Args:
        mask_labels: B float tensors (G, H, W), the model's ``mask_labels``.
        class_labels: B int64 tensors (G,), the model's ``class_labels``.
        instance_classes: class ids that count as instances; None (default) keeps every segment.
        pixel_mask: int or bool tensor (B, H, W), 1 on the image and 0 on padding, or None. Applied when its
            size equals the labels' size.

    Returns:
        B int8 tensors (G', H, W) with G' <= G the kept segments, in their order.

    Raises:
        TypeError: labels that are not lists of tensors.
        ValueError: lists of different lengths, or shapes that do not agree.

    Examples:
        >>> import torch
        >>> labels = torch.tensor([[[0.0, 1.0, 255.0]], [[1.0, 0.0, 255.0]]])  # two segments, padded
        >>> [m.tolist() for m in instance_masks([labels], [torch.tensor([3, 0])], instance_classes={3})]
        [[[[0, 1, -1]]]]
    """
    _check_labels(mask_labels, class_labels)
    wanted = None if instance_classes is None else _class_ids(instance_classes)
    out = []
    for b, (labels, classes) in enumerate(zip(mask_labels, class_labels)):
        if wanted is not None:
            keep = torch.isin(classes, wanted.to(classes.device))
            labels = labels[keep.to(labels.device)]
        masks = torch.zeros(labels.shape, dtype=torch.int8, device=labels.device)
        masks = masks.masked_fill((labels >= 0.5) & (labels <= 1), 1)
        masks = masks.masked_fill(~((labels >= 0) & (labels <= 1)), -1)  # NaN, negative, 255: ignored
        if pixel_mask is not None and tuple(pixel_mask.shape[-2:]) == tuple(labels.shape[-2:]):
            masks = masks.masked_fill(pixel_mask[b].to(labels.device) == 0, -1)
        out.append(masks)
    return out


def batch_instances(
    batch: Mapping[str, Any], num_images: int, *, overlap_mask: bool
) -> tuple[list[Tensor], list[Tensor]]:
    """Per-image instance masks and boxes from the batch dict Ultralytics builds for segmentation.

    Args:
        batch: with ``"masks"`` ((B, Hm, Wm) index maps when ``overlap_mask``, where instance j of an
            image is ``mask == j + 1``; else (N, Hm, Wm), one per instance), ``"bboxes"`` (N, 4)
            normalised (cx, cy, w, h) and ``"batch_idx"`` (N,), the image of each instance. Instances of
            an image appear in the batch in the order of their index in the map.
        num_images: B.
        overlap_mask: the trainer's ``overlap_mask`` setting, which decides the layout of ``"masks"``.

    Returns:
        ``(masks, boxes)``: B bool tensors (G, Hm, Wm) and B float tensors (G, 4), boxes as
        ``(x1, y1, x2, y2)`` in mask pixels (the normalised boxes scaled to Hm x Wm).

    Raises:
        ValueError: a batch whose masks do not fit ``overlap_mask`` or ``batch_idx`` (with
            ``overlap_mask=True``, also an index map whose largest value exceeds its image's instances).
    """
    for key in ("masks", "bboxes", "batch_idx"):
        if key not in batch:
            raise ValueError(
                f"the batch has no {key!r}; expected Ultralytics' segmentation batch dict (keys img, masks, "
                f"bboxes, batch_idx, cls); got keys {sorted(batch)}. Call model(batch) with the batches of "
                "Ultralytics' segmentation dataloader"
            )
    masks, bboxes = batch["masks"], batch["bboxes"]
    batch_idx = batch["batch_idx"].reshape(-1).long()
    if bboxes.shape[0] != batch_idx.shape[0]:
        raise ValueError(
            f"expected one box per instance in batch['bboxes'], (N, 4) with N = {batch_idx.shape[0]} from "
            f"batch['batch_idx'] {tuple(batch_idx.shape)}; got {tuple(bboxes.shape)}. Build the batch with "
            "Ultralytics' collate function, which keeps them aligned"
        )
    hm, wm = masks.shape[-2:]
    if overlap_mask and masks.shape[0] != num_images:
        raise ValueError(
            f"overlap_mask=True expects one index map per image, (B, Hm, Wm) with B = {num_images}; got "
            f"batch['masks'] {tuple(masks.shape)}. Is the trainer's overlap_mask setting the one the "
            "batch was built with?"
        )
    if not overlap_mask and masks.shape[0] != batch_idx.shape[0]:
        raise ValueError(
            f"overlap_mask=False expects one mask per instance, (N, Hm, Wm) with N = {batch_idx.shape[0]}; "
            f"got batch['masks'] {tuple(masks.shape)}"
        )
    cxcy, wh = bboxes[:, :2].float(), bboxes[:, 2:].float()
    scale = bboxes.new_tensor([wm, hm], dtype=torch.float32)
    xyxy = torch.cat([(cxcy - wh / 2) * scale, (cxcy + wh / 2) * scale], dim=1)
    counts = torch.bincount(batch_idx, minlength=num_images).tolist()  # host sync: instances per image
    if len(counts) > num_images:
        raise ValueError(
            f"batch['batch_idx'] refers to image {len(counts) - 1} but the batch has {num_images}"
        )
    if overlap_mask and num_images > 0:
        # (B, Hm, Wm) per-instance masks of a batch with as many instances as images pass the shape check;
        # read as index maps they would drop instances. An index map never exceeds its image's count.
        maxima = masks.reshape(num_images, -1).amax(dim=1).tolist()  # host sync, one per batch
        for b, (peak, count) in enumerate(zip(maxima, counts)):
            if peak > count:
                raise ValueError(
                    f"batch['masks'][{b}] has values up to {peak:g} but image {b} has {count} instances in "
                    "batch['batch_idx']: with overlap_mask=True each map holds the values 1..count of its "
                    "image. The masks look per-instance (N, Hm, Wm); set overlap_mask=False"
                )
    out_masks, out_boxes = [], []
    for b, count in enumerate(counts):
        rows = (batch_idx == b).nonzero()[:, 0]
        out_boxes.append(xyxy[rows])
        if overlap_mask:  # the image's instances, in batch order, are the values 1..count of its map
            index = torch.arange(1, count + 1, device=masks.device)
            out_masks.append(masks[b][None] == index[:, None, None])
        else:
            out_masks.append(masks[rows] > 0.5)
    return out_masks, out_boxes


def _check_labels(mask_labels: object, class_labels: object) -> None:
    for name, value in (("mask_labels", mask_labels), ("class_labels", class_labels)):
        if isinstance(value, Tensor) or not isinstance(value, Sequence):
            raise TypeError(f"{name} must be a list of B tensors, one per image; got {type(value).__name__}")
    mask_labels = cast(Sequence[Any], mask_labels)
    class_labels = cast(Sequence[Any], class_labels)
    if len(mask_labels) != len(class_labels):
        raise ValueError(
            f"mask_labels and class_labels must hold one tensor per image; got {len(mask_labels)} and "
            f"{len(class_labels)}"
        )
    for b, (labels, classes) in enumerate(zip(mask_labels, class_labels)):
        if not isinstance(labels, Tensor) or not isinstance(classes, Tensor):
            raise TypeError(
                f"mask_labels[{b}] and class_labels[{b}] must be tensors; got {type(labels).__name__} and "
                f"{type(classes).__name__}"
            )
        if labels.ndim != 3 or classes.shape != (labels.shape[0],):
            raise ValueError(
                f"mask_labels[{b}] must have shape (G, H, W) and class_labels[{b}] shape (G,); got "
                f"{tuple(labels.shape)} and {tuple(classes.shape)}"
            )


def _class_ids(instance_classes: object) -> Tensor:
    if isinstance(instance_classes, (str, bytes, Tensor)) or not isinstance(instance_classes, Collection):
        raise TypeError(
            "instance_classes must be None or a collection of int class ids; got "
            f"{type(instance_classes).__name__}"
        )
    ids = list(instance_classes)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise TypeError(f"instance_classes must hold int class ids; got {ids!r}")
    return torch.tensor(ids, dtype=torch.int64)
