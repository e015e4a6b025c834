"""Seconds per training step of the default demo, by thread count, with and without a competing process.

Measures the +DCL model of ``densecontrast demo``'s CPU configuration (``preset("cpu")``, the demo's own
``train`` loop, data generated in a DataLoader worker unless ``--workers 0``) for each combination of
torch threads (``--threads``), data-loading workers (``--workers``) and competing processes
(``--load``: that many ``while True: pass`` processes that this script starts and stops itself, at its
own priority). Each measurement runs in a fresh process, skips ``--warmup`` steps (the worker's start,
the allocator's first growth) and times at most ``--steps`` steps or ``--max-seconds`` seconds, whichever
comes first. The result records the CPU model, the core count, torch's version and the load average at
the start, because other programs on the machine change the figures::

    python benchmarks/demo_threads.py                       # threads 1 2 x load 0 1, 20 steps each
    python benchmarks/demo_threads.py --workers 0 1 --steps 10 --json benchmarks/results/demo_threads_cpu.json

No figure here is asserted anywhere; docs/demo.md quotes them with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_CHILD = "--child"


def machine() -> dict[str, Any]:
    """CPU model, core count, torch version and load average of this machine."""
    import torch

    model = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "load_average_1min": os.getloadavg()[0],
    }


def child(threads: int, workers: int, steps: int, warmup: int, max_seconds: float) -> dict[str, Any]:
    """Train the default +DCL demo model for ``warmup + steps`` steps in this process; step times."""
    import torch

    torch.set_num_threads(threads)
    from dataclasses import replace

    from densecontrast.adapters.torchvision import attach
    from densecontrast.demo import build_model, datasets, preset, train

    config = replace(preset("cpu"), steps=warmup + steps).resolved()
    train_set, _ = datasets(config)
    torch.manual_seed(config.seed)
    model = build_model(config)
    attach(model, weight=config.weight)
    times: list[float] = []
    start = time.perf_counter()

    class Enough(Exception):
        pass

    def on_step(step: int, seconds: float) -> None:
        if step >= warmup:
            times.append(seconds)
        if step >= warmup and time.perf_counter() - start > max_seconds:
            raise Enough

    try:
        train(model, train_set, config, show_progress=False, num_workers=workers, on_step=on_step)
    except Enough:
        pass
    return {"threads": threads, "workers": workers, "steps": len(times), "seconds": times}


def measure(threads: int, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, _CHILD, str(threads), str(workers), str(args.steps), str(args.warmup)]
    cmd.append(str(args.max_seconds))
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == _CHILD:
        threads, workers, steps, warmup = (int(v) for v in argv[1:5])
        print(json.dumps(child(threads, workers, steps, warmup, float(argv[5]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--load", type=int, nargs="+", default=[0, 1], help="competing processes")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="per measurement, after warm-up")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    record: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join(["benchmarks/demo_threads.py", *argv]),
    }
    rows = []
    for load in args.load:
        competitors = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
        try:
            for threads in args.threads:
                for workers in args.workers:
                    result = measure(threads, workers, args)
                    result["load"] = load
                    result["median"] = statistics.median(result["seconds"]) if result["seconds"] else None
                    rows.append(result)
                    print(
                        f"load {load}  threads {threads}  workers {workers}: "
                        f"{result['median']:.3f} s/step (median of {result['steps']})",
                        flush=True,
                    )
        finally:
            for proc in competitors:
                proc.kill()
                proc.wait()
    record["machine"]["load_average_1min_end"] = os.getloadavg()[0]
    record["results"] = rows
    print(json.dumps(record["machine"]))
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
