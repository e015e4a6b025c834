"""Command line of the error analysis: ``densecontrast analyze GT.json RESULTS.json [MORE.json ...]``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from ._backend import BACKENDS
from ._inputs import IOU_TYPES

_PROGRESS_MIN_IMAGES = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``analyze`` arguments to ``parser``."""
    parser.add_argument("gt", help="COCO ground-truth JSON (instances_*.json)")
    parser.add_argument(
        "results",
        nargs="+",
        help="COCO results JSON (a list; 'segmentation' as polygons or RLE, or 'bbox' with --iou-type bbox); "
        "several files give one comparison table and plot",
    )
    parser.add_argument("--names", help="comma-separated names of the results files (default: file names)")
    parser.add_argument(
        "--iou-type", choices=IOU_TYPES, default="segm", help="masks or boxes (default: segm)"
    )
    parser.add_argument("--min-iou", type=float, default=0.1, help="pixel-error matching threshold (0.1)")
    parser.add_argument("--fg-iou", type=float, default=0.5, help="detection-error foreground IoU (0.5)")
    parser.add_argument("--bg-iou", type=float, default=0.1, help="detection-error background IoU (0.1)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="COCO evaluator (default: auto)")
    parser.add_argument("--plot", metavar="PATH", help="save a bar chart of ΔAP per error type")
    parser.add_argument("--plot-categories", metavar="PATH", help="save ΔAP per category (one results file)")
    parser.add_argument("--json", metavar="PATH", help="save the full report(s) as JSON")
    parser.add_argument("--per-category", action="store_true", help="also print AP and ΔAP per category")
    parser.add_argument("--sort-by", default=None, help="per-category order: an error type or 'total'")
    parser.add_argument(
        "--skip-degenerate",
        action="store_true",
        help="leave out ground-truth polygons with < 3 points or zero area (listed) instead of stopping",
    )
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the analysis for parsed ``args``, print the table(s) and write the requested files.

    The output paths and the optional dependencies the options need are checked before the analysis runs.

    Returns:
        The exit status: 0 on success, 2 for invalid inputs, unusable output paths, a failed write or a
        missing optional dependency (one line on stderr).
    """
    from ._analyze import analyze
    from ._inputs import load_json

    try:
        names = _check_before_work(args)
        gt = load_json(args.gt, "gt")
        n_images = len(gt.get("images", [])) if isinstance(gt, dict) else 0
        show_progress = not args.no_progress and n_images >= _PROGRESS_MIN_IMAGES
        if show_progress:
            _require("tqdm", "analysis", f"a progress bar ({n_images} images; or --no-progress)")
        reports = {}
        for name, path in zip(names, args.results):
            with _ProgressBar(disable=not show_progress) as bar:
                reports[name] = analyze(
                    gt,
                    path,
                    min_iou=args.min_iou,
                    backend=args.backend,
                    progress=bar,
                    iou_type=args.iou_type,
                    fg_iou=args.fg_iou,
                    bg_iou=args.bg_iou,
                    skip_degenerate=args.skip_degenerate,
                )
    except (ValueError, TypeError) as err:
        print(f"densecontrast analyze: error: {_one_line(err)}", file=sys.stderr)
        return 2
    from ._report import compare_table, plot_comparison

    first = next(iter(reports.values()))
    for line in first.skipped:
        print(f"skipped: {line}", file=sys.stderr)
    if len(reports) == 1:
        print(first.table(per_category=args.per_category, sort_by=args.sort_by))
    else:
        print(compare_table(reports))
        if args.per_category:
            for name, rep in reports.items():
                print(f"\n{name}\n{rep.category_table(sort_by=args.sort_by)}")
    writers = []
    if args.json:
        payload = first.to_dict() if len(reports) == 1 else {n: r.to_dict() for n, r in reports.items()}
        writers.append((args.json, lambda path: _write_json(path, payload)))
    if args.plot:
        writers.append(
            (args.plot, first.plot if len(reports) == 1 else lambda path: plot_comparison(reports, path))
        )
    if args.plot_categories:
        writers.append(
            (args.plot_categories, lambda path: first.plot_categories(path, sort_by=args.sort_by or "total"))
        )
    for path, write in writers:
        try:
            write(path)
        except OSError as err:
            print(
                f"densecontrast analyze: error: cannot write {path}: {err.strerror or err}", file=sys.stderr
            )
            return 2
    return 0


def _write_json(path: str, payload: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


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


def _check_before_work(args: argparse.Namespace) -> list[str]:
    """Raise ValueError (one line) for an unusable output path or a dependency an option needs.

    Returns:
        One name per results file.
    """
    if args.backend == "faster-coco-eval":
        _require("faster_coco_eval", "fast", "--backend faster-coco-eval")
    names = [Path(p).stem for p in args.results]
    if args.names is not None:
        names = [n.strip() for n in args.names.split(",")]
        if len(names) != len(args.results) or not all(names) or len(set(names)) != len(names):
            raise ValueError(
                f"--names {args.names}: give {len(args.results)} distinct non-empty name(s), one per results "
                f"file, separated by commas"
            )
    elif len(set(names)) != len(names):
        names = [os.fspath(p) for p in args.results]
    if args.sort_by is not None:
        from ._report import DETECTION_COLUMNS, ERROR_TYPES

        allowed = ("total", *DETECTION_COLUMNS, *ERROR_TYPES)
        if args.sort_by not in allowed:
            raise ValueError(f"--sort-by {args.sort_by}: must be one of {', '.join(allowed)}")
    if args.plot_categories and len(args.results) > 1:
        raise ValueError("--plot-categories takes one results file")
    inputs = [Path(p) for p in (args.gt, *args.results)]
    for option in ("json", "plot", "plot_categories"):
        value = getattr(args, option)
        if not value:
            continue
        flag = "--" + option.replace("_", "-")
        target = _check_output(flag, value)
        if any(_same_file(target, p) for p in inputs):
            raise ValueError(f"{flag} {value}: is one of the input files; give another file name")
        if option != "json":
            _require("matplotlib", "analysis", flag)
            from matplotlib.backend_bases import FigureCanvasBase

            formats = sorted(FigureCanvasBase.get_supported_filetypes())
            if target.suffix.lower().lstrip(".") not in formats:
                raise ValueError(
                    f"{flag} {value}: the extension must be one of {', '.join(formats)}; "
                    f"got {target.suffix or 'none'!r}"
                )
    return names


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


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
