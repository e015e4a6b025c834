from __future__ import annotations

import json
import subprocess
import sys

import pytest

from densecontrast import __version__
from densecontrast.cli import main

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "analyze" in out


def test_version() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0


def test_unknown_command_fails() -> None:
    with pytest.raises(SystemExit) as info:
        main(["train"])
    assert info.value.code == 2


def test_python_dash_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "densecontrast", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and __version__ in done.stdout


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--device", "cuda:7"]])
def test_demo_rejects_bad_options(bad: list[str], tmp_path) -> None:
    import torch

    if "cuda:7" in bad and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(SystemExit, match="densecontrast demo"):
        main(["demo", *bad, "--out", str(tmp_path)])


def test_demo_compare_end_to_end(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny --compare run: both models train, are evaluated, and every promised file is written."""
    out = tmp_path / "demo"
    argv = ["demo", "--compare", "--steps", "2", "--train-images", "4", "--val-images", "2"]
    argv += ["--image-size", "64", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Baseline" in printed and "+DCL" in printed and "ΔAP_FN" in printed
    for name in ("baseline", "dcl"):
        assert (out / f"{name}.pt").stat().st_size > 0
        assert (out / f"{name}_errors.png").stat().st_size > 0
        metrics = json.loads((out / f"{name}_metrics.json").read_text())
        assert set(metrics["report"]["delta"]) == {"fFP", "bFP", "FN"}
        assert 0.0 <= metrics["report"]["ap"] <= 1.0
    assert "loss_dcl" in json.loads((out / "dcl_metrics.json").read_text())["final_losses"]
    assert "loss_dcl" not in json.loads((out / "baseline_metrics.json").read_text())["final_losses"]
    assert (out / "compare.png").stat().st_size > 0
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary) == {"baseline", "dcl"}


def test_demo_checkpoint_loads_into_a_plain_model(tmp_path) -> None:
    import torch

    from densecontrast.demo import build_model

    out = tmp_path / "demo"
    argv = ["demo", "--steps", "1", "--train-images", "2", "--val-images", "1", "--image-size", "64"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    state = torch.load(out / "dcl.pt", weights_only=True)
    assert not any(key.startswith("dense_contrast") for key in state)
    build_model(4, image_size=64).load_state_dict(state)
