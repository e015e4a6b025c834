"""Gather of sampled pixel features.

Shapes: R RoIs, C channels, H x W RoI grid, N gathered pixels per RoI.

The released code indexes one RoI at a time, and autograd then writes a full-size zero gradient per RoI,
so its backward grows with the square of R. Here the forward is one batched gather and the backward
allocates the gradient of ``feats`` once and scatters into it once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._validation import check_floating, check_ndim, check_same_device, check_tensor, shape_str


def _is_channels_last(feats: Tensor) -> bool:
    return feats.is_contiguous(memory_format=torch.channels_last) and not feats.is_contiguous()


class _GatherPixels(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, feats: Tensor, index: Tensor) -> Tensor:
        r, c, h, w = feats.shape
        n = index.shape[1]
        channels_last = _is_channels_last(feats)
        ctx.save_for_backward(index)
        ctx.shape = (r, c, h, w)
        ctx.channels_last = channels_last
        if channels_last:
            # (R, H, W, C) is contiguous: each gathered pixel is one contiguous row of C values.
            rows = feats.permute(0, 2, 3, 1).reshape(r, h * w, c)
            return rows.gather(1, index.unsqueeze(2).expand(r, n, c))
        # Advanced indexing of the (R, H*W, C) view writes the (R, N, C) result contiguously, so the
        # projection that follows reads it without a copy.
        rows = torch.arange(r, device=index.device).unsqueeze(1)
        return feats.reshape(r, c, h * w).transpose(1, 2)[rows, index]

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None
        (index,) = ctx.saved_tensors
        r, c, h, w = ctx.shape
        n = index.shape[1]
        if ctx.channels_last:
            grad = grad_out.new_zeros((r, h * w, c))
            grad.scatter_add_(1, index.unsqueeze(2).expand(r, n, c), grad_out)
            return grad.reshape(r, h, w, c).permute(0, 3, 1, 2), None
        grad = grad_out.new_zeros((r, c, h * w))
        grad.scatter_add_(2, index.unsqueeze(1).expand(r, c, n), grad_out.transpose(1, 2))
        return grad.reshape(r, c, h, w), None


def gather_pixels(feats: Tensor, index: Tensor) -> Tensor:
    """Feature vectors of the pixels named by ``index``, for every RoI at once.

    Args:
        feats: float tensor (R, C, H, W), contiguous or channels_last.
        index: int64 tensor (R, N), flat row-major indices into H*W; an index may repeat.

    Returns:
        float tensor (R, N, C): ``out[r, n] = feats[r, :, index[r, n] // W, index[r, n] % W]``.

    The backward allocates one gradient of the size of ``feats`` (in its memory format) and scatters
    into it once, summing repeated indices. Indices are not range-checked here (that would synchronise
    with an accelerator); out-of-range indices raise inside ``torch.gather`` on the CPU.

    Examples:
        >>> feats = torch.arange(8.0).reshape(1, 2, 2, 2)   # C = 2 channels on a 2 x 2 grid
        >>> gather_pixels(feats, torch.tensor([[3, 0, 3]]))
        tensor([[[3., 7.],
                 [0., 4.],
                 [3., 7.]]])
    """
    feats = check_tensor("feats", feats)
    index = check_tensor("index", index)
    check_ndim("feats", feats, 4, "(R, C, H, W)")
    check_ndim("index", index, 2, "(R, N)")
    check_floating("feats", feats)
    if index.dtype != torch.int64:
        raise TypeError(f"index must be an int64 tensor; got dtype {index.dtype}")
    if index.shape[0] != feats.shape[0]:
        raise ValueError(
            f"index must have shape (R, N) with R matching feats (R, C, H, W); "
            f"got index {shape_str(index.shape)} for feats {shape_str(feats.shape)}"
        )
    check_same_device(feats=feats, index=index)
    out: Tensor = _GatherPixels.apply(feats, index)
    return out
