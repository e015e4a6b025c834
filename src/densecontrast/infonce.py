r"""Batched infoNCE over sampled pixels.

Shapes: R RoIs, A anchors, P positives, Q negatives per RoI (all K in the paper), D feature dimension.

For an RoI with anchors :math:`u`, positives :math:`v` and negatives :math:`w`, and cosine similarities
:math:`s`, the loss is the mean over the :math:`A \times P` (anchor, positive) pairs of

.. math::

    -\log \frac{e^{s_{uv}/\tau}}{e^{s_{uv}/\tau} + \sum_{w} e^{s_{uw}/\tau}}
    = \operatorname{softplus}\Big(\operatorname{LSE}_w(s_{uw}/\tau) - s_{uv}/\tau\Big),

computed in the right-hand form, which cannot overflow.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._validation import (
    check_floating,
    check_ndim,
    check_reduction,
    check_same_device,
    check_tau,
    check_tensor,
    shape_str,
)

_EPS = 1e-12  # as F.normalize


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class _StackedInfoNCE(torch.autograd.Function):
    """Normalise, score and infoNCE in one node, with a hand-written backward.

    Autograd of the plain expression would write several full-size (R, A + P + Q, D) buffers in the
    backward (a zero-filled gradient per slice of ``z``, and the normalisation's chain of elementwise
    ops); this backward writes one and updates it in place.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, num_anchors: int, num_positives: int, tau: float) -> Tensor:
        norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp_min_(_EPS)  # (R, M, 1)
        zhat = z / norm
        anchors, keys = zhat[:, :num_anchors], zhat[:, num_anchors:]
        sim = torch.bmm(anchors, keys.transpose(1, 2)).mul_(1.0 / tau)  # (R, A, P + Q)
        s_pos, s_neg = sim[..., :num_positives], sim[..., num_positives:]
        lse = torch.logsumexp(s_neg, dim=-1, keepdim=True)  # (R, A, 1)
        margin = lse - s_pos  # (R, A, P)
        ctx.save_for_backward(zhat, norm, sim, lse, margin)
        ctx.sizes = (num_anchors, num_positives, tau)
        return F.softplus(margin).mean(dim=(1, 2))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        zhat, norm, sim, lse, margin = ctx.saved_tensors
        num_anchors, num_positives, tau = ctx.sizes
        # d loss / d margin = sigmoid(margin) / (A * P), scaled by the incoming per-RoI gradient.
        d_margin = torch.sigmoid(margin).mul_((grad / (num_anchors * num_positives)).view(-1, 1, 1))
        d_sim = torch.empty_like(sim)
        d_sim[..., :num_positives] = -d_margin
        # d lse / d s_neg is the softmax over negatives.
        d_sim[..., num_positives:] = torch.exp(sim[..., num_positives:] - lse).mul_(
            d_margin.sum(-1, keepdim=True)
        )
        d_sim.mul_(1.0 / tau)
        anchors, keys = zhat[:, :num_anchors], zhat[:, num_anchors:]
        d_zhat = torch.cat([torch.bmm(d_sim, keys), torch.bmm(d_sim.transpose(1, 2), anchors)], dim=1)
        # Through the normalisation: (d_zhat - zhat <zhat, d_zhat>) / |z|.
        radial = (d_zhat * zhat).sum(-1, keepdim=True)
        return d_zhat.addcmul_(zhat, radial, value=-1.0).div_(norm), None, None, None


def _info_nce_stacked(z: Tensor, num_anchors: int, num_positives: int, tau: float) -> Tensor:
    """Per-RoI loss from the stacked samples ``z`` (R, A + P + Q, D): anchors, positives, negatives.

    Normalises once, computes every anchor x (positive, negative) similarity in one batched matmul.
    Runs outside autocast in float32 (float64 stays float64). Returns float tensor (R,).
    """
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = z.to(_compute_dtype(z.dtype))
        if z.shape[1] == num_anchors + num_positives:
            # No negatives: every term is -log(1) = 0; keep the graph.
            return z.sum(dim=(1, 2)) * 0.0
        out: Tensor = _StackedInfoNCE.apply(z, num_anchors, num_positives, tau)
        return out


def reduce_per_roi(per_roi: Tensor, valid: Tensor | None, reduction: str) -> Tensor:
    """Zero the losses of invalid RoIs and reduce over RoIs without a host sync.

    ``"mean"`` divides by the number of valid RoIs (at least 1), ``"sum"`` adds them, ``"none"`` returns
    the (R,) vector with zeros at invalid RoIs. The result stays in the autograd graph even when no RoI is
    valid or R is 0.
    """
    if valid is not None:
        per_roi = torch.where(valid, per_roi, per_roi.new_zeros(()))
    if reduction == "none":
        return per_roi
    total = per_roi.sum()
    if reduction == "sum":
        return total
    count = valid.sum() if valid is not None else per_roi.new_tensor(per_roi.shape[0])
    return total / count.clamp(min=1).to(total.dtype)


def dense_info_nce(
    anchors: Tensor,
    positives: Tensor,
    negatives: Tensor,
    *,
    tau: float,
    reduction: str = "none",
) -> Tensor:
    """InfoNCE of every anchor against the positives and negatives of its own RoI.

    The features are L2-normalised along D; similarities and the log-sum-exp run in float32 even under
    ``torch.autocast`` (float64 inputs stay float64).

    Args:
        anchors: float tensor (R, A, D).
        positives: float tensor (R, P, D).
        negatives: float tensor (R, Q, D); Q may be 0 (the loss is then 0).
        tau: temperature, a finite positive number.
        reduction: ``"none"`` returns the per-RoI loss (R,); ``"mean"`` and ``"sum"`` reduce over RoIs.

    Returns:
        float tensor (R,) for ``"none"``, else a scalar: the mean over the A x P (anchor, positive) pairs of
        ``-log(e^{s_uv/τ} / (e^{s_uv/τ} + Σ_w e^{s_uw/τ}))``.

    Examples:
        >>> a = torch.tensor([[[1.0, 0.0]]])        # one RoI, one anchor
        >>> p = torch.tensor([[[2.0, 0.0]]])        # same direction: s = 1
        >>> n = torch.tensor([[[0.0, 3.0]]])        # orthogonal: s = 0
        >>> loss = dense_info_nce(a, p, n, tau=1.0)
        >>> torch.allclose(loss, torch.log1p(torch.exp(torch.tensor([-1.0]))))
        True
    """
    anchors = check_tensor("anchors", anchors)
    positives = check_tensor("positives", positives)
    negatives = check_tensor("negatives", negatives)
    for name, t, sym in (("anchors", anchors, "(R, A, D)"), ("positives", positives, "(R, P, D)")):
        check_ndim(name, t, 3, sym)
        check_floating(name, t)
    check_ndim("negatives", negatives, 3, "(R, Q, D)")
    check_floating("negatives", negatives)
    tau = check_tau(tau)
    reduction = check_reduction(reduction)
    check_same_device(anchors=anchors, positives=positives, negatives=negatives)
    r, a, d = anchors.shape
    if (
        positives.shape[0] != r
        or positives.shape[2] != d
        or negatives.shape[0] != r
        or negatives.shape[2] != d
    ):
        raise ValueError(
            "anchors (R, A, D), positives (R, P, D) and negatives (R, Q, D) must agree in R and D; got "
            f"anchors {shape_str(anchors.shape)}, positives {shape_str(positives.shape)}, "
            f"negatives {shape_str(negatives.shape)}"
        )
    if a == 0 or positives.shape[1] == 0:
        raise ValueError(
            "anchors and positives need at least one sample per RoI; got "
            f"anchors {shape_str(anchors.shape)}, positives {shape_str(positives.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(anchors.dtype, positives.dtype), negatives.dtype)
    z = torch.cat([anchors.to(dtype), positives.to(dtype), negatives.to(dtype)], dim=1)
    per_roi = _info_nce_stacked(z, a, positives.shape[1], tau)
    return reduce_per_roi(per_roi, None, reduction)
