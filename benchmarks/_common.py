"""Inputs and helpers shared by the benchmarks."""

from __future__ import annotations

import torch


def roi_batch(
    num_rois: int, channels: int = 256, size: int = 28, device: torch.device | str = "cpu", seed: int = 0
):
    """Features and disc-shaped instance masks (about 40% of each RoI) for R RoIs."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(num_rois, channels, size, size, generator=g).to(device)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.randint(size // 3, 2 * size // 3, (num_rois, 2), generator=g)
    radius = size * 0.36
    masks = (yy[None] - centre[:, 0, None, None]) ** 2 + (
        xx[None] - centre[:, 1, None, None]
    ) ** 2 < radius**2
    return feats.requires_grad_(True), masks.to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
