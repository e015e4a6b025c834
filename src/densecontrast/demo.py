"""``densecontrast demo``: train torchvision Mask R-CNN from scratch with the dense contrastive loss.

The demo generates :class:`~densecontrast.datasets.SyntheticInstances` (occluded, camouflaged objects),
trains a Mask R-CNN on it with ``attach(model)`` (or without, ``--baseline``), evaluates mask AP on a
held-out split with the segmentation-error analysis, and writes ``metrics.json``, a checkpoint and a plot
to ``--out``. ``--compare`` trains both with the same seed and prints them side by side.

Needs the ``demo`` extra (torchvision, pycocotools, matplotlib, tqdm).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

DEFAULT_OUT = "densecontrast-demo"


@dataclass
class DemoConfig:
    """Everything that defines a demo run (saved next to its metrics)."""

    steps: int = 200
    seed: int = 0
    image_size: int = 128
    batch_size: int = 2
    train_images: int = 400
    val_images: int = 50
    num_categories: int = 3
    backbone: str = "resnet18"
    mask_channels: int = 128
    lr: float = 0.02
    weight: float = 1.2
    device: str = "cpu"


def build_model(
    num_classes: int, *, backbone: str = "resnet18", image_size: int = 128, mask_channels: int = 128
) -> nn.Module:
    """A torchvision ``MaskRCNN`` with a randomly initialised ResNet-FPN backbone (no downloads).

    Sized for a few minutes of CPU training: 64 sampled RoIs and 300 proposals per image, and a mask head
    of ``mask_channels`` (torchvision's ``MaskRCNNHeads`` and ``MaskRCNNPredictor``; 256 is the standard
    head, whose four convolutions cost about 2 GFLOP per positive RoI).

    Args:
        num_classes: categories + 1 (background).
        backbone: a torchvision ResNet name (``"resnet18"`` keeps the CPU demo short; ``"resnet50"``
            gives the paper's R50-FPN).
        image_size: images are neither up- nor down-scaled from this size.
        mask_channels: width of the mask head's four convolutions and of the feature map DCL uses.
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    body = resnet_fpn_backbone(backbone_name=backbone, weights=None, trainable_layers=5)
    model = MaskRCNN(
        body,
        num_classes=num_classes,
        min_size=image_size,
        max_size=image_size,
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=600,
        rpn_post_nms_top_n_test=300,
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=64,
        box_detections_per_img=50,
    )
    if mask_channels != 256:
        model.roi_heads.mask_head = MaskRCNNHeads(body.out_channels, [mask_channels] * 4, 1)
        model.roi_heads.mask_predictor = MaskRCNNPredictor(mask_channels, mask_channels, num_classes)
    return model


def _lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up over the first 10% of the steps, then cosine decay to 5% of ``base``."""
    warmup = max(1, total // 10)
    if step < warmup:
        return base * (0.1 + 0.9 * step / warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    config: DemoConfig,
    *,
    desc: str = "train",
    show_progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` for ``config.steps`` steps; returns the loss dict of every step (floats)."""
    from tqdm.auto import tqdm

    from .datasets import collate_detection

    device = torch.device(config.device)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, collate_fn=collate_detection, generator=generator
    )
    history: list[dict[str, float]] = []
    bar = tqdm(total=config.steps, desc=desc, disable=not show_progress, dynamic_ncols=True, file=sys.stdout)
    step = 0
    while step < config.steps:
        for images, targets in loader:
            if step >= config.steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, config.steps, config.lr)
            images = [im.to(device) for im in images]
            targets = [{key: value.to(device) for key, value in t.items()} for t in targets]
            losses = model(images, targets)
            total = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            record = {name: float(value.detach()) for name, value in losses.items()}
            record["loss"] = float(total.detach())
            history.append(record)
            bar.set_postfix({name.removeprefix("loss_"): f"{value:.3f}" for name, value in record.items()})
            bar.update(1)
            step += 1
    bar.close()
    return history


@torch.no_grad()
def predict(model: nn.Module, dataset: torch.utils.data.Dataset, device: str = "cpu") -> list[dict[str, Any]]:
    """COCO RLE results of ``model`` on every image of ``dataset`` (image ids from the targets)."""
    from .analysis import results_from_outputs

    model.to(device).eval()
    results: list[dict[str, Any]] = []
    for index in range(len(dataset)):  # type: ignore[arg-type]
        image, target = dataset[index]
        output = model([image.to(device)])[0]
        results.extend(results_from_outputs([output], [int(target["image_id"])]))
    return results


def run_one(config: DemoConfig, *, dcl: bool, out: Path, show_progress: bool = True) -> dict[str, Any]:
    """Train one model (with or without DCL), evaluate it, and write its files under ``out``."""
    from .adapters.torchvision import attach
    from .analysis import analyze
    from .datasets import SyntheticInstances

    name = "dcl" if dcl else "baseline"
    torch.manual_seed(config.seed)
    train_set = SyntheticInstances(
        config.train_images,
        image_size=config.image_size,
        num_categories=config.num_categories,
        seed=config.seed,
    )
    val_set = SyntheticInstances(
        config.val_images,
        image_size=config.image_size,
        num_categories=config.num_categories,
        seed=config.seed,
        split="val",
    )
    model = build_model(
        config.num_categories + 1,
        backbone=config.backbone,
        image_size=config.image_size,
        mask_channels=config.mask_channels,
    )
    handle = attach(model, weight=config.weight) if dcl else None
    start = time.perf_counter()
    history = train(model, train_set, config, desc=name, show_progress=show_progress)
    train_seconds = time.perf_counter() - start
    if handle is not None:
        handle.remove()  # the checkpoint is a plain torchvision state_dict; DCL adds nothing at inference
    results = predict(model, val_set, config.device)
    report = analyze(val_set.coco_ground_truth(), results, backend="pycocotools")  # the reference evaluator
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / f"{name}.pt")
    report.plot(out / f"{name}_errors.png", title=f"{name}: mask AP {100 * report.ap:.1f}")
    metrics = {
        "name": name,
        "config": asdict(config),
        "train_seconds": train_seconds,
        "final_losses": history[-1] if history else {},
        "report": report.to_dict(),
    }
    (out / f"{name}_metrics.json").write_text(json.dumps(metrics, indent=2))
    return {"name": name, "report": report, "metrics": metrics}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``densecontrast demo``."""
    d = DemoConfig()
    parser.add_argument(
        "--steps", type=int, default=d.steps, help="training steps per model (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of data, model and sampling")
    parser.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help="output folder (default %(default)s)"
    )
    parser.add_argument("--device", default=d.device, help="cpu or cuda (default %(default)s)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--baseline", action="store_true", help="train without the dense contrastive loss")
    mode.add_argument("--compare", action="store_true", help="train the baseline and DCL and compare them")
    parser.add_argument(
        "--image-size", type=int, default=d.image_size, help="image side (default %(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step")
    parser.add_argument("--train-images", type=int, default=d.train_images, help="training images")
    parser.add_argument("--val-images", type=int, default=d.val_images, help="held-out images for mask AP")
    parser.add_argument(
        "--backbone", default=d.backbone, help="ResNet of the FPN backbone (default %(default)s)"
    )
    parser.add_argument(
        "--mask-channels",
        type=int,
        default=d.mask_channels,
        help="mask head width (256: torchvision's standard)",
    )
    parser.add_argument("--lr", type=float, default=d.lr, help="SGD learning rate (default %(default)s)")
    parser.add_argument(
        "--weight", type=float, default=d.weight, help="λ, the weight of the loss (default 1.2)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _validate(args: argparse.Namespace) -> None:
    for name in ("steps", "image_size", "batch_size", "train_images", "val_images", "mask_channels"):
        if getattr(args, name) < 1:
            raise SystemExit(f"densecontrast demo: --{name.replace('_', '-')} must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("densecontrast demo: --device cuda was asked for, but CUDA is not available")


def run(args: argparse.Namespace) -> int:
    """Run the demo as the command line asked; returns the exit status."""
    from .analysis import compare_table, plot_comparison

    _validate(args)
    config = DemoConfig(
        steps=args.steps,
        seed=args.seed,
        image_size=args.image_size,
        batch_size=args.batch_size,
        train_images=args.train_images,
        val_images=args.val_images,
        backbone=args.backbone,
        mask_channels=args.mask_channels,
        lr=args.lr,
        weight=args.weight,
        device=args.device,
    )
    out: Path = args.out
    variants = [False, True] if args.compare else [not args.baseline]
    runs = []
    for dcl in variants:
        run_info = run_one(config, dcl=dcl, out=out, show_progress=not args.no_progress)
        report = run_info["report"]
        print(f"\n{run_info['name']}: mask AP on {config.val_images} held-out images")
        print(report.table())
        runs.append(run_info)
    if args.compare:
        reports = {"Baseline": runs[0]["report"], "+DCL": runs[1]["report"]}
        print(
            "\nBaseline vs +DCL (percent; ΔAP is the AP gained by correcting each error type, "
            "lower is better)"
        )
        print(compare_table(reports))
        plot_comparison(reports, out / "compare.png")
    summary = {r["name"]: r["metrics"]["report"] for r in runs}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {out}/metrics.json, checkpoints and plots")
    return 0
