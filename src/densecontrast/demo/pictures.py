"""The demo's pictures: predictions and error pixels, loss curves (matplotlib, no pyplot).

Shapes: S image side, G ground-truth instances, D drawn detections.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import SCORE_THRESHOLD

_PALETTE = (
    (0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.4, 0.74),
    (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.74, 0.74, 0.13), (0.09, 0.75, 0.81), (0.4, 0.4, 0.4),
)  # fmt: skip
_ERROR_COLOURS = {
    "FN": (0.9, 0.1, 0.1),
    "bFP": (0.1, 0.35, 1.0),
    "fFP": (1.0, 0.85, 0.0),
    "ok": (0.2, 0.8, 0.2),
}


def _kept(output: dict[str, Tensor]) -> Tensor:
    """Binary masks (D, S, S) of the detections drawn in the pictures."""
    keep = output["scores"] >= SCORE_THRESHOLD
    return output["masks"][keep, 0] > 0.5


def error_map(gt_masks: Tensor, pred_masks: Tensor) -> Tensor:
    """Per-pixel error type of drawn predictions against the ground truth; int64 (S, S).

    Each prediction is matched to the ground truth of largest mask IoU (ignored when IoU < 0.1, as in
    the error analysis). Values: 0 nothing, 1 correct (a matched prediction on its instance), 2 FN (an
    instance pixel no matched prediction covers), 3 bFP (prediction on background), 4 fFP (prediction on
    another instance; shown instead of FN where both apply).

    Args:
        gt_masks: bool or uint8 (G, S, S), disjoint instance masks.
        pred_masks: bool (D, S, S).

    Examples:
        >>> gt = torch.zeros(1, 4, 4, dtype=torch.bool); gt[0, :2] = True
        >>> pred = torch.zeros(1, 4, 4, dtype=torch.bool); pred[0, 1:3] = True
        >>> error_map(gt, pred)[:, 0].tolist()
        [2, 1, 3, 0]
    """
    gt = gt_masks.bool()
    size = gt.shape[-2:]
    owner = torch.full(size, -1, dtype=torch.int64)
    for g in range(gt.shape[0]):
        owner[gt[g]] = g
    result = torch.zeros(size, dtype=torch.int64)
    covered = torch.zeros((gt.shape[0], *size), dtype=torch.bool)
    if pred_masks.shape[0] and gt.shape[0]:
        inter = (pred_masks[:, None] & gt[None]).flatten(2).sum(-1).float()
        union = (pred_masks[:, None] | gt[None]).flatten(2).sum(-1).float()
        iou, match = (inter / union.clamp_min(1)).max(dim=1)
        for d in range(pred_masks.shape[0]):
            p = pred_masks[d]
            if float(iou[d]) < 0.1:
                continue
            g = int(match[d])
            covered[g] |= p
            result[p & (owner == -1) & (result == 0)] = 3
            result[p & (owner >= 0) & (owner != g) & (result == 0)] = 4
    any_gt = owner >= 0
    own_cov = torch.zeros(size, dtype=torch.bool)
    for g in range(gt.shape[0]):
        own_cov |= covered[g] & gt[g]
    result[any_gt & own_cov] = 1
    result[any_gt & ~own_cov & (result != 4)] = 2  # a pixel another prediction claims shows as fFP
    return result


def _overlay(image: Tensor, masks: Tensor, alpha: float = 0.55, colours: Sequence[int] | None = None) -> Any:
    """Image (3, S, S) with masks (N, S, S) painted in palette colours and outlined; numpy (S, S, 3)."""
    import numpy as np

    out = image.permute(1, 2, 0).numpy().astype(np.float64) * 0.75
    for i in range(masks.shape[0]):
        m = masks[i].bool().numpy()
        colour = np.array(_PALETTE[(colours[i] if colours is not None else i) % len(_PALETTE)])
        out[m] = (1 - alpha) * out[m] + alpha * colour
        edge = m & ~(
            np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)
        )  # mask pixels with a neighbour outside
        out[edge] = colour
    return out.clip(0, 1)


def _matched_colours(gt: Tensor, pred: Tensor) -> list[int]:
    """Colour index of each prediction: its best-IoU ground truth's, or a spare colour when IoU < 0.1."""
    if pred.shape[0] == 0:
        return []
    if gt.shape[0] == 0:
        return [len(_PALETTE) - 1] * pred.shape[0]
    inter = (pred[:, None] & gt[None].bool()).flatten(2).sum(-1).float()
    union = (pred[:, None] | gt[None].bool()).flatten(2).sum(-1).float()
    iou, match = (inter / union.clamp_min(1)).max(dim=1)
    return [int(m) if float(v) >= 0.1 else len(_PALETTE) - 1 for v, m in zip(iou, match)]


def plot_predictions(
    dataset: Any,
    outputs: dict[str, Sequence[dict[str, Tensor]]],
    path: str | Path,
    *,
    images: int = 6,
    aps: dict[str, float] | None = None,
) -> None:
    """Save a grid: held-out images, their ground truth, then per model its masks and its error pixels.

    Args:
        dataset: the held-out split (``SyntheticInstances``).
        outputs: model name -> eval outputs, one per image of ``dataset`` (in order).
        path: the PNG to write.
        images: number of columns (the first images of the split).
        aps: model name -> mask AP (fraction), shown in the row titles.
    """
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures stay untouched
    from matplotlib.patches import Patch

    cols = min(images, len(dataset))
    rows = 2 + 2 * len(outputs)
    fig = Figure(figsize=(2.1 * cols + 1.2, 2.1 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    row_titles = ["image", "ground truth"]
    for name in outputs:
        ap = f" (AP {100 * aps[name]:.1f})" if aps and name in aps else ""
        row_titles += [f"{name}{ap}\nmasks, score ≥ {SCORE_THRESHOLD}", f"{name}\nerror pixels"]
    lut = np.array([(1.0, 1.0, 1.0), _ERROR_COLOURS["ok"], _ERROR_COLOURS["FN"], _ERROR_COLOURS["bFP"],
                    _ERROR_COLOURS["fFP"]])  # fmt: skip
    for j in range(cols):
        image, target = dataset[j]
        gt = target["masks"].bool()
        axes[0, j].imshow(image.permute(1, 2, 0).numpy())
        axes[1, j].imshow(_overlay(image, gt))
        for k, outs in enumerate(outputs.values()):
            pred = _kept(outs[j])
            axes[2 + 2 * k, j].imshow(_overlay(image, pred, colours=_matched_colours(gt, pred)))
            errors = error_map(gt, pred).numpy()
            shown = lut[errors] * 0.85 + image.permute(1, 2, 0).numpy() * 0.15
            axes[3 + 2 * k, j].imshow(shown.clip(0, 1))
            n_gt, n_pred = gt.shape[0], pred.shape[0]
            axes[2 + 2 * k, j].set_xlabel(f"{n_pred} masks / {n_gt} objects", fontsize=8)
    for i in range(rows):
        for j in range(cols):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(row_titles[i], fontsize=9)
    handles = [
        Patch(color=lut[1], label="correct"),
        Patch(color=_ERROR_COLOURS["FN"], label="FN: object pixel missed (all red: no mask found it)"),
        Patch(color=_ERROR_COLOURS["bFP"], label="bFP: background predicted"),
        Patch(color=_ERROR_COLOURS["fFP"], label="fFP: another object's pixel"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle(
        "Held-out images: ground truth, predicted masks (colour of the matched object; grey = unmatched), "
        "error pixels",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    fig.savefig(str(path), dpi=100)


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_losses(histories: dict[str, Sequence[dict[str, float]]], path: str | Path) -> None:
    """Save the loss curves: one panel per loss term, one line per model (moving average, raw faint).

    Args:
        histories: model name -> the loss dict of every step (as :func:`train` returns).
        path: the PNG to write.
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
    colours = {"baseline": "#1f77b4", "dcl": "#d62728"}
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
    fig.savefig(str(path), dpi=100)


def _tsne_panels(runs: Sequence[dict[str, Any]], rois: int = 6) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """The first ``rois`` RoIs of each run's features, for the t-SNE picture."""
    panels = {}
    for r in runs:
        feats, labels, groups = r["features"]
        keep = groups < rois
        panels[r["name"]] = (feats[keep], labels[keep], groups[keep])
    return panels
