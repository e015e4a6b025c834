"""Render the evidence run's JSON into docs/evidence.md (between markers) and docs/img/evidence*.png.

Usage::

    python benchmarks/render_evidence.py     # profile cpu -> docs/evidence.md, docs/img/evidence.png
    python benchmarks/render_evidence.py --profile quick --doc /tmp/e.md --img /tmp/e.png

Only the part of the page between ``<!-- evidence:begin -->`` and ``<!-- evidence:end -->`` is replaced
(the prose around it stays); runs that have not finished are listed as missing.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "evidence"
BEGIN, END = "<!-- evidence:begin -->", "<!-- evidence:end -->"
VARIANTS = ("baseline", "dcl")
# (key, heading, percent?, lower is better?)
METRICS = (
    ("ap", "AP", True, False),
    ("ap50", "AP50", True, False),
    ("ap75", "AP75", True, False),
    ("fFP", "ΔAP_fFP", True, True),
    ("bFP", "ΔAP_bFP", True, True),
    ("FN", "ΔAP_FN", True, True),
)
COMPACT = (
    ("intra", "intra", False),
    ("inter", "inst-inst", True),
    ("background", "inst-bg", True),
    ("separation", "separation", False),
)


def load(folder: Path) -> dict[tuple[int, str], dict]:
    """Runs by (seed, variant); +DCL runs of another λ (``weight<λ>/``) become the variant ``dcl@<λ>``."""
    runs = {}
    for path in sorted(folder.glob("seed*_*.json")) + sorted(folder.glob("weight*/seed*_dcl.json")):
        record = json.loads(path.read_text())
        variant = record["variant"]
        if path.parent != folder:
            variant = f"dcl@{path.parent.name.removeprefix('weight')}"
        runs[(int(record["seed"]), variant)] = record
    return runs


def variants_of(runs: dict[tuple[int, str], dict], folder: Path | None = None) -> list[str]:
    """Baseline, +DCL, then +DCL at other λ: those with runs and those with a folder (runs started)."""
    found = {v for _, v in runs if v.startswith("dcl@")}
    if folder is not None:
        found |= {f"dcl@{d.name.removeprefix('weight')}" for d in folder.glob("weight*") if d.is_dir()}
    extra = sorted(found, key=lambda v: float(v[4:]))
    return [*VARIANTS, *extra]


def name_of(variant: str, runs: dict[tuple[int, str], dict]) -> str:
    if variant == "baseline":
        return "Baseline"
    weights = {r["config"]["weight"] for (_, v), r in runs.items() if v == variant}
    weight = weights.pop() if len(weights) == 1 else (variant[4:] if "@" in variant else "1.2")
    return f"+DCL λ={weight:g}" if isinstance(weight, float) else f"+DCL λ={weight}"


def value(record: dict, key: str) -> float:
    if key in ("ap", "ap50", "ap75"):
        return 100 * record[key]
    if key in ("fFP", "bFP", "FN"):
        return 100 * record["delta"][key]
    v = record["compactness"][key]
    return math.nan if v is None else float(v)


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def fmt(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def render(
    runs: dict[tuple[int, str], dict], seeds: list[int], img_name: str, folder: Path | None = None
) -> str:
    lines: list[str] = []
    variants = variants_of(runs, folder)
    names = {v: name_of(v, runs) for v in variants}
    missing = [f"seed {s} {names[v]}" for s in seeds for v in variants if (s, v) not in runs]
    done = sorted(runs)
    if done:
        c = runs[done[0]]["config"]
        lines.append(
            f"Configuration (identical for every run): {c['backbone']}-FPN{c['fpn_channels']}, mask head "
            f"{c['mask_channels']}, {c['steps']} steps x {c['batch_size']} images of {c['image_size']} px, "
            f"AdamW lr {c['lr']} with {c['warmup']} warm-up steps and cosine decay; "
            f'{c["train_images"]} training images (split "train", seed s), evaluated on {c["val_images"]} '
            f'held-out images (split "{c["val_split"]}", seed s).'
        )
        lines.append("")
    if missing:
        lines.append(
            f"**Not finished yet:** {', '.join(missing)}. The tables below hold the finished runs only."
        )
        lines.append("")
    header = "| seed | model | " + " | ".join(h for _, h, _, _ in METRICS) + " | "
    header += " | ".join(h for _, h, _ in COMPACT) + " | run CPU min |"
    lines += ["### Every run (percent; compactness as cosine similarity)", "", header]
    lines.append("|" + "---|" * (3 + len(METRICS) + len(COMPACT)))
    done = sorted(done, key=lambda k: (k[0], variants.index(k[1])))
    for seed, variant in done:
        r = runs[(seed, variant)]
        cells = [f"{value(r, k):.1f}" for k, _, _, _ in METRICS]
        cells += [f"{value(r, k):.3f}" if k != "separation" else f"{value(r, k):.2f}" for k, _, _ in COMPACT]
        cpu = r["cpu_seconds"]
        lines.append(f"| {seed} | {names[variant]} | " + " | ".join(cells) + f" | {cpu / 60:.1f} |")
    lines.append("")
    lines += ["### Mean ± standard deviation over seeds", ""]
    lines.append("| model | n | " + " | ".join(h for _, h, _, _ in METRICS) + " | "
                 + " | ".join(h for _, h, _ in COMPACT) + " |")  # fmt: skip
    lines.append("|" + "---|" * (2 + len(METRICS) + len(COMPACT)))
    for variant in variants:
        rs = [runs[k] for k in done if k[1] == variant]
        if not rs:
            continue
        cells = [fmt(*mean_std([value(r, k) for r in rs]), 1) for k, _, _, _ in METRICS]
        cells += [
            fmt(*mean_std([value(r, k) for r in rs]), 2 if k == "separation" else 3) for k, _, _ in COMPACT
        ]
        lines.append(f"| {names[variant]} | {len(rs)} | " + " | ".join(cells) + " |")
    sentences = []
    for dcl in variants[1:]:
        paired = [s for s in seeds if (s, "baseline") in runs and (s, dcl) in runs]
        if not paired:
            continue
        diffs = {
            k: [value(runs[(s, dcl)], k) - value(runs[(s, "baseline")], k) for s in paired]
            for k, *_ in (*METRICS, *COMPACT)
        }
        cells = [fmt(*mean_std(diffs[k]), 1) for k, _, _, _ in METRICS]
        cells += [fmt(*mean_std(diffs[k]), 2 if k == "separation" else 3) for k, _, _ in COMPACT]
        lines.append(f"| {names[dcl]} − Baseline (paired) | {len(paired)} | " + " | ".join(cells) + " |")
        fn_lower = sum(d < 0 for d in diffs["FN"])
        ap_higher = sum(d > 0 for d in diffs["ap"])
        intra_higher = sum(d > 0 for d in diffs["intra"])
        sentences.append(
            f"Paired by seed ({len(paired)} of {len(seeds)} seeds finished): {names[dcl]} lowered ΔAP_FN in "
            f"{fn_lower} "
            f"of {len(paired)} seeds (mean change {fmt(*mean_std(diffs['FN']), 1)} points), raised AP in "
            f"{ap_higher} of {len(paired)} (mean change {fmt(*mean_std(diffs['ap']), 1)} points), and made "
            f"instance features more compact (higher intra) in {intra_higher} of {len(paired)}."
        )
    lines += ["", *(f"- {t}" for t in sentences)]
    lines += ["", f"![Evidence: per-seed values and mean ± std](img/{img_name})", ""]
    return "\n".join(lines)


def tuning_table(runs: dict[tuple[int, str], dict]) -> str:
    """The runs on the tuning split (split "test", seed 1000 + s), which chose the configuration."""
    if not runs:
        return ""
    variants = variants_of(runs)
    lines = [
        "### Tuning split (chose λ for the demo; never used for the evaluation above)",
        "",
        "| seed | model | eval split | AP | AP50 | AP75 | ΔAP_fFP | ΔAP_bFP | ΔAP_FN | intra | separation |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for seed, variant in sorted(runs, key=lambda k: (k[0], variants.index(k[1]))):
        r = runs[(seed, variant)]
        e = r["eval_split"]
        split = f"{e['split']} / seed {e['seed']} / {e['images']} images"
        cells = [f"{value(r, k):.1f}" for k, _, _, _ in METRICS]
        cells += [f"{value(r, 'intra'):.3f}", f"{value(r, 'separation'):.2f}"]
        lines.append(f"| {seed} | {name_of(variant, runs)} | {split} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, ""])


def plot(runs: dict[tuple[int, str], dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, h, lower) for k, h, _, lower in METRICS] + [(k, h, lower) for k, h, lower in COMPACT]
    fig, axes = plt.subplots(2, 6, figsize=(16, 6.2))
    colours = {"baseline": "#1f77b4", "dcl": "#d62728"}
    seeds = sorted({s for s, _ in runs})
    variants = variants_of(runs)
    extra = ["#ff7f0e", "#2ca02c", "#9467bd"]
    for j, v in enumerate(variants[2:]):
        colours[v] = extra[j % len(extra)]
    for ax, (key, heading, lower) in zip(axes.flat, panels):
        for s in seeds:
            pair = [(i, value(runs[(s, v)], key)) for i, v in enumerate(variants) if (s, v) in runs]
            if len(pair) >= 2:
                ax.plot([p[0] for p in pair], [p[1] for p in pair], color="#bbbbbb", linewidth=0.8, zorder=1)
        for i, variant in enumerate(variants):
            vals = [value(runs[(s, variant)], key) for s in seeds if (s, variant) in runs]
            vals = [v for v in vals if not math.isnan(v)]
            if not vals:
                continue
            ax.scatter([i] * len(vals), vals, color=colours[variant], s=22, zorder=2, alpha=0.8)
            m, sd = mean_std(vals)
            ax.errorbar([i + 0.18], [m], yerr=[0 if math.isnan(sd) else sd], fmt="D", color=colours[variant],
                        capsize=4, markersize=6, zorder=3)  # fmt: skip
        ax.set_xticks(range(len(variants)), [name_of(v, runs).replace(" λ", "\nλ") for v in variants])
        ax.set_xlim(-0.5, len(variants) - 0.4)
        unit = " (%)" if key in ("ap", "ap50", "ap75", "fFP", "bFP", "FN") else ""
        ax.set_title(f"{heading}{unit}  {'↓' if lower else '↑'}", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        "Baseline vs +DCL, one dot per seed (grey lines pair a seed), diamond = mean ± std. "
        "Top: mask AP and ΔAP per error type; bottom: feature compactness (cosine)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help="results/evidence/<profile> (default cpu)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--doc", type=Path, default=ROOT.parent / "docs" / "evidence.md")
    parser.add_argument("--img", type=Path, default=ROOT.parent / "docs" / "img" / "evidence.png")
    args = parser.parse_args(argv)
    runs = load(args.results / args.profile)
    body = render(runs, args.seeds, args.img.name, args.results / args.profile)
    body += "\n" + tuning_table(load(args.results / args.profile / "tuning"))
    if runs:
        plot(runs, args.img)
    text = args.doc.read_text() if args.doc.exists() else f"# Evidence\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{args.doc} lacks the markers {BEGIN} ... {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    args.doc.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")
    (args.results / args.profile / "summary.json").write_text(
        json.dumps(
            {
                f"seed{s}_{v}": {k: value(r, k) for k, *_ in (*METRICS, *COMPACT)}
                for (s, v), r in runs.items()
            },
            indent=1,
        )
    )
    print(f"wrote {args.doc} ({len(runs)} runs) and {args.img}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
