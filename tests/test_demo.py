from __future__ import annotations

import argparse
import json

import pytest
import torch

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")
pytest.importorskip("matplotlib")

from densecontrast.cli import main
from densecontrast.datasets import SyntheticInstances
from densecontrast.demo import (
    DemoConfig,
    build_model,
    config_from_args,
    error_map,
    lr_at,
    plot_losses,
    plot_predictions,
    preset,
    roi_features,
)

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


def test_lr_schedule_warms_up_then_decays() -> None:
    lrs = [lr_at(s, 200, 0.04, 20) for s in range(201)]
    assert lrs[0] == pytest.approx(0.04e-3)
    assert max(lrs) == pytest.approx(0.04) and lrs.index(max(lrs)) == 20
    assert all(lrs[s] >= lrs[s + 1] for s in range(20, 200))
    assert lrs[-1] == pytest.approx(0.04 * 0.02)


@pytest.mark.slow
def test_paper_model_has_the_standard_widths() -> None:
    model = build_model(DemoConfig(backbone="resnet50", mask_channels=256, image_size=64))
    heads = model.roi_heads
    assert heads.mask_predictor.conv5_mask.in_channels == 256
    assert heads.box_head.fc6.out_features == 1024
    assert model.backbone.out_channels == 256
    light = build_model(DemoConfig(image_size=64))
    assert light.backbone.out_channels == 64 and light.roi_heads.mask_predictor.conv5_mask.in_channels == 64
    assert sum(p.numel() for p in light.parameters()) < sum(p.numel() for p in model.parameters()) / 5


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


def test_roi_features_label_the_own_instance_zero() -> None:
    config = DemoConfig(image_size=64, num_categories=2)
    model = build_model(config)
    data = SyntheticInstances(2, image_size=64, num_categories=2, seed=3, split="val")
    feats, labels, groups = roi_features(model, data, images=2)
    rois = sum(int(data[i][1]["boxes"].shape[0]) for i in range(2))
    assert feats.shape == (rois * 28 * 28, config.mask_channels)
    assert labels.shape == groups.shape == (feats.shape[0],)
    assert groups.unique().tolist() == list(range(rois))
    per_roi = labels.view(rois, 28 * 28)
    assert bool(((per_roi == 0).sum(dim=1) > 0).all())  # every box shows its own instance
    assert int(labels.min()) >= -1


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


@pytest.mark.slow
def test_evidence_quick_profile_resumes_and_renders(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """benchmarks/evidence.py --quick writes one JSON per (seed, variant), skips them when run again, and
    benchmarks/render_evidence.py turns them into the docs table and plot."""
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "benchmarks"
    results = tmp_path / "results"
    cmd = [sys.executable, str(bench / "evidence.py"), "--quick", "--seeds", "0", "--results", str(results)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    folder = results / "quick"
    record = json.loads((folder / "seed0_dcl.json").read_text())
    assert record["config"]["seed"] == 0 and record["eval_split"] == {"split": "val", "seed": 0, "images": 3}
    assert set(record["delta"]) == {"fFP", "bFP", "FN"} and "intra" in record["compactness"]
    assert "loss_dcl" in record["final_losses"]
    assert "loss_dcl" not in json.loads((folder / "seed0_baseline.json").read_text())["final_losses"]
    again = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    assert again.stdout.count("done already, skipped") == 2
    doc = tmp_path / "evidence.md"
    doc.write_text(
        "# Evidence\n\nprose\n<!-- evidence:begin -->\nSTALE-TABLE\n<!-- evidence:end -->\nmore prose\n"
    )
    render = [
        sys.executable,
        str(bench / "render_evidence.py"),
        "--profile",
        "quick",
        "--results",
        str(results),
    ]
    render += ["--doc", str(doc), "--img", str(tmp_path / "evidence.png"), "--seeds", "0", "1"]
    subprocess.run(render, check=True, capture_output=True, timeout=300)
    text = doc.read_text()
    assert "STALE-TABLE" not in text and "prose" in text and "more prose" in text
    assert "| 0 | +DCL λ=1.2 |" in text and "Not finished yet:** seed 1 Baseline, seed 1 +DCL λ=1.2" in text
    assert (tmp_path / "evidence.png").read_bytes()[:8] == PNG
