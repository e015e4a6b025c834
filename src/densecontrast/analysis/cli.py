"""Command line of the segmentation-error analysis: ``densecontrast analyze GT.json RESULTS.json``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from ._backend import BACKENDS

_PROGRESS_MIN_IMAGES = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``analyze`` arguments to ``parser``."""
    parser.add_argument("gt", help="COCO ground-truth JSON (instances_*.json)")
    parser.add_argument("results", help="COCO segmentation results JSON (a list with RLE 'segmentation')")
    parser.add_argument("--min-iou", type=float, default=0.1, help="matching threshold (default: 0.1)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="COCO evaluator (default: auto)")
    parser.add_argument("--plot", metavar="PATH", help="save a bar chart of ΔAP per error type")
    parser.add_argument("--json", metavar="PATH", help="save the full report as JSON")
    parser.add_argument("--per-category", action="store_true", help="also print AP and ΔAP per category")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the analysis for parsed ``args``, print the table and write the requested files.

    The output paths and the optional dependencies the options need are checked before the analysis runs.

    Returns:
        The exit status: 0 on success, 2 for invalid inputs, unusable output paths or a missing optional
        dependency (one line on stderr).
    """
    from ._analyze import analyze
    from ._inputs import load_json

    try:
        _check_before_work(args)
        gt = load_json(args.gt, "gt")
        results = load_json(args.results, "results")
        n_images = len(gt.get("images", [])) if isinstance(gt, dict) else 0
        show_progress = not args.no_progress and n_images >= _PROGRESS_MIN_IMAGES
        if show_progress:
            _require("tqdm", "analysis", f"a progress bar ({n_images} images; or --no-progress)")
        with _ProgressBar(disable=not show_progress) as bar:
            report = analyze(gt, results, min_iou=args.min_iou, backend=args.backend, progress=bar)
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        print(f"densecontrast analyze: error: {err}", file=sys.stderr)
        return 2
    print(report.table(per_category=args.per_category))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=2)
    if args.plot:
        report.plot(args.plot)
    return 0


def _require(module: str, extra: str, what: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{what} needs {module!r}: pip install 'densecontrast[{extra}]'") from None


def _check_output(option: str, path: str) -> Path:
    """``path`` as a Path, if a file can be written there: its folder exists, and it is not a folder."""
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise ValueError(f"{option} {path}: is a folder; give a file name")
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{option} {path}: the folder {str(folder)!r} is not writable")
    return target


def _check_before_work(args: argparse.Namespace) -> None:
    """Raise ValueError (one line) for an unusable output path or a dependency an option needs."""
    if args.backend == "faster-coco-eval":
        _require("faster_coco_eval", "fast", "--backend faster-coco-eval")
    if args.json:
        _check_output("--json", args.json)
    if args.plot:
        target = _check_output("--plot", args.plot)
        _require("matplotlib", "analysis", "--plot")
        from matplotlib.backend_bases import FigureCanvasBase

        formats = sorted(FigureCanvasBase.get_supported_filetypes())
        if target.suffix.lower().lstrip(".") not in formats:
            raise ValueError(
                f"--plot {args.plot}: the extension must be one of {', '.join(formats)}; "
                f"got {target.suffix or 'none'!r}"
            )


class _ProgressBar:
    """A tqdm bar fed by ``analyze``'s ``progress(stage, done, total)`` callback."""

    def __init__(self, *, disable: bool) -> None:
        self.disable = disable
        self.bar: Any = None

    def __enter__(self) -> _ProgressBar | None:
        return None if self.disable else self

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="step", desc=stage)
        self.bar.set_description(stage, refresh=False)
        self.bar.update(done - self.bar.n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
