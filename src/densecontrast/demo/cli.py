"""``densecontrast demo``: the command line's options, configuration and console output."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .config import DEFAULT_OUT, DemoConfig, is_standard_backbone, preset
from .pictures import _tsne_panels, plot_losses, plot_predictions
from .training import datasets, run_one


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``densecontrast demo``; options left out take the device's preset."""
    cpu = preset("cpu")
    parser.add_argument("--steps", type=int, help=f"training steps per model (CPU default {cpu.steps})")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, model and sampling (default 0)")
    parser.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help="output folder (default %(default)s)"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu or cuda (default %(default)s)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--baseline", action="store_true", help="train without the dense contrastive loss")
    mode.add_argument("--compare", action="store_true", help="train the baseline and DCL and compare them")
    parser.add_argument("--image-size", type=int, help=f"image side (CPU default {cpu.image_size})")
    parser.add_argument("--batch-size", type=int, help=f"images per step (CPU default {cpu.batch_size})")
    parser.add_argument("--train-images", type=int, help=f"training images (CPU default {cpu.train_images})")
    parser.add_argument("--val-images", type=int, help=f"held-out images (CPU default {cpu.val_images})")
    parser.add_argument("--backbone", help=f"ResNet of the FPN backbone (CPU default {cpu.backbone})")
    parser.add_argument("--fpn-channels", type=int, help="FPN width (default 256 for resnet50/101, else 64)")
    parser.add_argument(
        "--mask-channels", type=int, help=f"mask head width (CPU default {cpu.mask_channels}; 256 standard)"
    )
    parser.add_argument("--lr", type=float, help=f"AdamW learning rate (default {cpu.lr})")
    parser.add_argument(
        "--weight",
        type=float,
        help="λ, the weight of the loss (default 0.1, chosen on a tuning split; the paper: 1.2 Cityscapes)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice; 1 is faster on a busy machine)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


_OPTION_FIELDS = (
    "steps", "image_size", "batch_size", "train_images", "val_images", "backbone", "fpn_channels",
    "mask_channels", "lr", "weight",
)  # fmt: skip


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The run's configuration: the device's preset, overridden by the options given."""
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    for name in ("steps", "image_size", "batch_size", "train_images", "val_images", "mask_channels"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise SystemExit(f"densecontrast demo: --{name.replace('_', '-')} must be at least 1")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"densecontrast demo: --device {device} was asked for, but CUDA is not available")
    if not (device == "cpu" or device.startswith("cuda")):
        raise SystemExit(f"densecontrast demo: --device must be auto, cpu or cuda[:N]; got {device!r}")
    config = preset(device)
    given = {name: getattr(args, name) for name in _OPTION_FIELDS if getattr(args, name, None) is not None}
    if "backbone" in given and "mask_channels" not in given and is_standard_backbone(given["backbone"]):
        given["mask_channels"] = 256
    config = replace(config, seed=args.seed, **given)
    if not config.steps or config.steps < 1:
        raise SystemExit("densecontrast demo: --steps must be at least 1")
    return config.resolved()


def _compactness_table(runs: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'name':<14}{'intra':>8}{'inst-inst':>11}{'inst-bg':>9}{'separation':>12}{'RoIs':>6}"]
    for r in runs:
        c = r["compactness"]
        lines.append(
            f"{r['name']:<14}{c.intra:>8.3f}{c.inter:>11.3f}{c.background:>9.3f}{c.separation:>12.2f}"
            f"{c.num_instances:>6}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the demo as the command line asked; returns the exit status."""
    from ..analysis import compare_table, plot_comparison
    from ..analysis.compactness import plot_tsne

    config = config_from_args(args)
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise SystemExit("densecontrast demo: --threads must be at least 1")
        torch.set_num_threads(threads)
    out: Path = args.out
    show = not args.no_progress
    print(
        f"densecontrast demo on {config.device}: Mask R-CNN {config.backbone}-FPN{config.fpn_channels}, "
        f"mask head {config.mask_channels}, {config.steps} steps x {config.batch_size} images of "
        f"{config.image_size}px, evaluated on {config.val_images} held-out images"
    )
    data = datasets(config)
    variants = [False, True] if args.compare else [not args.baseline]
    runs = []
    for dcl in variants:
        run_info = run_one(config, dcl=dcl, out=out, show_progress=show, datasets_=data)
        report = run_info["report"]
        print(f"\n{run_info['name']}: mask AP on {config.val_images} held-out images (percent)")
        print(report.table())
        runs.append(run_info)
    label = {"baseline": "Baseline", "dcl": "+DCL"}
    reports = {label[r["name"]]: r["report"] for r in runs}
    print("\nTable 8 layout (percent; ΔAP is the AP gained by correcting each error type, lower is better)")
    print(compare_table(reports))
    print("\nFeature compactness of the mask head on ground-truth RoIs (cosine similarity; see docs/demo.md)")
    print(_compactness_table(runs))
    plot_comparison(reports, out / "compare.png" if args.compare else out / "errors.png")
    plot_predictions(
        data[1],
        {label[r["name"]]: r["outputs"] for r in runs},
        out / "predictions.png",
        aps={label[r["name"]]: r["report"].ap for r in runs},
    )
    plot_losses({r["name"]: r["history"] for r in runs}, out / "losses.png")
    plot_tsne(
        {label[r["name"]]: panel for r, panel in zip(runs, _tsne_panels(runs).values())},
        out / "tsne.png",
        figures={label[r["name"]]: r["compactness"] for r in runs},
    )
    summary = {
        r["name"]: {**r["metrics"]["report"], "compactness": r["metrics"]["compactness"]} for r in runs
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    print(f"\nwrote to {out}/: " + ", ".join(files))
    print(
        "  predictions.png: held-out images, ground truth, masks and error pixels; losses.png: loss curves; "
        "tsne.png: pixel features; " + ("compare.png" if args.compare else "errors.png") + ": ΔAP bars"
    )
    return 0
