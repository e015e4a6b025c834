"""``densecontrast demo``: the command line's options, configuration and console output."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from .config import (
    DEFAULT_OUT,
    DEFAULT_WEIGHT,
    DemoConfig,
    available_cores,
    default_threads,
    is_standard_backbone,
    preset,
)
from .parallel import LABELS, ParallelRunError, sequential_reason, train_both
from .pictures import _tsne_panels, plot_errors, plot_losses, plot_predictions
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
    mode.add_argument(
        "--no-compare", action="store_true", help="train only the model with the loss (half the CPU time)"
    )
    mode.add_argument("--baseline", action="store_true", help="train only the model without the loss")
    # Comparing is the default; --compare stays accepted so that commands written for it keep working.
    mode.add_argument("--compare", action="store_true", help="train both and compare them (the default)")
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
        help=f"λ, the weight of the loss (default {DEFAULT_WEIGHT:g}, chosen on a tuning split; "
        "the paper: 1.2 on Cityscapes)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: when both models train, 1 in each of two processes running at "
        f"once; one model: half the cores, here {default_threads()}; more than 1 trains the models one "
        "after the other; more threads can be faster on an idle machine and many times slower on a busy "
        "one, see docs/demo.md)",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="train the Baseline and +DCL one after the other in this process instead of at the same "
        "time in two (the default on a CPU with 2 or more cores: about one model's time for both)",
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


def run(args: argparse.Namespace) -> int:
    """Run the demo as the command line asked; returns the exit status."""
    from ..analysis.compactness import plot_tsne
    from . import report as text

    config = config_from_args(args)
    threads = default_threads() if args.threads is None else args.threads
    if threads < 1:
        raise SystemExit("densecontrast demo: --threads must be at least 1")
    torch.set_num_threads(threads)
    out: Path = args.out
    show = not args.no_progress
    variants = [False] if args.baseline else [True] if args.no_compare else [False, True]
    models = {
        (False, True): f"Baseline and +DCL (λ = {config.weight:g}) on the same data from the same seed",
        (True,): f"+DCL only (λ = {config.weight:g})",
        (False,): "Baseline only",
    }[tuple(variants)]
    parallel = (
        sequential_reason(
            device=config.device,
            models=len(variants),
            threads=args.threads,
            sequential=args.sequential,
            cores=available_cores(),
        )
        is None
    )
    how = (
        "two processes at once, 1 thread each"
        if parallel
        else f"{threads} thread{'s' * (threads > 1)}"
        + (", one model after the other" if len(variants) > 1 else "")
    )
    print(
        f"densecontrast demo on {config.device} ({how}): {models}; "
        f"Mask R-CNN {config.backbone}-FPN{config.fpn_channels}, mask head {config.mask_channels}, "
        f"{config.steps} steps x {config.batch_size} images of {config.image_size}px, evaluated on "
        f"{config.val_images} held-out images"
    )
    data = datasets(config)
    if parallel:
        try:
            runs = train_both(config, out=out, show_progress=show)
        except ParallelRunError as error:
            raise SystemExit(f"densecontrast demo: {error}") from None
    else:
        runs = [run_one(config, dcl=dcl, out=out, show_progress=show, datasets_=data) for dcl in variants]
    for info in runs:
        info["label"] = LABELS[info["name"]]
    reports = {r["label"]: r["report"] for r in runs}
    print()
    print(text.ap_table(reports, images=config.val_images))
    if len(runs) == 2:
        print()
        print(text.did_it_help(runs[0]["report"].ap, runs[1]["report"].ap, weight=config.weight,
                               steps=config.steps))  # fmt: skip
    print()
    for r in runs:
        print(text.detection_counts(r["label"], r["report"], r["outputs"]))
    print()
    print(text.compactness_table(runs))
    plot_errors(reports, out / "errors.png")
    plot_predictions(data[1], {r["label"]: r["outputs"] for r in runs}, out / "predictions.png",
                     aps={r["label"]: r["report"].ap for r in runs})  # fmt: skip
    plot_losses({r["label"]: r["history"] for r in runs}, out / "losses.png")
    panels = _tsne_panels(runs)
    plot_tsne(
        {r["label"]: panels[r["name"]] for r in runs},
        out / "tsne.png",
        figures={r["label"]: r["compactness"] for r in runs},
    )
    summary = {
        r["name"]: {**r["metrics"]["report"], "compactness": r["metrics"]["compactness"]} for r in runs
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    print(f"\nwrote to {out}/: " + ", ".join(files))
    print(
        "  predictions.png: held-out images, ground truth, detections and error pixels; errors.png: ΔAP per "
        "error type; losses.png: loss curves; tsne.png: the mask head's pixel features"
    )
    return 0
