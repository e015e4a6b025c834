"""The demo's console text: the AP table, the answer to "did the loss help?", detection counts, compactness.

Every function returns a string; the command line prints them. AP values arrive as fractions (as the
analysis reports them) and are shown in AP points (percent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .config import PAIRED_AP_SEEDS, PAIRED_AP_STD, SCORE_THRESHOLD

_TYPES = ("fFP", "bFP", "FN")


def _points(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.1f}"


def ap_table(reports: Mapping[str, Any], *, images: int) -> str:
    """One table of mask AP and ΔAP per model, with its headers explained above it.

    With two models (baseline first), a third row gives their difference (second minus first).

    Args:
        reports: model name -> ``SegmentationErrorReport``, in display order.
        images: the number of held-out images evaluated.
    """
    lines = [
        f"Mask AP on {images} held-out images, in AP points (COCO mask AP x 100):",
        "  AP: averaged over mask IoU thresholds 0.50 to 0.95; AP50, AP75: at IoU 0.50 and 0.75",
        "  ΔfFP, ΔbFP, ΔFN: AP gained if the matched masks' pixels of one error type were corrected",
        "    (fFP: pixels of another object, bFP: background pixels, FN: missed pixels of the object);",
        "    lower is better. all fixed: AP with all three corrected.",
        "",
    ]
    width = max(12, *(len(n) for n in reports)) + 2
    head = f"{'model':<{width}}" + "".join(f"{h:>7}" for h in ("AP", "AP50", "AP75"))
    head += "".join(f"{'Δ' + t:>7}" for t in _TYPES) + f"{'all fixed':>11}"
    lines.append(head)
    rows = []
    for name, rep in reports.items():
        values = [rep.ap, rep.ap50, rep.ap75, *(rep.delta[t] for t in _TYPES), rep.ap_upper]
        rows.append(values)
        lines.append(
            f"{name:<{width}}" + "".join(f"{_points(v):>7}" for v in values[:6]) + f"{_points(values[6]):>11}"
        )
    if len(rows) == 2:
        diff = [b - a for a, b in zip(rows[0], rows[1])]
        lines.append(
            f"{'difference':<{width}}"
            + "".join(f"{100 * v:>+7.1f}" for v in diff[:6])
            + f"{100 * diff[6]:>+11.1f}"
        )
    return "\n".join(lines)


def did_it_help(baseline_ap: float, dcl_ap: float, *, weight: float, steps: int) -> str:
    """The AP difference of +DCL over the baseline, set against the seed-to-seed noise of the evidence page.

    Args:
        baseline_ap, dcl_ap: mask AP as fractions.
        weight: λ of the +DCL run (the noise was measured per λ).
        steps: training steps of the run (the noise was measured at 1200).

    Examples:
        >>> print(did_it_help(0.30, 0.35, weight=0.1, steps=1200))  # doctest: +NORMALIZE_WHITESPACE
        Did the loss help? +DCL - Baseline = +5.0 AP points (this seed).
          Seed-to-seed noise of this difference: standard deviation 1.7 AP points over seeds 0-4
          (docs/evidence.md, λ = 0.1, 1200 steps).
          +5.0 is more than twice that: larger than the seed-to-seed noise.
    """
    diff = 100 * (dcl_ap - baseline_ap)
    lines = [f"Did the loss help? +DCL - Baseline = {diff:+.1f} AP points (this seed)."]
    std = PAIRED_AP_STD.get(round(weight, 6))
    if std is None:
        lines.append(
            "  The evidence page measured the seed-to-seed noise at λ = "
            f"{', '.join(map(str, PAIRED_AP_STD))}, "
            f"not at λ = {weight:g}; repeat with other --seed values to judge this difference."
        )
        return "\n".join(lines)
    if abs(diff) > 2 * std:
        verdict = "more than twice that: larger than the seed-to-seed noise"
    else:
        verdict = "less than twice that, so one seed cannot tell it from no change"
    note = "" if steps == 1200 else f"; this run trained {steps} steps, so its noise may differ"
    lines.append(
        f"  Seed-to-seed noise of this difference: standard deviation {std:.1f} AP points over seeds "
        f"{PAIRED_AP_SEEDS}\n"
        f"  (docs/evidence.md, λ = {weight:g}, 1200 steps{note}).\n  {diff:+.1f} is {verdict}."
    )
    return "\n".join(lines)


def detection_counts(name: str, report: Any, outputs: Sequence[Mapping[str, Any]]) -> str:
    """What the matched and unmatched counts of the error analysis mean, for one model, in words."""
    total = sum(int(o["scores"].numel()) for o in outputs)
    drawn = sum(int((o["scores"] >= SCORE_THRESHOLD).sum()) for o in outputs)
    shown = f"the {drawn} scoring" if drawn else "none: no detection scores"
    return (
        f"{name}: {total} detections of every score were evaluated (AP ranks them by score; the pictures "
        f"draw {shown} ≥ {SCORE_THRESHOLD}).\n"
        f"  {report.num_matched} overlap an object of their class (mask IoU ≥ {report.min_iou:g}): their "
        f"pixels are the error pixels above.\n"
        f"  {report.num_unmatched} overlap none (wrong class or no object): they lower AP as false "
        "positives but have no error pixels."
    )


def compactness_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """The feature-compactness figures of each run, with their headers explained above them."""
    lines = [
        "Feature compactness of the mask head on ground-truth RoIs (cosine similarity; docs/demo.md):",
        "  intra: an instance's pixels to their centroid (higher: more compact); inst-inst: between the",
        "  centroids of two instances in one RoI, inst-bg: instance and background centroids (lower: better",
        "  separated); separation: distance between centroids over distance to one's own (higher: better)",
        "",
        f"{'model':<14}{'intra':>8}{'inst-inst':>11}{'inst-bg':>9}{'separation':>12}{'RoIs':>6}",
    ]
    for r in runs:
        c = r["compactness"]
        lines.append(
            f"{r['label']:<14}{c.intra:>8.3f}{c.inter:>11.3f}{c.background:>9.3f}{c.separation:>12.2f}"
            f"{c.num_instances:>6}"
        )
    return "\n".join(lines)
