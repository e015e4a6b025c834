from __future__ import annotations

import subprocess
import sys

import pytest

from densecontrast import __version__
from densecontrast.cli import main

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "analyze" in out


def test_version() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0


def test_unknown_command_fails() -> None:
    with pytest.raises(SystemExit) as info:
        main(["train"])
    assert info.value.code == 2


def test_python_dash_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "densecontrast", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and __version__ in done.stdout
