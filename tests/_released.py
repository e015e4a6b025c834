"""The released code's algorithm, kept as a baseline for benchmarks and compatibility tests.

Shapes: R RoIs, C channels, H x W RoI grid, K samples per set.

It follows the original implementation step by step: two 1x1 convolutions over the whole feature map,
then a Python loop over RoIs that indexes one RoI at a time, samples with replacement, and averages the
per-RoI losses. Autograd turns each per-RoI index into a full-size zero gradient, so the backward grows
with the square of R. Test-only code (tests and ``benchmarks/``), not shipped with the package: use
:class:`densecontrast.DenseContrastiveLoss` (with ``replacement=True`` for the released sampling rule).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densecontrast.loss import DEFAULT_K, DEFAULT_TAU


class ReleasedDenseContrastiveLoss(nn.Module):
    """Loop-over-RoIs dense contrastive loss with a convolutional projection, as released.

    Args:
        channels: C; the projection is C -> C -> C, two 1x1 convolutions with a ReLU between.
        k: samples per set.
        tau: temperature.
        max_rois: at most this many RoIs are used (the released code keeps 100); None keeps all.
    """

    def __init__(
        self, channels: int, k: int = DEFAULT_K, tau: float = DEFAULT_TAU, max_rois: int | None = 100
    ) -> None:
        super().__init__()
        self.k = k
        self.tau = tau
        self.max_rois = max_rois
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(
        self, feats: Tensor, masks: Tensor, samples: tuple[Tensor, Tensor, Tensor] | None = None
    ) -> Tensor:
        """Mean loss over the RoIs with ``k < |M| < H*W - k``.

        Args:
            feats: float tensor (R, C, H, W).
            masks: bool tensor (R, H, W).
            samples: optional (anchors, positives, negatives), int64 (R, K) flat indices, replacing the
                random draws (for comparisons with identical samples).
        """
        proj = self.conv2(F.relu(self.conv1(feats)))
        num_rois = proj.shape[0] if self.max_rois is None else min(proj.shape[0], self.max_rois)
        hw = masks.shape[1] * masks.shape[2]
        losses = []
        for i in range(num_rois):
            m = masks[i].reshape(-1)
            pos = torch.nonzero(m).squeeze(1)
            neg = torch.nonzero(~m).squeeze(1)
            if not (self.k < pos.numel() < hw - self.k):
                continue
            if samples is None:
                a = pos[torch.randint(pos.numel(), (self.k,), device=pos.device)]
                p = pos[torch.randint(pos.numel(), (self.k,), device=pos.device)]
                n = neg[torch.randint(neg.numel(), (self.k,), device=neg.device)]
            else:
                a, p, n = samples[0][i], samples[1][i], samples[2][i]
            f = proj[i].reshape(proj.shape[1], -1)  # (C, H*W): a per-RoI index
            fa = F.normalize(f[:, a], dim=0)
            fp = F.normalize(f[:, p], dim=0)
            fn = F.normalize(f[:, n], dim=0)
            pos_logits = torch.exp(fa.t() @ fp / self.tau)  # (K, K)
            neg_logits = torch.exp(fa.t() @ fn / self.tau).sum(dim=1, keepdim=True)  # (K, 1)
            losses.append(-torch.log(pos_logits / (pos_logits + neg_logits)).mean())
        if not losses:
            return proj.sum() * 0.0
        return torch.stack(losses).mean()
