"""Tests of densecontrast.demo.training: the learning-rate schedule, data and training loop."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")
pytest.importorskip("matplotlib")

from densecontrast.demo import DemoConfig, build_model, datasets, lr_at, train
from densecontrast.demo.training import _valid_rois


def test_lr_schedule_warms_up_then_decays() -> None:
    lrs = [lr_at(s, 200, 0.04, 20) for s in range(201)]
    assert lrs[0] == pytest.approx(0.04e-3)
    assert max(lrs) == pytest.approx(0.04) and lrs.index(max(lrs)) == 20
    assert all(lrs[s] >= lrs[s + 1] for s in range(20, 200))
    assert lrs[-1] == pytest.approx(0.04 * 0.02)


class _Criterion:
    def __init__(self, count: object) -> None:
        self.last_valid_rois = count


@pytest.mark.parametrize(
    ("handle", "shown"),
    [
        (SimpleNamespace(criterion=_Criterion(torch.tensor(37))), "37"),  # the loss's 0-dim tensor
        (SimpleNamespace(criterion=_Criterion(None)), None),  # no step yet
        (
            SimpleNamespace(last_valid_rois=5, criterion=_Criterion(torch.tensor(1))),
            "5",
        ),  # the handle's first
        (SimpleNamespace(criterion=object()), None),  # a loss that does not count
    ],
)
def test_progress_bar_reads_the_valid_roi_count_defensively(handle: object, shown: str | None) -> None:
    assert _valid_rois(handle) == shown


def test_train_reports_every_step_and_the_valid_rois(capsys: pytest.CaptureFixture[str]) -> None:
    from densecontrast.adapters.torchvision import attach, get_handle

    config = DemoConfig(steps=2, image_size=64, batch_size=1, train_images=2, warmup=1).resolved()
    train_set, _ = datasets(config)
    model = build_model(config)
    attach(model, weight=config.weight)
    seen: list[tuple[int, float]] = []
    history = train(model, train_set, config, num_workers=0, on_step=lambda s, t: seen.append((s, t)))
    assert [s for s, _ in seen] == [0, 1] and all(t > 0 for _, t in seen)
    assert len(history) == 2 and "loss_dcl" in history[0]
    assert abs(history[-1]["loss"] - sum(v for k, v in history[-1].items() if k != "loss")) < 1e-4
    bar = capsys.readouterr().out
    assert "dcl=" in bar
    counts = getattr(get_handle(model).criterion, "last_valid_rois", None) is not None
    assert ("rois=" in bar) == counts  # shown once the loss counts its RoIs
