"""Render the evidence study's JSON into docs/evidence.md (between markers) and its pictures.

Usage::

    python benchmarks/render_evidence.py     # profile cpu -> docs/evidence.md, docs/img/evidence*.png
    python benchmarks/render_evidence.py --profile quick --doc /tmp/e.md --img-dir /tmp

Both regimes are rendered: ``scratch`` (``results/evidence/<profile>/``) and ``finetune``
(``results/evidence/finetune/<profile>/``). For each: every run, mean ± standard deviation per model,
the paired differences to the Baseline of the same seed with a 95% confidence interval (paired t), the
paper's Table 1 (AP and box AP per λ) and Table 8 (AP and ΔAP per error type) layouts, the runs on the
tuning split with the choices made there, and one plot of ΔAP vs λ per regime. Only the part of the page
between ``<!-- evidence:begin -->`` and ``<!-- evidence:end -->`` is replaced; runs that have not
finished are listed as missing.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "evidence"
BEGIN, END = "<!-- evidence:begin -->", "<!-- evidence:end -->"
VARIANTS = ("baseline", "dcl")
SEEDS = (0, 1, 2, 3, 4)
# (key, heading, lower is better?)
METRICS = (
    ("ap", "AP", False),
    ("ap50", "AP50", False),
    ("ap75", "AP75", False),
    ("box_ap", "box AP", False),
    ("fFP", "ΔAP_fFP", True),
    ("bFP", "ΔAP_bFP", True),
    ("FN", "ΔAP_FN", True),
)
COMPACT = (
    ("intra", "intra", False),
    ("inter", "inst-inst", True),
    ("background", "inst-bg", True),
    ("separation", "separation", False),
)
PAPER_TABLE1 = {0.0: (32.4, 37.6), 0.2: (34.5, None), 0.4: (35.1, None), 0.6: (35.0, None), 0.8: (35.3, None),
                1.0: (36.1, None), 1.2: (36.5, 39.8), 1.4: (35.3, None)}  # fmt: skip
"""The paper's Table 1 (Cityscapes, R50-FPN): λ -> (mask AP, box AP where the paper gives it)."""

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)  # fmt: skip


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (1.96 beyond 30).

    Examples:
        >>> t_quantile(4), t_quantile(100)
        (2.776, 1.96)
    """
    if df < 1:
        raise ValueError(f"df must be >= 1; got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def paired_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences and its 95% confidence interval (paired t): ``(mean, low, high)``.

    NaN values are left out; with fewer than two values the interval is NaN.

    Examples:
        >>> paired_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(2) = 4.303
        (2.0, -0.4842, 4.4842)
    """
    values = [d for d in diffs if not math.isnan(d)]
    if not values:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return round(mean, 6), round(mean - half, 4), round(mean + half, 4)


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


def weight_of(variant: str, runs: dict[tuple[int, str], dict]) -> float:
    """λ of a variant: 0 for the Baseline, else read from its runs' configuration."""
    if variant.startswith("baseline"):
        return 0.0
    weights = {float(r["config"]["weight"]) for (_, v), r in runs.items() if v == variant}
    if len(weights) == 1:
        return weights.pop()
    return float(variant[4:]) if "@" in variant else 1.2


def variants_of(runs: dict[tuple[int, str], dict]) -> list[str]:
    """Baseline first, then the other variants by increasing λ (by name among equal λ, so the page does
    not depend on the order of a set)."""
    found = {v for _, v in runs if v != "baseline"}
    return ["baseline", *sorted(found, key=lambda v: (weight_of(v, runs), v))]


def name_of(variant: str, runs: dict[tuple[int, str], dict]) -> str:
    return "Baseline" if variant.startswith("baseline") else f"+DCL λ={weight_of(variant, runs):g}"


def value(record: dict, key: str) -> float:
    """A figure of a run: AP-like values in percent, compactness as cosine; NaN when not recorded."""
    if key in ("ap", "ap50", "ap75"):
        return 100 * record[key]
    if key.startswith("box_"):
        box = record.get("box")
        return math.nan if box is None else 100 * box[key.removeprefix("box_")]
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


def fmt_interval(mean: float, low: float, high: float, digits: int) -> str:
    if math.isnan(mean):
        return "–"
    if math.isnan(low):
        return f"{mean:+.{digits}f}"
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def digits_of(key: str) -> int:
    """Decimals shown: 1 for AP points, 3 for cosine similarities, 2 for the separation ratio."""
    if key == "separation":
        return 2
    return 3 if key in {k for k, *_ in COMPACT} else 1


def start_of(record: dict) -> str | None:
    """The digest of the pretrained checkpoint a fine-tuning run started from (None from scratch)."""
    return record["config"].get("pretraining", {}).get("checkpoint_sha256")


def paired(runs: dict[tuple[int, str], dict], variant: str) -> tuple[list[int], dict[str, list[float]]]:
    """Seeds where both the Baseline and ``variant`` finished from the same start, and the per-seed
    differences per figure (runs from different pretrained checkpoints are not paired)."""
    seeds = sorted(
        s
        for s, v in runs
        if v == variant
        and (s, "baseline") in runs
        and start_of(runs[(s, v)]) == start_of(runs[(s, "baseline")])
    )
    diffs = {
        k: [value(runs[(s, variant)], k) - value(runs[(s, "baseline")], k) for s in seeds]
        for k, *_ in (*METRICS, *COMPACT)
    }
    return seeds, diffs


def render_regime(regime: str, runs: dict[tuple[int, str], dict], seeds: list[int], img: str | None) -> str:
    """The tables of one regime (markdown), followed by the plot ``img`` when given (one plot holds both
    regimes, so the page shows it once)."""
    lines: list[str] = []
    if not runs:
        return f"No {regime} run has finished yet.\n"
    variants = variants_of(runs)
    names = {v: name_of(v, runs) for v in variants}
    missing = [f"seed {s} {names[v]}" for s in seeds for v in variants if (s, v) not in runs]
    c = runs[sorted(runs)[0]]["config"]
    start = "from random weights"
    if regime == "finetune":
        p = c.get("pretraining", {})
        start = (
            f"from a backbone and FPN pretrained without the loss for {p.get('steps')} steps on "
            f"{p.get('source_categories')}-category source scenes (base seed {p.get('source_seed')}), stages "
            f"up to {c.get('freeze_at')} frozen"
        )
    lines.append(
        f"Configuration: {c['backbone']}-FPN{c['fpn_channels']}, mask head {c['mask_channels']}, trained "
        f"{start}; {c['steps']} steps x {c['batch_size']} images of {c['image_size']} px, "
        f"AdamW lr {c['lr']:g} with {c['warmup']} warm-up steps and cosine decay; "
        f"{c['train_images']} training images "
        f'(split "train", seed s), evaluated on {c["val_images"]} held-out images (split "val", seed s).'
    )
    lines.append("")
    starts: dict[str, dict[str, set]] = {}
    for (seed, _), r in runs.items():
        digest = start_of(r)
        if digest is not None:
            entry = starts.setdefault(digest, {"seeds": set(), "cpus": set()})
            entry["seeds"].add(seed)
            entry["cpus"].add(r.get("machine", {}).get("cpu") or "CPU not recorded")
    if len(starts) > 1:
        described = "; ".join(
            f"`{d}` for seed{'s' if len(e['seeds']) > 1 else ''} {', '.join(map(str, sorted(e['seeds'])))} "
            f"(run on {', '.join(sorted(e['cpus']))})"
            for d, e in sorted(starts.items(), key=lambda item: min(item[1]["seeds"]))
        )
        lines += [
            f"The pretrained checkpoint was made {len(starts)} times, once per machine the study ran on, "
            f"and differs in its bits: {described}. Every paired difference below pairs runs from the "
            "same checkpoint.",
            "",
        ]
    if missing:
        lines += [f"**Not finished yet:** {', '.join(missing)}. The tables hold the finished runs only.", ""]
    heads = [h for _, h, _ in METRICS] + [h for _, h, _ in COMPACT]
    lines += [
        "Every run (percent; compactness as cosine similarity; detections: drawn at score ≥ 0.5 / "
        "ground truth)",
        "",
        "| seed | model | " + " | ".join(heads) + " | detections | run CPU min |",
        "|" + "---|" * (4 + len(heads)),
    ]
    for seed, variant in sorted(runs, key=lambda k: (k[0], variants.index(k[1]))):
        r = runs[(seed, variant)]
        cells = [
            "–" if math.isnan(value(r, k)) else f"{value(r, k):.{digits_of(k)}f}"
            for k, *_ in (*METRICS, *COMPACT)
        ]
        det = r.get("detections")
        det_cell = f"{det['score_at_least_0.5']} / {det['ground_truth']}" if det else "–"
        lines.append(
            f"| {seed} | {names[variant]} | "
            + " | ".join(cells)
            + f" | {det_cell} | {r['cpu_seconds'] / 60:.1f} |"
        )
    lines += ["", "Mean ± standard deviation over seeds, and paired differences to the Baseline of the "
              "same seed with their 95% confidence interval (paired t)", ""]  # fmt: skip
    lines += ["| model | n | " + " | ".join(heads) + " |", "|" + "---|" * (2 + len(heads))]
    for variant in variants:
        rs = [r for (_, v), r in runs.items() if v == variant]
        cells = [fmt(*mean_std([value(r, k) for r in rs]), digits_of(k)) for k, *_ in (*METRICS, *COMPACT)]
        lines.append(f"| {names[variant]} | {len(rs)} | " + " | ".join(cells) + " |")
    sentences = []
    for variant in variants[1:]:
        seeds_p, diffs = paired(runs, variant)
        if not seeds_p:
            continue
        cells = [fmt_interval(*paired_interval(diffs[k]), digits_of(k)) for k, *_ in (*METRICS, *COMPACT)]
        lines.append(f"| {names[variant]} − Baseline | {len(seeds_p)} | " + " | ".join(cells) + " |")
        ap_mean, ap_lo, ap_hi = paired_interval(diffs["ap"])
        verdict = (
            "helps" if ap_lo > 0 else "hurts" if ap_hi < 0 else "cannot be told from no change"
        ) if not math.isnan(ap_lo) else "is not resolved (one seed)"  # fmt: skip
        sentences.append(
            f"{names[variant]}: AP {fmt_interval(ap_mean, ap_lo, ap_hi, 1)} over {len(seeds_p)} paired seeds "
            f"(higher in {sum(d > 0 for d in diffs['ap'])}), "
            f"ΔAP_FN lower in {sum(d < 0 for d in diffs['FN'])} of {len(seeds_p)}, "
            f"features more compact in {sum(d > 0 for d in diffs['intra'])}: the loss "
            f"{verdict} at this weight."
        )
    lines += ["", *(f"- {t}" for t in sentences), ""]
    lines += table1(runs), table8(runs)
    if img is not None:
        lines += [f"![ΔAP vs λ with 95% intervals, both regimes](img/{img})", ""]
    return "\n".join(lines)


def table1(runs: dict[tuple[int, str], dict]) -> str:
    """The paper's Table 1 layout: mask AP and box AP per λ (means over seeds), with the paper's values."""
    lines = ["The paper's Table 1 layout (means over seeds; the paper's Cityscapes values beside them)", "",
             "| λ | n | AP (here) | box AP (here) | AP (paper) | box AP (paper) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for variant in variants_of(runs):
        w = weight_of(variant, runs)
        rs = [r for (_, v), r in runs.items() if v == variant]
        ap = fmt(mean_std([value(r, "ap") for r in rs])[0], math.nan, 1)
        box = fmt(mean_std([value(r, "box_ap") for r in rs])[0], math.nan, 1)
        paper = PAPER_TABLE1.get(round(w, 1))
        pa = f"{paper[0]:.1f}" if paper else "–"
        pb = f"{paper[1]:.1f}" if paper and paper[1] is not None else "–"
        lines.append(f"| {w:g} | {len(rs)} | {ap} | {box} | {pa} | {pb} |")
    return "\n".join([*lines, ""]) + "\n"


def table8(runs: dict[tuple[int, str], dict]) -> str:
    """The paper's Table 8 layout: AP and ΔAP per error type per model (means over seeds)."""
    lines = ["The paper's Table 8 layout (means over seeds; the paper, Cityscapes: Baseline 32.3 / 2.7 / "
             "2.2 / 21.2, +DCL 36.5 / 2.9 / 2.0 / 18.8)", "",
             "| model | AP | ΔAP_fFP | ΔAP_bFP | ΔAP_FN |", "|---|---|---|---|---|"]  # fmt: skip
    for variant in variants_of(runs):
        rs = [r for (_, v), r in runs.items() if v == variant]
        cells = [fmt(mean_std([value(r, k) for r in rs])[0], math.nan, 1) for k in ("ap", "fFP", "bFP", "FN")]
        lines.append(f"| {name_of(variant, runs)} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, ""]) + "\n"


def tuning_table(runs: dict[tuple[int, str], dict], title: str, choices: list[str]) -> str:
    """The runs on the tuning split (split "test", seed 1000 + s) and what was chosen from them."""
    if not runs:
        return ""
    variants = variants_of(runs)
    lines = [
        title,
        "",
        "| seed | model | lr | eval split | AP | AP50 | box AP | ΔAP_fFP | ΔAP_bFP | ΔAP_FN | intra |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for seed, variant in sorted(runs, key=lambda k: (k[0], variants.index(k[1]), k[1])):
        r = runs[(seed, variant)]
        e = r["eval_split"]
        split = f"{e['split']} / seed {e['seed']}"
        cells = ["–" if math.isnan(value(r, k)) else f"{value(r, k):.1f}" for k in
                 ("ap", "ap50", "box_ap", "fFP", "bFP", "FN")]  # fmt: skip
        lr = f"{r['config']['lr']:g}"
        lines.append(
            f"| {seed} | {name_of(variant, runs)} | {lr} | {split} | " + " | ".join(cells)
            + f" | {value(r, 'intra'):.3f} |"
        )  # fmt: skip
    return "\n".join([*lines, "", *(f"- {c}" for c in choices), ""]) + "\n"


def finetune_tuning(folder: Path) -> tuple[dict[tuple[int, str], dict], list[str]]:
    """The fine-tuning regime's tuning runs (recipe candidates and λ sweep) and the choices they made."""
    runs: dict[tuple[int, str], dict] = {}
    choices = []
    for candidate in sorted(folder.glob("lr*")):
        for (seed, variant), r in load(candidate).items():
            runs[(seed, f"{variant}@{candidate.name}")] = r
    recipe_path = folder / "recipe.json"
    if recipe_path.exists():
        recipe = json.loads(recipe_path.read_text())
        aps = ", ".join(f"lr {k}: AP {100 * v:.1f}" for k, v in recipe["candidates"].items())
        choices.append(f"Recipe: lr {recipe['lr']:g} ({aps}; rule: {recipe['rule']}).")
    sweep = {k: v for k, v in load(folder).items() if k[1] != "baseline"}
    runs.update(sweep)
    base = [r for (s, v), r in runs.items() if v.startswith("baseline@") and recipe_path.exists()
            and r["config"]["lr"] == json.loads(recipe_path.read_text())["lr"]]  # fmt: skip
    if base and sweep:
        best = max(sweep.items(), key=lambda kv: kv[1]["ap"])
        w = float(best[1]["config"]["weight"])
        beats = best[1]["ap"] > base[0]["ap"]
        choices.append(
            f"λ sweep on the tuning split: best λ = {w:g} (AP {100 * best[1]['ap']:.1f} against the "
            f"Baseline's {100 * base[0]['ap']:.1f}; {'above' if beats else 'not above'} the Baseline)."
        )
    return runs, choices


def plot_lambda(regimes: dict[str, dict[tuple[int, str], dict]], path: Path) -> None:
    """ΔAP (paired, +DCL − Baseline) vs λ per regime, for AP, box AP and ΔAP_FN, with 95% intervals."""
    from matplotlib.figure import Figure

    keys = (("ap", "mask AP"), ("box_ap", "box AP"), ("FN", "ΔAP_FN (lower: fewer FN errors)"))
    fig = Figure(figsize=(4.2 * len(keys), 3.6))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    colours = {"scratch": "#d62728", "finetune": "#1f77b4"}
    shift = {"scratch": -0.012, "finetune": 0.012}  # side by side where both regimes have a λ
    for ax, (key, heading) in zip(axes, keys):
        for regime, runs in regimes.items():
            xs, ms, los, his = [], [], [], []
            for variant in variants_of(runs)[1:]:
                _, diffs = paired(runs, variant)
                m, lo, hi = paired_interval(diffs[key])
                if math.isnan(m):
                    continue
                xs.append(weight_of(variant, runs) + shift.get(regime, 0.0))
                ms.append(m)
                los.append(m - lo if not math.isnan(lo) else 0.0)
                his.append(hi - m if not math.isnan(hi) else 0.0)
            if xs:
                ax.errorbar(xs, ms, yerr=[los, his], fmt="o-", capsize=4, color=colours.get(regime, "k"),
                            label=regime)  # fmt: skip
        ax.axhline(0.0, color="#777777", linewidth=0.8)
        ax.set_xlabel("λ (loss weight)")
        ax.set_ylabel("+DCL − Baseline (AP points)")
        ax.set_title(heading, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(
        "Paired difference to the Baseline of the same seed; bars: 95% confidence interval", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)


HEAD_ONLY_KEYS = (("ap", "AP"), ("box_ap", "box AP"), ("FN", "ΔAP_FN"), ("intra", "intra"))


def render_head_only(scratch: dict[tuple[int, str], dict], head: dict[int, dict]) -> str:
    """The from-scratch +DCL runs whose loss trains the mask head only, beside the Baseline and the
    full +DCL run of the same λ and seed, with paired differences (markdown)."""
    if not head:
        return ""
    weights = {float(r["config"]["weight"]) for r in head.values()}
    w = weights.pop() if len(weights) == 1 else math.nan
    full = next((v for v in variants_of(scratch)[1:] if weight_of(v, scratch) == w), None)
    heads = [h for _, h in HEAD_ONLY_KEYS]
    lines = [
        f"**Mask head only** (`--head-only`): +DCL at λ = {w:g} with the loss's gradient stopped at the "
        "RoI features, so it trains the mask head and the predictor's deconvolution but not the RPN, the "
        "FPN or the backbone (the mask loss still trains everything). Every such run, beside the "
        "Baseline and the full +DCL run of the same seed:",
        "",
        "| seed | model | " + " | ".join(heads) + " |",
        "|" + "---|" * (2 + len(heads)),
    ]
    rows = {"Baseline": "baseline", f"+DCL λ={w:g}": full}
    for seed in sorted(head):
        for name, variant in rows.items():
            r = scratch.get((seed, variant)) if variant else None
            if r is not None:
                cells = [f"{value(r, k):.{digits_of(k)}f}" for k, _ in HEAD_ONLY_KEYS]
                lines.append(f"| {seed} | {name} | " + " | ".join(cells) + " |")
        cells = [f"{value(head[seed], k):.{digits_of(k)}f}" for k, _ in HEAD_ONLY_KEYS]
        lines.append(f"| {seed} | +DCL λ={w:g}, mask head only | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences over the seeds that have both runs (95% interval, paired t):", "",
              "| difference | n | " + " | ".join(heads) + " |", "|" + "---|" * (2 + len(heads))]  # fmt: skip
    pairs = [("mask head only − Baseline", "baseline"), (f"mask head only − full +DCL λ={w:g}", full)]
    for label, variant in pairs:
        seeds = [s for s in sorted(head) if variant and (s, variant) in scratch]
        if not seeds:
            continue
        cells = []
        for k, _ in HEAD_ONLY_KEYS:
            diffs = [value(head[s], k) - value(scratch[(s, variant)], k) for s in seeds]
            cells.append(fmt_interval(*paired_interval(diffs), digits_of(k)))
        lines.append(f"| {label} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, ""]) + "\n"


def load_head_only(folder: Path) -> dict[int, dict]:
    """The head-only +DCL runs (``headonly/seed<s>_dcl.json``) by seed."""
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("seed*_dcl.json"))]
    return {int(r["seed"]): r for r in records}


def render(results: Path, profile: str, img_dir: Path | None, seeds: list[int]) -> tuple[str, dict[str, Any]]:
    """The generated part of the page and a summary (per regime: per variant the paired AP interval).

    The ΔAP-vs-λ plot goes to ``img_dir`` (not drawn when it is None)."""
    scratch = load(results / profile)
    fine = load(results / "finetune" / profile)
    parts = ["### Fine-tuning regime (pretrained backbone, the paper's regime)", "",
             render_regime("finetune", fine, seeds, "evidence_lambda.png")]  # fmt: skip
    runs_t, choices = finetune_tuning(results / "finetune" / profile / "tuning")
    parts.append(tuning_table(runs_t, "Tuning split of the fine-tuning regime (chose the recipe and λ; never "
                              "used for the evaluation above)", choices))  # fmt: skip
    parts += [
        "### From-scratch regime",
        "",
        render_regime("scratch", scratch, seeds, None if fine else "evidence_lambda.png"),
    ]
    parts.append(render_head_only(scratch, load_head_only(results / profile / "headonly")))
    parts.append(tuning_table(load(results / profile / "tuning"), "Tuning split of the from-scratch regime "
                              "(chose the demo's λ)", []))  # fmt: skip
    regimes = {"scratch": scratch, "finetune": fine}
    if img_dir is not None and (scratch or fine):
        plot_lambda({k: v for k, v in regimes.items() if v}, img_dir / "evidence_lambda.png")
    summary = {
        regime: {
            name_of(v, runs): dict(zip(("mean", "low", "high"), paired_interval(paired(runs, v)[1]["ap"])))
            for v in variants_of(runs)[1:]
        }
        for regime, runs in regimes.items()
    }
    return "\n".join(parts), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help="results/evidence/<profile> (default cpu)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--doc", type=Path, default=ROOT.parent / "docs" / "evidence.md")
    parser.add_argument("--img-dir", type=Path, default=ROOT.parent / "docs" / "img")
    args = parser.parse_args(argv)
    body, summary = render(args.results, args.profile, args.img_dir, args.seeds)
    text = args.doc.read_text() if args.doc.exists() else f"# Evidence\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{args.doc} lacks the markers {BEGIN} ... {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    args.doc.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")
    (args.results / f"summary-{args.profile}.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.doc} and {args.img_dir / 'evidence_lambda.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
