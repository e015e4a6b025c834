"""The loss's time against its floor at small R, alternating the two in one process.

Usage::

    python benchmarks/small_r.py --sizes 32 256 --rounds 40
    python benchmarks/small_r.py --baseline-src ../other-checkout/src   # also another version of the loss

Each round times one forward + backward of ``DenseContrastiveLoss(k=32, tau=0.07, in_channels=256)`` and
the floor (the projection's two layers forward and backward on the R x 3K sampled rows, plus writing
one dense gradient of the size of ``feats``; run by each engine of :data:`ENGINES`, GEMMs and 1x1
convolutions on channels-first and on channels-last rows, and the fastest each round is the floor), back
to back, so that both see the same load. It
prints the median of the per-round ratios and the ratio of the medians; on a shared machine the first is
the steadier, and the 10th-90th percentile range of the per-round ratios gives the spread. Results go to
``--out`` as JSON when given, with the machine (CPU model, ISA, cores, torch, threads, load) and the
projection path the loss chose.

``--paths conv conv_cl gemm`` adds the loss with its projection pinned to each path as further
contenders, ``--compiled`` the loss through ``torch.compile`` (its compilation happens in the warm-up
rounds), ``--bound`` the floor plus the few kernels that every implementation of the loss runs besides
it, each in the fastest form measured (the bound; see :func:`kernels_beside`); ``--profile`` prints each
contender's ATen ops by self time per step
(torch.profiler, a separate pass after the timed rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import describe, machine_info, projection_paths, roi_batch, synchronize

from densecontrast import DenseContrastiveLoss, projection

K = 32
C = 256


def load_package(src: Path, name: str = "densecontrast_baseline"):
    """Import the densecontrast package under ``src`` as ``name``, beside the installed one."""
    import importlib.util
    import sys

    init = src / "densecontrast" / "__init__.py"
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    if spec is None or spec.loader is None:
        raise SystemExit(f"no densecontrast package under {src}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def loss_step(
    num_rois: int,
    device: torch.device,
    loss_class=DenseContrastiveLoss,
    path: str | None = None,
    compiled: bool = False,
):
    """One forward + backward of the loss; with ``path``, its projection pinned to that path; with
    ``compiled``, through ``torch.compile`` (inductor, compiled for this R on the first call)."""
    feats, masks = roi_batch(num_rois, C, device=device)
    torch.manual_seed(0)
    crit = loss_class(k=K, tau=0.07, in_channels=C).to(device)
    call = torch.compile(crit, dynamic=False) if compiled else crit

    def step() -> None:
        feats.grad = None
        for p in crit.parameters():
            p.grad = None
        projection._forced_path = path
        try:
            call(feats, masks).backward()
        finally:
            projection._forced_path = None
        synchronize(device)

    return step


ENGINES = ("gemm", "conv", "conv_cl")
"""How the floor (and the bound) run the projection: two GEMMs on row-major rows (R * 3K, C); two 1x1
``conv1d`` on channels-first rows (R, C, 3K), as the loss's convolution path; two 1x1 ``conv2d`` on the
same rows in channels-last memory (R, C, 3K, 1), which is row-major rows again, oneDNN's layout for a
1x1 convolution without reorders. Every engine but ``"conv"`` works on row-major rows."""


def floor_step(num_rois: int, device: torch.device, engine: str = "gemm", extra=None):
    """The floor's work: the projection's two layers forward and backward on the R x 3K sampled rows
    (no biases), plus one zero-filled dense gradient of the size of ``feats``. ``engine`` is one of
    :data:`ENGINES`; the floor of a round is the fastest of them, so a loss is never measured against a
    slower engine than the machine has.

    ``extra``, when given, is called at the end of the step as ``extra(grad, z, rows_grad, row_major)``:
    the zero-filled gradient (R, C, 28, 28), the projection's output and the rows' gradient as
    channels-first (R, C, 3K) views of what the engine wrote (so they are as warm as in a loss), and
    whether the engine's rows are row-major (see :func:`kernels_beside`)."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(num_rois * 3 * K, C, generator=g).to(device)
    w1 = (torch.randn(C, C, generator=g) / C**0.5).to(device).requires_grad_(True)
    w2 = (torch.randn(C, C, generator=g) / C**0.5).to(device).requires_grad_(True)
    shape = (num_rois, C, 28, 28)
    channels_first = rows.view(num_rois, 3 * K, C).transpose(1, 2)
    if engine == "conv":
        rows = channels_first.contiguous()
    elif engine == "conv_cl":
        # Through a contiguous copy: a channels-first view with a unit last dimension is ambiguous, and
        # conv2d would take it as channels-first.
        rows = channels_first.contiguous().unsqueeze(-1).contiguous(memory_format=torch.channels_last)
    rows.requires_grad_(True)

    def project(x: torch.Tensor) -> torch.Tensor:
        if engine == "conv":
            return F.conv1d(torch.relu(F.conv1d(x, w1[:, :, None])), w2[:, :, None])
        if engine == "conv_cl":
            return F.conv2d(torch.relu(F.conv2d(x, w1[:, :, None, None])), w2[:, :, None, None])
        return torch.relu(x @ w1) @ w2

    def as_channels_first(t: torch.Tensor) -> torch.Tensor:
        if engine == "conv_cl":
            return t.squeeze(-1)
        return t.view(num_rois, 3 * K, C).transpose(1, 2) if engine == "gemm" else t

    def step() -> None:
        rows.grad = w1.grad = w2.grad = None
        out = project(rows)
        out.sum().backward()
        grad = torch.zeros(shape, device=device)
        if extra is not None:
            extra(grad, as_channels_first(out.detach()), as_channels_first(rows.grad), engine != "conv")
        synchronize(device)

    return step


def kernels_beside(num_rois: int, device: torch.device):
    """The kernels that any implementation of the loss runs besides the floor's work, each once and in
    the fastest form measured, as a function called by :func:`floor_step` (``extra``).

    They are: drawing the three sets of K pixels (one ``rand`` of two keys per pixel, since anchors and
    negatives come from disjoint regions and can share one, and one ``topk`` over each RoI's 3 x 784
    keys); reading the sampled pixels of ``feats`` (one ``gather``, each RoI's index already sorted, the
    fastest order measured); the similarity products on the engine's own output (one ``bmm`` forward, two
    in the backward); and adding the rows' gradient into the dense one (one ``scatter_add_`` with the same
    sorted index). An engine whose rows are row-major also needs the gathered rows copied into that layout
    and their gradient copied back (a transposing gather or scatter measured slower than a copy and a
    plain one). Everything else the loss does (the sort, the keys' shifts, reorderings, norms,
    log-sum-exp, softplus and their gradients, autograd) is left out: the floor plus these, the *bound*,
    is what a loss made of these kernels, with the projection run as the floor runs it, can reach at
    best."""
    feats, _ = roi_batch(num_rois, C, device=device)
    feats = feats.detach().flatten(2)  # (R, C, 784)
    pixels = feats.shape[2]
    g = torch.Generator().manual_seed(1)
    keys = torch.rand(num_rois, 3, pixels, generator=g).to(device)
    index = keys.topk(K, dim=2).indices.flatten(1).sort(dim=1).values
    index = index[:, None, :].expand(-1, C, -1)  # (R, C, 3K)
    d_sim = torch.randn(num_rois, K, 2 * K, generator=g).to(device)

    def run(grad: torch.Tensor, z: torch.Tensor, rows_grad: torch.Tensor, row_major: bool) -> None:
        torch.rand(num_rois, 2, pixels, device=device)
        keys.topk(K, dim=2, sorted=False)
        rows = torch.gather(feats, 2, index)
        if row_major:
            rows.transpose(1, 2).contiguous()
            rows_grad = rows_grad.contiguous()
        torch.bmm(z[:, :, :K].transpose(1, 2), z[:, :, K:])
        torch.bmm(z[:, :, K:], d_sim.transpose(1, 2))
        torch.bmm(z[:, :, :K], d_sim)
        grad.view(num_rois, C, pixels).scatter_add_(2, index, rows_grad)

    return run


def alternate(steps: dict, rounds: int, warmup: int = 3, clock=time.perf_counter) -> dict[str, float]:
    """Time each step once per round, in an order that rotates every round; medians and ratios."""
    names = list(steps)
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = clock()
            steps[name]()
            times[name].append(clock() - start)
    for group in ("bound", "floor"):  # the floor (and the bound) of a round is its fastest engine
        engines = [name for name in names if name.startswith(f"{group}_")]
        if engines:
            times[group] = [min(round_times) for round_times in zip(*(times[e] for e in engines))]
            names = [group, *names]
    out: dict[str, float] = {"rounds": rounds}
    for name in names:
        out[f"{name}_median_s"] = statistics.median(times[name])
    for name in names:
        if name.startswith(("floor", "bound_")):
            continue
        ratios = [a / b for a, b in zip(times[name], times["floor"])]
        out[f"{name}_median_of_ratios"] = statistics.median(ratios)
        out[f"{name}_ratio_of_medians"] = out[f"{name}_median_s"] / out["floor_median_s"]
        low, high = _percentiles(ratios)
        out[f"{name}_ratio_p10"], out[f"{name}_ratio_p90"] = low, high
    return out


def _percentiles(values: list[float]) -> tuple[float, float]:
    """10th and 90th percentiles (the extremes below 10 values)."""
    if len(values) < 10:
        return min(values), max(values)
    deciles = statistics.quantiles(values, n=10)
    return deciles[0], deciles[-1]


def profile_ops(steps: dict, rounds: int = 3, top: int = 12) -> dict[str, list[tuple[str, float]]]:
    """Each contender's ATen ops by self CPU time per step (ms), from ``rounds`` profiled steps; the first
    entry is the total over all ATen ops."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for name, fn in steps.items():
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(rounds):
                fn()
        rows = [
            (e.key, e.self_cpu_time_total / 1e3 / rounds)
            for e in prof.key_averages()
            if e.key.startswith("aten::")
        ]
        total = ("all aten ops", sum(ms for _, ms in rows))
        out[name] = [total, *sorted(rows, key=lambda row: -row[1])[:top]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or the process's CPU time (steadier on a loaded CPU; meaningless for CUDA)",
    )
    parser.add_argument(
        "--baseline-src", type=Path, help="a src/ folder with another densecontrast to compare"
    )
    parser.add_argument(
        "--paths",
        nargs="*",
        choices=projection._PATHS,
        default=[],
        help="also time the loss with its projection pinned to these paths",
    )
    parser.add_argument(
        "--compiled", action="store_true", help="also time the loss through torch.compile (inductor)"
    )
    parser.add_argument(
        "--bound",
        action="store_true",
        help="also time the floor plus the kernels any loss runs besides it (see kernels_beside)",
    )
    parser.add_argument("--profile", action="store_true", help="print per-op self times per contender")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    machine = machine_info(device)
    print(f"machine: {describe(machine)}; load average {machine['load_average']}", flush=True)
    results: dict[str, dict] = {}
    profiles: dict[str, dict] = {}
    baseline = load_package(args.baseline_src) if args.baseline_src else None
    for r in args.sizes:
        steps = {"ours": loss_step(r, device)}
        steps.update({f"floor_{engine}": floor_step(r, device, engine) for engine in ENGINES})
        for path in args.paths:
            steps[path] = loss_step(r, device, path=path)
        if baseline is not None:
            steps["baseline"] = loss_step(r, device, baseline.DenseContrastiveLoss)
        if args.compiled:
            steps["compiled"] = loss_step(r, device, compiled=True)
        if args.bound:
            beside = kernels_beside(r, device)
            steps.update({f"bound_{e}": floor_step(r, device, e, extra=beside) for e in ENGINES})
        res = alternate(
            steps, args.rounds, clock=time.process_time if args.clock == "cpu" else time.perf_counter
        )
        results[str(r)] = res
        line = (
            f"R={r:5d}  floor {1e3 * res['floor_median_s']:8.2f} ms "
            + "("
            + ", ".join(f"{engine} {1e3 * res[f'floor_{engine}_median_s']:.2f}" for engine in ENGINES)
            + ")"
        )
        for name in [*steps, *(["bound"] if args.bound else [])]:
            if not name.startswith(("floor", "bound_")):
                line += (
                    f" | {name} {1e3 * res[f'{name}_median_s']:8.2f} ms, "
                    f"{res[f'{name}_median_of_ratios']:.3f}x floor "
                    f"[{res[f'{name}_ratio_p10']:.2f}-{res[f'{name}_ratio_p90']:.2f}] (median of ratios), "
                    f"{res[f'{name}_ratio_of_medians']:.3f}x (ratio of medians)"
                )
        print(line, flush=True)
        if args.profile:
            profiles[str(r)] = profile_ops(steps)
            for name, rows in profiles[str(r)].items():
                ops = ", ".join(f"{op.removeprefix('aten::')} {ms:.1f}" for op, ms in rows)
                print(f"  R={r} {name} (ms per step): {ops}", flush=True)
    machine["projection_paths"] = projection_paths()
    machine["load_average_end"] = os.getloadavg()
    print(f"projection path chosen: {machine['projection_paths']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "device": str(device),
            "torch": torch.__version__,
            "machine": machine,
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "results": results,
        }
        if profiles:
            report["profiles"] = profiles
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
