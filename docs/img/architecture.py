"""Draws docs/img/architecture.png, the picture of docs/architecture.md (run it from the repository root)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

LAYERS = [  # (y, title, boxes: (label, detail))
    (
        3.3,
        "entry points",
        [
            ("cli.py", "densecontrast demo | analyze"),
            ("demo/", "config, model, training,\nevaluation, pictures, report, cli"),
        ],
    ),
    (
        2.05,
        "integrations and tools (optional extras, imported where used)",
        [
            (
                "adapters/",
                "_base: one capture lifecycle\n_targets, rois, _checks\n"
                "torchvision, ultralytics, transformers",
            ),
            ("data/", "synthetic scenes, dataset,\ncoco and yolo exporters"),
            ("analysis/", "inputs, backends, pixel and\ndetection errors, report, metric"),
        ],
    ),
    (1.1, "", [("_coco.py", "RLE and COCO ground truth (shared by data/ and analysis/)")]),
    (
        0.0,
        "core: imports torch only",
        [
            ("sampling", "sample_pixels"),
            ("gather", "gather_pixels"),
            ("infonce", "dense_info_nce"),
            ("projection", "ProjectionHead"),
            ("loss", "DenseContrastiveLoss"),
            ("taps", "FeatureTap"),
        ],
    ),
]
COLOURS = {3.3: "#fde2c8", 2.05: "#d6e6f5", 1.1: "#e8e8e8", 0.0: "#d9f0d3"}
SHARED = 1.1  # the row of the shared module: narrower, right of the adapters


def draw(path: Path) -> None:
    fig = Figure(figsize=(11, 5.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 11)
    ax.set_ylim(-0.6, 4.2)
    ax.axis("off")
    centres: dict[float, list[float]] = {}
    for y, title, boxes in LAYERS:
        left, span = (3.8, 6.9) if y == SHARED else (0.3, 10.4)
        width = span / len(boxes)
        centres[y] = []
        for i, (label, detail) in enumerate(boxes):
            x = left + i * width
            ax.add_patch(
                FancyBboxPatch(
                    (x + 0.05, y - 0.3),
                    width - 0.1,
                    0.75 if y != SHARED else 0.45,
                    boxstyle="round,pad=0.02",
                    facecolor=COLOURS[y],
                    edgecolor="#555555",
                )
            )
            ax.text(
                x + width / 2,
                y + (0.25 if y != SHARED else 0.1),
                label,
                ha="center",
                va="center",
                fontsize=10,
                fontweight="bold",
            )
            ax.text(
                x + width / 2,
                y - 0.05 if y != SHARED else y - 0.12,
                detail,
                ha="center",
                va="center",
                fontsize=7.5,
            )
            centres[y].append(x + width / 2)
        if title:
            ax.text(0.3, y + 0.55, title, fontsize=9, style="italic", color="#333333")
    arrows = [(5.5, 3.3, 2.05), (1.9, 2.05, 0.0), (5.5, 2.05, SHARED), (9.1, 2.05, SHARED)]
    for x, upper, lower in arrows:
        top = lower + (0.47 if lower != SHARED else 0.17)
        ax.add_patch(
            FancyArrowPatch((x, upper - 0.32), (x, top), arrowstyle="-|>", mutation_scale=14, color="#444444")
        )
    ax.text(5.6, 2.85, "imports", fontsize=8, color="#444444")
    ax.text(2.0, 1.1, "adapters, data and analysis\nall import the core", fontsize=8, color="#444444")
    ax.text(
        0.3,
        -0.5,
        "Arrows point down only: a module imports from layers below it, never above or beside "
        "(tests/test_architecture.py checks this). Outside the wheel: tests/, benchmarks/, examples/.",
        fontsize=8,
        color="#333333",
    )
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    draw(Path(__file__).with_suffix(".png"))
