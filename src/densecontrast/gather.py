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


def _gather(feats: Tensor, index: Tensor) -> Tensor:
    r, c, h, w = feats.shape
    if _is_channels_last(feats):
        # (R, H, W, C) is contiguous: each gathered pixel is one contiguous row of C values.
        rows = feats.permute(0, 2, 3, 1).reshape(r, h * w, c)
        return rows.gather(1, index.unsqueeze(2).expand(r, index.shape[1], c))
    # Advanced indexing of the (R, H*W, C) view writes the (R, N, C) result contiguously, so the
    # projection that follows reads it without a copy.
    roi = torch.arange(r, device=index.device).unsqueeze(1)
    return feats.reshape(r, c, h * w).transpose(1, 2)[roi, index]


def _scatter_add_(grad: Tensor, index: Tensor, grad_rows: Tensor) -> Tensor:
    """Add ``grad_rows`` (R, N, C) into ``grad`` (R, C, H, W) at ``index`` (R, N), in place; returns grad."""
    r, c, h, w = grad.shape
    n = index.shape[1]
    if _is_channels_last(grad):
        rows_view = grad.permute(0, 2, 3, 1).reshape(r, h * w, c)  # a view: grad is channels_last
        rows_view.scatter_add_(1, index.unsqueeze(2).expand(r, n, c), grad_rows)
    else:
        grad.view(r, c, h * w).scatter_add_(2, index.unsqueeze(1).expand(r, c, n), grad_rows.transpose(1, 2))
    return grad


def _dense_like(feats_shape: tuple[int, ...], channels_last: bool, like: Tensor) -> Tensor:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(feats_shape, dtype=like.dtype, device=like.device, memory_format=memory_format).zero_()


class _GatherPixels(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, feats: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.shape = tuple(feats.shape)
        ctx.channels_last = _is_channels_last(feats)
        return _gather(feats, index)

    @staticmethod
    def backward(ctx: Any, grad_rows: Tensor) -> tuple[Tensor | None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None
        (index,) = ctx.saved_tensors
        grad = _dense_like(ctx.shape, ctx.channels_last, grad_rows)
        return _scatter_add_(grad, index, grad_rows), None


class _GatherPassthrough(torch.autograd.Function):
    """``(feats, rows)``: feats unchanged, plus the gathered rows.

    The backward adds the rows' gradient into the gradient that arrives for the passed-through feats,
    in place, instead of allocating a second dense gradient of the size of feats and summing the two.
    Contract: the passed-through tensor feeds exactly one operation whose backward returns a fresh
    gradient tensor of its own (a convolution does); callers that cannot promise this use
    :func:`gather_pixels`.
    """

    @staticmethod
    def forward(ctx: Any, feats: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(index)
        ctx.shape = tuple(feats.shape)
        ctx.channels_last = _is_channels_last(feats)
        return feats.view_as(feats), _gather(feats, index)

    @staticmethod
    def backward(ctx: Any, grad_feats: Tensor | None, grad_rows: Tensor | None) -> tuple[Tensor | None, None]:
        if grad_rows is None:
            return grad_feats, None
        (index,) = ctx.saved_tensors
        if grad_feats is None:
            grad = _dense_like(ctx.shape, ctx.channels_last, grad_rows)
        elif torch.is_grad_enabled() or not (
            grad_feats.is_contiguous() or grad_feats.is_contiguous(memory_format=torch.channels_last)
        ):
            grad = grad_feats.contiguous().clone()  # double backward, or an expanded / strided gradient
        else:
            grad = grad_feats
        return _scatter_add_(grad, index, grad_rows.to(grad.dtype)), None


def gather_pixels_passthrough(feats: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Gather like :func:`gather_pixels`, and pass ``feats`` through for the layer that reads it next.

    For adapters: when the RoI features feed both the mask head's next layer and the loss, routing the
    layer's input through the first output lets the backward add the loss's gradient into the layer's
    input gradient in place, so training holds one dense gradient of ``feats`` instead of two.
    The first output must feed exactly one operation whose backward returns a fresh gradient (such as a
    convolution); otherwise use :func:`gather_pixels`.

    Args:
        feats: float tensor (R, C, H, W).
        index: int64 tensor (R, N).

    Returns:
        ``(feats_out, rows)``: feats_out (R, C, H, W) equal to feats, rows float tensor (R, N, C).
    """
    _check_gather_args(feats, index)
    feats_out, rows = _GatherPassthrough.apply(feats, index)
    return feats_out, rows


def gather_pixels(feats: Tensor, index: Tensor) -> Tensor:
    """Feature vectors of the pixels named by ``index``, for every RoI at once.

    Args:
        feats: float tensor (R, C, H, W), contiguous or channels_last.
        index: int64 tensor (R, N), flat row-major indices into H*W; an index may repeat.

    Returns:
        float tensor (R, N, C): ``out[r, n] = feats[r, :, index[r, n] // W, index[r, n] % W]``.

    The backward allocates one gradient of the size of ``feats`` (in its memory format) and scatters
    into it once, summing repeated indices. Indices are not range-checked here (that would synchronise
    with an accelerator); out-of-range indices raise an error on the CPU.

    Examples:
        >>> feats = torch.arange(8.0).reshape(1, 2, 2, 2)   # C = 2 channels on a 2 x 2 grid
        >>> gather_pixels(feats, torch.tensor([[3, 0, 3]]))
        tensor([[[3., 7.],
                 [0., 4.],
                 [3., 7.]]])
    """
    _check_gather_args(feats, index)
    out: Tensor = _GatherPixels.apply(feats, index)
    return out


def _check_gather_args(feats: Tensor, index: Tensor) -> None:
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
