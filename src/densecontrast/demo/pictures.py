"""The demo's pictures: predictions and error pixels, loss curves (matplotlib, no pyplot).

Shapes: S image side, G ground-truth instances, D drawn detections.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import SCORE_THRESHOLD

_PALETTE = (
    (0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.4, 0.74),
    (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.74, 0.74, 0.13), (0.09, 0.75, 0.81),
)  # fmt: skip
_UNMATCHED = (0.15, 0.15, 0.15)
"""Colour of a drawn detection that overlaps no object of its class."""
_ERROR_COLOURS = {
    "ok": (0.2, 0.8, 0.2),
    "FN": (0.9, 0.1, 0.1),
    "bFP": (0.1, 0.35, 1.0),
    "fFP": (1.0, 0.85, 0.0),
    "false": (0.85, 0.2, 0.85),
}
ERROR_VALUES = {"none": 0, "ok": 1, "FN": 2, "bFP": 3, "fFP": 4, "false": 5}
"""The values of :func:`error_map`."""
MIN_IOU = 0.1
"""A detection overlapping no object of its class by this mask IoU is unmatched (as in the analysis)."""


@dataclass(frozen=True)
class Detection:
    """A drawn detection and what it is against the ground truth.

    Attributes:
        mask: bool (S, S).
        label: its category id.
        score: its score.
        kind: "match" (the best detection of an object of its class), "duplicate" (an object of its
            class that a higher-scoring detection already matched), "wrong class" (overlaps no object of
            its class, but one of another class by IoU >= 0.5) or "false" (overlaps no object of its
            class otherwise).
        gt: index of the matched ground truth (also for duplicates), or -1.
    """

    mask: Tensor
    label: int
    score: float
    kind: str
    gt: int


def _iou(a: Tensor, b: Tensor) -> Tensor:
    """Mask IoU of bool (A, S, S) against bool (B, S, S); float (A, B)."""
    inter = (a[:, None] & b[None]).flatten(2).sum(-1).float()
    union = (a[:, None] | b[None]).flatten(2).sum(-1).float()
    return inter / union.clamp_min(1)


def classify_detections(
    gt_masks: Tensor, gt_labels: Tensor, output: dict[str, Tensor], *, threshold: float = SCORE_THRESHOLD
) -> list[Detection]:
    """The detections of ``output`` scoring at least ``threshold``, highest score first, with their kind.

    Each detection is matched to the object of its own class with the largest mask IoU (unmatched below
    IoU 0.1, as in the error analysis); of several detections matched to one object, all but the
    highest-scoring are duplicates.

    Args:
        gt_masks: bool or uint8 (G, S, S).
        gt_labels: int (G,).
        output: an eval output of Mask R-CNN: ``masks`` float (D, 1, S, S), ``scores`` (D,), ``labels`` (D,).
        threshold: the lowest score drawn.
    """
    gt = gt_masks.bool()
    scores = output["scores"]
    order = [int(i) for i in torch.argsort(scores, descending=True) if float(scores[i]) >= threshold]
    if not order:
        return []
    masks = output["masks"][order, 0] > 0.5
    labels = output["labels"][order]
    iou = _iou(masks, gt) if gt.shape[0] else torch.zeros(len(order), 0)
    same = labels[:, None] == gt_labels[None].to(labels.dtype)
    claimed: set[int] = set()
    found = []
    for d, index in enumerate(order):
        own = torch.where(same[d], iou[d], torch.full_like(iou[d], -1.0))
        g = int(own.argmax()) if own.numel() else -1
        if g >= 0 and float(own[g]) >= MIN_IOU:
            kind = "duplicate" if g in claimed else "match"
            claimed.add(g)
        elif iou.shape[1] and float(iou[d].max()) >= 0.5:
            kind, g = "wrong class", -1
        else:
            kind, g = "false", -1
        found.append(Detection(masks[d], int(labels[d]), float(scores[index]), kind, g))
    return found


def error_map(gt_masks: Tensor, detections: Sequence[Detection]) -> Tensor:
    """Per-pixel error type of drawn detections against the ground truth; int64 (S, S).

    Values (:data:`ERROR_VALUES`): 0 nothing, 1 correct (a matched detection on its object), 2 FN (an
    object pixel no matched detection covers), 3 bFP (a matched detection on background), 4 fFP (a
    matched detection on another object; shown instead of FN where both apply), 5 a false detection
    (one that matched no object of its class: wrong class or background; shown over FN and bFP).

    Args:
        gt_masks: bool or uint8 (G, S, S), disjoint instance masks.
        detections: from :func:`classify_detections`.

    Examples:
        >>> gt = torch.zeros(1, 4, 4, dtype=torch.bool); gt[0, :2] = True
        >>> pred = torch.zeros(4, 4, dtype=torch.bool); pred[1:3] = True
        >>> error_map(gt, [Detection(pred, 1, 0.9, "match", 0)])[:, 0].tolist()
        [2, 1, 3, 0]
    """
    gt = gt_masks.bool()
    size = gt.shape[-2:]
    owner = torch.full(size, -1, dtype=torch.int64)
    for g in range(gt.shape[0]):
        owner[gt[g]] = g
    result = torch.zeros(size, dtype=torch.int64)
    covered = torch.zeros((gt.shape[0], *size), dtype=torch.bool)
    for det in detections:
        if det.gt < 0:
            continue
        p = det.mask
        covered[det.gt] |= p
        result[p & (owner == -1) & (result == 0)] = 3
        result[p & (owner >= 0) & (owner != det.gt) & (result == 0)] = 4
    any_gt = owner >= 0
    own_cov = torch.zeros(size, dtype=torch.bool)
    for g in range(gt.shape[0]):
        own_cov |= covered[g] & gt[g]
    result[any_gt & own_cov] = 1
    result[any_gt & ~own_cov & (result != 4)] = 2  # a pixel another detection claims shows as fFP
    for det in detections:
        if det.gt < 0:
            result[det.mask & ((result == 0) | (result == 2) | (result == 3))] = 5
    return result


def _base(image: Tensor) -> Any:
    """The image as light grey, numpy (S, S, 3): any colour drawn on it is a mask, not the image."""
    import numpy as np

    grey = image.mean(dim=0).numpy().astype(np.float64)
    return np.repeat((0.55 + 0.4 * grey)[..., None], 3, axis=2)


def _paint(out: Any, mask: Tensor, colour: Sequence[float], alpha: float = 0.6) -> None:
    """Paint ``mask`` (S, S) on ``out`` (S, S, 3) in place, filled and outlined."""
    import numpy as np

    m = mask.bool().numpy()
    c = np.asarray(colour)
    out[m] = (1 - alpha) * out[m] + alpha * c
    edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
    out[edge] = c


def _label(
    ax: Any, mask: Tensor, text: str, colour: Sequence[float], used: list[tuple[float, float]]
) -> None:
    """Write ``text`` at the top of ``mask``'s box, inside the image, below labels already written there.

    Labels of masks in the right half are right-aligned to the box's right edge, so they stay in the
    picture; a label that would cover an earlier one moves down by one line.
    """
    size = mask.shape[-1]
    ys, xs = mask.nonzero(as_tuple=True)
    if xs.numel() == 0:
        return
    left, right, top = float(xs.min()), float(xs.max()), float(ys.min())
    right_half = (left + right) / 2 > size / 2
    x, ha = (right, "right") if right_half else (left, "left")
    line = 0.09 * size
    y = top
    while any(abs(y - uy) < line and abs(x - ux) < 0.45 * size for ux, uy in used):
        y += line
    used.append((x, y))
    ax.text(x, y, text, color="white", fontsize=6, va="top", ha=ha, clip_on=True,
            bbox={"facecolor": colour, "pad": 0.5, "linewidth": 0})  # fmt: skip


def plot_predictions(
    dataset: Any,
    outputs: dict[str, Sequence[dict[str, Tensor]]],
    path: str | Path | None,
    *,
    images: int = 6,
    aps: dict[str, float] | None = None,
    threshold: float = SCORE_THRESHOLD,
) -> Any:
    """A grid: held-out images with their ground truth, then per model its detections and error pixels.

    Detections scoring at least ``threshold`` are drawn on a grey copy of the image, each in
    the colour of the object it matched (dark grey when it matched none) and labelled with its class
    name and score; duplicates, wrong-class and false detections are labelled as such. The error row
    colours each pixel by :func:`error_map`.

    Args:
        dataset: the held-out split (``SyntheticInstances``: its ``categories`` name the classes).
        outputs: model name -> eval outputs, one per image of ``dataset`` (in order).
        path: the PNG to write, or None to only return the figure.
        images: number of columns (the first images of the split).
        aps: model name -> mask AP (fraction), shown in the row titles.
        threshold: the lowest score drawn.

    Returns:
        The matplotlib ``Figure``.
    """
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures stay untouched
    from matplotlib.patches import Patch

    names = {int(c["id"]): str(c["name"]) for c in getattr(dataset, "categories", [])}
    cols = min(images, len(dataset))
    rows = 1 + 2 * len(outputs)
    fig = Figure(figsize=(2.3 * cols + 1.4, 2.3 * rows + 0.9))
    axes = fig.subplots(rows, cols, squeeze=False)
    row_titles = ["ground truth"]
    for name in outputs:
        ap = f" (AP {100 * aps[name]:.1f})" if aps and name in aps else ""
        row_titles += [f"{name}{ap}\ndetections, score ≥ {threshold:g}", f"{name}\nerror pixels"]
    lut = np.array([(1.0, 1.0, 1.0), *(_ERROR_COLOURS[k] for k in ("ok", "FN", "bFP", "fFP", "false"))])
    for j in range(cols):
        image, target = dataset[j]
        gt, gt_labels = target["masks"].bool(), target["labels"]
        shown = _base(image)
        for g in range(gt.shape[0]):
            _paint(shown, gt[g], _PALETTE[g % len(_PALETTE)])
        axes[0, j].imshow(shown)
        used: list[tuple[float, float]] = []
        for g in range(gt.shape[0]):
            name = names.get(int(gt_labels[g]), str(int(gt_labels[g])))
            _label(axes[0, j], gt[g], name, _PALETTE[g % len(_PALETTE)], used)
        axes[0, j].set_xlabel(f"{gt.shape[0]} objects", fontsize=8)
        for k, outs in enumerate(outputs.values()):
            found = classify_detections(gt, gt_labels, outs[j], threshold=threshold)
            drawn = _base(image)
            for det in reversed(found):  # highest score painted last, on top
                _paint(drawn, det.mask, _PALETTE[det.gt % len(_PALETTE)] if det.gt >= 0 else _UNMATCHED)
            ax = axes[1 + 2 * k, j]
            ax.imshow(drawn)
            used = []
            for det in found:
                tag = "" if det.kind == "match" else f" {det.kind}"
                colour = _PALETTE[det.gt % len(_PALETTE)] if det.gt >= 0 else _UNMATCHED
                _label(
                    ax, det.mask, f"{names.get(det.label, str(det.label))} {det.score:.2f}{tag}", colour, used
                )
            kinds = [d.kind for d in found]
            ax.set_xlabel(
                f"found {kinds.count('match')} of {gt.shape[0]}; {kinds.count('duplicate')} dup., "
                f"{kinds.count('wrong class')} wrong class, {kinds.count('false')} false",
                fontsize=7,
            )
            errors = error_map(gt, found).numpy()
            mixed = _base(image)  # grey where nothing is to say, so every colour is an error type
            marked = errors > 0
            mixed[marked] = lut[errors[marked]] * 0.85 + mixed[marked] * 0.15
            axes[2 + 2 * k, j].imshow(mixed.clip(0, 1))
    for i in range(rows):
        for j in range(cols):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(row_titles[i], fontsize=9)
    handles = [
        Patch(color=_ERROR_COLOURS["ok"], label="correct"),
        Patch(color=_ERROR_COLOURS["FN"], label="FN: object pixel missed"),
        Patch(color=_ERROR_COLOURS["bFP"], label="bFP: background in a matched mask"),
        Patch(color=_ERROR_COLOURS["fFP"], label="fFP: another object in a matched mask"),
        Patch(color=_ERROR_COLOURS["false"], label="false detection (wrong class or no object)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(
        "Held-out images. Masks are drawn on a grey copy of the image in the colour of the object they "
        "match (dark grey: none),\nlabelled with class and score; an object left grey has no mask.",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    if path is not None:
        fig.savefig(str(path), dpi=110)
    return fig


def plot_errors(reports: dict[str, Any], path: str | Path | None, *, title: str | None = None) -> Any:
    """One bar chart of ΔAP per error type (fFP, bFP, FN), one bar per model, in AP points.

    Args:
        reports: model name -> ``SegmentationErrorReport``.
        path: the PNG to write, or None to only return the figure.
        title: the figure's title.

    Returns:
        The matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures stay untouched

    types = ("fFP", "bFP", "FN")
    fig = Figure(figsize=(2.2 + 1.5 * len(types) * max(1, len(reports)) ** 0.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(reports))
    for k, (name, rep) in enumerate(reports.items()):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(types))]
        values = [100 * rep.delta[t] for t in types]
        bars = ax.bar(xs, values, width=width * 0.95, label=f"{name} (AP {100 * rep.ap:.1f})")
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8, padding=2)
    ax.set_xticks(range(len(types)), [f"ΔAP$_{{{t}}}$" for t in types])
    ax.set_ylabel("ΔAP (AP points gained if corrected)")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.margins(y=0.15)
    ax.legend(fontsize=8)
    ax.set_title(title or "Mask AP gained by correcting each error type (lower is better)", fontsize=10)
    if path is not None:
        fig.savefig(str(path), dpi=130)
    return fig


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_losses(histories: dict[str, Sequence[dict[str, float]]], path: str | Path | None) -> Any:
    """The loss curves: one panel per loss term, one line per model (moving average, raw faint).

    Args:
        histories: model name -> the loss dict of every step (as :func:`train` returns).
        path: the PNG to write, or None to only return the figure.

    Returns:
        The matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures stay untouched
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    terms: list[str] = []
    for hist in histories.values():
        for key in hist[0] if hist else {}:
            if key not in terms:
                terms.append(key)
    cols = 4
    rows = max(1, math.ceil(len(terms) / cols))
    fig = Figure(figsize=(4.0 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    colours = {"baseline": "#1f77b4", "Baseline": "#1f77b4", "dcl": "#d62728", "+DCL": "#d62728"}
    for ax, term in zip(axes.flat, terms):
        for name, hist in histories.items():
            values = [h[term] for h in hist if term in h]
            if not values:
                continue
            colour = colours.get(name)
            window = max(1, len(values) // 40)
            ax.plot(values, color=colour, alpha=0.18, linewidth=0.6)
            ax.plot(_smooth(values, window), color=colour, linewidth=1.6, label=name)
        ax.set_title(term if term != "loss" else "loss (total; +DCL's includes loss_dcl)", fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(terms) :]:
        ax.axis("off")
    fig.suptitle("Training losses (thin: each step; thick: moving average; log scale)", fontsize=11)
    fig.tight_layout()
    if path is not None:
        fig.savefig(str(path), dpi=100)
    return fig


def _tsne_panels(runs: Sequence[dict[str, Any]], rois: int = 6) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """The first ``rois`` RoIs of each run's features, for the t-SNE picture."""
    panels = {}
    for r in runs:
        feats, labels, groups = r["features"]
        keep = groups < rois
        panels[r["name"]] = (feats[keep], labels[keep], groups[keep])
    return panels
