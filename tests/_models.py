"""Tiny real models shared by the adapter tests (random weights, no downloads).

``tiny_maskrcnn`` is torchvision's ``MaskRCNN`` class with every part it normally has (an FPN backbone,
RPN, box head, mask head, ``MaskRCNNPredictor``), only narrow: a three-conv body, 32-channel FPN, two
small mask-head convolutions. A training step on 64 x 80 images takes a few tens of milliseconds, so the
adapter tests exercise the real torchvision code paths without the cost of a ResNet-50.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import Tensor, nn

TINY_CHANNELS = 32
"""Channels of the tiny model's FPN, mask head and predictor input (256 in the standard model)."""


class _TinyBackbone(nn.Module):
    """Three strided convolutions (strides 4, 8, 16) and an FPN over the last two, plus a pooled level."""

    def __init__(self) -> None:
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 4, 1), nn.ReLU())
        self.layer1 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.fpn = FeaturePyramidNetwork([16, 32], TINY_CHANNELS, extra_blocks=LastLevelMaxPool())
        self.out_channels = TINY_CHANNELS

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        c3 = self.layer1(self.stem(x))
        return self.fpn(OrderedDict([("0", c3), ("1", self.layer2(c3))]))


def tiny_maskrcnn(num_classes: int, **kwargs: Any) -> nn.Module:
    """A narrow torchvision ``MaskRCNN``; ``kwargs`` go to ``MaskRCNN`` (sizes, RPN and RoI settings)."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    c = TINY_CHANNELS
    return MaskRCNN(
        _TinyBackbone(),
        num_classes=None,
        rpn_anchor_generator=AnchorGenerator(((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3),
        box_roi_pool=MultiScaleRoIAlign(["0", "1"], 7, 2),
        box_head=TwoMLPHead(c * 7 * 7, 64),
        box_predictor=FastRCNNPredictor(64, num_classes),
        mask_roi_pool=MultiScaleRoIAlign(["0", "1"], 14, 2),
        mask_head=MaskRCNNHeads(c, [c, c], 1),
        mask_predictor=MaskRCNNPredictor(c, c, num_classes),
        **kwargs,
    )
