"""Tests of densecontrast.demo.pictures: the error map and the figures."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")
pytest.importorskip("matplotlib")

from densecontrast.datasets import SyntheticInstances
from densecontrast.demo import error_map, plot_losses, plot_predictions

PNG = b"\x89PNG\r\n\x1a\n"


def test_error_map_known_answer() -> None:
    gt = torch.zeros(2, 6, 6, dtype=torch.bool)
    gt[0, :3, :3] = True  # instance 0: 9 pixels
    gt[1, 3:, 3:] = True  # instance 1: never predicted
    pred = torch.zeros(1, 6, 6, dtype=torch.bool)
    pred[0, 1:4, 1:4] = True  # covers 4 of instance 0, 1 pixel of instance 1, 4 background pixels
    err = error_map(gt, pred)
    assert int((err == 1).sum()) == 4
    assert int((err == 2).sum()) == 5 + 8  # the rest of instance 0, the missed instance 1 but one pixel
    assert int((err == 3).sum()) == 4
    assert int((err == 4).sum()) == 1 and bool(err[3, 3] == 4)
    assert bool((error_map(gt, torch.zeros(0, 6, 6, dtype=torch.bool)) == 2).sum() == 18)
    low = torch.zeros(1, 6, 6, dtype=torch.bool)
    low[0, 0, 5] = True  # IoU 0 with every instance: unmatched, left out
    assert int((error_map(gt, low) == 3).sum()) == 0


def test_pictures_from_constructed_outputs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = SyntheticInstances(2, image_size=64, seed=0, split="val")
    outputs = []
    for i in range(2):
        masks = data[i][1]["masks"].float()[:, None]
        outputs.append({"masks": masks, "scores": torch.ones(masks.shape[0]), "labels": data[i][1]["labels"]})
    plot_predictions(data, {"Baseline": outputs, "+DCL": outputs}, tmp_path / "p.png", aps={"+DCL": 1.0})
    history = [{"loss_mask": 1.0 / (s + 1), "loss": 2.0 / (s + 1)} for s in range(30)]
    plot_losses({"baseline": history, "dcl": [{**h, "loss_dcl": 0.5} for h in history]}, tmp_path / "l.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG and (tmp_path / "l.png").read_bytes()[:8] == PNG
    perfect = error_map(data[0][1]["masks"], outputs[0]["masks"][:, 0] > 0.5)
    assert set(perfect.unique().tolist()) <= {0, 1}
