"""Tests of densecontrast.demo.config: presets, resolved widths and the default thread count."""

from __future__ import annotations

import os

import pytest

from densecontrast.demo.config import PAIRED_AP_STD, DemoConfig, default_threads, preset


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8)])
def test_default_threads_leave_half_the_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, threads: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert default_threads() == threads


def test_resolved_fills_the_standard_widths() -> None:
    light = DemoConfig().resolved()
    assert (light.fpn_channels, light.box_head_dim, light.val_seed) == (64, 256, 0)
    paper = DemoConfig(backbone="resnet50", seed=4).resolved()
    assert (paper.fpn_channels, paper.box_head_dim, paper.val_seed) == (256, 1024, 4)
    assert DemoConfig(seed=4, val_seed=9).resolved().val_seed == 9
    assert preset("cpu").backbone == "resnet18" and preset("cuda:1").device == "cuda:1"


def test_the_demo_weight_has_a_measured_noise() -> None:
    """The console judges the default run's difference against the evidence page's noise at its λ."""
    assert DemoConfig().weight in PAIRED_AP_STD


def test_the_demo_noise_is_the_evidence_study_spread() -> None:
    """PAIRED_AP_STD is the standard deviation over the from-scratch seeds of the committed evidence runs."""
    import json
    import statistics
    from pathlib import Path

    from densecontrast.demo.config import PAIRED_AP_SEEDS

    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "evidence" / "cpu"
    first, last = map(int, PAIRED_AP_SEEDS.split("-"))
    for weight, std in PAIRED_AP_STD.items():
        sub = folder if weight == 1.2 else folder / f"weight{weight:g}"
        diffs = [
            100 * (json.loads((sub / f"seed{s}_dcl.json").read_text())["ap"]
                   - json.loads((folder / f"seed{s}_baseline.json").read_text())["ap"])
            for s in range(first, last + 1)
        ]  # fmt: skip
        assert round(statistics.stdev(diffs), 1) == std, weight
