"""Command line of the segmentation-error analysis: ``densecontrast analyze GT.json RESULTS.json``."""

from __future__ import annotations

import argparse
import json
import sys
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

    Returns:
        The exit status: 0 on success, 2 for invalid inputs (the message goes to stderr).
    """
    from ._analyze import analyze
    from ._inputs import load_json

    try:
        gt = load_json(args.gt, "gt")
        results = load_json(args.results, "results")
        n_images = len(gt.get("images", [])) if isinstance(gt, dict) else 0
        with _ProgressBar(disable=args.no_progress or n_images < _PROGRESS_MIN_IMAGES) as bar:
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
