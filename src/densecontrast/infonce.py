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

import torch
import torch.nn.functional as F
from torch import Tensor

from ._validation import (
    check_floating,
    check_ndim,
    check_reduction,
    check_same_device,
    check_tau,
    check_tensor,
    shape_str,
)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _info_nce_stacked(z: Tensor, num_anchors: int, num_positives: int, tau: float) -> Tensor:
    """Per-RoI loss from the stacked samples ``z`` (R, A + P + Q, D): anchors, positives, negatives.

    Normalises once, computes every anchor x (positive, negative) similarity in one batched matmul.
    Runs outside autocast in float32 (float64 stays float64). Returns float tensor (R,).
    """
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = F.normalize(z.to(_compute_dtype(z.dtype)), dim=-1)
        anchors = z[:, :num_anchors]
        keys = z[:, num_anchors:]
        sim = torch.bmm(anchors, keys.transpose(1, 2)) * (1.0 / tau)  # (R, A, P + Q)
        s_pos = sim[..., :num_positives]
        s_neg = sim[..., num_positives:]
        if s_neg.shape[-1] == 0:
            # No negatives: every term is -log(1) = 0; keep the graph.
            return sim.sum(dim=(1, 2)) * 0.0
        lse_neg = torch.logsumexp(s_neg, dim=-1, keepdim=True)  # (R, A, 1)
        return F.softplus(lse_neg - s_pos).mean(dim=(1, 2))


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

    Example:
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
