"""Runs the code blocks of README.md and docs/*.md as tests (with Sybil), so the docs run as written.

- ``python`` blocks run in one namespace per page, in order. The namespace starts with the small inputs
  that the pages name without building them (documented in docs/architecture.md): ``feats`` float32
  (4, 256, 28, 28) RoI features and ``masks`` (4, 28, 28) instance masks of one blob each, ``images`` and
  ``targets`` (two 128 px images of :class:`~densecontrast.data.SyntheticInstances` with torchvision
  targets), and ``tmp`` (a fresh temporary folder, also the working directory while the page runs; it
  holds a link to ``examples/`` as a clone's root would).
- Hidden set-up (a tiny model standing in for "your model") sits in ``<!-- invisible-code-block: python -->``
  comments just before the block that needs it.
- ``bash`` blocks are checked, not run (they install packages, train for minutes or write files): each
  ``densecontrast SUB ...`` line is parsed by that sub-command's own argument parser, each
  ``python benchmarks/X.py`` / ``python examples/X.py`` line must name an existing script whose source
  defines every ``--option`` the line uses, and each ``nox -s NAME`` must name a session of noxfile.py.
  Other lines (``pip``, ``git``, ``mkdocs``...) are left alone.
- A block preceded by ``<!-- skip: next "reason" -->`` is not run; the reason is part of the page.
- A block preceded by ``<!-- slow: "reason" -->`` (a full-size model, a training step) is marked
  ``slow``, like the end-to-end tests: it runs by default and in CI, and ``-m "not slow"`` leaves it out.
  Only that block is marked, so later blocks of the page must not use the names it defines.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent

try:
    from sybil import Sybil
    from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser
except ImportError:  # Sybil is in the dev extra; without it the docs are simply not collected
    Sybil = None


def _setup(namespace: dict[str, Any]) -> None:
    import tempfile

    import torch

    # one intra-op thread, as in tests/conftest.py: small ops on a loaded 2-core machine wait at barriers
    torch.set_num_threads(int(os.environ.get("DENSECONTRAST_TEST_THREADS", "1")))
    torch.manual_seed(0)
    masks = torch.zeros(4, 28, 28, dtype=torch.bool)
    for i in range(4):
        masks[i, 4 + i : 20 + i, 6 : 22 - i] = True
    namespace["feats"] = torch.randn(4, 256, 28, 28)
    namespace["masks"] = masks
    try:
        from densecontrast.datasets import SyntheticInstances

        data = SyntheticInstances(2, image_size=128, seed=0)
        namespace["images"] = [data[i][0] for i in range(2)]
        namespace["targets"] = [data[i][1] for i in range(2)]
    except ImportError:  # pragma: no cover - the data layer imports torch only
        pass
    folder = tempfile.mkdtemp(prefix="densecontrast-docs-")
    (Path(folder) / "examples").symlink_to(ROOT / "examples")  # pages say "run from a clone's root"
    (Path(folder) / "docs" / "img").mkdir(parents=True)  # where pages that draw their pictures write them
    namespace["tmp"] = Path(folder)
    namespace["_cwd"] = os.getcwd()
    os.chdir(folder)


_SLOW = re.compile(r"<!--\s*slow\b[^>]*-->\s*\Z")


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """Mark ``slow`` the doc blocks that a ``<!-- slow: "reason" -->`` comment precedes."""
    import pytest

    for item in items:
        example = getattr(item, "example", None)  # a Sybil block
        if example is not None and _SLOW.search(example.document.text[: example.start]):
            item.add_marker(pytest.mark.slow)


def _teardown(namespace: dict[str, Any]) -> None:
    os.chdir(namespace.get("_cwd", ROOT))


def _options(words: list[str]) -> list[str]:
    return [w.split("=", 1)[0] for w in words if w.startswith("--")]


def _check_command(line: str) -> None:
    words = shlex.split(line, comments=True)
    if not words:
        return
    if words[0].endswith("densecontrast") and len(words) > 1:
        from densecontrast import cli

        name = words[1]
        if name.startswith("-"):
            cli.build_parser().parse_args(words[1:])
            return
        if name not in cli.SUBCOMMANDS:
            raise AssertionError(f"{line!r}: densecontrast has no sub-command {name!r}")
        module = cli._load(name)
        if isinstance(module, str):
            raise AssertionError(module)
        parser = argparse.ArgumentParser(prog=f"densecontrast {name}", exit_on_error=False)
        module.add_arguments(parser)
        try:
            parser.parse_args(words[2:])
        except SystemExit as err:  # argparse exits even with exit_on_error=False for some errors
            raise AssertionError(f"{line!r}: the arguments do not parse") from err
        return
    script = next((w for w in words if w.endswith(".py")), None)
    if words[:3] in (["python", "-m", "pytest"], ["python3", "-m", "pytest"]):
        # options of pytest and its plugins, or of the project's conftest files
        files = (ROOT / "benchmarks" / "conftest.py", ROOT / "tests" / "conftest.py")
        sources = "".join(p.read_text() for p in files if p.exists())
        for word in words[3:]:
            path_like = "=" not in word and (word.endswith(".py") or "/" in word)
            if not word.startswith("-") and path_like and not (ROOT / word).exists():
                raise AssertionError(f"{line!r}: {word} does not exist")
        for option in _options(words):
            known = option.startswith("--benchmark") or option in (
                "--durations",
                "--doctest-modules",
                "--dist",  # pytest-xdist
            )
            if not known and f'"{option}"' not in sources:
                raise AssertionError(f"{line!r}: no conftest defines {option}")
        return
    if words[0] in ("python", "python3", ".venv/bin/python") and script is not None:
        path = ROOT / script
        if not path.exists():
            raise AssertionError(f"{line!r}: {script} does not exist")
        source = path.read_text()
        for option in _options(words):
            if f'"{option}"' not in source:
                raise AssertionError(f"{line!r}: {script} has no option {option}")
        return
    if words[0] == "nox" and "-s" in words:
        session = words[words.index("-s") + 1]
        if not re.search(rf"^def {re.escape(session)}\(", (ROOT / "noxfile.py").read_text(), re.M):
            raise AssertionError(f"{line!r}: noxfile.py has no session {session!r}")


def _evaluate_bash(example: Any) -> None:
    text = re.sub(r"\\\n\s*", " ", example.parsed)  # join continued lines
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"\s*&&\s*", line):
            _check_command(part)


if Sybil is not None:
    pytest_collect_file = Sybil(
        parsers=[
            PythonCodeBlockParser(),
            CodeBlockParser(language="bash", evaluator=_evaluate_bash),
            SkipParser(),
        ],
        patterns=["README.md", "docs/*.md"],
        path=str(ROOT),
        setup=_setup,
        teardown=_teardown,
    ).pytest()
