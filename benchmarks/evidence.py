"""The evidence run: baseline vs +DCL, same configuration, 3 seeds each, on occlusion-heavy synthetic data.

Usage::

    python benchmarks/evidence.py                    # the CPU profile (the demo's configuration), λ = 1.2
    python benchmarks/evidence.py --variants dcl --weight 0.1   # +DCL at λ = 0.1, in .../weight0.1/
    python benchmarks/evidence.py --quick            # a smoke test in seconds
    python benchmarks/evidence.py --device cuda      # the demo's CUDA configuration
    python benchmarks/evidence.py --tuning           # evaluate on the tuning split instead
    python benchmarks/render_evidence.py             # docs/evidence.md tables and docs/img/evidence*.png

For each seed s (0, 1, 2 by default) and each variant (baseline, dcl) it trains the demo's Mask R-CNN with
``seed=s`` (the seed sets the training images, their order, the initialisation and the loss's sampler
draws), evaluates mask AP and the segmentation-error analysis on 100 held-out images of the split
``"val"`` generated with the same seed s, and measures the mask head's feature compactness on the
ground-truth RoIs of 20 of those images. Baseline and +DCL of a seed see the same images in the same
order from the same initial weights.

The configuration was settled on the *tuning* split (split ``"test"``, seed 1000 + s), never on the
evaluation split; ``--tuning`` evaluates there and writes under ``.../tuning/`` instead.

Each run writes ``benchmarks/results/evidence/<profile>/seed<s>_<variant>.json`` when it finishes and
appends to ``evidence.log`` there. Finished runs are skipped, so the script resumes after an interruption;
a run in progress holds ``seed<s>_<variant>.lock``, so two processes can share the work (start the script
twice; remove stale locks of killed processes by hand).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))

from densecontrast.demo import DemoConfig, datasets, preset, run_one  # noqa: E402

RESULTS = ROOT / "results" / "evidence"
VARIANTS = ("baseline", "dcl")
TUNING_SPLIT = "test"
TUNING_SEED_OFFSET = 1000
HISTORY_EVERY = 10
PAPER_WEIGHT = 1.2
"""λ of the +DCL runs unless ``--weight`` is given: the paper's Cityscapes value."""


def profile_config(name: str, device: str) -> DemoConfig:
    """The configuration of a profile: ``cpu`` (the demo's), ``cuda`` or ``quick`` (smoke test)."""
    if name == "quick":
        return replace(
            preset("cpu"), steps=3, train_images=8, val_images=3, image_size=64, warmup=1, device=device
        )
    return preset(device)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _claim(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    return True


def run_seed_variant(config: DemoConfig, seed: int, variant: str, *, tuning: bool) -> dict:
    """Train and evaluate one (seed, variant); returns the JSON record."""
    config = replace(config, seed=seed)
    if tuning:
        config = replace(config, val_split=TUNING_SPLIT, val_seed=TUNING_SEED_OFFSET + seed)
    config = config.resolved()
    wall, cpu = time.perf_counter(), _cpu_seconds()
    info = run_one(config, dcl=variant == "dcl", out=None, show_progress=False, datasets_=datasets(config))
    report = info["report"]
    return {
        "seed": seed,
        "variant": variant,
        "config": asdict(config),
        "eval_split": {"split": config.val_split, "seed": config.val_seed, "images": config.val_images},
        "ap": report.ap,
        "ap50": report.ap50,
        "ap75": report.ap75,
        "delta": dict(report.delta),
        "report": report.to_dict(),
        "compactness": info["compactness"].to_dict(),
        "wall_seconds": time.perf_counter() - wall,
        "cpu_seconds": _cpu_seconds() - cpu,
        "torch_threads": torch.get_num_threads(),
        "final_losses": info["history"][-1] if info["history"] else {},
        "history_every": HISTORY_EVERY,
        "history": info["history"][::HISTORY_EVERY],
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()},
    }


def import_demo(demo_out: Path, config: DemoConfig, seed: int, variant: str) -> dict:
    """The record of a run that ``densecontrast demo --compare --threads 1`` already made.

    The demo's run with the same configuration and seed is the same computation as the evidence run
    (same data, order, initialisation and sampler draws, same evaluation split), so it is taken over
    instead of being repeated; its configuration must match the profile's field by field.
    """
    metrics = json.loads((demo_out / f"{variant}_metrics.json").read_text())
    history = json.loads((demo_out / f"{variant}_losses.json").read_text())
    expected = asdict(replace(config, seed=seed).resolved())
    if metrics["config"] != expected:
        diff = {
            k: (metrics["config"].get(k), v) for k, v in expected.items() if metrics["config"].get(k) != v
        }
        raise SystemExit(f"{demo_out}: the demo's configuration differs from the profile's: {diff}")
    report = metrics["report"]
    return {
        "seed": seed,
        "variant": variant,
        "config": metrics["config"],
        "eval_split": {"split": config.val_split, "seed": seed, "images": config.val_images},
        "ap": report["ap"],
        "ap50": report["ap50"],
        "ap75": report["ap75"],
        "delta": report["delta"],
        "report": report,
        "compactness": metrics["compactness"],
        "wall_seconds": metrics["seconds"],
        "cpu_seconds": metrics["cpu_seconds"],
        "torch_threads": 1,
        "final_losses": metrics["final_losses"],
        "history_every": HISTORY_EVERY,
        "history": history[::HISTORY_EVERY],
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()},
        "source": f"imported from a `densecontrast demo --compare --threads 1 --seed {seed}` run",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny profile for smoke tests")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--tuning", action="store_true", help="evaluate on the tuning split")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument(
        "--weight", type=float, default=PAPER_WEIGHT, help=f"λ of the +DCL runs (default {PAPER_WEIGHT})"
    )
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="variants to run"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder")
    parser.add_argument(
        "--import-demo",
        type=Path,
        metavar="DIR",
        help="take the runs of the first seed from this `densecontrast demo --compare --threads 1` output "
        "folder (same configuration and seed: the same computation) instead of training them again",
    )
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda was asked for, but CUDA is not available")
    torch.set_num_threads(args.threads)
    profile = "quick" if args.quick else ("cuda" if args.device.startswith("cuda") else "cpu")
    config = profile_config(profile, args.device)
    sub = "tuning" if args.tuning else ""
    config = replace(config, weight=args.weight)
    if args.weight != PAPER_WEIGHT:  # results of the paper's λ sit in the profile's folder itself
        sub = f"{sub}/weight{args.weight:g}".lstrip("/")
    folder = args.results / profile / sub
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "evidence.log"

    def say(message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} {message}"
        print(line, flush=True)
        with log.open("a") as handle:
            handle.write(line + "\n")

    say(f"profile {profile}, seeds {args.seeds}, threads {args.threads}, config {asdict(config)}")
    for seed in args.seeds:
        for variant in args.variants:
            target = folder / f"seed{seed}_{variant}.json"
            lock = folder / f"seed{seed}_{variant}.lock"
            if target.exists():
                say(f"seed {seed} {variant}: done already, skipped")
                continue
            if not _claim(lock):
                say(f"seed {seed} {variant}: another process holds {lock.name}, skipped")
                continue
            try:
                if args.import_demo is not None and seed == args.seeds[0] and not args.tuning:
                    say(f"seed {seed} {variant}: imported from {args.import_demo}")
                    record = import_demo(args.import_demo, config, seed, variant)
                else:
                    say(f"seed {seed} {variant}: training")
                    record = run_seed_variant(config, seed, variant, tuning=args.tuning)
                tmp = target.with_suffix(".tmp")
                tmp.write_text(json.dumps(record, indent=1))
                tmp.replace(target)
                d = record["delta"]
                say(
                    f"seed {seed} {variant}: AP {100 * record['ap']:.1f} AP50 {100 * record['ap50']:.1f} "
                    f"dfFP {100 * d['fFP']:.1f} dbFP {100 * d['bFP']:.1f} dFN {100 * d['FN']:.1f} "
                    f"intra {record['compactness']['intra']:.3f}; wall {record['wall_seconds']:.0f} s, "
                    f"cpu {record['cpu_seconds']:.0f} s"
                )
            finally:
                lock.unlink(missing_ok=True)
    say("finished")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
