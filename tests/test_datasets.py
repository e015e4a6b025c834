"""Tests of densecontrast.datasets (the first import path of the data layer) and of the data layer's
place in the package: it imports no layer above or beside it, and its modules import each other
without a circle."""

from __future__ import annotations

import ast
import pathlib
import sys

import densecontrast.data
import densecontrast.datasets

PACKAGE = pathlib.Path(densecontrast.data.__file__).resolve().parents[1]  # src/densecontrast
DATA_MODULES = [*sorted((PACKAGE / "data").glob("*.py")), PACKAGE / "_coco.py"]
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def test_the_first_import_path_gives_the_same_objects() -> None:
    from densecontrast.datasets import MIN_VISIBLE_AREA, SyntheticInstances, collate_detection, export_yolo

    assert SyntheticInstances is densecontrast.data.SyntheticInstances
    assert collate_detection is densecontrast.data.collate_detection
    assert export_yolo is densecontrast.data.export_yolo
    assert MIN_VISIBLE_AREA == densecontrast.data.MIN_VISIBLE_AREA == 20
    assert set(densecontrast.datasets.__all__) <= set(densecontrast.data.__all__)
    assert all(hasattr(densecontrast.datasets, name) for name in densecontrast.datasets.__all__)


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> tuple[set[str], set[str]]:
    """The modules ``path`` imports anywhere, and those it imports at module level (absolute names)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    anywhere: set[str] = set()
    top: set[str] = set()
    for node in ast.walk(tree):
        found: list[str] = []
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found = [base] + [f"{base}.{alias.name}" for alias in node.names]
        anywhere.update(found)
        if node in tree.body:
            top.update(found)
    return anywhere, top


def test_the_data_layer_imports_nothing_above_or_beside_it() -> None:
    """Not the analysis, adapters, demo or CLI, nor the old path; at module level torch and the standard
    library only (numpy, pycocotools, cv2, PIL and ultralytics are imported inside the functions)."""
    forbidden = (
        "densecontrast.analysis",
        "densecontrast.adapters",
        "densecontrast.demo",
        "densecontrast.cli",
    )
    for path in DATA_MODULES:
        anywhere, top = _imports(path)
        assert not [m for m in anywhere if m.startswith(forbidden) or m == "densecontrast.datasets"], path
        third_party = {m.split(".")[0] for m in top} - STDLIB - {"densecontrast", "torch"}
        assert third_party == set(), (path, third_party)


def test_the_data_modules_import_each_other_without_a_circle() -> None:
    modules = {_module_name(path): _imports(path)[0] for path in DATA_MODULES}
    edges = {name: {m for m in imported if m in modules and m != name} for name, imported in modules.items()}
    edges["densecontrast.data"] = set()  # the package's __init__ only gathers the names
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import circle: {' -> '.join([*path, name])}"
        if name not in done:
            for other in edges[name]:
                visit(other, (*path, name))
            done.add(name)

    for name in modules:
        visit(name, ())
    assert "densecontrast.data.yolo" in edges["densecontrast.data.synthetic"]  # the check sees imports
