"""The ``densecontrast`` command line: ``demo`` (train Mask R-CNN with and without the loss) and
``analyze`` (error analysis of COCO-format results: detection and pixel errors).

Each subcommand imports its optional dependencies only when it runs, so ``densecontrast --help`` works
with the core install alone; a missing one stops the subcommand before it does any work, with exit status 2
and one line naming the extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from . import __version__

# subcommand -> (module with add_arguments(parser) and run(args) -> int, one-line help, extra to install,
# the modules it needs whatever its options: checked before anything runs)
SUBCOMMANDS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "demo": (
        "densecontrast.demo.cli",
        "train torchvision Mask R-CNN on synthetic data without and with DCL and compare their mask AP",
        "demo",
        ("numpy", "pycocotools", "matplotlib", "tqdm", "torchvision"),
    ),
    "analyze": (
        "densecontrast.analysis.cli",
        "error analysis: detection errors (TIDE) and pixel errors (fFP, bFP, FN) as ΔAP",
        "analysis",
        ("numpy", "pycocotools"),
    ),
}


def missing_module(names: Sequence[str]) -> str | None:
    """The first of ``names`` that cannot be imported, or None when all can."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None


def _load(name: str) -> ModuleType | str:
    """The subcommand's module, or the one-line error when an optional dependency is missing."""
    module_name, _, extra, needs = SUBCOMMANDS[name]
    missing = missing_module(needs)
    if missing is None:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and err.name.split(".")[0] == "densecontrast":
                raise
            missing = err.name
    return f"densecontrast {name}: needs {missing!r}: pip install 'densecontrast[{extra}]'"


_DESCRIPTION = (
    "The densecontrast command line: demo (train Mask R-CNN with and without the loss) and analyze "
    "(segmentation-error analysis of COCO-format results)."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densecontrast", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"densecontrast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text, _, _) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``densecontrast`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in SUBCOMMANDS:
        args = parser.parse_args(argv)
        parser.print_help()
        return 0 if args.command is None and not argv else 2
    name = argv[0]
    module = _load(name)
    if isinstance(module, str):
        print(module, file=sys.stderr)
        return 2
    sub_parser = argparse.ArgumentParser(prog=f"densecontrast {name}", description=SUBCOMMANDS[name][1])
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        # Ctrl-C: the subcommand has stopped its own processes on the way out (the demo's runs, the
        # analysis' workers); one line instead of a traceback, and the shell's status for SIGINT.
        print(f"\ndensecontrast {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
