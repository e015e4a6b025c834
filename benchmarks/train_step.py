"""Cost of the dense contrastive loss inside a torchvision Mask R-CNN R50-FPN training step.

Configuration A is the plain model; B is the same model with
:func:`densecontrast.adapters.torchvision.attach`. Both run forward + backward on the same images and
targets with the same weights (no optimizer step: gradients are dropped after each step, so every pair
sees the same model) and ``torch.manual_seed(seed)`` before each step, so torchvision's RPN and RoI
sampling draw the same proposals in A and B.

Measured, in this order:

1. interleaved steps A B A B ... (one warm-up pair, then ``--pairs`` measured pairs): the time of each,
   the ratio B / A of each pair and the median ratio;
2. the loss's own cost on one step's captured inputs: the adapter's mask targets (forward only) and
   ``DenseContrastiveLoss`` forward + backward, each the median of ``--loss-repeats`` runs, as a share of
   the median A step;
3. peak memory of each configuration in a fresh subprocess running ``--memory-steps`` steps on the same
   batch (loaded from a file: generating it would set the peak before any step): the peak resident set
   size (``VmHWM``, reset with ``/proc/self/clear_refs`` before the steps; ``ru_maxrss`` elsewhere) on
   the CPU, ``torch.cuda.max_memory_allocated`` on CUDA.

Run: ``python benchmarks/train_step.py`` (about 3 minutes on 2 CPU cores; JSON to
``benchmarks/results/train_step_cpu.json``), ``--device cuda`` on a GPU (JSON to ``train_step_cuda.json``),
``--pairs 5`` or more for a tighter median (about 20 s per step here). It runs with the demo's default
thread count (half the cores: one on 2 cores; ``--threads N`` for another); the thread count, the CPU
model and the load go into the JSON's ``machine`` entry and the first line printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from densecontrast import DenseContrastiveLoss
from densecontrast.adapters.torchvision import attach, masks_from_soft, positive_mask_targets
from densecontrast.datasets import SyntheticInstances, collate_detection

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import demo_threads, describe, machine_info, projection_paths

RESULTS = Path(__file__).resolve().parent / "results"
Batch = tuple[list[Tensor], list[dict[str, Tensor]]]


def build_model(device: torch.device) -> nn.Module:
    """The issue's Mask R-CNN R50-FPN: random weights (seed 0), 384 x 384 inputs, 512 RoIs per image."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=4,
        min_size=384,
        max_size=384,
        box_batch_size_per_image=512,
    )
    return model.to(device).train()


def build_criterion(device: torch.device) -> DenseContrastiveLoss:
    """The default criterion of ``attach`` (K = 32, tau = 0.07, learnable similarity), seeded."""
    torch.manual_seed(1)
    return DenseContrastiveLoss(32, 0.07, in_channels=256).to(device)


def build_batch(device: torch.device, instances: int) -> Batch:
    """Two 384 x 384 synthetic images with ``instances`` instances each."""
    ds = SyntheticInstances(2, image_size=384, min_instances=instances, max_instances=instances)
    images, targets = collate_detection([ds[0], ds[1]])
    images = [im.to(device) for im in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    return images, targets


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model: nn.Module, batch: Batch, seed: int, device: torch.device) -> tuple[float, float]:
    """Forward + backward of one step, gradients dropped afterwards.

    Returns (wall seconds, CPU seconds of this process). On a shared machine the CPU time is the steadier
    of the two: other processes taking the cores lengthen the wall time, not this process's CPU time.
    """
    images, targets = batch
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    losses = model(images, targets)
    sum(losses.values()).backward()
    sync(device)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    model.zero_grad(set_to_none=True)
    return elapsed, cpu


class _Capture:
    """Attaches the loss for one step and keeps that step's loss inputs (detached copies).

    The criterion is wrapped so that its inputs ``(feats, masks)`` are copied, and two pre-hooks (owned by
    the handle, so ``handle.remove()`` removes them too) keep the transformed targets and the positive
    proposals: the inputs of the adapter's mask-target construction. Used for the warm-up step, whose
    time is not counted.
    """

    def __init__(self, model: nn.Module, criterion: nn.Module) -> None:
        self.seen: dict[str, Any] = {}
        self.handle = attach(model, _Recorder(criterion, self.seen), weight=1.2)
        heads = model.roi_heads
        self.handle.add_hook(heads.register_forward_pre_hook(self._on_heads, with_kwargs=True))
        self.handle.add_hook(heads.mask_roi_pool.register_forward_pre_hook(self._on_pool))

    def _on_heads(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if module.training:
            self.seen.setdefault("targets", kwargs.get("targets", args[3] if len(args) > 3 else None))

    def _on_pool(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if module.training:
            self.seen.setdefault("proposals", [p.detach() for p in args[1]])


class _Recorder(nn.Module):
    def __init__(self, inner: nn.Module, seen: dict[str, Any]) -> None:
        super().__init__()
        self.inner = inner
        self.seen = seen

    def forward(self, feats: Tensor, masks: Tensor) -> Tensor:
        self.seen.setdefault("feats", feats.detach().clone())
        self.seen.setdefault("masks", masks.clone())
        return self.inner(feats, masks)


def median_time(fn: Any, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def loss_cost(
    seen: dict[str, Any], criterion: nn.Module, repeats: int, device: torch.device
) -> dict[str, Any]:
    """Time the adapter's mask targets and the loss forward + backward on one step's captured inputs."""
    feats = seen["feats"].requires_grad_(True)
    masks = seen["masks"]
    size = (feats.shape[-2], feats.shape[-1])

    def targets_only() -> None:
        soft, _ = positive_mask_targets(seen["targets"], seen["proposals"], size)
        masks_from_soft(soft)

    def loss_fwd_bwd() -> None:
        feats.grad = None
        criterion.zero_grad(set_to_none=True)
        criterion(feats, masks).backward()

    targets_only()
    loss_fwd_bwd()
    k = 32
    valid = (masks.flatten(1).sum(1) >= k) & ((~masks).flatten(1).sum(1) >= k)
    return {
        "positive_rois": int(feats.shape[0]),
        "valid_rois": int(valid.sum()),
        "feats_shape": list(feats.shape),
        "targets_s": median_time(targets_only, repeats, device),
        "loss_fwd_bwd_s": median_time(loss_fwd_bwd, repeats, device),
    }


def interleaved(
    model: nn.Module, batch: Batch, criterion: nn.Module, pairs: int, device: torch.device
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A warm-up pair (whose B step captures the loss inputs), then ``pairs`` timed pairs (A, B).

    B attaches the loss for its step only and removes it afterwards, so A always runs the plain model.
    Returns the timings and the captured inputs.
    """
    rows = []
    seen: dict[str, Any] = {}
    for i in range(pairs + 1):
        seed = 100 + i
        a, a_cpu = train_step(model, batch, seed, device)
        if i == 0:
            capture = _Capture(model, criterion)
            handle, seen = capture.handle, capture.seen
        else:
            handle = attach(model, criterion, weight=1.2)
        try:
            b, b_cpu = train_step(model, batch, seed, device)
        finally:
            handle.remove()
        if i > 0:
            rows.append(
                {"seed": seed, "a_s": a, "b_s": b, "ratio": b / a, "a_cpu_s": a_cpu, "b_cpu_s": b_cpu,
                 "cpu_ratio": b_cpu / a_cpu}
            )  # fmt: skip
        label = " (warm-up)" if i == 0 else ""
        print(
            f"pair {i}{label}: A {a:.3f} s  B {b:.3f} s  B/A {b / a:.4f}  (CPU time B/A {b_cpu / a_cpu:.4f})",
            flush=True,
        )
    steps = {
        "pairs": rows,
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "median_cpu_ratio": statistics.median(r["cpu_ratio"] for r in rows),
        "median_a_s": statistics.median(r["a_s"] for r in rows),
        "median_b_s": statistics.median(r["b_s"] for r in rows),
    }
    return steps, seen


def _peak_rss_bytes() -> int:
    """This process's peak resident set size.

    ``VmHWM`` from ``/proc/self/status`` where Linux provides it: unlike ``ru_maxrss`` it is not inherited
    from the parent across fork + exec, and ``clear_refs`` resets it.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs``); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def memory_worker(config: str, steps: int, device: torch.device, batch_file: Path) -> dict[str, Any]:
    """Run ``steps`` steps of one configuration in this (fresh) process; report its peak memory.

    The batch is loaded from ``batch_file`` (generating it here would set the peak RSS before any step).
    """
    model = build_model(device)
    criterion = build_criterion(device) if config == "B" else None
    images, targets = torch.load(batch_file)
    batch = [im.to(device) for im in images], [{k: v.to(device) for k, v in t.items()} for t in targets]
    if criterion is not None:
        attach(model, criterion, weight=1.2)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = _peak_rss_bytes()
    reset = _reset_peak_rss()
    for i in range(steps):
        train_step(model, batch, 100 + i, device)
    out: dict[str, Any] = {
        "config": config,
        "steps": steps,
        "peak_rss_before_steps_bytes": before,
        "peak_rss_bytes": _peak_rss_bytes(),
        "peak_rss_reset_before_steps": reset,
    }
    if device.type == "cuda":
        out["max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
    return out


def peak_memory(args: argparse.Namespace, batch: Batch) -> dict[str, Any]:
    """Peak memory of A and B, each in a fresh subprocess running the same batch."""
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        batch_file = Path(tmp) / "batch.pt"
        images, targets = batch
        torch.save(
            ([im.cpu() for im in images], [{k: v.cpu() for k, v in t.items()} for t in targets]), batch_file
        )
        for config in ("A", "B"):
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                config,
                "--batch-file",
                str(batch_file),
                "--device",
                args.device,
                "--memory-steps",
                str(args.memory_steps),
                "--threads",
                str(args.threads),
            ]
            proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
            result[config] = json.loads(proc.stdout.strip().splitlines()[-1])
    key = "max_memory_allocated_bytes" if args.device.startswith("cuda") else "peak_rss_bytes"
    a, b = result["A"][key], result["B"][key]
    result["metric"] = key
    result["increase_bytes"] = b - a
    result["increase_ratio"] = b / a - 1
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--pairs", type=int, default=2, help="measured (A, B) pairs after one warm-up pair")
    parser.add_argument("--loss-repeats", type=int, default=5, help="repeats of the loss-only timings")
    parser.add_argument("--memory-steps", type=int, default=1, help="steps per memory subprocess (0: skip)")
    parser.add_argument("--instances", type=int, default=60, help="instances per image")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads on the CPU (default: the demo's, half the cores; recorded in the JSON)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON path (default results/train_step_<device>.json)"
    )
    parser.add_argument("--worker", choices=("A", "B"), help=argparse.SUPPRESS)
    parser.add_argument("--batch-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error(f"--pairs must be at least 1 (a median needs a measured pair); got {args.pairs}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads is None:
        args.threads = demo_threads()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(memory_worker(args.worker, args.memory_steps, device, args.batch_file)))
        return
    model = build_model(device)
    criterion = build_criterion(device)
    batch = build_batch(device, args.instances)
    report: dict[str, Any] = {"machine": machine_info(device), "config": vars(args) | {"out": None}}
    print(f"machine: {describe(report['machine'])}", flush=True)
    report["instances_per_image"] = [int(t["labels"].shape[0]) for t in batch[1]]
    report["steps"], seen = interleaved(model, batch, criterion, args.pairs, device)
    report["loss"] = loss_cost(seen, criterion, args.loss_repeats, device)
    base = report["steps"]["median_a_s"]
    report["loss"]["share_of_step"] = (report["loss"]["targets_s"] + report["loss"]["loss_fwd_bwd_s"]) / base
    report["step_overhead"] = report["steps"]["median_ratio"] - 1
    if args.memory_steps > 0:
        report["memory"] = peak_memory(args, batch)
    report["machine"]["load_average_end"] = os.getloadavg()
    report["machine"]["projection_paths"] = projection_paths()
    out = args.out or RESULTS / f"train_step_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    summary = {
        "median_ratio": round(report["steps"]["median_ratio"], 4),
        "median_cpu_ratio": round(report["steps"]["median_cpu_ratio"], 4),
        "loss_share": round(report["loss"]["share_of_step"], 4),
        "positive_rois": report["loss"]["positive_rois"],
        "threads": report["machine"]["torch_threads"],
    }
    if "memory" in report:
        summary["memory_increase"] = round(report["memory"]["increase_ratio"], 4)
    print(json.dumps(summary), f"-> {out}")


if __name__ == "__main__":
    main()
