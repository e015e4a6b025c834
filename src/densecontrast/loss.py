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
from .gather import gather_pixels, gather_pixels_passthrough
from .infonce import _info_nce_stacked, reduce_per_roi
from .projection import ProjectionHead
from .sampling import PixelSamples, sample_pixels

DEFAULT_K = 32
"""Samples per set (anchors, positives, negatives): the paper's ablation (Table 3)."""
DEFAULT_TAU = 0.07
"""Temperature: the paper's ablation (Table 4) and the released code."""


def _check_inputs(feats: Tensor, masks: Tensor) -> None:
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


def _check_samples(samples: object, feats: Tensor) -> PixelSamples:
    if not isinstance(samples, tuple) or len(samples) != 4:
        raise TypeError(
            "samples must be a PixelSamples (anchors, positives, negatives, valid); "
            f"got {type(samples).__name__}"
        )
    anchors, positives, negatives, valid = samples
    r = feats.shape[0]
    for name, t in (("anchors", anchors), ("positives", positives), ("negatives", negatives)):
        t = check_tensor(f"samples.{name}", t)
        if t.ndim != 2 or t.shape[0] != r:
            raise ValueError(
                f"samples.{name} must have shape (R, K) with R = {r} from feats {shape_str(feats.shape)}; "
                f"got {shape_str(t.shape)}"
            )
        if t.dtype != torch.int64:
            raise TypeError(f"samples.{name} must be int64; got {t.dtype}")
    valid = check_tensor("samples.valid", valid)
    if valid.shape != (r,) or valid.dtype != torch.bool:
        raise ValueError(
            f"samples.valid must be a bool tensor of shape ({r},); got {valid.dtype} {shape_str(valid.shape)}"
        )
    check_same_device(feats=feats, anchors=anchors, positives=positives, negatives=negatives, valid=valid)
    return PixelSamples(anchors, positives, negatives, valid)


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
        or R = 0, a zero that stays in the autograd graph and reaches every projector parameter.
    """
    _check_inputs(feats, masks)
    k = check_positive_int("k", k)
    tau = check_tau(tau)
    reduction = check_reduction(reduction)
    if samples is None:
        samples = sample_pixels(masks, k, replacement=replacement, generator=generator)
    else:
        samples = _check_samples(samples, feats)
    rows = gather_pixels(feats, sample_index(samples))  # (R, 3K, C)
    return loss_from_rows(rows, samples, tau=tau, projector=projector, reduction=reduction)


def sample_index(samples: PixelSamples) -> Tensor:
    """The (R, A + P + Q) index of all samples of each RoI: anchors, then positives, then negatives."""
    return torch.cat([samples.anchors, samples.positives, samples.negatives], dim=1)


def loss_from_rows(
    rows: Tensor,
    samples: PixelSamples,
    *,
    tau: float,
    projector: nn.Module | None = None,
    reduction: str = "mean",
) -> Tensor:
    """The loss from pixel features already gathered in the order of :func:`sample_index`.

    Args:
        rows: float tensor (R, A + P + Q, C), e.g. ``gather_pixels(feats, sample_index(samples))``.
        samples: the :class:`PixelSamples` the rows were gathered with (their sizes and ``valid``).
        tau: temperature.
        projector: applied to the rows first (the learnable similarity), or None.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``, as in :func:`dense_contrastive_loss`.

    Returns:
        float32 (float64 for float64 rows) scalar, or (R,) for ``reduction="none"``.
    """
    z = rows if projector is None else projector(rows)  # (R, 3K, D)
    per_roi = _info_nce_stacked(z, samples.anchors.shape[1], samples.positives.shape[1], tau)
    return reduce_per_roi(per_roi, samples.valid, reduction)


class DenseContrastiveLoss(nn.Module):
    """Dense contrastive loss for instance segmentation (Chen, Tang, Hu, BMVC 2022).

    Per RoI, K anchors and K positives are sampled from the ground-truth instance pixels and K negatives
    from the rest of the RoI; the sampled features are (optionally) projected by a learnable head,
    L2-normalised, and scored with infoNCE (see :func:`dense_contrastive_loss`).

    Args:
        k: samples per set. Default 32 (the paper's ablation).
        tau: temperature. Default 0.07.
        in_channels: C. When given, a :class:`ProjectionHead` (C -> C -> ``proj_channels``) makes the
            similarity learnable (the paper's default); when None, plain cosine similarity.
        proj_channels: D, the projected dimension.
        replacement: sample with replacement (the released code) instead of without (the paper).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Attributes:
        projector: the :class:`ProjectionHead`, or None.

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
    """

    projector: ProjectionHead | None

    def __init__(
        self,
        k: int = DEFAULT_K,
        tau: float = DEFAULT_TAU,
        *,
        in_channels: int | None = None,
        proj_channels: int = 256,
        replacement: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.k = check_positive_int("k", k)
        self.tau = check_tau(tau)
        self.reduction = check_reduction(reduction)
        self.replacement = bool(replacement)
        self.projector = (
            None if in_channels is None else ProjectionHead(in_channels, out_channels=proj_channels)
        )

    def forward(
        self,
        feats: Tensor,
        masks: Tensor,
        *,
        samples: PixelSamples | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Loss of the RoIs ``feats`` (R, C, H, W) against their instance ``masks`` (R, H, W)."""
        return dense_contrastive_loss(
            feats,
            masks,
            k=self.k,
            tau=self.tau,
            projector=self.projector,
            replacement=self.replacement,
            reduction=self.reduction,
            samples=samples,
            generator=generator,
        )

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
        two). ``feats_out`` must feed exactly one operation whose backward returns a fresh gradient
        (a convolution does); see :func:`~densecontrast.gather.gather_pixels_passthrough`.

        Args:
            feats: float tensor (R, C, H, W).
            masks: tensor (R, H, W), as in :meth:`forward`.
            samples: precomputed :class:`PixelSamples`, or None to sample.
            generator: a ``torch.Generator`` for the sampler.

        Returns:
            ``(feats_out, loss)``: feats_out (R, C, H, W) equal to feats; loss as :meth:`forward`.
        """
        _check_inputs(feats, masks)
        if samples is None:
            samples = sample_pixels(masks, self.k, replacement=self.replacement, generator=generator)
        else:
            samples = _check_samples(samples, feats)
        feats_out, rows = gather_pixels_passthrough(feats, sample_index(samples))
        loss = loss_from_rows(rows, samples, tau=self.tau, projector=self.projector, reduction=self.reduction)
        return feats_out, loss

    def extra_repr(self) -> str:
        return f"k={self.k}, tau={self.tau}, replacement={self.replacement}, reduction={self.reduction!r}"
