"""The pictures of docs/analysis.md: a real case of every error type, the two-model comparison, per category.

Runs the worked example of docs/analysis.md as written (its Python block that defines ``simulate``: the
SyntheticInstances validation split, and two stand-in models made by perturbing the ground truth), then
draws, from the "base" model's results:

- ``docs/img/analysis_types.png``: for each detection error type the highest-scoring result of that type
  (a missed object: the largest one), for each pixel error type the true positive (at IoU 0.5) with the
  most pixels of that type; the image crop, the object in green, the prediction in red (pixel types: the error
  pixels in colour);
- ``docs/img/analysis_compare.png``: ``plot_comparison`` of the two models;
- ``docs/img/analysis_categories.png``: ``plot_categories`` of the base model.

Run: ``python benchmarks/analysis_pictures.py`` (from the repository root).
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pycocotools import mask as mask_utils

from densecontrast.analysis import plot_comparison
from densecontrast.analysis._detection import BKG, BOTH, CLS, DUPE, LOC, TP, classify
from densecontrast.analysis._errors import image_errors
from densecontrast.analysis._inputs import prepare
from densecontrast.datasets import SyntheticInstances

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"


def run_docs_example() -> dict[str, Any]:
    """Execute the docs' example block (in a temporary folder: it writes gt.json, base.json, dcl.json)."""
    text = (ROOT / "docs" / "analysis.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "def simulate(" in b)
    scope: dict[str, Any] = {}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            exec(compile(block, "docs/analysis.md", "exec"), scope)
        finally:
            os.chdir(cwd)
    return scope


def _crop(masks: list[np.ndarray], margin: int = 8) -> tuple[slice, slice]:
    """A square around the masks (plus a margin), inside the image."""
    ys, xs = np.nonzero(np.any(masks, axis=0))
    h, w = masks[0].shape
    side = min(h, w, max(np.ptp(ys), np.ptp(xs)) + 1 + 2 * margin)
    y0 = int(np.clip((ys.min() + ys.max() + 1 - side) // 2, 0, h - side))
    x0 = int(np.clip((xs.min() + xs.max() + 1 - side) // 2, 0, w - side))
    return slice(y0, y0 + side), slice(x0, x0 + side)


def _panel(
    ax: Any, image: np.ndarray, layers: list[tuple[np.ndarray, tuple[float, float, float]]], title: str
) -> None:
    rgb = 0.35 + 0.5 * image.mean(axis=2, keepdims=True).repeat(3, axis=2)  # dimmed grey image
    for mask, colour in layers:
        rgb[mask] = 0.35 * rgb[mask] + 0.65 * np.asarray(colour)
    all_masks = [m for m, _ in layers if m.any()]
    sy, sx = _crop(all_masks)
    ax.imshow(rgb[sy, sx], interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def types_figure(scope: dict[str, Any]) -> Figure:
    gt, base = scope["gt"], scope["base"]
    ds = SyntheticInstances(len(gt["images"]), image_size=gt["images"][0]["height"], split="val", seed=0)
    data = prepare(gt, base)
    err = classify(data)
    decode = lambda seg: mask_utils.decode(seg).astype(bool)  # noqa: E731
    green, red = (0.1, 0.85, 0.2), (0.95, 0.15, 0.15)
    fig = Figure(figsize=(13.5, 6.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 5).ravel()
    names = {c["id"]: c["name"] for c in gt["categories"]}
    for ax, (code, name) in zip(
        axes, ((CLS, "cls"), (LOC, "loc"), (BOTH, "both"), (DUPE, "dupe"), (BKG, "bkg"))
    ):
        idx = np.flatnonzero(err.kind == code)
        i = int(idx[np.argmax([data.results[k]["score"] for k in idx])])
        r = data.results[i]
        image = ds[r["image_id"] - 1][0].permute(1, 2, 0).numpy()
        layers = []
        if err.target[i] >= 0:
            g = data.annotations[err.target[i]]
            layers.append((decode(g["segmentation"]), green))
            what = f"object: {names[g['category_id']]}"
        else:
            what = "no object near"
        layers.append((decode(r["segmentation"]), red))
        _panel(ax, image, layers, f"{name}: {names[r['category_id']]} {r['score']:.2f}\n{what}")
    missed = np.flatnonzero(err.missed)
    j = int(missed[np.argmax([data.annotations[k]["area"] for k in missed])])
    g = data.annotations[j]
    image = ds[g["image_id"] - 1][0].permute(1, 2, 0).numpy()
    _panel(
        axes[5],
        image,
        [(decode(g["segmentation"]), green)],
        f"missed: {names[g['category_id']]}\nno result near",
    )
    # pixel errors: the matched prediction with the most pixels of each type
    best: dict[int, tuple[int, int, Any]] = {}
    for image_id, idx in data.res_by_image.items():
        g_idx = data.gt_by_image[image_id]
        if not idx:
            continue
        anns = [data.annotations[k] for k in g_idx]
        e = image_errors(
            [data.results[k]["segmentation"] for k in idx], [data.results[k]["category_id"] for k in idx],
            [a["segmentation"] for a in anns], [a["category_id"] for a in anns], [a["iscrowd"] for a in anns],
            *data.sizes[image_id], 0.1,
        )  # fmt: skip
        true_pos = err.kind[idx] == TP  # true positives at fg_iou: what the pixel errors explain
        for t in range(3):
            k = int(np.argmax(np.where(true_pos, e.pixels[:, t], -1)))
            if e.pixels[k, t] > best.get(t, (0, -1, None))[0]:
                best[t] = (int(e.pixels[k, t]), idx[k], anns[e.match[k]])
    colours = {0: (1.0, 0.55, 0.0), 1: (0.85, 0.1, 0.85), 2: (0.1, 0.75, 0.95)}
    for t, name in enumerate(("fFP", "bFP", "FN")):
        count, i, g = best[t]
        r = data.results[i]
        image = ds[r["image_id"] - 1][0].permute(1, 2, 0).numpy()
        d, gs = decode(r["segmentation"]), decode(g["segmentation"])
        others = np.zeros_like(d)
        for a in data.annotations:
            if a["image_id"] == r["image_id"] and a is not g:
                others |= decode(a["segmentation"])
        error = [d & others & ~gs, d & ~others & ~gs, gs & ~d][t]
        _panel(
            axes[6 + t],
            image,
            [(gs & d, green), (error, colours[t])],
            f"{name}: {count} px\n(correct pixels green)",
        )
    axes[9].axis("off")
    axes[9].text(
        0.0, 0.5,
        "green: the object (ground truth)\nred: the prediction\norange: fFP (on another object)\n"
        "magenta: bFP (on the background)\ncyan: FN (part of the object missed)",
        fontsize=9, va="center",
    )  # fmt: skip
    fig.suptitle("A real case of every error type (SyntheticInstances val, the 'base' stand-in model)")
    return fig


def main() -> None:
    warnings.filterwarnings("ignore")
    scope = run_docs_example()
    IMG.mkdir(parents=True, exist_ok=True)
    types_figure(scope).savefig(IMG / "analysis_types.png", dpi=110)
    reports = scope["reports"]
    plot_comparison(
        reports, IMG / "analysis_compare.png", title="base vs dcl: AP gained by fixing each error type"
    )
    reports["base"].plot_categories(IMG / "analysis_categories.png", sort_by="total")
    print(scope["compare_table"](reports))
    print(reports["base"].table(per_category=True, sort_by="total"))


if __name__ == "__main__":
    main()
