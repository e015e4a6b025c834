"""Turn the loss benchmarks' JSON into the table and plot of ``docs/performance.md``.

Usage::

    python benchmarks/report.py benchmarks/results/cpu.json --plot docs/img/loss_vs_rois_cpu.png

Prints a Markdown table (median seconds per forward + backward, speed-up over the released algorithm,
ratio to the floor) for every R that was measured.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def load(path: Path) -> tuple[dict[int, dict[str, float]], dict[str, str]]:
    """Median seconds per (R, implementation) and the machine info of a pytest-benchmark JSON file."""
    data = json.loads(path.read_text())
    table: dict[int, dict[str, float]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if "num_rois" not in info or "impl" not in info:
            continue
        impl = (
            info["impl"]
            + ("-compiled" if info.get("compiled") else "")
            + ("-bf16" if info.get("autocast") else "")
        )
        table[int(info["num_rois"])][impl] = float(bench["stats"]["median"])
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {})
    devices = {b.get("extra_info", {}).get("device", "cpu") for b in data["benchmarks"]}
    ours = machine.get("densecontrast", {})  # benchmarks/conftest.py's machine-info hook
    meta = {
        "device": ", ".join(sorted(devices)),
        "cpu": str(ours.get("cpu", cpu.get("brand_raw", machine.get("processor", "?")))),
        "cores": str(ours.get("cpu_count", cpu.get("count", "?"))),
        "python": str(machine.get("python_version", "?")),
        "date": str(data.get("datetime", "?")),
        "torch": str(ours.get("torch", "?")),
        "threads": str(ours.get("torch_threads", "?")),
        "isa": str(ours.get("cpu_isa", "?")),
        "paths": str(ours.get("projection_paths", "?")),
    }
    return dict(sorted(table.items())), meta


VARIANTS = {
    "densecontrast": "fp32 eager",
    "densecontrast-bf16": "bf16 eager",
    "densecontrast-compiled": "fp32 compiled",
    "densecontrast-compiled-bf16": "bf16 compiled",
}


def markdown(table: dict[int, dict[str, float]]) -> str:
    """Median ms per variant that was measured, the floor and the released algorithm, and two ratios."""
    present = [v for v in VARIANTS if any(v in impls for impls in table.values())]
    header = "| R | " + " | ".join(f"{VARIANTS[v]} (ms)" for v in present)
    header += " | floor (ms) | released (ms) | fp32 eager vs released | fp32 eager / floor |"
    rows = [header, "|" + "---:|" * (len(present) + 5)]

    def ms(value: float | None) -> str:
        return "–" if value is None else f"{1e3 * value:.2f}" if value < 0.01 else f"{1e3 * value:.1f}"

    for r, impls in table.items():
        ours, floor, released = impls.get("densecontrast"), impls.get("floor"), impls.get("released")
        speedup = f"{released / ours:.0f}x" if ours and released else "–"
        to_floor = f"{ours / floor:.2f}x" if ours and floor else "–"
        cells = " | ".join(ms(impls.get(v)) for v in present)
        rows.append(f"| {r} | {cells} | {ms(floor)} | {ms(released)} | {speedup} | {to_floor} |")
    return "\n".join(rows)


def plot(table: dict[int, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    labels = {
        "densecontrast": "densecontrast (fp32)",
        "densecontrast-bf16": "densecontrast (bf16 autocast)",
        "densecontrast-compiled": "densecontrast, torch.compile (fp32)",
        "densecontrast-compiled-bf16": "densecontrast, torch.compile (bf16 autocast)",
        "floor": "floor (projection GEMMs + dense gradient write)",
        "released": "released algorithm (loop over RoIs)",
    }
    for impl, label in labels.items():
        points = [(r, v[impl]) for r, v in table.items() if impl in v]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, [1e3 * y for y in ys], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("RoIs per batch (R)")
    ax.set_ylabel("forward + backward, median (ms)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark JSON (from nox -s bench)")
    parser.add_argument("--plot", type=Path, help="write a plot of time against R here")
    parser.add_argument("--title", default="Dense contrastive loss, C=256, 28x28, K=32")
    args = parser.parse_args()
    table, meta = load(args.json)
    print(
        f"device: {meta['device']}; machine: {meta['cpu']} ({meta['isa']}), {meta['cores']} cores, "
        f"torch {meta['torch']}, {meta['threads']} threads, Python {meta['python']}, {meta['date']}; "
        f"projection path {meta['paths']}\n"
    )
    print(markdown(table))
    if args.plot:
        plot(table, args.plot, args.title)


if __name__ == "__main__":
    main()
