"""Smoke tests of the scripts in examples/: each runs a couple of steps on a tiny synthetic folder."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _exported_folder(tmp_path: pathlib.Path) -> pathlib.Path:
    datasets = pytest.importorskip(
        "densecontrast.datasets",
        reason="densecontrast.datasets (SyntheticInstances.export_coco) not available",
    )
    if not hasattr(datasets.SyntheticInstances, "export_coco"):
        pytest.skip("densecontrast.datasets.SyntheticInstances has no export_coco yet")
    ds = datasets.SyntheticInstances(4, image_size=64, min_instances=1, max_instances=3, seed=0)
    return pathlib.Path(ds.export_coco(tmp_path / "coco"))


def test_train_torchvision_maskrcnn_two_steps(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("torchvision")
    pytest.importorskip("pycocotools")
    pytest.importorskip("tqdm")
    data = _exported_folder(tmp_path)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        str(EXAMPLES / "train_torchvision_maskrcnn.py"),
        "--data", str(data),
        "--out", str(out),
        "--epochs", "1",
        "--batch-size", "2",
        "--max-steps", "2",
        "--image-size", "64",
        "--device", "cpu",
        "--workers", "0",
        "--lr", "0.001",
        "--rois-per-image", "32",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ckpt = out / "last.pt"
    assert ckpt.is_file() and (out / "epoch_001.pt").is_file()
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["step"] == 2
    assert any(k.startswith("dense_contrast.projector.") for k in state["model"])
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert "dcl=" in proc.stderr  # the progress bar shows the dense contrastive loss
