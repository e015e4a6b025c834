"""The demo's data, training loop and one whole run (train, evaluate, write files)."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import DemoConfig
from .evaluation import predict, roi_features
from .model import build_model


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up from 0.1% of ``base`` over ``warmup`` steps, then cosine decay to 2% of ``base``.

    Examples:
        >>> lr_at(0, 100, 1.0, 10), lr_at(10, 100, 1.0, 10), round(lr_at(100, 100, 1.0, 10), 3)
        (0.001, 1.0, 0.02)
    """
    warmup = min(warmup, total)
    if step < warmup:
        return base * (0.001 + 0.999 * step / warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def datasets(config: DemoConfig) -> tuple[Any, Any]:
    """The training split and the held-out split of a run (``SyntheticInstances``)."""
    from ..datasets import SyntheticInstances

    c = config.resolved()
    train_set = SyntheticInstances(
        c.train_images, image_size=c.image_size, num_categories=c.num_categories, seed=c.seed
    )
    val_set = SyntheticInstances(
        c.val_images,
        image_size=c.image_size,
        num_categories=c.num_categories,
        seed=c.val_seed if c.val_seed is not None else c.seed,
        split=c.val_split,
    )
    return train_set, val_set


def _valid_rois(handle: Any) -> str | None:
    """The number of RoIs that contributed to the last step's loss, as the progress bar shows it.

    Read from the handle, or from its criterion, whichever exposes ``last_valid_rois`` (a 0-dim tensor
    or an int); None when neither does (a loss that does not count them, or no step yet).
    """
    count = getattr(handle, "last_valid_rois", None)
    if count is None:
        count = getattr(getattr(handle, "criterion", None), "last_valid_rois", None)
    return None if count is None else str(int(count))


def train(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    config: DemoConfig,
    *,
    desc: str = "train",
    show_progress: bool = True,
    num_workers: int = 1,
    on_step: Callable[[int, float], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` for ``config.steps`` steps; returns the loss dict of every step (floats).

    AdamW (weight decay 1e-4) with :func:`lr_at`'s warm-up and cosine decay, gradients clipped at norm
    10. AdamW because a model trained from scratch on a short CPU budget learns faster with it than with
    SGD (the comparison is in docs/demo.md, "How the configuration was chosen").

    Args:
        model: the model to train (moved to ``config.device``).
        dataset: the training split.
        config: the run's configuration (steps, batch size, learning rate, warm-up, seed, device).
        desc: the progress bar's label.
        show_progress: show a progress bar.
        num_workers: DataLoader worker processes generating the images (0: in this process).
        on_step: called after every step with the step's index and its wall time in seconds, data
            wait included (``benchmarks/demo_threads.py`` times steps with it).
    """
    from tqdm.auto import tqdm

    from ..adapters.torchvision import get_handle
    from ..datasets import collate_detection

    device = torch.device(config.device)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(config.seed)
    # A worker process generates the images while the model trains. Workers run torch single-threaded,
    # which is what the generator's many small operations want; the main process keeps its threads.
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=collate_detection,
        generator=generator,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
    handle = get_handle(model)
    history: list[dict[str, float]] = []
    bar = tqdm(total=config.steps, desc=desc, disable=not show_progress, dynamic_ncols=True, file=sys.stdout)
    step = 0
    last = time.perf_counter()
    while step < config.steps:
        for images, targets in loader:
            if step >= config.steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config.steps, config.lr, config.warmup)
            images = [im.to(device, non_blocking=True) for im in images]
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
            figures = {name.removeprefix("loss_"): f"{value:.3f}" for name, value in record.items()}
            rois = _valid_rois(handle) if handle is not None else None
            if rois is not None:
                figures["rois"] = rois
            bar.set_postfix(figures, refresh=False)
            bar.update(1)
            if on_step is not None:
                now = time.perf_counter()
                on_step(step, now - last)
                last = now
            step += 1
    bar.close()
    return history


def run_one(
    config: DemoConfig,
    *,
    dcl: bool,
    out: Path | None,
    show_progress: bool = True,
    datasets_: Any = None,
    init: Callable[[nn.Module], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train one model (with or without DCL), evaluate it, and write its files under ``out``.

    ``init``, when given, is called on the freshly built model before the loss is attached and training
    starts (the evidence study's fine-tuning regime loads pretrained weights and freezes stages there).
    ``on_step`` is :func:`train`'s (the parallel demo counts steps with it).

    Returns a dict with ``name``, ``model``, ``report`` (a ``SegmentationErrorReport``), ``history``
    (loss dicts per step), ``outputs`` (eval outputs on the held-out split), ``compactness`` (a
    ``FeatureCompactness``), ``features`` (the ``roi_features`` triple) and ``metrics`` (JSON-ready).
    """
    from ..adapters.torchvision import attach
    from ..analysis import analyze, results_from_outputs
    from ..analysis.compactness import feature_compactness

    config = config.resolved()
    name = "dcl" if dcl else "baseline"
    train_set, val_set = datasets_ if datasets_ is not None else datasets(config)
    torch.manual_seed(config.seed)
    model = build_model(config)
    if init is not None:
        init(model)
    handle = attach(model, weight=config.weight) if dcl else None
    start = time.perf_counter()
    cpu_start = time.process_time()
    history = train(model, train_set, config, desc=name, show_progress=show_progress, on_step=on_step)
    train_seconds = time.perf_counter() - start
    if handle is not None:
        handle.remove()  # the checkpoint is a plain torchvision state_dict; DCL adds nothing at inference
    outputs = predict(model, val_set, config.device)
    ids = [i + 1 for i in range(len(val_set))]
    results = results_from_outputs(outputs, ids)
    report = analyze(val_set.coco_ground_truth(), results, backend="pycocotools")  # the reference evaluator
    features = roi_features(model, val_set, device=config.device)
    compactness = feature_compactness(features[0], features[1], groups=features[2])
    metrics = {
        "name": name,
        "config": asdict(config),
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "threads": torch.get_num_threads(),
        "final_losses": history[-1] if history else {},
        "report": report.to_dict(),
        "compactness": compactness.to_dict(),
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out / f"{name}.pt")
        (out / f"{name}_metrics.json").write_text(json.dumps(metrics, indent=2))
        (out / f"{name}_losses.json").write_text(json.dumps(history))
    return {
        "name": name,
        "model": model,
        "report": report,
        "history": history,
        "outputs": outputs,
        "compactness": compactness,
        "features": features,
        "metrics": metrics,
    }
