"""Gathering sampled pixel features.

Shapes: R RoIs, C channels, H x W RoI grid, N gathered pixels per RoI.

The released code indexes one RoI at a time, and autograd then writes a full-size zero gradient per RoI,
so its backward grows with the square of R. Here the forward is one batched gather and the backward
allocates the gradient of ``feats`` once and scatters into it once.

Internally the gathered rows are kept channels-first, (R, C, N): that is what one ``gather`` along the
pixel dimension of ``feats`` viewed as (R, C, H*W) writes, for contiguous and channels_last ``feats``
alike, and what the projection's 1x1 convolutions read. The public functions return the (R, N, C) view.

On the CPU the gather and the scatter run about twice as fast when each RoI's indices increase (one
forward sweep along every channel row instead of several; measured in docs/performance.md). The loss's
index is three sorted sets side by side, so on the CPU the index is sorted first and the rows are put
back in the caller's order by a second gather over the small (R, C, N) rows (the backward does the
reverse), which costs less than it saves.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ._validation import check_floating, check_ndim, check_same_device, check_tensor, shape_str


def _pixels(feats: Tensor) -> Tensor:
    """(R, C, H*W): a view for contiguous and channels_last feats."""
    r, c, h, w = feats.shape
    return feats.reshape(r, c, h * w)


class _Order(NamedTuple):
    """How a gather walks ``feats``: ``walk`` (R, N) is the index it reads and the scatter writes; when it
    is the caller's index sorted, ``to_caller`` (R, N) puts the gathered rows back in the caller's order and
    ``from_caller`` (R, N) takes gradient rows from that order to the sorted one (both None otherwise)."""

    walk: Tensor
    to_caller: Tensor | None
    from_caller: Tensor | None


def _order(index: Tensor) -> _Order:
    """The walk for ``index``: sorted along N on the CPU unless it already increases; as given where its
    order cannot be checked without waiting for a device or breaking a compiled graph."""
    if not _host_checks(index) or index.shape[1] < 2 or bool((index[:, 1:] >= index[:, :-1]).all()):
        return _Order(index, None, None)
    # Stable: equal indices keep the caller's order, so the scatter adds them in the same order.
    walk, from_caller = index.sort(dim=1, stable=True)
    positions = torch.arange(index.shape[1], device=index.device).expand_as(index)
    to_caller = torch.empty_like(from_caller).scatter_(1, from_caller, positions)
    return _Order(walk, to_caller, from_caller)


def _along_pixels(index: Tensor, channels: int) -> Tensor:
    """index (R, N) as the (R, C, N) index of a gather or scatter along the last dimension (a view)."""
    return index.unsqueeze(1).expand(index.shape[0], channels, index.shape[1])


def _gather(feats: Tensor, order: _Order, valid: Tensor | None) -> Tensor:
    """Rows (R, C, N) in the caller's order; with ``valid`` (R,), the rows of invalid RoIs are exactly
    zero (even for NaN feats)."""
    r, c = feats.shape[:2]
    rows = torch.gather(_pixels(feats), 2, _along_pixels(order.walk, c))
    if order.to_caller is not None:
        rows = torch.gather(rows, 2, _along_pixels(order.to_caller, c))
    if valid is not None and _some_invalid(valid):
        # where(valid, rows, valid): False promotes to 0.0, so one op and no scalar tensor.
        rows = torch.where(valid.view(r, 1, 1), rows, valid.view(r, 1, 1))
    return rows


def _host_checks(t: Tensor) -> bool:
    """Whether a decision may read ``t``'s values: on the CPU (outside torch.compile) that is a load; on
    an accelerator it would wait for the device, and while compiling it would break the graph."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def _some_invalid(valid: Tensor) -> bool:
    """Whether rows of invalid RoIs may need zeroing: where values can be read, only when one is invalid
    (a pass over all rows saved when none is); elsewhere always."""
    return not _host_checks(valid) or not bool(valid.all())


def _scatter_add_(grad: Tensor, walk: Tensor, from_caller: Tensor | None, grad_rows: Tensor) -> Tensor:
    """Add ``grad_rows`` (R, C, N), in the caller's order, into ``grad`` (R, C, H, W) at the pixels of
    ``walk`` (R, N), in place (``from_caller`` as in :class:`_Order`); returns grad."""
    c = grad.shape[1]
    if from_caller is not None:
        grad_rows = torch.gather(grad_rows, 2, _along_pixels(from_caller, c))
    _pixels(grad).scatter_add_(2, _along_pixels(walk, c), grad_rows)
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
        order = _order(index)
        ctx.save_for_backward(order.walk, order.from_caller)
        ctx.feats_shape = tuple(feats.shape)
        ctx.channels_last = _is_channels_last(feats)
        return _gather(feats, order, valid)

    @staticmethod
    def backward(ctx: Any, grad_rows: Tensor) -> tuple[Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        walk, from_caller = ctx.saved_tensors
        grad = _dense_zeros(ctx.feats_shape, ctx.channels_last, grad_rows)
        return _scatter_add_(grad, walk, from_caller, grad_rows), None, None


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
        order = _order(index)
        ctx.save_for_backward(order.walk, order.from_caller)
        ctx.feats_shape = tuple(feats.shape)
        ctx.channels_last = _is_channels_last(feats)
        return feats.view_as(feats), _gather(feats, order, valid)

    @staticmethod
    def backward(
        ctx: Any, grad_feats: Tensor | None, grad_rows: Tensor | None
    ) -> tuple[Tensor | None, None, None]:
        if grad_rows is None:
            return grad_feats, None, None
        walk, from_caller = ctx.saved_tensors
        if grad_feats is None:
            grad = _dense_zeros(ctx.feats_shape, ctx.channels_last, grad_rows)
        elif _writable_in_place(grad_feats):
            grad = grad_feats
        else:
            grad = grad_feats.clone()  # dense (contiguous unless it was dense in another layout)
        return _scatter_add_(grad, walk, from_caller, grad_rows.to(grad.dtype)), None, None


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
