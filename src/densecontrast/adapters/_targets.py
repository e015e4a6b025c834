"""Mask targets shared by the adapters: soft RoI masks to the loss's 1 / 0 / -1 masks.

Shapes: R RoIs, h x w the RoI grid.

This module is private and imports torch only; the framework modules re-export what users need.
"""

from __future__ import annotations

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
