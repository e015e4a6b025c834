"""The layers of docs/architecture.md, checked on the source: imports point down only, and never in a circle.

Every ``import`` and ``from ... import`` of every module is read with :mod:`ast` (also those inside
functions, which is where the optional extras are imported), so the check needs none of the extras.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "densecontrast"
CORE = {"sampling", "gather", "infonce", "projection", "loss", "taps", "_validation", "__init__"}
ENTRY = {"cli", "__main__", "demo"}
TOOLS = {"adapters", "data", "analysis"}
SHARED = {"_coco", "datasets"}  # _coco: below data and analysis; datasets: the data layer's first import path
ALLOWED = {  # unit -> the units it may import
    "core": {"core"},
    "_coco": set(),
    "datasets": {"data"},
    "adapters": {"core", "adapters"},
    "data": {"core", "data", "_coco"},
    "analysis": {"core", "analysis", "_coco"},
    "cli": {"core"} | ENTRY | TOOLS | SHARED,
    "__main__": {"cli"},
    "demo": {"core", "demo"} | TOOLS | SHARED,
}


def unit_of(module: str) -> str:
    """The layer unit of a dotted module name inside the package (``densecontrast.data.yolo`` -> ``data``)."""
    parts = module.split(".")
    first = parts[1] if len(parts) > 1 else "__init__"
    if first in CORE:
        return "core"
    return first


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, *, reexports: bool = True) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved).

    With ``reexports=False`` the imports inside a module-level ``__getattr__`` (a lazy re-export, like a
    package ``__init__``'s) are left out.
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped: set[int] = set()
    if not reexports:
        for top in tree.body:
            if isinstance(top, ast.FunctionDef) and top.name == "__getattr__":
                skipped.update(id(n) for n in ast.walk(top))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                found.add(target)
                if not node.module:  # from . import x: x may be a submodule, or a name
                    found.update(f"{target}.{alias.name}" for alias in node.names
                                 if f"{target}.{alias.name}" in NAMES)  # fmt: skip
            elif node.module:
                found.add(node.module)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))
NAMES = {module_name(p) for p in MODULES}


def test_every_module_is_in_a_layer():
    units = {unit_of(module_name(p)) for p in MODULES}
    assert units <= set(ALLOWED), (
        f"modules outside the layers of docs/architecture.md: {units - set(ALLOWED)}"
    )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_only(path):
    unit = unit_of(module_name(path))
    inside = {m for m in imports(path) if m == "densecontrast" or m.startswith("densecontrast.")}
    wrong = sorted(m for m in inside if m != "densecontrast" and unit_of(m) not in ALLOWED[unit])
    assert not wrong, f"{module_name(path)} ({unit}) imports {wrong}; it may import {sorted(ALLOWED[unit])}"


@pytest.mark.parametrize(
    "path", [p for p in MODULES if unit_of(module_name(p)) == "core"], ids=lambda p: p.name
)
def test_the_core_imports_torch_and_the_standard_library_only(path):
    outside = {
        m.split(".")[0]
        for m in imports(path)
        if not m.startswith("densecontrast") and m.split(".")[0] not in sys.stdlib_module_names
    }
    assert outside <= {"torch"}, f"{path.name} imports {sorted(outside)}"


def test_no_circle_between_modules():
    graph = {
        module_name(p): {m for m in imports(p, reexports=False) if m.startswith("densecontrast.")}
        for p in MODULES
    }
    graph = {k: {m for m in v if m in graph and m != k} for k, v in graph.items()}
    # a package's __init__ re-exporting its modules is not a circle with them
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                raise AssertionError(f"import circle: {' -> '.join([*trail, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
