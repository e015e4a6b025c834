"""The segmentation-error report: numbers, text tables and bar charts (paper, Figure 2 and Table 8).

All AP values are fractions in [0, 1]; tables and plots show them in percent.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import ERROR_TYPES


@dataclass(frozen=True)
class CategoryErrors:
    """Per-category part of a :class:`SegmentationErrorReport`.

    Attributes:
        name: the category's name.
        num_gt: non-crowd ground-truth masks of this category.
        ap: mask AP@[.50:.95] of this category (NaN without ground truth).
        delta: "fFP", "bFP", "FN" -> AP after correcting that error type minus ``ap``.
        ap_upper: AP with all three error types corrected.
        pixels: "fFP", "bFP", "FN" -> error pixels of this category's matched predictions.
        num_matched: predictions matched to a ground truth (IoU >= min_iou).
        num_unmatched: predictions left unmatched.
    """

    name: str
    num_gt: int
    ap: float
    delta: dict[str, float]
    ap_upper: float
    pixels: dict[str, int]
    num_matched: int
    num_unmatched: int


@dataclass(frozen=True)
class SegmentationErrorReport:
    """Result of :func:`densecontrast.analysis.analyze`.

    Attributes:
        ap, ap50, ap75: mask AP@[.50:.95], AP@.50 and AP@.75 of the predictions as given (fractions).
        delta, delta50, delta75: "fFP", "bFP", "FN" -> the AP (resp. AP50, AP75) after correcting every
            matched prediction's pixels of that type, minus the uncorrected value. May be negative.
        ap_upper, ap50_upper, ap75_upper: the values with all three types corrected at once.
        pixels: "fFP", "bFP", "FN" -> error pixels summed over matched predictions.
        num_matched, num_unmatched: predictions matched (IoU >= ``min_iou``) and unmatched.
        per_category: category id -> :class:`CategoryErrors`.
        min_iou: the matching threshold used.
        backend: the evaluator used ("pycocotools" or "faster-coco-eval").
    """

    ap: float
    ap50: float
    ap75: float
    delta: dict[str, float]
    delta50: dict[str, float]
    delta75: dict[str, float]
    ap_upper: float
    ap50_upper: float
    ap75_upper: float
    pixels: dict[str, int]
    num_matched: int
    num_unmatched: int
    per_category: dict[int, CategoryErrors] = field(default_factory=dict)
    min_iou: float = 0.1
    backend: str = "pycocotools"

    @property
    def pixel_shares(self) -> dict[str, float]:
        """ "fFP", "bFP", "FN" -> share of all error pixels (NaN when there are none)."""
        total = sum(self.pixels.values())
        return {k: (v / total if total else math.nan) for k, v in self.pixels.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the report (NaN becomes None; category ids become strings)."""
        out: dict[str, Any] = {
            "ap": self.ap,
            "ap50": self.ap50,
            "ap75": self.ap75,
            "delta": self.delta,
            "delta50": self.delta50,
            "delta75": self.delta75,
            "ap_upper": self.ap_upper,
            "ap50_upper": self.ap50_upper,
            "ap75_upper": self.ap75_upper,
            "pixels": self.pixels,
            "pixel_shares": self.pixel_shares,
            "num_matched": self.num_matched,
            "num_unmatched": self.num_unmatched,
            "min_iou": self.min_iou,
            "backend": self.backend,
            "per_category": {
                str(cat_id): {
                    "name": c.name,
                    "num_gt": c.num_gt,
                    "ap": c.ap,
                    "delta": c.delta,
                    "ap_upper": c.ap_upper,
                    "pixels": c.pixels,
                    "num_matched": c.num_matched,
                    "num_unmatched": c.num_unmatched,
                }
                for cat_id, c in self.per_category.items()
            },
        }
        return _nan_to_none(out)

    def table(self, *, per_category: bool = False) -> str:
        """A text table of AP and ΔAP per error type (in percent), pixel shares and match counts.

        Args:
            per_category: also list AP and ΔAP of each category.
        """
        rows = [
            ("AP", self.ap, self.delta, self.ap_upper),
            ("AP50", self.ap50, self.delta50, self.ap50_upper),
            ("AP75", self.ap75, self.delta75, self.ap75_upper),
        ]
        head = f"{'':<8}{'value':>8}" + "".join(f"{'Δ' + t:>8}" for t in ERROR_TYPES) + f"{'upper':>8}"
        lines = [head]
        for name, value, delta, upper in rows:
            lines.append(
                f"{name:<8}{_pct(value):>8}"
                + "".join(f"{_pct(delta[t]):>8}" for t in ERROR_TYPES)
                + f"{_pct(upper):>8}"
            )
        shares = self.pixel_shares
        lines.append(
            "error pixels: " + ", ".join(f"{t} {self.pixels[t]} ({_pct(shares[t])}%)" for t in ERROR_TYPES)
        )
        lines.append(
            f"predictions: {self.num_matched} matched, {self.num_unmatched} unmatched "
            f"(IoU < {self.min_iou:g}); backend {self.backend}"
        )
        if per_category:
            lines.append("")
            lines.append(
                f"{'category':<20}{'#gt':>6}{'AP':>8}" + "".join(f"{'Δ' + t:>8}" for t in ERROR_TYPES)
            )
            for c in self.per_category.values():
                lines.append(
                    f"{c.name[:19]:<20}{c.num_gt:>6}{_pct(c.ap):>8}"
                    + "".join(f"{_pct(c.delta[t]):>8}" for t in ERROR_TYPES)
                )
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike[str], *, title: str | None = None) -> None:
        """Save a bar chart of ΔAP per error type (in the spirit of the paper's Figure 2).

        Args:
            path: the image file to write (format from its extension, e.g. ``.png``, ``.pdf``).
            title: the figure's title; by default it states the AP.
        """
        plot_comparison({"": self}, path, title=title or f"Segmentation errors (AP {_pct(self.ap)})")


def _pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    return obj


def _check_reports(reports: Mapping[str, SegmentationErrorReport]) -> None:
    if not isinstance(reports, Mapping) or not reports:
        raise ValueError("reports must be a non-empty dict of name -> SegmentationErrorReport")
    for name, rep in reports.items():
        if not (hasattr(rep, "ap") and isinstance(getattr(rep, "delta", None), Mapping)):
            raise TypeError(f"reports[{name!r}] must be a SegmentationErrorReport, got {type(rep).__name__}")


def compare_table(reports: Mapping[str, SegmentationErrorReport]) -> str:
    """Compare reports side by side in the layout of the paper's Table 8 (values in percent).

    Args:
        reports: row name -> report, in the order the rows should appear.

    Returns:
        A text table with the columns AP, ΔAP_fFP, ΔAP_bFP and ΔAP_FN (lower Δ is better).

    Examples:
        >>> from densecontrast.analysis import SegmentationErrorReport
        >>> rep = SegmentationErrorReport(0.323, 0.5, 0.3, {"fFP": 0.05, "bFP": 0.047, "FN": 0.212},
        ...     {"fFP": 0.0, "bFP": 0.0, "FN": 0.0}, {"fFP": 0.0, "bFP": 0.0, "FN": 0.0},
        ...     0.6, 0.8, 0.6, {"fFP": 1, "bFP": 1, "FN": 2}, 10, 0)
        >>> print(compare_table({"Baseline": rep}))
        name              AP  ΔAP_fFP  ΔAP_bFP   ΔAP_FN
        Baseline        32.3      5.0      4.7     21.2
    """
    _check_reports(reports)
    width = max(12, *(len(n) for n in reports)) + 2
    lines = [f"{'name':<{width}}{'AP':>6}" + "".join(f"{'ΔAP_' + t:>9}" for t in ERROR_TYPES)]
    for name, rep in reports.items():
        lines.append(
            f"{name:<{width}}{_pct(rep.ap):>6}" + "".join(f"{_pct(rep.delta[t]):>9}" for t in ERROR_TYPES)
        )
    return "\n".join(lines)


def plot_comparison(
    reports: Mapping[str, SegmentationErrorReport],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> None:
    """Save grouped bars of ΔAP (percent) per error type, one bar per report (matplotlib, Agg backend).

    Args:
        reports: legend name -> report; a single report with the name "" gets no legend.
        path: the image file to write.
        title: the figure's title.
    """
    _check_reports(reports)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'densecontrast[analysis]'") from None

    fig = Figure(
        figsize=(1.6 + 1.3 * len(ERROR_TYPES) * max(1, len(reports)) ** 0.5, 3.4), layout="constrained"
    )
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    n = len(reports)
    bar_w = 0.8 / n
    for k, (name, rep) in enumerate(reports.items()):
        xs = [i - 0.4 + bar_w * (k + 0.5) for i in range(len(ERROR_TYPES))]
        vals = [100 * rep.delta[t] for t in ERROR_TYPES]
        label = f"{name} (AP {_pct(rep.ap)})" if name else None
        bars = ax.bar(xs, vals, width=bar_w * 0.95, label=label)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in vals], fontsize=8, padding=2)
    ax.set_xticks(range(len(ERROR_TYPES)), [f"ΔAP$_{{{t}}}$" for t in ERROR_TYPES])
    ax.set_ylabel("expected AP gain if corrected (%)")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.margins(y=0.15)
    if any(reports):
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.savefig(os.fspath(path), dpi=150)
