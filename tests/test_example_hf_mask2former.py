"""Smoke tests of examples/train_hf_mask2former.py: two steps on an exported synthetic COCO folder."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("scipy")
pytest.importorskip("pycocotools")

from densecontrast.datasets import SyntheticInstances

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_hf_mask2former.py"


def _run(tmp_path: pathlib.Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], pathlib.Path]:
    data = SyntheticInstances(4, image_size=64, min_instances=1, max_instances=3, seed=0).export_coco(
        tmp_path / "coco"
    )
    out = tmp_path / "run"
    cmd = [
        sys.executable, str(SCRIPT), "--data", str(data), "--out", str(out), "--epochs", "1",
        "--batch-size", "2", "--max-steps", "2", "--image-size", "64", "--backbone", "tiny",
        "--workers", "0", "--device", "cpu", *extra,
    ]  # fmt: skip
    src = str(ROOT / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc, out


@pytest.mark.slow
def test_plain_loop_two_steps(tmp_path: pathlib.Path) -> None:
    proc, out = _run(tmp_path)
    steps = [line for line in proc.stdout.splitlines() if line.startswith("epoch 1 step")]
    assert len(steps) == 2 and all("loss_dcl=" in line for line in steps)
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert state["step"] == 2
    assert any(k.startswith("dense_contrast.projector.") for k in state["model"])
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_trainer_two_steps(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("accelerate")  # transformers.Trainer needs it
    proc, out = _run(tmp_path, "--trainer")
    logs = [line for line in proc.stdout.splitlines() if line.startswith("{'loss'")]
    assert len(logs) == 2 and all("'loss_dcl'" in line for line in logs)
    assert (out / "model.safetensors").is_file()
