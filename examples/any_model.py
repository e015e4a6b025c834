"""The dense contrastive loss on a model densecontrast has no adapter for, in about ten lines.

``TinyOneStage`` below stands for "your model": a one-stage instance segmenter with a mask branch that
outputs dense per-pixel features (B, C, H/4, W/4) and a head that turns them into masks, trained with its
own loss. It has no proposals, so, as the paper does for SparseInst, the ground-truth boxes serve as
RoIs. Everything densecontrast-specific is in ``train_step`` between the two ``# --- dcl`` markers:

1. ``FeatureTap`` on the mask branch's output (made once, next to the model);
2. ``gt_box_rois`` cuts every instance's box out of those features and out of its mask;
3. ``DenseContrastiveLoss`` scores them; its projection head trains with the model;
4. the term is added to the model's own loss.

Run it on generated data (a few seconds on a CPU):

    python examples/any_model.py --steps 20

Needs torchvision for RoIAlign (``pip install 'densecontrast[torchvision]'``).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densecontrast import DenseContrastiveLoss, FeatureTap
from densecontrast.adapters.rois import gt_box_rois
from densecontrast.datasets import SyntheticInstances, collate_detection


class TinyOneStage(nn.Module):
    """A stand-in for your model: stem (stride 4), mask branch (dense features), mask head (1 x 1 conv).

    The head predicts a foreground logit per pixel; the model's own loss is a binary cross-entropy
    against the union of the instance masks at 1/4 resolution. Any model with a dense mask branch fits
    the same pattern: only the tapped module's name changes.

    Args:
        channels: C, the mask branch's width.
    """

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, 3, 2, 1), nn.ReLU(), nn.Conv2d(channels, channels, 3, 2, 1), nn.ReLU()
        )
        self.mask_branch = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.ReLU(),
        )
        self.mask_head = nn.Conv2d(channels, 1, 1)

    def forward(self, images: Tensor) -> Tensor:
        """Foreground logits (B, 1, H/4, W/4) of images (B, 3, H, W)."""
        return self.mask_head(self.mask_branch(self.stem(images)))

    @staticmethod
    def loss(logits: Tensor, targets: list[dict[str, Tensor]]) -> Tensor:
        """The model's own loss: BCE of the foreground logits against the union of the instance masks."""
        union = torch.stack([t["masks"].amax(dim=0, keepdim=True) for t in targets]).float()  # (B, 1, H, W)
        union = F.interpolate(union, size=logits.shape[-2:], mode="area")
        return F.binary_cross_entropy_with_logits(logits, union)


def train_step(
    model: TinyOneStage,
    tap: FeatureTap,
    dcl: DenseContrastiveLoss,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    targets: list[dict[str, Tensor]],
    *,
    weight: float = 1.2,
    margin: float = 0.1,
) -> dict[str, Tensor]:
    """One optimisation step of the model's loss plus ``weight`` x the dense contrastive loss."""
    logits = model(images)
    losses = {"loss_model": model.loss(logits, targets)}
    # --- dcl: the mask branch's output, cut at the ground-truth boxes (margin: negatives around objects)
    rois = gt_box_rois(tap.pop(), [t["masks"] for t in targets], margin=margin)
    losses["loss_dcl"] = weight * dcl(rois.feats, rois.masks)
    # --- dcl
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    optimizer.step()
    return losses


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--weight", type=float, default=0.3, help="λ of the loss (the adapters' default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    data = SyntheticInstances(args.steps * args.batch_size, image_size=args.image_size, seed=args.seed)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, collate_fn=collate_detection)
    model = TinyOneStage(channels=32)
    tap = FeatureTap(model.mask_branch, what="output", training_only=True)  # --- dcl
    dcl = DenseContrastiveLoss(k=32, tau=0.07, in_channels=32)  # --- dcl: learnable similarity
    optimizer = torch.optim.Adam([*model.parameters(), *dcl.parameters()], lr=1e-3)
    model.train()
    for step, (images, targets) in enumerate(loader, 1):
        losses = train_step(model, tap, dcl, optimizer, torch.stack(images), targets, weight=args.weight)
        print(f"step {step}: " + ", ".join(f"{k}={v.item():.4f}" for k, v in losses.items()))
    tap.remove()


if __name__ == "__main__":
    main()
