"""Plain float64 references, written as loops straight from the paper's equations.

Slow on purpose: they are the yardstick the vectorised code is compared with.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def project_pixel(vec: Tensor, projector: nn.Module | None) -> Tensor:
    """φ of one pixel feature (C,), in float64, written as two explicit matrix-vector products."""
    if projector is None:
        return vec.double()
    w1 = projector.fc1.weight.detach().double()
    b1 = projector.fc1.bias.detach().double()
    w2 = projector.fc2.weight.detach().double()
    b2 = projector.fc2.bias.detach().double()
    hidden = torch.clamp(w1 @ vec.double() + b1, min=0.0)
    return w2 @ hidden + b2


def cosine(x: Tensor, y: Tensor) -> float:
    return float((x @ y) / (x.norm() * y.norm()))


def reference_roi_loss(
    vectors_a: list[Tensor], vectors_p: list[Tensor], vectors_n: list[Tensor], tau: float
) -> float:
    """Eq. 3 of the paper for one RoI, averaged over the (anchor, positive) pairs."""
    total = 0.0
    for fu in vectors_a:
        for fv in vectors_p:
            num = math.exp(cosine(fu, fv) / tau)
            den = num + sum(math.exp(cosine(fu, fw) / tau) for fw in vectors_n)
            total += -math.log(num / den)
    return total / (len(vectors_a) * len(vectors_p))


def pixel(feats: Tensor, r: int, flat_index: int) -> Tensor:
    width = feats.shape[3]
    return feats[r, :, flat_index // width, flat_index % width]


def reference_loss(
    feats: Tensor,
    anchors: Tensor,
    positives: Tensor,
    negatives: Tensor,
    valid: Tensor,
    *,
    tau: float,
    projector: nn.Module | None = None,
    reduction: str = "mean",
) -> Tensor:
    """The whole loss for explicit samples: per-RoI eq. 3 (pair mean), then the reduction over valid RoIs."""
    per_roi = []
    for r in range(feats.shape[0]):
        if not bool(valid[r]):
            per_roi.append(0.0)
            continue
        va = [project_pixel(pixel(feats, r, int(i)), projector) for i in anchors[r]]
        vp = [project_pixel(pixel(feats, r, int(i)), projector) for i in positives[r]]
        vn = [project_pixel(pixel(feats, r, int(i)), projector) for i in negatives[r]]
        per_roi.append(reference_roi_loss(va, vp, vn, tau))
    out = torch.tensor(per_roi, dtype=torch.float64)
    if reduction == "none":
        return out
    if reduction == "sum":
        return out.sum()
    return out.sum() / max(int(valid.sum()), 1)


def reference_validity(masks: Tensor, k: int, replacement: bool) -> list[bool]:
    """The validity rule, counted pixel by pixel."""
    flags = []
    for m in masks:
        n_in = sum(1 for v in m.flatten().tolist() if v == 1)
        n_out = sum(1 for v in m.flatten().tolist() if v == 0)
        flags.append(n_in > k and n_out > k if replacement else n_in >= k and n_out >= k)
    return flags


def autograd_loss(
    feats: Tensor,
    anchors: Tensor,
    positives: Tensor,
    negatives: Tensor,
    valid: Tensor,
    *,
    tau: float,
    projector: nn.Module | None = None,
    reduction: str = "mean",
) -> Tensor:
    """The loss as a plain autograd expression (indexing, F.normalize, log-sum-exp): twice differentiable.

    Invalid RoIs are dropped before anything is computed, so they cannot touch any gradient.
    """
    import torch.nn.functional as F

    keep = torch.nonzero(valid).flatten()
    r, c = feats.shape[:2]
    pixels = feats.reshape(r, c, -1)[keep].transpose(1, 2)  # (V, H*W, C)

    def take(index: Tensor) -> Tensor:
        rows = torch.gather(pixels, 1, index[keep].unsqueeze(2).expand(-1, -1, c))
        rows = rows if projector is None else projector(rows)
        return F.normalize(rows, dim=-1)

    a, p, n = take(anchors), take(positives), take(negatives)
    s_pos = torch.bmm(a, p.transpose(1, 2)) / tau
    lse = torch.logsumexp(torch.bmm(a, n.transpose(1, 2)) / tau, dim=-1, keepdim=True)
    kept = F.softplus(lse - s_pos).mean(dim=(1, 2))
    per_roi = torch.zeros(r, dtype=kept.dtype).index_put((keep,), kept)
    if reduction == "none":
        return per_roi
    if reduction == "sum":
        return per_roi.sum()
    return per_roi.sum() / max(int(valid.sum()), 1)
