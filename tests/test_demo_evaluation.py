"""Tests of densecontrast.demo.evaluation: eval outputs and the mask head's per-pixel features."""

from __future__ import annotations

import pytest

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")
pytest.importorskip("matplotlib")

from densecontrast.datasets import SyntheticInstances
from densecontrast.demo import DemoConfig, build_model, roi_features


def test_roi_features_label_the_own_instance_zero() -> None:
    config = DemoConfig(image_size=64, num_categories=2)
    model = build_model(config)
    data = SyntheticInstances(2, image_size=64, num_categories=2, seed=3, split="val")
    feats, labels, groups = roi_features(model, data, images=2)
    rois = sum(int(data[i][1]["boxes"].shape[0]) for i in range(2))
    assert feats.shape == (rois * 28 * 28, config.mask_channels)
    assert labels.shape == groups.shape == (feats.shape[0],)
    assert groups.unique().tolist() == list(range(rois))
    per_roi = labels.view(rois, 28 * 28)
    assert bool(((per_roi == 0).sum(dim=1) > 0).all())  # every box shows its own instance
    assert int(labels.min()) >= -1
