"""The demo's model: a torchvision Mask R-CNN with a randomly initialised ResNet-FPN backbone."""

from __future__ import annotations

from torch import nn

from .config import DemoConfig, is_standard_backbone


def build_model(config: DemoConfig) -> nn.Module:
    """A torchvision ``MaskRCNN`` with a randomly initialised ResNet-FPN backbone (no downloads).

    Trained from scratch, so the backbone's batch norm is trainable (``nn.BatchNorm2d``; torchvision's
    default frozen batch norm is the identity at random init), and the mask head has batch norm too.

    The light configuration (ResNet-18, ``fpn_channels`` 64): FPN levels from the stride-4, 8 and 16
    stages plus a pooled level, a 256-wide box head, a 64-wide mask head, ``proposals`` RPN proposals and
    ``rois_per_image`` sampled RoIs per image, anchors from 8 to 64 pixels at S = 128 (scaled with S).
    With ``resnet50`` and ``mask_channels=256`` it is the paper's R50-FPN Mask R-CNN (FPN and mask head
    256 wide, a 1024-wide box head, four stages), at the demo's image size.

    Args:
        config: the run's configuration (``config.resolved()`` is applied).
    """
    import torchvision
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    c = config.resolved()
    num_classes = c.num_categories + 1
    try:
        body = getattr(torchvision.models, c.backbone)(weights=None, norm_layer=nn.BatchNorm2d)
    except AttributeError:
        raise ValueError(f"backbone must be a torchvision ResNet name; got {c.backbone!r}") from None
    stages = (1, 2, 3, 4) if is_standard_backbone(c.backbone) else (1, 2, 3)
    in_channels = [body.inplanes // 8 * 2 ** (k - 1) for k in stages]
    names = {f"layer{k}": str(i) for i, k in enumerate(stages)}
    backbone = BackboneWithFPN(body, names, in_channels, c.fpn_channels, extra_blocks=LastLevelMaxPool())
    levels = len(stages) + 1
    scale = c.image_size / 128
    anchors = AnchorGenerator(
        tuple((max(4, round(8 * scale * 2**i)),) for i in range(levels)), ((0.5, 1.0, 2.0),) * levels
    )
    maps = [str(i) for i in range(len(stages))]
    return MaskRCNN(
        backbone,
        num_classes=None,
        min_size=c.image_size,
        max_size=c.image_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=2 * c.proposals,
        rpn_post_nms_top_n_train=c.proposals,
        rpn_pre_nms_top_n_test=2 * c.proposals,
        rpn_post_nms_top_n_test=c.proposals,
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=c.rois_per_image,
        box_detections_per_img=50,
        box_roi_pool=MultiScaleRoIAlign(maps, 7, 2),
        mask_roi_pool=MultiScaleRoIAlign(maps, 14, 2),
        box_head=TwoMLPHead(c.fpn_channels * 49, c.box_head_dim),
        box_predictor=FastRCNNPredictor(c.box_head_dim, num_classes),
        mask_head=MaskRCNNHeads(c.fpn_channels, [c.mask_channels] * 4, 1, norm_layer=nn.BatchNorm2d),
        mask_predictor=MaskRCNNPredictor(c.mask_channels, c.mask_channels, num_classes),
    )
