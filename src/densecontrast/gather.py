"""Gathering sampled pixel features.

Shapes: R RoIs, C channels, H x W RoI grid, N gathered pixels per RoI.

The released code indexes one RoI at a time, and autograd then writes a full-size zero gradient per RoI,
so its backward grows with the square of R. Here the forward is one batched gather and the backward
allocates the gradient of ``feats`` once and scatters into it once.

Internally the gathered rows are kept channels-first, (R, C, N): that is what one ``gather`` along the
pixel dimension of ``feats`` viewed as (R, C, H*W) writes, for contiguous and channels_last ``feats``
alike, and what the projection's 1x1 convolutions read. The public functions return the (R, N, C) view.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from ._validation import check_floating, check_ndim, check_same_device, check_tensor, shape_str


def _pixels(feats: Tensor) -> Tensor:
    """(R, C, H*W): a view for contiguous and channels_last feats."""
    r, c, h, w = feats.shape
    return feats.reshape(r, c, h * w)


def _gather(feats: Tensor, index: Tensor, valid: Tensor | None) -> Tensor:
    """Rows (R, C, N); with ``valid`` (R,), the rows of invalid RoIs are exactly zero (even for NaN feats)."""
    r, c = feats.shape[:2]
    rows = torch.gather(_pixels(feats), 2, index.unsqueeze(1).expand(r, c, index.shape[1]))
    if valid is not None:
        # where(valid, rows, valid): False promotes to 0.0, so one op and no scalar tensor.
        rows = torch.where(valid.view(r, 1, 1), rows, valid.view(r, 1, 1))
    return rows


def _scatter_add_(grad: Tensor, index: Tensor, grad_rows: Tensor) -> Tensor:
    """Add ``grad_rows`` (R, C, N) into ``grad`` (R, C, H, W) at ``index`` (R, N), in place; returns grad."""
    r, c = grad.shape[:2]
    _pixels(grad).scatter_add_(2, index.unsqueeze(1).expand(r, c, index.shape[1]), grad_rows)
    return grad


def _is_channels_last(feats: Tensor) -> bool:
    return feats.is_contiguous(memory_format=torch.channels_last) and not feats.is_contiguous()


def _dense_zeros(shape: tuple[int, ...], channels_last: bool, like: Tensor) -> Tensor:
    if channels_last:
        return torch.empty(
            shape, dtype=like.dtype, device=like.device, memory_format=torch.channels_last
        ).zero_()
    return like.new_zeros(shape)


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, feats: Tensor, index: Tensor, valid: Tensor | None) -> Tensor:
        ctx.save_for_backward(index)
        ctx.feats_shape = tuple(feats.shape)
        ctx.channels_last = _is_channels_last(feats)
        return _gather(feats, index, valid)

    @staticmethod
    def backward(ctx: Any, grad_rows: Tensor) -> tuple[Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        (index,) = ctx.saved_tensors
        grad = _dense_zeros(ctx.feats_shape, ctx.channels_last, grad_rows)
        return _scatter_add_(grad, index, grad_rows), None, None


class _GatherPassthrough(torch.autograd.Function):
    """``(feats, rows)``: feats unchanged, plus the gathered rows (R, C, N).

    The backward adds the rows' gradient into the gradient that arrives for the passed-through feats,
    in place, instead of allocating a second dense gradient of the size of feats and summing the two.
    That is only right when nothing else reads that gradient: the passed-through tensor feeds one
    operation whose backward returns a fresh gradient of its own (a convolution does). An addition, for
    one, hands the same gradient tensor to both operands. The backward checks this by counting the
    references to the gradient and its memory (:func:`_writable_in_place`) and copies when they are
    shared, so a misuse costs memory, never a wrong gradient. It stays private all the same, behind
    :meth:`DenseContrastiveLoss.forward_passthrough`, whose caller (the torchvision adapter) feeds the
    features to one convolution.
    """

    @staticmethod
    def forward(ctx: Any, feats: Tensor, index: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(index)
        ctx.feats_shape = tuple(feats.shape)
        ctx.channels_last = _is_channels_last(feats)
        return feats.view_as(feats), _gather(feats, index, valid)

    @staticmethod
    def backward(
        ctx: Any, grad_feats: Tensor | None, grad_rows: Tensor | None
    ) -> tuple[Tensor | None, None, None]:
        if grad_rows is None:
            return grad_feats, None, None
        (index,) = ctx.saved_tensors
        if grad_feats is None:
            grad = _dense_zeros(ctx.feats_shape, ctx.channels_last, grad_rows)
        elif _writable_in_place(grad_feats):
            grad = grad_feats
        else:
            grad = grad_feats.clone()  # dense (contiguous unless it was dense in another layout)
        return _scatter_add_(grad, index, grad_rows.to(grad.dtype)), None, None


def _writable_in_place(grad: Tensor) -> bool:
    """Whether the passthrough's backward may add into ``grad`` in place without changing what anything
    else reads: nothing else holds the tensor or its memory, and it is dense.

    An addition hands one gradient tensor to both operands (a second reference); a view or reshape hands
    views of one buffer to several nodes (a shared storage); a hook or ``retain_grad`` keeps a reference.
    In each case the tensor is copied first. Double backward (grad mode on) and compiled graphs, where
    references cannot be counted, copy too.
    """
    if torch.is_grad_enabled() or torch.compiler.is_compiling() or grad._is_view():
        return False
    if not (grad.is_contiguous() or grad.is_contiguous(memory_format=torch.channels_last)):
        return False  # an expanded or strided gradient
    try:
        # One reference to the tensor (this call's); two to its storage (the tensor's and the one that
        # untyped_storage() itself returns).
        tensor_refs: int = grad._use_count()  # type: ignore[attr-defined]
        return tensor_refs == 1 and torch._C._storage_Use_Count(grad.untyped_storage()._cdata) == 2
    except (AttributeError, RuntimeError):  # a torch without these counters: copy, to be safe
        return False


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
    if feats.shape[2] * feats.shape[3] == 0 and index.shape[1] > 0:
        raise ValueError(
            f"feats {shape_str(feats.shape)} has an empty H x W grid, so index {shape_str(index.shape)} "
            "cannot name a pixel"
        )
    check_same_device(feats=feats, index=index)


def gather_pixels(feats: Tensor, index: Tensor) -> Tensor:
    """Feature vectors of the pixels named by ``index``, for every RoI at once.

    Args:
        feats: float tensor (R, C, H, W), contiguous or channels_last.
        index: int64 tensor (R, N), flat row-major indices into H*W; an index may repeat.

    Returns:
        float tensor (R, N, C): ``out[r, n] = feats[r, :, index[r, n] // W, index[r, n] % W]``, a
        transposed view of a channels-first (R, C, N) buffer.

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
    rows: Tensor = _GatherRows.apply(feats, index, None)
    return rows.transpose(1, 2)


def gather_pixels_passthrough(feats: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Deprecated: ``(feats, gather_pixels(feats, index))``, with a ``FutureWarning``.

    It returns ``feats`` itself, which autograd differentiates correctly in any graph. Adding the rows'
    gradient into the next layer's input gradient in place (which saves one dense gradient) is right
    only when nothing else reads that gradient: when the passed-through tensor feeds an addition (a
    residual connection, say), the other operand's gradient would be corrupted. Telling the two apart
    takes torch's private reference counters, fit for an internal path and not for a public function,
    so that saving lives behind :meth:`~densecontrast.DenseContrastiveLoss.forward_passthrough`.

    Args:
        feats: float tensor (R, C, H, W).
        index: int64 tensor (R, N).

    Returns:
        ``(feats, rows)``: ``feats`` itself and rows float tensor (R, N, C), as :func:`gather_pixels`.
    """
    warnings.warn(
        "gather_pixels_passthrough is deprecated and will be removed: use feats and gather_pixels(feats, "
        "index) (what it returns), or DenseContrastiveLoss.forward_passthrough for the loss",
        FutureWarning,
        stacklevel=2,
    )
    return feats, gather_pixels(feats, index)
