"""Tests of densecontrast.demo.training: the learning-rate schedule, data and training loop."""

from __future__ import annotations

import pytest

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")
pytest.importorskip("matplotlib")

from densecontrast.demo import lr_at


def test_lr_schedule_warms_up_then_decays() -> None:
    lrs = [lr_at(s, 200, 0.04, 20) for s in range(201)]
    assert lrs[0] == pytest.approx(0.04e-3)
    assert max(lrs) == pytest.approx(0.04) and lrs.index(max(lrs)) == 20
    assert all(lrs[s] >= lrs[s + 1] for s in range(20, 200))
    assert lrs[-1] == pytest.approx(0.04 * 0.02)
