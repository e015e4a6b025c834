"""Ground-truth boxes as RoIs: the dense contrastive loss for models without proposals.

Shapes: B images, G instances of an image, R RoIs kept in the batch, C channels, Hf x Wf a feature map,
Hm x Wm an image's masks, H x W the (padded) image frame, h x w the RoI grid.

One-stage instance segmenters (SparseInst, YOLO-seg, query-based models) have no proposals and no
per-RoI mask head. The paper applies the loss to them by cutting each ground-truth instance's box out of
the mask branch's dense output features with RoIAlign, and its mask out of the ground truth with the same
box. :func:`gt_box_rois` does both for a whole batch and returns what
:class:`~densecontrast.DenseContrastiveLoss` takes.

Coordinates: boxes are ``(x1, y1, x2, y2)`` in the pixel frame of the masks, where pixel ``i`` covers
``[i, i + 1)``; the masks of image ``b`` cover the top-left ``Hm x Wm`` of the ``H x W`` frame (the rest
is padding). The feature map covers the whole frame; its stride is inferred from ``H / Hf`` and
``W / Wf``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ._checks import (
    check_ignore_band,
    check_margin,
    check_output_size,
    check_size_pair,
)
from ._targets import boxes_from_masks, masks_from_soft

try:
    from torchvision.ops import roi_align
except ImportError as err:  # pragma: no cover - exercised only without torchvision
    raise ImportError(
        "densecontrast.adapters.rois needs torchvision (torchvision.ops.roi_align); install it with "
        "`pip install 'densecontrast[torchvision]'`"
    ) from err

__all__ = ["GtBoxRoIs", "gt_box_rois", "infer_stride"]


class GtBoxRoIs(NamedTuple):
    """What :func:`gt_box_rois` returns: the loss's inputs, and where each RoI came from.

    Attributes:
        feats: float tensor (R, C, h, w), the RoI features (in the graph of the feature map).
        masks: int8 tensor (R, h, w): 1 instance, 0 the rest of the box, -1 ignored (ignore pixels of the
            ground truth, padding, outside the frame, and the ``ignore_band``).
        boxes: float tensor (R, 4), each RoI's box in the masks' frame, margin included.
        batch_idx: int64 tensor (R,), the image of each RoI.
        instance_idx: int64 tensor (R,), the index of each RoI's instance within its image.
    """

    feats: Tensor
    masks: Tensor
    boxes: Tensor
    batch_idx: Tensor
    instance_idx: Tensor


def infer_stride(image: int, feature: int) -> float:
    """The stride of a feature axis of size ``feature`` over an image axis of size ``image``.

    An integer stride ``s`` is taken when the map's size is what a strided network gives for it,
    ``ceil(image / s)`` (a padded strided convolution) or ``floor(image / s)``. Several integers can fit
    a coarse map (``200 / 15`` and ``200 / 16`` both give 13), so powers of two come first, then the
    ``ceil`` reading before the ``floor`` one, then the stride nearest to ``image / feature``. When no
    integer fits, the exact ratio ``image / feature`` is returned (which is also how a map finer than the
    masks, such as 1/4-scale features over 1/8-scale masks, is read). A map of one or two cells is
    ambiguous between neighbouring powers of two: pass ``stride=`` to :func:`gt_box_rois` then.

    Examples:
        >>> infer_stride(640, 160), infer_stride(100, 13), infer_stride(200, 13), infer_stride(80, 160)
        (4.0, 8.0, 16.0, 0.5)
    """
    if (
        isinstance(image, bool)
        or isinstance(feature, bool)
        or not isinstance(image, int)
        or not isinstance(feature, int)
    ):
        raise TypeError(
            f"image and feature sizes must be ints; got {type(image).__name__} and {type(feature).__name__}"
        )
    if image <= 0 or feature <= 0:
        raise ValueError(f"image and feature sizes must be positive; got image={image}, feature={feature}")
    ratio = image / feature
    # Integers s with ceil(image / s) == feature or floor(image / s) == feature lie in
    # (image / (feature + 1), image / (feature - 1)).
    low = max(1, image // (feature + 1))
    high = -(-image // (feature - 1)) if feature > 1 else 2 * image
    best: tuple[int, int, float, int] | None = None
    for s in range(low, high + 1):
        ceil_fit, floor_fit = -(-image // s) == feature, image // s == feature
        if not (ceil_fit or floor_fit):
            continue
        rank = (0 if s & (s - 1) == 0 else 1, 0 if ceil_fit else 1, abs(math.log(s / ratio)), s)
        if best is None or rank < best:
            best = rank
    return float(best[3]) if best is not None else ratio


def _check_rois_inputs(
    feats: object, masks: object, boxes: object
) -> tuple[Tensor, list[Tensor], list[Tensor] | None]:
    if not isinstance(feats, Tensor):
        raise TypeError(f"feats must be a torch.Tensor (B, C, Hf, Wf); got {type(feats).__name__}")
    if feats.ndim != 4:
        raise ValueError(f"feats must have 4 dimensions (B, C, Hf, Wf); got shape {tuple(feats.shape)}")
    if not feats.is_floating_point():
        raise TypeError(f"feats must be a floating-point tensor; got dtype {feats.dtype}")
    batch = feats.shape[0]
    if isinstance(masks, Tensor) or not isinstance(masks, Sequence):
        raise TypeError(
            f"masks must be a list of B tensors (G, Hm, Wm), one per image; got {type(masks).__name__}"
        )
    if len(masks) != batch:
        raise ValueError(
            f"masks must hold one tensor per image: {batch} for feats {tuple(feats.shape)}; got {len(masks)}"
        )
    for b, m in enumerate(masks):
        if not isinstance(m, Tensor):
            raise TypeError(f"masks[{b}] must be a torch.Tensor (G, Hm, Wm); got {type(m).__name__}")
        if m.ndim != 3:
            raise ValueError(f"masks[{b}] must have 3 dimensions (G, Hm, Wm); got shape {tuple(m.shape)}")
        if m.device != feats.device:
            raise ValueError(f"masks[{b}] is on {m.device} but feats on {feats.device}; use one device")
    if boxes is None:
        return feats, list(masks), None
    if isinstance(boxes, Tensor) or not isinstance(boxes, Sequence):
        raise TypeError(
            f"boxes must be None or a list of B tensors (G, 4), one per image; got {type(boxes).__name__}"
        )
    if len(boxes) != batch:
        raise ValueError(f"boxes must hold one tensor per image: {batch}; got {len(boxes)}")
    for b, (bx, m) in enumerate(zip(boxes, masks)):
        if not isinstance(bx, Tensor):
            raise TypeError(f"boxes[{b}] must be a torch.Tensor (G, 4); got {type(bx).__name__}")
        if bx.shape != (m.shape[0], 4):
            raise ValueError(
                f"boxes[{b}] must have shape (G, 4) with G = {m.shape[0]} from masks[{b}] "
                f"{tuple(m.shape)}; got {tuple(bx.shape)}"
            )
        if bx.device != feats.device:
            raise ValueError(f"boxes[{b}] is on {bx.device} but feats on {feats.device}; use one device")
    return feats, list(masks), list(boxes)


def gt_box_rois(
    feats: Tensor,
    masks: Sequence[Tensor],
    boxes: Sequence[Tensor] | None = None,
    *,
    output_size: int | tuple[int, int] = 28,
    image_size: tuple[int, int] | None = None,
    margin: float = 0.0,
    ignore_band: float | None = None,
    sampling_ratio: int = -1,
    stride: float | tuple[float, float] | None = None,
) -> GtBoxRoIs:
    """Cut every ground-truth instance's box out of a dense feature map and out of its mask.

    The features are sampled with ``roi_align(..., aligned=True)`` at the map's stride (``stride``, or
    :func:`infer_stride` per axis); the instance masks with the same boxes on their own grid, then
    thresholded at 0.5. Instances without a single mask pixel are dropped. Pixels of an RoI that fall on
    ground-truth ignore pixels (-1), on an image's padding or outside the frame are -1 (ignored by the
    loss), so an enlarged box at the border does not count the outside as negatives.

    Args:
        feats: float tensor (B, C, Hf, Wf), the mask branch's output features of the batch.
        masks: B tensors (G, Hm, Wm), the instance masks of each image: 1 (or True, or > 0.5) on the
            instance, 0 off it, -1 ignored. Any dtype.
        boxes: B float tensors (G, 4), ``(x1, y1, x2, y2)`` in the masks' pixel frame; None derives the
            tight box of each mask.
        output_size: h x w of the RoI grid. Default 28 (the paper's 28 x 28).
        image_size: (H, W), the frame ``feats`` covers, in mask pixels; default the masks' common size
            (required when the images' masks differ in size, i.e. the batch was padded). Every image's
            masks must fit in it.
        margin: enlarge each box by this fraction of its width (height) on the left and right (top and
            bottom) sides, so that an object filling its box still has negatives. Default 0.
        ignore_band: also mark RoI pixels whose soft mask value lies within this distance of 0.5 as -1.
        sampling_ratio: RoIAlign's samples per bin and axis; -1 (default) adapts to the box size.
        stride: mask pixels per feature cell, a number or a pair ``(sy, sx)``; None (default) infers it
            per axis from ``image_size`` and the map's size (:func:`infer_stride`).

    Returns:
        A :class:`GtBoxRoIs` ``(feats, masks, boxes, batch_idx, instance_idx)`` with ``feats``
        (R, C, h, w) and ``masks`` (R, h, w) ready for ``DenseContrastiveLoss``; R = 0 gives empty
        tensors (and a loss of zero in the graph).

    Raises:
        TypeError: ``feats`` not a floating-point tensor, ``masks``/``boxes`` not lists of tensors,
            options of the wrong type.
        ValueError: shapes that do not agree, several mask sizes without ``image_size``, masks larger
            than ``image_size``, bad option values.

    Examples:
        >>> import torch
        >>> feats = torch.randn(1, 8, 16, 16)  # stride 4 over a 64 x 64 image
        >>> masks = torch.zeros(1, 2, 64, 64, dtype=torch.bool)
        >>> masks[0, 0, 8:40, 8:24] = True
        >>> rois = gt_box_rois(feats, list(masks), output_size=14, margin=0.25)
        >>> rois.feats.shape, rois.masks.shape, rois.instance_idx.tolist()  # instance 1 is empty
        (torch.Size([1, 8, 14, 14]), torch.Size([1, 14, 14]), [0])
        >>> rois.boxes.tolist()
        [[4.0, 0.0, 28.0, 48.0]]
    """
    feats, mask_list, box_list = _check_rois_inputs(feats, masks, boxes)
    size = check_output_size(output_size)
    margin = check_margin(margin)
    strides = _check_stride(stride)
    band = check_ignore_band(ignore_band)
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int) or sampling_ratio == 0:
        raise ValueError(f"sampling_ratio must be -1 (adaptive) or a positive int; got {sampling_ratio!r}")
    if image_size is None:
        sizes = {tuple(m.shape[-2:]) for m in mask_list}
        if len(sizes) > 1:
            raise ValueError(
                f"the images' masks have different sizes {sorted(sizes)}; pass image_size=(H, W), the "
                "padded frame the feature map covers"
            )
        frame = sizes.pop() if sizes else None
        if frame is None:  # B == 0
            frame = (feats.shape[-2], feats.shape[-1])
    else:
        frame = check_size_pair("image_size", image_size)
        for b, m in enumerate(mask_list):
            if m.shape[-2] > frame[0] or m.shape[-1] > frame[1]:
                raise ValueError(
                    f"masks[{b}] {tuple(m.shape)} is larger than image_size {tuple(frame)}: the masks must "
                    "fit in the frame the feature map covers (image_size is (H, W) in mask pixels)"
                )
    height, width = int(frame[0]), int(frame[1])
    if strides is None:
        sy, sx = infer_stride(height, feats.shape[-2]), infer_stride(width, feats.shape[-1])
    else:
        sy, sx = strides

    device = feats.device
    # Boxes and mask crops in float32, or float64 with float64 features (exact references in tests).
    box_dtype = torch.promote_types(feats.dtype, torch.float32)
    all_boxes, all_batch, all_inst, all_masks, all_nonempty = [], [], [], [], []
    for b, m in enumerate(mask_list):
        if m.shape[0] == 0:
            continue
        tight, nonempty = boxes_from_masks(m)  # an empty mask's box is finite (the frame); dropped below
        bx = (tight if box_list is None else box_list[b]).to(box_dtype)
        if margin > 0:
            wh = (bx[:, 2:] - bx[:, :2]).repeat(1, 2)
            bx = bx + margin * wh * bx.new_tensor([-1.0, -1.0, 1.0, 1.0])
        inst = torch.arange(m.shape[0], device=bx.device)
        all_masks.append(_crop_masks(m, bx, size, sampling_ratio, band))
        all_boxes.append(bx)
        all_batch.append(torch.full_like(inst, b))
        all_inst.append(inst)
        all_nonempty.append(nonempty.to(bx.device))
    # One host sync for the batch: which instances have pixels decides R.
    keep = torch.cat(all_nonempty).nonzero()[:, 0] if all_nonempty else None
    if keep is None or keep.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return GtBoxRoIs(
            feats.new_zeros((0, feats.shape[1], *size)) + feats.sum() * 0,
            torch.zeros((0, *size), dtype=torch.int8, device=device),
            torch.zeros((0, 4), dtype=box_dtype, device=device),
            empty,
            empty.clone(),
        )
    boxes_cat = torch.cat(all_boxes)[keep]
    batch_idx = torch.cat(all_batch)[keep]
    scale = boxes_cat.new_tensor([1 / sx, 1 / sy, 1 / sx, 1 / sy])
    rois = torch.cat([batch_idx[:, None].to(boxes_cat), boxes_cat * scale], dim=1)
    # Half-precision maps are sampled in float32 (box coordinates in half would be off by pixels).
    roi_feats = roi_align(feats.to(box_dtype), rois, size, 1.0, sampling_ratio, aligned=True)
    roi_feats = roi_feats.to(feats.dtype)
    return GtBoxRoIs(roi_feats, torch.cat(all_masks)[keep], boxes_cat, batch_idx, torch.cat(all_inst)[keep])


def _check_stride(stride: object) -> tuple[float, float] | None:
    if stride is None:
        return None
    is_number = isinstance(stride, (int, float)) and not isinstance(stride, bool)
    pair = (stride, stride) if is_number else stride
    if not isinstance(pair, (tuple, list)) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair
    ):
        raise TypeError(f"stride must be None, a number or a pair (sy, sx) of numbers; got {stride!r}")
    if len(pair) != 2 or not all(0 < v < math.inf for v in pair):
        raise ValueError(f"stride must be None, a number > 0 or a pair (sy, sx) of them; got {stride!r}")
    return float(pair[0]), float(pair[1])


def _crop_masks(
    masks: Tensor, boxes: Tensor, size: tuple[int, int], sampling_ratio: int, band: float | None
) -> Tensor:
    """RoI masks (G, h, w) int8 of one image's masks (G, Hm, Wm) cut with boxes (G, 4) in their frame."""
    g = masks.shape[0]
    dtype = boxes.dtype
    index = torch.arange(g, device=boxes.device, dtype=dtype)[:, None]
    rois = torch.cat([index, boxes], dim=1)
    inst = roi_align((masks > 0.5)[:, None].to(dtype), rois, size, 1.0, sampling_ratio, aligned=True)[:, 0]
    out = masks_from_soft(inst, ignore_band=band).to(torch.int8)
    # The frame outside this image's masks (padding, beyond the border) is ignored, not negative.
    ones = torch.ones((1, 1, *masks.shape[-2:]), dtype=dtype, device=masks.device)
    inside = roi_align(ones, torch.cat([index * 0, boxes], dim=1), size, 1.0, sampling_ratio, aligned=True)
    drop = inside[:, 0] < 0.5
    if masks.dtype not in (torch.bool, torch.uint8):  # signed or float masks may mark ignore pixels
        ignored = roi_align((masks < 0)[:, None].to(dtype), rois, size, 1.0, sampling_ratio, aligned=True)
        drop = drop | (ignored[:, 0] >= 0.5)
    return out.masked_fill(drop, -1)
