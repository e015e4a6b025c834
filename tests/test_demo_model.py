"""Tests of densecontrast.demo.model: the Mask R-CNN the demo trains."""

from __future__ import annotations

import pytest

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")
pytest.importorskip("matplotlib")

from densecontrast.demo import DemoConfig, build_model


@pytest.mark.slow
def test_paper_model_has_the_standard_widths() -> None:
    model = build_model(DemoConfig(backbone="resnet50", mask_channels=256, image_size=64))
    heads = model.roi_heads
    assert heads.mask_predictor.conv5_mask.in_channels == 256
    assert heads.box_head.fc6.out_features == 1024
    assert model.backbone.out_channels == 256
    light = build_model(DemoConfig(image_size=64))
    assert light.backbone.out_channels == 64 and light.roi_heads.mask_predictor.conv5_mask.in_channels == 64
    assert sum(p.numel() for p in light.parameters()) < sum(p.numel() for p in model.parameters()) / 5
