"""torchvision Mask R-CNN on a Swin-T backbone with a feature pyramid, with the dense contrastive loss.

The paper reports Mask R-CNN with a Swin-T backbone (Table 7). torchvision ships ``swin_t`` as a
classifier whose stages return channels-last maps (B, H, W, C); :func:`maskrcnn_swin_t_fpn` turns its
four stages into the channels-first pyramid ``MaskRCNN`` expects and builds the detector. The mask head is
torchvision's own, so the adapter attaches unchanged:

    from densecontrast.adapters.torchvision import attach
    model = maskrcnn_swin_t_fpn(num_classes=81)
    attach(model, weight=1.2)            # losses["loss_dcl"] in every training step

Shapes: B images, C the stage width (``embed_dim * 2**i`` at stage i), F the pyramid's channels.

Run one training step on generated data (CPU, tens of seconds at the full Swin-T width):

    python examples/maskrcnn_swin_t.py --steps 1 --image-size 128

Needs torchvision (``pip install 'densecontrast[torchvision]'``). No weights are downloaded unless
``--weights-backbone IMAGENET1K_V1`` is given.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import Swin_T_Weights
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

SWIN_T: dict[str, Any] = {
    "embed_dim": 96,
    "depths": (2, 2, 6, 2),
    "num_heads": (3, 6, 12, 24),
    "window_size": 7,
}
"""Swin-T's shape, as in ``torchvision.models.swin_t``."""


class SwinStages(nn.Module):
    """The four stages of a torchvision ``SwinTransformer`` as a channels-first multi-scale backbone.

    ``swin.features`` alternates stages and patch-merging layers: ``[patch embedding, stage 1, merge,
    stage 2, merge, stage 3, merge, stage 4]``. The output of each stage, (B, H/s, W/s, C_i) for strides
    s = 4, 8, 16, 32, is layer-normalised (one new norm per stage, as detection Swins do) and permuted to
    (B, C_i, H/s, W/s). The classifier's final norm and head are not used.

    Args:
        swin: a torchvision ``SwinTransformer`` (from ``swin_t`` or built directly).

    Attributes:
        channels: the four stage widths C_i.
    """

    def __init__(self, swin: SwinTransformer) -> None:
        super().__init__()
        if not isinstance(swin, SwinTransformer):
            raise TypeError(f"swin must be a torchvision SwinTransformer; got {type(swin).__name__}")
        self.body = swin.features
        if len(self.body) != 8:
            raise ValueError(
                f"swin.features must hold 8 layers (embedding + 4 stages + 3 merges); got {len(self.body)}"
            )
        self._stage_ids = (1, 3, 5, 7)
        embed = self.body[0][0]
        self.channels = [int(embed.out_channels) * 2**i for i in range(4)]
        self.norms = nn.ModuleList(nn.LayerNorm(c, eps=1e-5) for c in self.channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return the four stage outputs, float tensors (B, C_i, H/s, W/s) with s = 4, 8, 16, 32."""
        outs = []
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self._stage_ids:
                norm = self.norms[self._stage_ids.index(i)]
                outs.append(norm(x).permute(0, 3, 1, 2).contiguous())
        return outs


class SwinFPN(nn.Module):
    """Swin stages followed by a feature pyramid: the ``backbone`` of a torchvision ``MaskRCNN``.

    Returns an ``OrderedDict`` with keys ``"0"`` to ``"3"`` (strides 4 to 32) and ``"pool"`` (stride 64),
    each float (B, F, H/s, W/s): the names torchvision's default anchor generator and RoI poolers expect.

    Args:
        swin: a torchvision ``SwinTransformer``.
        out_channels: F, the pyramid's width.
    """

    def __init__(self, swin: SwinTransformer, out_channels: int = 256) -> None:
        super().__init__()
        self.body = SwinStages(swin)
        self.fpn = FeaturePyramidNetwork(self.body.channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        stages = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(stages)))


def maskrcnn_swin_t_fpn(
    num_classes: int,
    *,
    weights_backbone: Swin_T_Weights | str | None = None,
    fpn_channels: int = 256,
    embed_dim: int = 96,
    depths: Sequence[int] = (2, 2, 6, 2),
    num_heads: Sequence[int] = (3, 6, 12, 24),
    window_size: int = 7,
    stochastic_depth_prob: float = 0.2,
    mask_head_channels: int = 256,
    **maskrcnn_kwargs: Any,
) -> MaskRCNN:
    """Mask R-CNN with a Swin-T + FPN backbone, randomly initialised unless ``weights_backbone`` is given.

    Args:
        num_classes: classes including the background.
        weights_backbone: ImageNet weights for the Swin-T body (``"IMAGENET1K_V1"`` downloads them); only
            with the default Swin-T shape. Default None (no download).
        fpn_channels: F, the pyramid's width (and the RoI heads' input width). Default 256.
        embed_dim: width of the first stage (96 for Swin-T); stage i has ``embed_dim * 2**i`` channels.
        depths: blocks per stage (Swin-T: 2, 2, 6, 2).
        num_heads: attention heads per stage (Swin-T: 3, 6, 12, 24); each must divide its stage width.
        window_size: attention window side (Swin-T: 7). Inputs of any size are padded to whole windows.
        stochastic_depth_prob: the largest drop-path rate (Swin-T: 0.2).
        mask_head_channels: width of the mask head's four convolutions and its deconvolution, the
            channels the dense contrastive loss sees (torchvision's default: 256).
        **maskrcnn_kwargs: passed to ``torchvision.models.detection.MaskRCNN`` (``min_size``, ``max_size``,
            ``box_batch_size_per_image``, ...).

    Returns:
        A ``MaskRCNN`` whose ``backbone`` is a :class:`SwinFPN`.

    Raises:
        ValueError: weights with a non-default shape, or stage settings of the wrong length.
    """
    shape: dict[str, Any] = {"embed_dim": embed_dim, "depths": tuple(depths), "num_heads": tuple(num_heads),
                             "window_size": window_size}  # fmt: skip
    if len(shape["depths"]) != 4 or len(shape["num_heads"]) != 4:
        raise ValueError(f"depths and num_heads must hold 4 stages each; got {depths!r} and {num_heads!r}")
    if weights_backbone is not None and shape != SWIN_T:
        raise ValueError(f"weights_backbone={weights_backbone!r} needs Swin-T's shape {SWIN_T}; got {shape}")
    swin = SwinTransformer(
        patch_size=[4, 4],
        embed_dim=embed_dim,
        depths=list(depths),
        num_heads=list(num_heads),
        window_size=[window_size, window_size],
        stochastic_depth_prob=stochastic_depth_prob,
    )
    if weights_backbone is not None:  # the classifier's weights; its head and final norm go unused
        swin.load_state_dict(Swin_T_Weights.verify(weights_backbone).get_state_dict(progress=True))
    model = MaskRCNN(SwinFPN(swin, fpn_channels), num_classes=num_classes, **maskrcnn_kwargs)
    if mask_head_channels != 256:  # torchvision's MaskRCNN builds 256-wide mask heads
        width = mask_head_channels
        model.roi_heads.mask_head = MaskRCNNHeads(fpn_channels, [width] * 4, dilation=1)
        model.roi_heads.mask_predictor = MaskRCNNPredictor(width, width, num_classes)
    return model


def main(argv: list[str] | None = None) -> None:
    from densecontrast.adapters.torchvision import attach
    from densecontrast.datasets import SyntheticInstances, collate_detection

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--weight", type=float, default=0.3, help="λ of the loss (the adapters' default)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    data = SyntheticInstances(args.steps * args.batch_size, image_size=args.image_size, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, collate_fn=collate_detection)
    model = maskrcnn_swin_t_fpn(data.num_categories + 1, min_size=args.image_size, max_size=args.image_size)
    attach(model, weight=args.weight)  # before the optimizer: the projector's parameters train too
    model.to(args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    for step, (images, targets) in enumerate(loader, 1):
        images = [im.to(args.device) for im in images]
        targets = [{k: v.to(args.device) for k, v in t.items()} for t in targets]
        losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        print(f"step {step}: " + ", ".join(f"{k}={v.item():.4f}" for k, v in losses.items()))


if __name__ == "__main__":
    main()
