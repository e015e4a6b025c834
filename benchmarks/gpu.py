"""Every GPU figure of ``docs/performance.md`` in one command (``nox -s gpu`` runs it).

Usage::

    python benchmarks/gpu.py              # needs a CUDA device; exits with status 2 without one
    python benchmarks/gpu.py --quick      # fewer rounds and pairs, for a first look

Runs, with the current interpreter and ``PYTHONPATH=src`` set for the children:

1. ``tests/test_cuda.py`` (CPU equality, fp16/bf16 autocast, determinism, no host synchronisation,
   CUDA-graph capture);
2. the loss benchmarks on the GPU: fp32 and bf16 autocast, eager and ``torch.compile(dynamic=True)``,
   R = 32 to 1024, against the released algorithm and the floor (``benchmarks/results/loss_cuda.json``);
3. the small-R ratios, the loss and its floor alternated in one process
   (``benchmarks/results/small_r_cuda.json``);
4. the Mask R-CNN training step with and without ``attach`` (``benchmarks/results/train_step_cuda.json``);
5. the table and plot for ``docs/performance.md`` (``benchmarks/results/loss_cuda.md``,
   ``docs/img/loss_vs_rois_cuda.png``).

A step that fails is reported and the others still run; the exit status is that of the first failure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and pairs")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(
            "benchmarks/gpu.py: no CUDA device is visible (torch.cuda.is_available() is False); "
            "the GPU figures need one. Nothing was run.",
            file=sys.stderr,
        )
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    )
    py = sys.executable
    sizes = "32,64,128,256,512,1024"
    steps: list[tuple[str, list[str]]] = [
        ("CUDA tests", [py, "-m", "pytest", "tests/test_cuda.py", "-q", "-p", "no:cacheprovider", "-rs"]),
        (
            "loss benchmarks",
            [
                py, "-m", "pytest", "benchmarks/bench_loss.py", "-o", "python_files=bench_*.py",
                "-p", "no:cacheprovider",
                "--bench-device", "cuda", "--bench-compile", "--bench-sizes", sizes,
                "--baseline-max-r", "256" if args.quick else "1024",
                "--benchmark-columns=min,median,mean,rounds", "--benchmark-sort=name",
                f"--benchmark-json={RESULTS / 'loss_cuda.json'}",
            ],
        ),
        (
            "small-R ratios",
            [
                py, "benchmarks/small_r.py", "--device", "cuda", "--sizes", "32", "256", "1024",
                "--rounds", "50" if args.quick else "200", "--out", str(RESULTS / "small_r_cuda.json"),
            ],
        ),
        (
            "training step",
            [
                py, "benchmarks/train_step.py", "--device", "cuda", "--pairs", "3" if args.quick else "10",
                "--out", str(RESULTS / "train_step_cuda.json"),
            ],
        ),
    ]  # fmt: skip
    status = 0
    for name, command in steps:
        print(f"\n=== {name}: {' '.join(command)}", flush=True)
        code = subprocess.run(command, cwd=ROOT, env=env).returncode
        if code:
            print(f"=== {name} failed with status {code}", flush=True)
            status = status or code
    report = [
        py,
        "benchmarks/report.py",
        str(RESULTS / "loss_cuda.json"),
        "--plot",
        "docs/img/loss_vs_rois_cuda.png",
    ]
    if (RESULTS / "loss_cuda.json").exists():
        print(f"\n=== table and plot: {' '.join(report)}", flush=True)
        done = subprocess.run(report, cwd=ROOT, env=env, capture_output=True, text=True)
        print(done.stdout, done.stderr, sep="")
        (RESULTS / "loss_cuda.md").write_text(done.stdout)
        status = status or done.returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
