"""Tests of densecontrast.datasets (the first import path of the data layer) and of the data layer's
place in the package: it imports neither upwards nor the analysis."""

from __future__ import annotations

import subprocess
import sys

import densecontrast.data
import densecontrast.datasets


def test_the_first_import_path_gives_the_same_objects() -> None:
    from densecontrast.datasets import MIN_VISIBLE_AREA, SyntheticInstances, collate_detection, export_yolo

    assert SyntheticInstances is densecontrast.data.SyntheticInstances
    assert collate_detection is densecontrast.data.collate_detection
    assert export_yolo is densecontrast.data.export_yolo
    assert MIN_VISIBLE_AREA == densecontrast.data.MIN_VISIBLE_AREA == 20
    assert set(densecontrast.datasets.__all__) <= set(densecontrast.data.__all__)
    assert all(hasattr(densecontrast.datasets, name) for name in densecontrast.datasets.__all__)


def _loaded_by(statement: str) -> set[str]:
    """The densecontrast and optional-dependency modules that ``statement`` loads, in a fresh process."""
    code = (
        "import sys, torch\n"
        "before = set(sys.modules)\n"
        f"{statement}\n"
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_the_data_layer_imports_torch_only_and_never_the_analysis() -> None:
    """Importing the whole data layer (the old path imports the package, which imports every module,
    ``densecontrast._coco`` included) loads no optional dependency and no layer above or beside it."""
    loaded = _loaded_by("import densecontrast.datasets")
    assert {"densecontrast.data.yolo", "densecontrast.data.coco", "densecontrast._coco"} <= loaded
    assert not {
        m for m in loaded if m.split(".")[0] in ("pycocotools", "cv2", "ultralytics", "PIL", "matplotlib")
    }
    assert not {m for m in loaded if m.startswith(("densecontrast.analysis", "densecontrast.adapters"))}
    assert not {m for m in loaded if m.startswith(("densecontrast.demo", "densecontrast.cli"))}
