r"""The dense contrastive loss: sample, gather, project, infoNCE, reduce.

Shapes: R RoIs, C channels, H x W RoI grid, K samples per set, D projected channels.

For RoI :math:`i` with instance pixels :math:`M_i`, the rest of the RoI :math:`\bar M_i`, and K anchors
:math:`A_i`, positives :math:`P_i` (from :math:`M_i`) and negatives :math:`N_i` (from :math:`\bar M_i`),

.. math::

    L^i = \frac{1}{K^2} \sum_{u \in A_i} \sum_{v \in P_i}
          -\log \frac{e^{s_{uv}/\tau}}{e^{s_{uv}/\tau} + \sum_{w \in N_i} e^{s_{uw}/\tau}},

with :math:`s` the cosine similarity of the (optionally projected) features. The paper's eq. 3 sums over
the pairs instead of averaging (a factor :math:`K^2` that the loss weight absorbs).
"""

from __future__ import annotations

import sys
import warnings

import torch
from torch import Tensor, nn

from ._validation import (
    check_floating,
    check_ndim,
    check_positive_int,
    check_reduction,
    check_same_device,
    check_tau,
    check_tensor,
    shape_str,
)
from .gather import _GatherPassthrough, _GatherRows
from .infonce import _info_nce
from .projection import ProjectionHead, _is_plain_head
from .sampling import PixelSamples, _no_rois_can_be_valid, _sample, check_mask_values

DEFAULT_K = 32
"""Samples per set (anchors, positives, negatives): the paper's ablation (Table 3)."""
DEFAULT_TAU = 0.07
"""Temperature: the paper's ablation (Table 4) and the released code."""
DEFAULT_PROJ_CHANNELS = 256
"""Projected dimension D of the default head: the mask head's 256 channels, as the released code."""


def _check_inputs(feats: object, masks: object, projector: nn.Module | None) -> tuple[Tensor, Tensor]:
    feats = check_tensor("feats", feats)
    masks = check_tensor("masks", masks)
    check_ndim("feats", feats, 4, "(R, C, H, W)")
    check_floating("feats", feats)
    if masks.ndim != 3 or masks.shape[0] != feats.shape[0] or masks.shape[1:] != feats.shape[2:]:
        r, _, h, w = feats.shape
        raise ValueError(
            f"masks must have shape (R, H, W) matching feats (R, C, H, W), here ({r}, {h}, {w}); "
            f"got masks {shape_str(masks.shape)} for feats {shape_str(feats.shape)}"
        )
    check_same_device(feats=feats, masks=masks)
    _check_projector_channels(projector, feats.shape[1], "feats", feats.shape)
    return feats, masks


def _check_projector_channels(projector: nn.Module | None, channels: int, name: str, shape: object) -> None:
    if isinstance(projector, ProjectionHead) and channels != projector.in_channels:
        raise ValueError(
            f"{name} must have {projector.in_channels} channels for the projector's "
            f"in_channels={projector.in_channels}; got {name} {shape_str(shape)}"  # type: ignore[arg-type]
        )


def _check_projector(projector: object) -> nn.Module | None:
    if projector is not None and not isinstance(projector, nn.Module):
        raise TypeError(
            "projector must be None or an nn.Module mapping (..., C) to (..., D); "
            f"got {type(projector).__name__}"
        )
    return projector


def _check_samples(
    samples: object, num_rois: int, num_pixels: int, like: Tensor, like_name: str
) -> PixelSamples:
    if not isinstance(samples, tuple) or len(samples) != 4:
        raise TypeError(
            "samples must be a PixelSamples (anchors, positives, negatives, valid); "
            f"got {type(samples).__name__}"
        )
    anchors, positives, negatives, valid = samples
    for name, t in (("anchors", anchors), ("positives", positives), ("negatives", negatives)):
        t = check_tensor(f"samples.{name}", t)
        if t.ndim != 2 or t.shape[0] != num_rois:
            raise ValueError(
                f"samples.{name} must have shape (R, K) with R = {num_rois} from {like_name} "
                f"{shape_str(like.shape)}; got {shape_str(t.shape)}"
            )
        if t.dtype != torch.int64:
            raise TypeError(f"samples.{name} must be int64; got {t.dtype}")
    if anchors.shape[1] == 0 or positives.shape[1] == 0:
        raise ValueError(
            "samples need at least one anchor and one positive per RoI; got "
            f"anchors {shape_str(anchors.shape)}, positives {shape_str(positives.shape)}"
        )
    if num_pixels == 0:
        raise ValueError(
            f"{like_name} {shape_str(like.shape)} has an empty H x W grid, so samples cannot name a pixel"
        )
    valid = check_tensor("samples.valid", valid)
    if valid.shape != (num_rois,) or valid.dtype != torch.bool:
        raise ValueError(
            f"samples.valid must be a bool tensor of shape ({num_rois},); got {valid.dtype} "
            f"{shape_str(valid.shape)}"
        )
    check_same_device(
        **{like_name: like}, anchors=anchors, positives=positives, negatives=negatives, valid=valid
    )
    return PixelSamples(anchors, positives, negatives, valid)


def _project(rows: Tensor, projector: nn.Module | None) -> Tensor:
    """The projector on channels-first rows (R, C, N) -> (R, D, N)."""
    if projector is None:
        return rows
    if (
        not torch.compiler.is_compiling()  # a traced convolution guards on R: no dynamic R
        and _is_plain_head(projector)  # hooks, patched forwards and reparametrisations go through __call__
    ):
        # Convolutions or GEMMs, whichever is faster here (projection._projection_path): same numbers.
        return projector._forward_channels_first(rows)  # type: ignore[operator]
    out: Tensor = projector(rows.transpose(1, 2))  # any module mapping (..., C) to (..., D)
    return out.transpose(1, 2)


def _dense_contrastive(
    feats: Tensor,
    masks: Tensor,
    *,
    k: int,
    tau: float,
    projector: nn.Module | None,
    replacement: bool,
    reduction: str,
    samples: PixelSamples | None,
    generator: torch.Generator | None,
    passthrough: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """The loss's kernel (arguments already checked): ``(feats_out, loss, valid)``.

    ``feats_out`` is ``feats`` itself, or its pass-through for
    :meth:`DenseContrastiveLoss.forward_passthrough`; ``valid`` (R,) bool says which RoIs counted.
    """
    r, _, h, w = feats.shape
    if samples is None:
        if _no_rois_can_be_valid(h * w, k, replacement):
            return _no_valid_roi(feats, tau, projector, reduction, passthrough)
        index3, valid = _sample(masks, k, replacement, generator)  # (R, 3, K)
        index = index3.reshape(r, 3 * k)
        num_anchors = num_positives = k
    else:
        index = torch.cat([samples.anchors, samples.positives, samples.negatives], dim=1)
        valid = samples.valid
        num_anchors, num_positives = samples.anchors.shape[1], samples.positives.shape[1]
    if passthrough:
        feats_out, rows = _GatherPassthrough.apply(feats, index, valid)
    else:
        feats_out, rows = feats, _GatherRows.apply(feats, index, valid)
    loss = _info_nce(_project(rows, projector), valid, num_anchors, num_positives, tau, reduction)
    return feats_out, loss, valid


def _no_valid_roi(
    feats: Tensor, tau: float, projector: nn.Module | None, reduction: str, passthrough: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """The zero of a batch where the grid is too small for any valid RoI, still in the graph.

    It never allocates anything of size K (k may be far above H*W) and reaches feats and every
    projector parameter, with zero gradients.
    """
    r, c, h, w = feats.shape
    valid = torch.zeros(r, dtype=torch.bool, device=feats.device)
    if h * w == 0:
        rows = feats.sum(dim=(2, 3)).unsqueeze(2).expand(r, c, 3)  # an empty sum: exact zeros
        feats_out = feats
    else:
        index = torch.zeros((), dtype=torch.int64, device=feats.device).expand(r, 3)
        apply = _GatherPassthrough.apply if passthrough else None
        if apply is None:
            feats_out, rows = feats, _GatherRows.apply(feats, index, valid)
        else:
            feats_out, rows = apply(feats, index, valid)
    return feats_out, _info_nce(_project(rows, projector), valid, 1, 1, tau, reduction), valid


def dense_contrastive_loss(
    feats: Tensor,
    masks: Tensor,
    *,
    k: int = DEFAULT_K,
    tau: float = DEFAULT_TAU,
    projector: nn.Module | None = None,
    replacement: bool = False,
    reduction: str = "mean",
    samples: PixelSamples | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The dense contrastive loss of a batch of RoIs (the function behind :class:`DenseContrastiveLoss`).

    Args:
        feats: float tensor (R, C, H, W), the mask head's features of each RoI.
        masks: tensor (R, H, W), the ground-truth instance of each RoI on the same grid: bool, or
            1 / 0 / -1 (instance / rest of the RoI / ignore).
        k: samples per set (anchors, positives, negatives).
        tau: temperature.
        projector: a module mapping (..., C) to (..., D) applied to the sampled pixels only (the learnable
            similarity), or None for plain cosine similarity.
        replacement: sample with replacement and the released code's validity rule.
        reduction: ``"mean"`` over valid RoIs (the released code), ``"sum"`` (the paper's eq. 4) or
            ``"none"`` (R,) with 0 at invalid RoIs.
        samples: precomputed :class:`PixelSamples`; ``masks`` is then used for its shape only.
        generator: a ``torch.Generator`` for the sampler.

    Returns:
        float32 (float64 for float64 feats) scalar, or (R,) for ``reduction="none"``. With no valid RoI,
        R = 0 or an empty H x W grid, a zero that stays in the autograd graph and reaches every projector
        parameter. Invalid RoIs contribute exactly zero to every gradient, even when their features are
        not finite.

    Examples:
        >>> feats = torch.randn(2, 8, 6, 6)
        >>> masks = torch.zeros(2, 6, 6, dtype=torch.bool)
        >>> masks[:, 1:4, 1:4] = True
        >>> dense_contrastive_loss(feats, masks, k=4, tau=0.1).shape
        torch.Size([])
    """
    feats, masks = _check_inputs(feats, masks, _check_projector(projector))
    k = check_positive_int("k", k)
    tau = check_tau(tau)
    reduction = check_reduction(reduction)
    samples = _checked_samples_or_masks(samples, feats, masks)
    _, loss, _ = _dense_contrastive(
        feats,
        masks,
        k=k,
        tau=tau,
        projector=projector,
        replacement=bool(replacement),
        reduction=reduction,
        samples=samples,
        generator=generator,
        passthrough=False,
    )
    return loss


def _checked_samples_or_masks(samples: object, feats: Tensor, masks: Tensor) -> PixelSamples | None:
    if samples is None:
        check_mask_values(masks)
        return None
    return _check_samples(samples, feats.shape[0], feats.shape[2] * feats.shape[3], feats, "feats")


def sample_index(samples: PixelSamples) -> Tensor:
    """The (R, A + P + Q) index of all samples of each RoI: anchors, then positives, then negatives.

    Args:
        samples: a :class:`PixelSamples`.

    Returns:
        int64 tensor (R, A + P + Q), the order :func:`loss_from_rows` expects.

    Examples:
        >>> t = torch.tensor
        >>> s = PixelSamples(t([[0]]), t([[1]]), t([[2, 3]]), t([True]))
        >>> sample_index(s).tolist()
        [[0, 1, 2, 3]]
    """
    if not isinstance(samples, tuple) or len(samples) != 4:
        raise TypeError(
            "samples must be a PixelSamples (anchors, positives, negatives, valid); "
            f"got {type(samples).__name__}"
        )
    anchors = check_tensor("samples.anchors", samples[0])
    return torch.cat(
        [
            anchors,
            check_tensor("samples.positives", samples[1]),
            check_tensor("samples.negatives", samples[2]),
        ],
        dim=1,
    )


def loss_from_rows(
    rows: Tensor,
    samples: PixelSamples,
    *,
    tau: float,
    projector: nn.Module | None = None,
    reduction: str = "mean",
) -> Tensor:
    """The loss from pixel features already gathered in the order of :func:`sample_index`.

    For callers that gather (or compute) the sampled pixels' features themselves. Rows of invalid RoIs
    are replaced by zeros before anything reads them, so they contribute exactly zero to every gradient.

    Args:
        rows: float tensor (R, A + P + Q, C), e.g. ``gather_pixels(feats, sample_index(samples))``.
        samples: the :class:`PixelSamples` the rows were gathered with (their sizes and ``valid``).
        tau: temperature, a positive number.
        projector: applied to the rows first (the learnable similarity), or None.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``, as in :func:`dense_contrastive_loss`.

    Returns:
        float32 (float64 for float64 rows) scalar, or (R,) for ``reduction="none"``.

    Raises:
        TypeError: rows is not a floating-point tensor, or samples not a PixelSamples.
        ValueError: rows is not (R, A + P + Q, C) for these samples, or tau / reduction are invalid.

    Examples:
        >>> t = torch.tensor
        >>> s = PixelSamples(t([[0]]), t([[1]]), t([[2]]), t([True]))
        >>> rows = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
        >>> round(loss_from_rows(rows, s, tau=1.0).item(), 4)   # log(1 + e^-1)
        0.3133
    """
    rows = check_tensor("rows", rows)
    check_ndim("rows", rows, 3, "(R, A + P + Q, C)")
    check_floating("rows", rows)
    samples = _check_samples(samples, rows.shape[0], 1, rows, "rows")
    tau = check_tau(tau)
    reduction = check_reduction(reduction)
    _check_projector_channels(_check_projector(projector), rows.shape[2], "rows", rows.shape)
    num_anchors, num_positives = samples.anchors.shape[1], samples.positives.shape[1]
    expected = num_anchors + num_positives + samples.negatives.shape[1]
    if rows.shape[1] != expected:
        raise ValueError(
            f"rows must have shape (R, A + P + Q, C) with A + P + Q = {expected} from samples "
            f"(anchors {shape_str(samples.anchors.shape)}, positives {shape_str(samples.positives.shape)}, "
            f"negatives {shape_str(samples.negatives.shape)}); got rows {shape_str(rows.shape)}"
        )
    valid = samples.valid.view(-1, 1, 1)
    channels_first = torch.where(valid, rows.transpose(1, 2), valid)  # invalid RoIs: exact zeros
    z = _project(channels_first, projector)
    return _info_nce(z, samples.valid, num_anchors, num_positives, tau, reduction)


_MODULE_CALL_FILE = nn.Module.__call__.__code__.co_filename


def _caller_stacklevel() -> int:
    """``stacklevel`` of the first frame outside this file and ``nn.Module.__call__`` (the caller)."""
    frame = sys._getframe(1)  # the function that warns
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename in (__file__, _MODULE_CALL_FILE):
        frame = frame.f_back
        level += 1
    return level


class DenseContrastiveLoss(nn.Module):
    """Dense contrastive loss for instance segmentation (Chen, Tang, Hu, BMVC 2022).

    ``DenseContrastiveLoss(k=32, tau=0.07)`` alone scores pixels by plain cosine similarity: the
    paper's weaker variant. The paper's default, the learnable similarity (Table 2: +1.4 AP), needs
    ``in_channels=C`` (a :class:`ProjectionHead`) or a ``projector=`` module; the repr says which
    (``similarity=cosine`` or ``similarity=projector``).

    Per RoI, K anchors and K positives are sampled from the ground-truth instance pixels and K negatives
    from the rest of the RoI; the sampled features are (optionally) projected, L2-normalised, and scored
    with infoNCE (see :func:`dense_contrastive_loss`).

    Args:
        k: samples per set. Default 32 (the paper's ablation).
        tau: temperature. Default 0.07.
        in_channels: C. When given, a :class:`ProjectionHead` (C -> C -> ``proj_channels``) makes the
            similarity learnable (the paper's default).
        proj_channels: D, the projected dimension of that head; default 256. Only with ``in_channels``
            (a ``projector=`` module has its own output size).
        projector: instead of ``in_channels``, any module mapping (..., C) to (..., D), applied to the
            sampled pixels only. It is called like any module: its hooks, a patched ``forward``,
            ``torch.nn.utils.prune`` and parametrizations all apply.
        replacement: sample with replacement (the released code) instead of without (the paper).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Attributes:
        k, tau, replacement, reduction: as given.
        projector: the projection module, or None (cosine similarity).
        last_valid_rois: how many RoIs contributed to the last call (:meth:`forward` or
            :meth:`forward_passthrough`): a detached 0-dim int64 tensor on the features' device, None
            before the first call. Reading it as a number (``int(...)``, printing) synchronises with
            an accelerator; keeping or summing it as a tensor, to read every N steps, does not.

    No silent zero: when a call in training mode has RoIs but none of them is valid (each needs ``k``
    instance pixels and ``k`` other pixels, more than ``k`` with ``replacement=True``), the loss is a
    zero that trains nothing, and the module warns once (a ``UserWarning``, once per instance) saying
    what to change. On the CPU the check reads the count at once; on CUDA it reads it without blocking,
    once the device has finished that call, so the warning comes a call or more later, and calls still
    in flight are skipped. It does not run inside ``torch.compile``, during CUDA graph capture or on
    other devices; read ``last_valid_rois`` there.

    Shape:
        - feats: (R, C, H, W), floating
        - masks: (R, H, W), bool or 1 / 0 / -1
        - output: scalar, or (R,) for ``reduction="none"``

    Examples:
        >>> import torch
        >>> crit = DenseContrastiveLoss(k=8, tau=0.1, in_channels=16)
        >>> feats = torch.randn(3, 16, 14, 14, requires_grad=True)
        >>> masks = torch.zeros(3, 14, 14, dtype=torch.bool)
        >>> masks[:, 3:10, 4:11] = True
        >>> loss = crit(feats, masks)
        >>> loss.backward()
        >>> loss.shape, feats.grad.shape
        (torch.Size([]), torch.Size([3, 16, 14, 14]))
        >>> DenseContrastiveLoss()
        DenseContrastiveLoss(k=32, tau=0.07, similarity=cosine, replacement=False, reduction='mean')
    """

    projector: nn.Module | None

    def __init__(
        self,
        k: int = DEFAULT_K,
        tau: float = DEFAULT_TAU,
        *,
        in_channels: int | None = None,
        proj_channels: int | None = None,
        projector: nn.Module | None = None,
        replacement: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.k = check_positive_int("k", k)
        self.tau = check_tau(tau)
        self.reduction = check_reduction(reduction)
        self.replacement = bool(replacement)
        projector = _check_projector(projector)
        if projector is not None and in_channels is not None:
            raise ValueError(
                "pass either in_channels (a ProjectionHead is built) or projector (your own module), "
                f"not both; got in_channels={in_channels!r} and projector={type(projector).__name__}"
            )
        if proj_channels is not None and in_channels is None:
            with_what = (
                f"with projector={type(projector).__name__}, whose output size is its own"
                if projector is not None
                else "without in_channels, so no projection head is built and the similarity would be cosine"
            )
            raise ValueError(
                f"proj_channels={proj_channels!r} was given {with_what}; pass in_channels=C as well to "
                "build a ProjectionHead C -> C -> proj_channels, or leave proj_channels out"
            )
        if in_channels is not None:
            out = DEFAULT_PROJ_CHANNELS if proj_channels is None else proj_channels
            projector = ProjectionHead(in_channels, out_channels=out)
        self.projector = projector

    def forward(
        self,
        feats: Tensor,
        masks: Tensor,
        *,
        samples: PixelSamples | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Loss of the RoIs ``feats`` (R, C, H, W) against their instance ``masks`` (R, H, W)."""
        return self._evaluate(feats, masks, samples, generator, passthrough=False)[1]

    def forward_passthrough(
        self,
        feats: Tensor,
        masks: Tensor,
        *,
        samples: PixelSamples | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The loss, plus ``feats`` passed through for the one layer that reads them next.

        For adapters that compute the loss where the features enter the mask head's next layer: feed
        that layer the returned ``feats_out`` instead of ``feats``, and the backward adds the loss's
        gradient into the layer's input gradient in place (one dense gradient of ``feats`` instead of
        two). The saving needs ``feats_out`` to feed one operation whose backward returns a fresh
        gradient of its own, such as a convolution (the torchvision adapter's use). Where the gradient
        is shared (an addition hands one gradient tensor to both operands; views, ``retain_grad`` or a
        hook on ``feats_out`` keep references), the backward sees it and copies first: the gradients
        stay exact and only the saving is lost. Outside such an adapter, call the loss
        (:meth:`forward`) and use ``feats`` as usual.

        Args:
            feats: float tensor (R, C, H, W).
            masks: tensor (R, H, W), as in :meth:`forward`.
            samples: precomputed :class:`PixelSamples`, or None to sample.
            generator: a ``torch.Generator`` for the sampler.

        Returns:
            ``(feats_out, loss)``: feats_out (R, C, H, W) equal to feats; loss as :meth:`forward`.
        """
        return self._evaluate(feats, masks, samples, generator, passthrough=True)

    def _evaluate(
        self,
        feats: Tensor,
        masks: Tensor,
        samples: PixelSamples | None,
        generator: torch.Generator | None,
        *,
        passthrough: bool,
    ) -> tuple[Tensor, Tensor]:
        """Check the inputs once, then ``(feats or feats_out, loss)`` with this module's settings."""
        feats, masks = _check_inputs(feats, masks, self.projector)
        feats_out, loss, valid = _dense_contrastive(
            feats,
            masks,
            k=self.k,
            tau=self.tau,
            projector=self.projector,
            replacement=self.replacement,
            reduction=self.reduction,
            samples=_checked_samples_or_masks(samples, feats, masks),
            generator=generator,
            passthrough=passthrough,
        )
        self._count_valid(valid, tuple(feats.shape))
        return feats_out, loss

    # --- how many RoIs contributed, and the warning when none did ------------------------------------------

    last_valid_rois: Tensor | None = None
    _warned_no_valid_roi: bool = False
    _pending_count: tuple[Tensor, torch.cuda.Event, tuple[int, ...]] | None = None
    _host_count: Tensor | None = None

    def _count_valid(self, valid: Tensor, feats_shape: tuple[int, ...]) -> None:
        """Keep the number of valid RoIs; in training, warn once when RoIs came but none was valid."""
        count = valid.sum()  # int64 on the features' device: no host round trip
        self.last_valid_rois = count
        if not self.training or self._warned_no_valid_roi or torch.compiler.is_compiling():
            return
        if count.device.type == "cpu":
            if feats_shape[0] > 0 and int(count) == 0:
                self._warn_no_valid_roi(feats_shape)
        elif count.device.type == "cuda" and not torch.cuda.is_current_stream_capturing():
            self._read_pending_count()
            if self._pending_count is None and feats_shape[0] > 0 and not self._warned_no_valid_roi:
                # Copy into pinned host memory without blocking; a later call reads it once it landed.
                if self._host_count is None:
                    self._host_count = torch.empty((), dtype=torch.int64, pin_memory=True)
                self._host_count.copy_(count, non_blocking=True)
                done = torch.cuda.Event()
                done.record(torch.cuda.current_stream(count.device))  # the stream the copy went to
                self._pending_count = (self._host_count, done, feats_shape)

    def _read_pending_count(self) -> None:
        """Read the count copied by an earlier CUDA call if the device has finished it (never waits)."""
        if self._pending_count is None or not self._pending_count[1].query():
            return
        host, _, feats_shape = self._pending_count
        self._pending_count = None
        if int(host) == 0:
            self._warn_no_valid_roi(feats_shape)

    def _warn_no_valid_roi(self, feats_shape: tuple[int, ...]) -> None:
        self._warned_no_valid_roi = True
        r, _, h, w = feats_shape
        need = f"more than k={self.k}" if self.replacement else f"at least k={self.k}"
        warnings.warn(
            f"DenseContrastiveLoss: none of the {r} RoIs of a training call was valid, so the loss was "
            f"a zero that trains nothing. A valid RoI needs {need} instance pixels and as many other "
            f"pixels on its {h} x {w} grid. Lower k, give the RoIs more context (the adapters' margin), "
            "or check that the objects cover enough of the grid; last_valid_rois counts the valid RoIs "
            "of each call. "
            "(This warning is shown once per loss.)",
            UserWarning,
            stacklevel=_caller_stacklevel(),
        )

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("_pending_count", None)  # a CUDA event cannot be copied or pickled
        state.pop("_host_count", None)
        return state

    def extra_repr(self) -> str:
        similarity = "cosine" if self.projector is None else "projector"
        return (
            f"k={self.k}, tau={self.tau}, similarity={similarity}, replacement={self.replacement}, "
            f"reduction={self.reduction!r}"
        )
