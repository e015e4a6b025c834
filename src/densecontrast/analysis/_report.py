"""The error report: numbers, text tables and bar charts (detection errors; pixel errors as in the
paper's Figure 2 and Table 8).

All AP values are fractions in [0, 1]; tables and plots show them in percent.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._detection import DETECTION_TYPES, SPECIAL_TYPES
from ._errors import ERROR_TYPES

DETECTION_COLUMNS: tuple[str, ...] = (*DETECTION_TYPES, *SPECIAL_TYPES)


@dataclass(frozen=True)
class CategoryErrors:
    """Per-category part of a :class:`SegmentationErrorReport`.

    Attributes:
        name: the category's name.
        num_gt: non-crowd ground-truth annotations of this category.
        ap: AP@[.50:.95] of this category (NaN without ground truth).
        delta: "fFP", "bFP", "FN" -> AP after correcting that pixel error type minus ``ap`` (NaN for boxes).
        ap_upper: AP with all three pixel error types corrected.
        pixels: "fFP", "bFP", "FN" -> error pixels of this category's matched predictions.
        num_matched: predictions matched to a ground truth (IoU >= min_iou) by the pixel analysis.
        num_unmatched: predictions it left unmatched.
        detection: "cls", "loc", "both", "dupe", "bkg", "missed", "FalsePos", "FalseNeg" -> AP after
            that oracle minus ``ap``.
        detection_counts: the six detection types -> number of errors (results; annotations for missed).
        detection_upper: AP with the six detection types fixed at once.
    """

    name: str
    num_gt: int
    ap: float
    delta: dict[str, float]
    ap_upper: float
    pixels: dict[str, int]
    num_matched: int
    num_unmatched: int
    detection: dict[str, float] = field(default_factory=dict)
    detection_counts: dict[str, int] = field(default_factory=dict)
    detection_upper: float = math.nan

    def cost(self, error: str) -> float:
        """ΔAP of ``error`` (a detection or pixel type, or "total" for 1 - AP); NaN where undefined."""
        if error == "total":
            return 1.0 - self.ap
        if error in self.detection:
            return self.detection[error]
        if error in self.delta:
            return self.delta[error]
        raise ValueError(
            f"error must be 'total' or one of {(*DETECTION_COLUMNS, *ERROR_TYPES)}, got {error!r}"
        )


@dataclass(frozen=True)
class SegmentationErrorReport:
    """Result of :func:`densecontrast.analysis.analyze`: where the AP went.

    Attributes:
        ap, ap50, ap75: AP@[.50:.95], AP@.50 and AP@.75 of the results as given (fractions).
        delta, delta50, delta75: "fFP", "bFP", "FN" -> the AP (resp. AP50, AP75) after correcting every
            matched prediction's pixels of that type, minus the uncorrected value. May be negative.
            NaN for boxes.
        ap_upper, ap50_upper, ap75_upper: the values with all three pixel types corrected at once.
        pixels: "fFP", "bFP", "FN" -> error pixels summed over matched predictions.
        num_matched, num_unmatched: predictions matched by the pixel analysis (IoU >= ``min_iou``) and not.
        per_category: category id -> :class:`CategoryErrors`.
        min_iou: the pixel analysis' matching threshold.
        backend: the evaluator used ("pycocotools" or "faster-coco-eval").
        detection, detection50, detection75: "cls", "loc", "both", "dupe", "bkg", "missed" (TIDE's six
            types), "FalsePos" and "FalseNeg" -> AP (AP50, AP75) after that oracle minus the AP.
        detection_upper, detection50_upper, detection75_upper: the values with the six types fixed at once.
        detection_counts: the six types -> number of errors (results; annotations for missed).
        iou_type: "segm" or "bbox".
        fg_iou, bg_iou: the detection errors' thresholds.
        skipped: degenerate ground-truth annotations left out (``skip_degenerate``), one line each.
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
    detection: dict[str, float] = field(default_factory=dict)
    detection50: dict[str, float] = field(default_factory=dict)
    detection75: dict[str, float] = field(default_factory=dict)
    detection_upper: float = math.nan
    detection50_upper: float = math.nan
    detection75_upper: float = math.nan
    detection_counts: dict[str, int] = field(default_factory=dict)
    iou_type: str = "segm"
    fg_iou: float = 0.5
    bg_iou: float = 0.1
    skipped: tuple[str, ...] = ()

    @property
    def pixel_shares(self) -> dict[str, float]:
        """ "fFP", "bFP", "FN" -> share of all error pixels (NaN when there are none)."""
        total = sum(self.pixels.values())
        return {k: (v / total if total else math.nan) for k, v in self.pixels.items()}

    @property
    def _has_pixels(self) -> bool:
        return self.iou_type == "segm" and bool(self.delta)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the report (NaN becomes None; category ids become strings)."""
        out: dict[str, Any] = {
            "iou_type": self.iou_type,
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
            "detection": self.detection,
            "detection50": self.detection50,
            "detection75": self.detection75,
            "detection_upper": self.detection_upper,
            "detection50_upper": self.detection50_upper,
            "detection75_upper": self.detection75_upper,
            "detection_counts": self.detection_counts,
            "fg_iou": self.fg_iou,
            "bg_iou": self.bg_iou,
            "skipped": list(self.skipped),
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
                    "detection": c.detection,
                    "detection_counts": c.detection_counts,
                    "detection_upper": c.detection_upper,
                }
                for cat_id, c in self.per_category.items()
            },
        }
        return _nan_to_none(out)

    def table(self, *, per_category: bool = False, sort_by: str | None = None) -> str:
        """A text table: AP, then ΔAP, ΔAP50, ΔAP75 (percent) of every error type, with counts.

        Args:
            per_category: also list AP and each ΔAP per category (see :meth:`category_table`).
            sort_by: the per-category rows' order (see :meth:`category_table`).
        """
        kind = "mask" if self.iou_type == "segm" else "box"
        lines = [
            f"{kind} AP {_pct(self.ap)}   AP50 {_pct(self.ap50)}   AP75 {_pct(self.ap75)}   "
            f"(backend {self.backend})",
            f"{'error':<22}{'ΔAP':>7}{'ΔAP50':>7}{'ΔAP75':>7}  count",
        ]
        if self.detection:
            lines.append(f"detection errors (foreground IoU {self.fg_iou:g}, background IoU {self.bg_iou:g})")
            for t in DETECTION_COLUMNS:
                count = f"  {self.detection_counts[t]}" if t in self.detection_counts else ""
                lines.append(
                    f"  {t:<20}{_pct(self.detection[t]):>7}{_pct(self.detection50[t]):>7}"
                    f"{_pct(self.detection75[t]):>7}{count}"
                )
            lines.append(
                f"  {'AP, 6 types fixed':<20}{_pct(self.detection_upper):>7}{_pct(self.detection50_upper):>7}"
                f"{_pct(self.detection75_upper):>7}"
            )
        if self._has_pixels:
            shares = self.pixel_shares
            lines.append(f"pixel errors of matched predictions (min IoU {self.min_iou:g})")
            for t in ERROR_TYPES:
                lines.append(
                    f"  {t:<20}{_pct(self.delta[t]):>7}{_pct(self.delta50[t]):>7}{_pct(self.delta75[t]):>7}"
                    f"  {self.pixels[t]} px ({_pct(shares[t])}%)"
                )
            lines.append(
                f"  {'AP, 3 types fixed':<20}{_pct(self.ap_upper):>7}{_pct(self.ap50_upper):>7}"
                f"{_pct(self.ap75_upper):>7}"
            )
            lines.append(
                f"predictions: {self.num_matched} matched, "
                f"{self.num_unmatched} unmatched (IoU < {self.min_iou:g})"
            )
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} degenerate ground-truth annotation(s)")
        if per_category:
            lines.append("")
            lines.append(self.category_table(sort_by=sort_by))
        return "\n".join(lines)

    def _columns(self) -> list[str]:
        cols = [t for t in DETECTION_COLUMNS if t in self.detection]
        return cols + (list(ERROR_TYPES) if self._has_pixels else [])

    def categories_by_cost(self, sort_by: str | None = None) -> list[tuple[int, CategoryErrors]]:
        """(category id, :class:`CategoryErrors`) pairs, the costliest first.

        Args:
            sort_by: an error type (ΔAP of it, largest first), "total" (1 - AP) or None (the ground
                truth's order). Categories without ground truth come last.
        """
        items = list(self.per_category.items())
        if sort_by is None:
            return items

        def key(item: tuple[int, CategoryErrors]) -> tuple[bool, float]:
            value = item[1].cost(sort_by)
            return (math.isnan(value), -value if not math.isnan(value) else 0.0)

        return sorted(items, key=key)

    def category_table(self, *, sort_by: str | None = None) -> str:
        """AP and every ΔAP per category (percent), one row each.

        Args:
            sort_by: see :meth:`categories_by_cost` (e.g. "missed", "FN", "total").
        """
        cols = self._columns()
        widths = [_width("Δ" + t, 7) for t in cols]
        lines = [
            f"{'category':<20}{'#gt':>6}{'AP':>7}" + "".join(f"{'Δ' + t:>{w}}" for t, w in zip(cols, widths))
        ]
        for _, c in self.categories_by_cost(sort_by):
            lines.append(
                f"{c.name[:19]:<20}{c.num_gt:>6}{_pct(c.ap):>7}"
                + "".join(f"{_pct(c.cost(t)):>{w}}" for t, w in zip(cols, widths))
            )
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike[str] | None = None, *, title: str | None = None) -> Any:
        """Bar charts of ΔAP per error type: detection errors and (masks) pixel errors, one panel each.

        Args:
            path: the image file to write (format from its extension, e.g. ``.png``, ``.pdf``), or None.
            title: the figure's title; by default it states the AP.

        Returns:
            The matplotlib ``Figure``.
        """
        return plot_comparison({"": self}, path, title=title or f"Where the AP went (AP {_pct(self.ap)})")

    def plot_categories(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        sort_by: str | None = "total",
        top: int | None = None,
    ) -> Any:
        """Horizontal bars of ΔAP per category, one panel per error type (one scale), sorted by cost.

        Args:
            path: the image file to write, or None.
            sort_by: see :meth:`categories_by_cost`.
            top: show only the first ``top`` categories.

        Returns:
            The matplotlib ``Figure``.
        """
        figure_cls = _figure()
        items = self.categories_by_cost(sort_by)[:top]
        cols = self._columns()
        fig = figure_cls(
            figsize=(2.0 + 1.2 * len(cols), 1.6 + 0.3 * max(1, len(items))), layout="constrained"
        )
        axes = fig.subplots(1, len(cols), sharex=True, sharey=True, squeeze=False)[0]
        names = [f"{c.name} (AP {_pct(c.ap)})" for _, c in items][::-1]
        for ax, t in zip(axes, cols):
            vals = [100 * c.cost(t) for _, c in items][::-1]
            ax.barh(range(len(items)), [0.0 if math.isnan(v) else v for v in vals], color=_colour(t))
            ax.set_title(f"Δ{t}", fontsize=9)
            ax.axvline(0, color="black", linewidth=0.6)
            ax.tick_params(labelsize=7)
        axes[0].set_yticks(range(len(items)), names)
        fig.supxlabel("AP gained if fixed (AP points)", fontsize=9)
        _save(fig, path)
        return fig


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


def _width(label: str, least: int) -> int:
    return max(least, len(label) + 1)


def _colour(error: str) -> str:
    if error in ERROR_TYPES:
        return "tab:orange"
    return "tab:grey" if error in SPECIAL_TYPES else "tab:blue"


def _figure() -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'densecontrast[analysis]'") from None

    def make(*args: Any, **kwargs: Any) -> Any:
        fig = Figure(*args, **kwargs)
        FigureCanvasAgg(fig)
        return fig

    return make


def _save(fig: Any, path: str | os.PathLike[str] | None) -> None:
    if path is not None:
        fig.savefig(os.fspath(path), dpi=150)


def _shared_columns(reports: Mapping[str, SegmentationErrorReport]) -> tuple[list[str], list[str]]:
    """(detection types, pixel types) that every report has."""
    det = [t for t in DETECTION_COLUMNS if all(t in r.detection for r in reports.values())]
    pix = list(ERROR_TYPES) if all(r._has_pixels for r in reports.values()) else []
    return det, pix


def compare_table(reports: Mapping[str, SegmentationErrorReport]) -> str:
    """Compare reports side by side (values in percent; the pixel columns in the layout of the paper's
    Table 8). Columns: AP, then ΔAP of each detection error type, then ΔAP of each pixel error type (the
    types every report has). Lower Δ is better.

    Args:
        reports: row name -> report, in the order the rows should appear.

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
    det, pix = _shared_columns(reports)
    width = max(12, *(len(n) for n in reports)) + 2
    widths = [_width("ΔAP_" + t, 9) for t in (*det, *pix)]
    lines = [
        f"{'name':<{width}}{'AP':>6}" + "".join(f"{'ΔAP_' + t:>{w}}" for t, w in zip((*det, *pix), widths))
    ]
    for name, rep in reports.items():
        values = [rep.detection[t] for t in det] + [rep.delta[t] for t in pix]
        lines.append(
            f"{name:<{width}}{_pct(rep.ap):>6}" + "".join(f"{_pct(v):>{w}}" for v, w in zip(values, widths))
        )
    return "\n".join(lines)


def plot_comparison(
    reports: Mapping[str, SegmentationErrorReport],
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
) -> Any:
    """Grouped bars of ΔAP (percent) per error type, one bar per report; one panel for the detection
    errors and one for the pixel errors (where every report has them). matplotlib, Agg backend.

    Args:
        reports: legend name -> report; a single report with the name "" gets no legend.
        path: the image file to write, or None.
        title: the figure's title.

    Returns:
        The matplotlib ``Figure``.
    """
    _check_reports(reports)
    figure_cls = _figure()
    det, pix = _shared_columns(reports)
    panels = [(types, values) for types, values in ((det, "detection"), (pix, "delta")) if types]
    widths = [len(types) for types, _ in panels]
    fig = figure_cls(
        figsize=(1.6 + 0.75 * sum(widths) * max(1, len(reports)) ** 0.5, 3.6), layout="constrained"
    )
    axes = fig.subplots(1, len(panels), squeeze=False, width_ratios=widths)[0]
    n = len(reports)
    bar_w = 0.8 / n
    for ax, (types, attr) in zip(axes, panels):
        for k, (name, rep) in enumerate(reports.items()):
            xs = [i - 0.4 + bar_w * (k + 0.5) for i in range(len(types))]
            vals = [100 * getattr(rep, attr)[t] for t in types]
            label = f"{name} (AP {_pct(rep.ap)})" if name else None
            colour = None if name else [_colour(t) for t in types]
            bars = ax.bar(xs, vals, width=bar_w * 0.95, label=label, color=colour)
            ax.bar_label(bars, labels=[f"{v:.1f}" for v in vals], fontsize=7, padding=2)
        ax.set_xticks(range(len(types)), list(types), fontsize=8, rotation=30 if len(types) > 3 else 0)
        ax.set_title("detection errors" if attr == "detection" else "pixel errors", fontsize=9)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.margins(y=0.15)
    axes[0].set_ylabel("AP gained if fixed (AP points)")
    if any(reports):
        axes[-1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    _save(fig, path)
    return fig
