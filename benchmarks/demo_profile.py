"""Where a training step of the default demo spends its time: data, backbone, RPN, RoI heads, loss, backward.

Runs ``--steps`` steps of ``preset("cpu")`` (+DCL unless ``--baseline``) in this process, with the images
generated here too (no DataLoader worker) so that generation is timed. Forward parts are timed with
forward pre/post hooks (on a CPU every op is synchronous, so wall time between the hooks is the part's
time); ``loss_dcl`` is the dense contrastive loss's forward (its criterion module); backward and the
optimizer step are timed as wholes. ``--profile`` also prints torch.profiler's top operators by self CPU
time, backward included::

    python benchmarks/demo_profile.py --threads 1 --steps 20
    python benchmarks/demo_profile.py --threads 1 --steps 10 --profile
    python benchmarks/demo_profile.py --threads 1 --steps 20 --image-size 96 --batch-size 4

Prints mean milliseconds per step and the share of the step, plus the machine (CPU model, cores, torch,
threads, load average): other programs on the machine change the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_threads import machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--baseline", action="store_true", help="without the dense contrastive loss")
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler's top operators")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from densecontrast.adapters.torchvision import attach
    from densecontrast.datasets import collate_detection
    from densecontrast.demo import build_model, datasets, lr_at, preset

    given = {k: v for k, v in (("image_size", args.image_size), ("batch_size", args.batch_size)) if v}
    config = replace(preset("cpu"), **given).resolved()
    train_set, _ = datasets(config)
    torch.manual_seed(config.seed)
    model = build_model(config).train()
    handle = None if args.baseline else attach(model, weight=config.weight)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)

    times: dict[str, list[float]] = defaultdict(list)
    started: dict[str, float] = {}

    def timed(name: str, module: torch.nn.Module) -> None:
        def pre(*_: object) -> None:
            started[name] = time.perf_counter()

        def post(*_: object) -> None:
            times[name].append(time.perf_counter() - started.pop(name))

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    heads = model.roi_heads
    timed("transform (resize, batch)", model.transform)
    timed("backbone + FPN", model.backbone)
    timed("RPN", model.rpn)
    timed("RoI heads (box + mask + loss_dcl)", heads)
    timed("  mask head (four 3x3 convs)", heads.mask_head)
    timed("  mask RoIAlign", heads.mask_roi_pool)
    timed("  mask predictor", heads.mask_predictor)
    if handle is not None:
        timed("  loss_dcl forward", handle.criterion)

    def step(index: int) -> dict[str, float]:
        part: dict[str, float] = {}
        t0 = time.perf_counter()
        batch = [
            train_set[(index * config.batch_size + i) % len(train_set)] for i in range(config.batch_size)
        ]
        images, targets = collate_detection(batch)
        t1 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(index, 1200, config.lr, config.warmup)
        losses = model(list(images), list(targets))
        total = sum(losses.values())
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        t4 = time.perf_counter()
        part["data generation"] = t1 - t0
        part["forward (all)"] = t2 - t1
        part["backward (all)"] = t3 - t2
        part["clip + AdamW step"] = t4 - t3
        part["step"] = t4 - t0
        return part

    for i in range(args.warmup):
        step(i)
    times.clear()
    whole: dict[str, list[float]] = defaultdict(list)
    profiler = None
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        profiler = profile(activities=[ProfilerActivity.CPU])
        profiler.__enter__()
    for i in range(args.warmup, args.warmup + args.steps):
        for key, value in step(i).items():
            whole[key].append(value)
    if profiler is not None:
        profiler.__exit__(None, None, None)

    mean_step = statistics.mean(whole["step"])
    rows = {**{k: statistics.mean(v) for k, v in whole.items()}}
    rows.update({k: sum(v) / args.steps for k, v in times.items()})
    info = machine()
    info["threads"] = args.threads
    print(json.dumps(info))
    print(
        f"config: {config.backbone}-FPN{config.fpn_channels}, {config.batch_size} images of "
        f"{config.image_size} px, {'baseline' if args.baseline else '+DCL'}; "
        f"{args.steps} steps after {args.warmup} warm-up"
    )
    print(f"{'part':<44}{'ms/step':>10}{'share':>8}")
    for key in ["step", "data generation", "forward (all)", *times, "backward (all)", "clip + AdamW step"]:
        if key in rows:
            print(f"{key:<44}{1000 * rows[key]:>10.1f}{100 * rows[key] / mean_step:>7.1f}%")
    if profiler is not None:
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    if args.json is not None:
        args.json.write_text(
            json.dumps({"machine": info, "ms_per_step": rows, "steps": args.steps}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
