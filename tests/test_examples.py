"""Smoke tests of the scripts in examples/: each runs a couple of steps on a tiny synthetic dataset.

Each test skips only on the optional package its script imports; the library's own modules (the
synthetic dataset and its exporters) are imported plainly, so a regression in them fails the test.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "YOLO_OFFLINE": "1"}


@pytest.mark.slow
def test_train_torchvision_maskrcnn_two_steps(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("torchvision")
    pytest.importorskip("pycocotools")
    pytest.importorskip("tqdm")
    from densecontrast.datasets import SyntheticInstances

    ds = SyntheticInstances(4, image_size=64, min_instances=1, max_instances=3, seed=0)
    data = pathlib.Path(ds.export_coco(tmp_path / "coco"))
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
        "--backbone", "resnet18",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ckpt = out / "last.pt"
    assert ckpt.is_file() and (out / "epoch_001.pt").is_file()
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["step"] == 2
    assert any(k.startswith("dense_contrast.projector.") for k in state["model"])
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert "dcl=" in proc.stderr  # the progress bar shows the dense contrastive loss


@pytest.mark.slow
def test_train_ultralytics_yolo_seg_one_epoch(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("ultralytics")
    cmd = [
        sys.executable,
        str(EXAMPLES / "train_ultralytics_yolo_seg.py"),
        "--synthetic", "4",
        "--model", "yolov8n-seg.yaml",
        "--out", str(tmp_path),
        "--name", "run",
        "--epochs", "1",
        "--imgsz", "64",
        "--batch", "2",
        "--workers", "0",
        "--margin", "0.1",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=_env(), timeout=600, check=False, cwd=tmp_path
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    run = tmp_path / "run"
    header, *rows = (run / "results.csv").read_text().strip().splitlines()
    columns = header.split(",")
    assert "train/dcl_loss" in columns and len(rows) == 1
    assert float(rows[0].split(",")[columns.index("train/dcl_loss")]) > 0
    assert (run / "weights" / "last.pt").is_file()
    assert (tmp_path / "data" / "data.yaml").is_file()
