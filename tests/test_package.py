from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import densecontrast

OPTIONAL = ("torchvision", "pycocotools", "faster_coco_eval", "matplotlib", "tqdm", "scipy")


@pytest.mark.slow  # a fresh interpreter; tests/test_architecture.py checks the same imports statically
def test_core_imports_torch_only() -> None:
    # Compared with what torch alone loads (torch itself imports tqdm when it is installed).
    code = (
        "import sys, torch\n"
        "before = set(sys.modules)\n"
        "import densecontrast\n"
        "from densecontrast import DenseContrastiveLoss, FeatureTap\n"
        f"print(','.join(m for m in {OPTIONAL!r} if m in sys.modules and m not in before))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_public_names_exist() -> None:
    for name in densecontrast.__all__:
        assert hasattr(densecontrast, name), name


def test_version_matches_pyproject() -> None:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if not pyproject.exists():  # installed without the source tree
        return
    assert f'version = "{densecontrast.__version__}"' in pyproject.read_text()


def test_ships_type_information() -> None:
    assert (Path(densecontrast.__file__).parent / "py.typed").exists()


def test_api_page_and_all_agree() -> None:
    """docs/api.md documents exactly the top-level names of __all__ (and nothing else from the top level)."""
    api = Path(__file__).resolve().parents[1] / "docs" / "api.md"
    if not api.exists():  # installed without the source tree
        return
    documented = {
        line.split("::: densecontrast.", 1)[1].strip()
        for line in api.read_text().splitlines()
        if line.startswith("::: densecontrast.") and "." not in line.split("::: densecontrast.", 1)[1]
    }
    assert documented == set(densecontrast.__all__) - {"__version__"}
