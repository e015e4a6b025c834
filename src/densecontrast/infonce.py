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

from typing import Any, NamedTuple

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

_EPS = 1e-12  # as F.normalize
_SOFTPLUS_THRESHOLD = 20.0  # F.softplus's default; its backward below uses the same one


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _roi_weights(valid: Tensor | None, reduction: str, dtype: torch.dtype) -> Tensor | None:
    """Per-RoI weights (R,) of the reduction: valid / max(#valid, 1) for "mean", else valid as 0 / 1."""
    if valid is None:
        return None
    if reduction == "mean":
        count = valid.sum(dtype=dtype).clamp_min_(1.0)  # a device scalar: no host round trip
        return valid / count
    return valid.to(dtype)


def _reduce(per_roi: Tensor, weights: Tensor | None, reduction: str) -> Tensor:
    if weights is None:
        if reduction == "none":
            return per_roi
        total = per_roi.sum()
        return total if reduction == "sum" else total / max(per_roi.shape[0], 1)
    if reduction == "none":
        return per_roi * weights
    return torch.dot(per_roi, weights)


def _roi_grad(grad: Tensor, weights: Tensor | None, reduction: str, num_rois: int) -> Tensor:
    """d loss / d per_roi, (R,) or broadcastable to it."""
    if weights is not None:
        return grad * weights
    if reduction == "mean":
        return grad / max(num_rois, 1)
    return grad.expand(num_rois) if reduction == "sum" else grad


class _Similarities(NamedTuple):
    """What the infoNCE forward computes from z (R, D, M) before the log-sum-exp."""

    radial_sq: Tensor  # (R, 1, M) squared norms, inf where the norm is at most eps (no radial gradient)
    outer: Tensor  # (R, A, M - A) products of an anchor's and a key's inverse norms, 1 / max(|z|, eps)
    sim: Tensor  # (R, A, M - A) cosine similarities / tau


def _similarities(z: Tensor, num_anchors: int, tau: float) -> _Similarities:
    """Anchor-to-key similarities without normalising z itself.

    The Gram matrix of the raw features is scaled by the inverse norms afterwards, which touches R x A x
    (M - A) numbers instead of the R x D x M of a normalised copy of z. The norms come from a plain sum of
    squares, which on the CPU runs about 3x faster than ``linalg.vector_norm`` across the channel dimension.
    Clamping the squared norm at eps**2 is clamping the norm at eps, as ``F.normalize`` does. Where the
    norm is at most eps, ``F.normalize`` only scales z by 1/eps, so its gradient has no radial part there
    (``clamp_min`` passes gradient where its input exceeds the minimum); ``radial_sq`` is inf at those
    places, which zeroes that part in the backward.
    """
    sq = (z * z).sum(dim=1, keepdim=True)
    radial_sq = sq.masked_fill(sq <= _EPS * _EPS, float("inf"))
    inv = sq.clamp_min_(_EPS * _EPS).rsqrt()
    outer = inv[:, :, :num_anchors].transpose(1, 2) * inv[:, :, num_anchors:]
    # The cosines first, then 1/tau: scaling the raw products by 1/tau would overflow float32 for norms
    # above about 5e18 where the cosines do not.
    sim = torch.bmm(z[:, :, :num_anchors].transpose(1, 2), z[:, :, num_anchors:]).mul_(outer).mul_(1.0 / tau)
    return _Similarities(radial_sq, outer, sim)


class _Config(NamedTuple):
    """The non-tensor arguments of :class:`_InfoNCE`: sample counts, temperature, reduction."""

    anchors: int
    positives: int
    tau: float
    reduction: str


def _differentiable_grad(z: Tensor, grad: Tensor, weights: Tensor | None, config: _Config) -> Tensor:
    """The gradient of :class:`_InfoNCE` written with plain autograd ops, for double backward."""
    raw_norm = torch.linalg.vector_norm(z, dim=1, keepdim=True)
    norm = raw_norm.clamp_min(_EPS)
    zhat = z / norm
    anchors, keys = zhat[:, :, : config.anchors], zhat[:, :, config.anchors :]
    sim = torch.bmm(anchors.transpose(1, 2), keys) / config.tau
    s_pos, s_neg = sim[..., : config.positives], sim[..., config.positives :]
    lse = torch.logsumexp(s_neg, dim=-1, keepdim=True)
    roi = _roi_grad(grad, weights, config.reduction, z.shape[0]).reshape(-1, 1, 1)
    d_margin = torch.sigmoid(lse - s_pos) * roi / (config.anchors * config.positives)
    d_sim = torch.cat([-d_margin, torch.softmax(s_neg, dim=-1) * d_margin.sum(-1, keepdim=True)], dim=-1)
    d_sim = d_sim / config.tau
    d_zhat = torch.cat([torch.bmm(keys, d_sim.transpose(1, 2)), torch.bmm(anchors, d_sim)], dim=2)
    radial = (d_zhat * zhat).sum(1, keepdim=True) * (raw_norm > _EPS)  # none where the norm is clamped
    return (d_zhat - zhat * radial) / norm


class _InfoNCE(torch.autograd.Function):
    """Normalise, score, infoNCE and reduce over RoIs in one node, with a hand-written backward.

    ``z`` is channels-first, (R, D, A + P + Q). Autograd of the plain expression would write several
    full-size buffers in the backward (a zero-filled gradient per slice of ``z``, the normalisation's
    chain of elementwise ops); this backward writes one and updates it in place. When a graph is built
    through the backward (``create_graph=True``), it is recomputed with plain autograd ops instead, so
    second derivatives are exact.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, valid: Tensor | None, config: _Config) -> Tensor:
        radial_sq, outer, sim = _similarities(z, config.anchors, config.tau)
        lse = torch.logsumexp(sim[..., config.positives :], dim=-1, keepdim=True)  # (R, A, 1)
        margin = lse - sim[..., : config.positives]  # (R, A, P)
        per_roi = F.softplus(margin).mean(dim=(1, 2))
        weights = _roi_weights(valid, config.reduction, per_roi.dtype)
        ctx.save_for_backward(z, radial_sq, outer, sim, lse, margin, weights)
        ctx.config = config
        return _reduce(per_roi, weights, config.reduction)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        z, radial_sq, outer, sim, lse, margin, weights = ctx.saved_tensors
        config: _Config = ctx.config
        if torch.is_grad_enabled():
            return _differentiable_grad(z, grad, weights, config), None, None
        a, p = config.anchors, config.positives
        roi = _roi_grad(grad, weights, config.reduction, z.shape[0]).reshape(-1, 1, 1)
        # d per-RoI sum / d margin = sigmoid(margin), scaled by the RoI's gradient (1/(A P tau) comes later).
        d_margin = torch.ops.aten.softplus_backward(roi, margin, 1.0, _SOFTPLUS_THRESHOLD)
        # d lse / d s_neg is the softmax over negatives; the positives' columns are overwritten next.
        d_sim = torch.exp(sim - lse)
        d_sim[..., p:].mul_(d_margin.sum(-1, keepdim=True))
        if torch.compiler.is_compiling():
            d_sim[..., :p] = -d_margin  # dynamo does not trace out= into a view; inductor fuses this anyway
        else:
            torch.neg(d_margin, out=d_sim[..., :p])
        # With unit features u = z/|z| and g = d loss / d u, the gradient is (g - u <u, g>) / |z|. Both
        # parts are written in the raw z, so no normalised copy of z is made:
        # - g / |z| at an anchor is scale * sum_v z_v d_sim_uv outer_uv, likewise at a positive or
        #   negative: Gram products on the R x A x (M - A) coefficients d_sim * outer;
        # - u <u, g> / |z| = z <u, g> / |z|^2, and <u, g> = scale tau sum_v d_sim_uv sim_uv needs only the
        #   similarities (sim holds cosines / tau). The GEMMs' beta applies -scale tau to that part. Where
        #   |z| <= eps, u = z / eps and the gradient is g / eps alone: radial_sq is inf there.
        scale = 1.0 / (a * p * config.tau)
        gs = d_sim * outer
        d_sim.mul_(sim)
        radial = torch.cat([d_sim.sum(2, keepdim=True).transpose(1, 2), d_sim.sum(1, keepdim=True)], dim=2)
        d_z = z * radial.div_(radial_sq)
        d_z[:, :, :a].baddbmm_(z[:, :, a:], gs.transpose(1, 2), beta=-scale * config.tau, alpha=scale)
        d_z[:, :, a:].baddbmm_(z[:, :, :a], gs, beta=-scale * config.tau, alpha=scale)
        return d_z, None, None


def _info_nce(
    z: Tensor,
    valid: Tensor | None,
    num_anchors: int,
    num_positives: int,
    tau: float,
    reduction: str,
) -> Tensor:
    """The infoNCE kernel (arguments already checked) on channels-first samples z (R, D, A + P + Q).

    Runs outside autocast in float32 (float64 stays float64). Returns the reduced loss: (R,) for
    ``"none"`` (zero at invalid RoIs), else a scalar. With ``valid`` given, the features of invalid RoIs
    must be finite (the gather zeroes them): they then get exactly zero gradient.
    """
    with torch.autocast(device_type=z.device.type, enabled=False):
        dtype = _compute_dtype(z.dtype)
        if z.dtype != dtype:
            z = z.to(dtype)
        if z.shape[2] == num_anchors + num_positives:
            # No negatives: every term is -log(1) = 0; keep the graph.
            return _reduce(z.sum(dim=(1, 2)) * 0.0, _roi_weights(valid, reduction, dtype), reduction)
        config = _Config(num_anchors, num_positives, tau, reduction)
        out: Tensor = _InfoNCE.apply(z, valid, config)
        return out


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
    z = torch.cat([anchors.to(dtype), positives.to(dtype), negatives.to(dtype)], dim=1)  # (R, M, D)
    return _info_nce(z.transpose(1, 2), None, a, positives.shape[1], tau, reduction)
