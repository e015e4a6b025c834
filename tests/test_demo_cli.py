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
from densecontrast.demo import DemoConfig, build_model, config_from_args, preset

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--steps", "2", "--train-images", "4", "--val-images", "2", "--image-size", "64", "--no-progress"]


def _args(**kwargs: object) -> argparse.Namespace:
    from densecontrast.demo import add_arguments

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


@pytest.mark.slow
def test_demo_compare_end_to_end(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    """A tiny --compare run: both models train, are evaluated, and every promised file is written."""
    out = tmp_path / "demo"
    assert main(["demo", "--compare", "--device", "cpu", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Baseline" in printed and "+DCL" in printed and "ΔAP_FN" in printed and "separation" in printed
    for name in ("baseline", "dcl"):
        assert (out / f"{name}.pt").stat().st_size > 0
        assert (out / f"{name}_errors.png").read_bytes()[:8] == PNG
        metrics = json.loads((out / f"{name}_metrics.json").read_text())
        assert set(metrics["report"]["delta"]) == {"fFP", "bFP", "FN"}
        assert 0.0 <= metrics["report"]["ap"] <= 1.0
        assert set(metrics["compactness"]) >= {"intra", "inter", "background", "separation"}
        assert len(json.loads((out / f"{name}_losses.json").read_text())) == 2
    assert "loss_dcl" in json.loads((out / "dcl_metrics.json").read_text())["final_losses"]
    assert "loss_dcl" not in json.loads((out / "baseline_metrics.json").read_text())["final_losses"]
    for picture in ("compare.png", "predictions.png", "losses.png", "tsne.png"):
        assert (out / picture).read_bytes()[:8] == PNG
        assert picture in printed
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary) == {"baseline", "dcl"}


@pytest.mark.slow
def test_demo_single_run_checkpoint_loads_into_a_plain_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "demo"
    argv = ["demo", "--device", "cpu", *TINY, "--steps", "1", "--val-images", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    state = torch.load(out / "dcl.pt", weights_only=True)
    assert not any(key.startswith("dense_contrast") for key in state)
    build_model(DemoConfig(image_size=64)).load_state_dict(state)
    assert (out / "errors.png").read_bytes()[:8] == PNG and not (out / "baseline.pt").exists()
