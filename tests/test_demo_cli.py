"""Tests of densecontrast.demo.cli: options, configuration and whole runs of ``densecontrast demo``."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")
pytest.importorskip("matplotlib")

from densecontrast.cli import main
from densecontrast.demo import DemoConfig, add_arguments, build_model, config_from_args, preset
from densecontrast.demo.config import available_cores

TINY = ["--steps", "2", "--train-images", "4", "--val-images", "2", "--image-size", "64", "--no-progress"]


def _args(**kwargs: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv: list[str] = []
    for key, value in kwargs.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--device", "cuda:7"], ["--device", "tpu"]])
def test_demo_rejects_bad_options(bad: list[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    if "cuda:7" in bad and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(SystemExit, match="densecontrast demo"):
        main(["demo", *bad, "--out", str(tmp_path)])


def test_config_takes_the_device_preset_and_the_options_given() -> None:
    config = config_from_args(_args(device="cpu"))
    assert config == preset("cpu").resolved()
    assert (config.backbone, config.fpn_channels, config.mask_channels, config.box_head_dim) == (
        "resnet18", 64, 64, 256,
    )  # fmt: skip
    paper = config_from_args(_args(device="cpu", backbone="resnet50", mask_channels=256, steps=3))
    assert (paper.fpn_channels, paper.mask_channels, paper.box_head_dim, paper.steps) == (256, 256, 1024, 3)
    assert config_from_args(_args(device="cpu", backbone="resnet50")).mask_channels == 256
    auto = config_from_args(_args())
    assert auto.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert preset("cuda").image_size > preset("cpu").image_size


def test_help_has_no_raw_markup(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        printed = capsys.readouterr().out
        assert "``" not in printed and "usage: densecontrast" in printed
    assert "--no-compare" in printed and "--threads" in printed


def test_modes_default_to_comparing() -> None:
    assert not any(vars(_args()).get(m) for m in ("baseline", "no_compare", "compare"))
    assert _args(threads=3).threads == 3 and _args().threads is None
    with pytest.raises(SystemExit):
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        parser.parse_args(["--baseline", "--no-compare"])


@pytest.mark.slow
def test_demo_default_compares_end_to_end(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    """A tiny default run: both models train and are evaluated, one AP table with their difference and
    the noise it is judged against, one error chart, and every promised file."""
    out = tmp_path / "demo"
    assert main(["demo", "--device", "cpu", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    if available_cores() >= 2:  # both models trained at once, in two processes
        assert "(two processes at once, 1 thread each)" in printed.splitlines()[0]
    assert "Did the loss help? +DCL - Baseline" in printed and "standard deviation" in printed
    assert printed.count("\nmodel ") == 2  # the AP table and the compactness table, once each
    assert "\ndifference " in printed and "Table 8" not in printed and " value " not in printed
    assert "overlap none (wrong class or no object)" in printed
    for name in ("baseline", "dcl"):
        assert (out / f"{name}.pt").stat().st_size > 0
        metrics = json.loads((out / f"{name}_metrics.json").read_text())
        assert set(metrics["report"]["delta"]) == {"fFP", "bFP", "FN"}
        assert 0.0 <= metrics["report"]["ap"] <= 1.0
        assert set(metrics["compactness"]) >= {"intra", "inter", "background", "separation"}
        assert len(json.loads((out / f"{name}_losses.json").read_text())) == 2
    assert "loss_dcl" in json.loads((out / "dcl_metrics.json").read_text())["final_losses"]
    assert "loss_dcl" not in json.loads((out / "baseline_metrics.json").read_text())["final_losses"]
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert pictures == ["errors.png", "losses.png", "predictions.png", "tsne.png"]
    for picture in pictures:
        assert picture in printed
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary) == {"baseline", "dcl"}


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "trained"), [("--no-compare", "dcl"), ("--baseline", "baseline")])
def test_demo_single_run_checkpoint_loads_into_a_plain_model(tmp_path, mode: str, trained: str) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "demo"
    argv = ["demo", mode, "--device", "cpu", *TINY, "--steps", "1", "--val-images", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    state = torch.load(out / f"{trained}.pt", weights_only=True)
    assert not any(key.startswith("dense_contrast") for key in state)
    build_model(DemoConfig(image_size=64)).load_state_dict(state)
    assert sorted(p.name for p in out.glob("*.pt")) == [f"{trained}.pt"]
    assert (out / "errors.png").stat().st_size > 0
