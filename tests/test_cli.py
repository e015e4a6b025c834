"""Tests of the ``densecontrast`` command line: help, version, output paths and missing extras."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from densecontrast import __version__
from densecontrast.cli import main


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


@pytest.mark.slow
def test_python_dash_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "densecontrast", "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and __version__ in done.stdout


# --- analyze: output paths are checked before any work ----------------------------------------------


def _write_inputs(folder: Path, num_images: int = 1) -> tuple[str, str]:
    """A 10 x 10 ground truth (one square in image 1, ``num_images`` images) and one matching result."""
    square = [[2.0, 2.0, 7.0, 2.0, 7.0, 7.0, 2.0, 7.0]]
    gt = {
        "images": [{"id": i, "height": 10, "width": 10} for i in range(1, num_images + 1)],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": square}],
    }
    result = {
        "image_id": 1,
        "category_id": 1,
        "score": 0.9,
        "segmentation": {"size": [10, 10], "counts": [22, 5, 5, 5, 5, 5, 5, 5, 5, 5, 33]},
    }
    (folder / f"gt{num_images}.json").write_text(json.dumps(gt))
    (folder / "res.json").write_text(json.dumps([result]))
    return str(folder / f"gt{num_images}.json"), str(folder / "res.json")


@pytest.mark.parametrize(
    ("option", "name", "expected"),
    [
        ("--plot", "missing/e.png", r"--plot .*missing/e.png: the folder .*missing' does not exist"),
        ("--json", "missing/r.json", r"--json .*missing/r.json: the folder .*missing' does not exist"),
        ("--plot", "e.xyz", r"--plot .*e.xyz: the extension must be one of .*png.*; got '.xyz'"),
        ("--plot", "e", r"--plot .*e: the extension must be one of .*; got 'none'"),
        ("--plot", "folder", r"--plot .*folder: is a folder; give a file name"),
        ("--json", "folder", r"--json .*folder: is a folder; give a file name"),
    ],
)
def test_analyze_checks_output_paths_first(
    option: str, name: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    pytest.importorskip("pycocotools")
    pytest.importorskip("matplotlib")
    from densecontrast.analysis import _analyze

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the analysis ran before the output paths were checked")

    monkeypatch.setattr(_analyze, "analyze", no_work)
    (tmp_path / "folder").mkdir()
    gt, res = _write_inputs(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main(["analyze", gt, res, "--backend", "pycocotools", option, str(tmp_path / name)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = captured.err.strip()
    assert "\n" not in line and re.match(r"densecontrast analyze: error: " + expected + "$", line), line
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


# --- missing extras: one line, exit 2, before any work ----------------------------------------------

_HIDING = """
import contextlib, importlib, io, json, sys
from densecontrast.cli import main

def cli(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
        except Exception as exc:
            code = repr(exc)
    return [code, err.getvalue()]

def import_analysis():
    for name in [m for m in sys.modules if m.startswith("densecontrast.analysis")]:
        del sys.modules[name]
    try:
        importlib.import_module("densecontrast.analysis")
        return "imported"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"

hidden_modules, demo_out, gt, gt200, res, folder = json.loads(sys.argv[1])
out = {}
for hidden in hidden_modules:
    saved = sys.modules.get(hidden)
    sys.modules[hidden] = None  # "import hidden" now raises ModuleNotFoundError
    ref = ["--backend", "pycocotools"]
    out[hidden] = {
        "import": import_analysis(),
        "analyze": cli(["analyze", gt, res, *ref, "--json", f"{folder}/{hidden}-a.json"]),
        "plot": cli(["analyze", gt, res, *ref, "--plot", f"{folder}/{hidden}-p.png",
                     "--json", f"{folder}/{hidden}-p.json"]),
        "progress": cli(["analyze", gt200, res, *ref, "--json", f"{folder}/{hidden}-t.json"]),
        "no_progress": cli(["analyze", gt200, res, *ref, "--no-progress"]),
        "fast": cli(["analyze", gt, res, "--backend", "faster-coco-eval",
                     "--json", f"{folder}/{hidden}-f.json"]),
    }
    if hidden != "faster_coco_eval":  # the demo needs all the others
        out[hidden]["demo"] = cli(["demo", "--steps", "1", "--train-images", "1", "--val-images", "1",
                                   "--image-size", "32", "--no-progress", "--out", demo_out])
    if saved is None:
        del sys.modules[hidden]
    else:
        sys.modules[hidden] = saved
    import_analysis()
print(json.dumps(out))
"""
_HIDDEN = ("numpy", "pycocotools", "torchvision", "matplotlib", "tqdm", "faster_coco_eval")


@pytest.fixture(scope="module")
def hidden_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """Every CLI case run once per hidden module, in one fresh interpreter with a timeout."""
    for name in _HIDDEN:
        pytest.importorskip(name)
    folder = tmp_path_factory.mktemp("hidden")
    gt, res = _write_inputs(folder)
    gt200, _ = _write_inputs(folder, num_images=200)
    argv = json.dumps([list(_HIDDEN), str(folder / "demo"), gt, gt200, res, str(folder)])
    done = subprocess.run([sys.executable, "-c", _HIDING, argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1]), folder


def _one_line_exit_2(case: list, extra: str) -> None:
    code, err = case
    assert code == 2, case
    assert err.count("\n") == 1 and err.rstrip().endswith(f"pip install 'densecontrast[{extra}]'"), err


@pytest.mark.slow
@pytest.mark.parametrize("hidden", ["numpy", "pycocotools"])
def test_analysis_needs_numpy_and_pycocotools(hidden_runs: tuple[dict, Path], hidden: str) -> None:
    runs, _ = hidden_runs
    assert runs[hidden]["import"] == (
        f"ImportError: densecontrast.analysis needs numpy and pycocotools ({hidden!r} is missing): "
        "pip install 'densecontrast[analysis]'"
    )
    for case in ("analyze", "plot", "progress", "fast"):
        _one_line_exit_2(runs[hidden][case], "analysis")


@pytest.mark.slow
@pytest.mark.parametrize("hidden", ["numpy", "pycocotools", "torchvision", "matplotlib", "tqdm"])
def test_missing_extra_stops_the_demo_before_work(hidden_runs: tuple[dict, Path], hidden: str) -> None:
    runs, folder = hidden_runs
    _one_line_exit_2(runs[hidden]["demo"], "demo")
    assert f"needs {hidden!r}" in runs[hidden]["demo"][1]
    assert not (folder / "demo").exists()


@pytest.mark.slow
def test_analyze_plot_needs_matplotlib(hidden_runs: tuple[dict, Path]) -> None:
    runs, folder = hidden_runs
    _one_line_exit_2(runs["matplotlib"]["plot"], "analysis")
    assert "--plot needs 'matplotlib'" in runs["matplotlib"]["plot"][1]
    assert not (folder / "matplotlib-p.json").exists()  # stopped before the analysis
    assert runs["matplotlib"]["analyze"][0] == 0  # without --plot, matplotlib is not needed


@pytest.mark.slow
def test_analyze_progress_bar_needs_tqdm(hidden_runs: tuple[dict, Path]) -> None:
    runs, folder = hidden_runs
    _one_line_exit_2(runs["tqdm"]["progress"], "analysis")
    assert "200 images" in runs["tqdm"]["progress"][1]
    assert not (folder / "tqdm-t.json").exists()
    assert runs["tqdm"]["no_progress"][0] == 0
    assert runs["tqdm"]["analyze"][0] == 0  # one image: no progress bar


@pytest.mark.slow
def test_fast_backend_needs_faster_coco_eval(hidden_runs: tuple[dict, Path]) -> None:
    runs, folder = hidden_runs
    _one_line_exit_2(runs["faster_coco_eval"]["fast"], "fast")
    assert not (folder / "faster_coco_eval-f.json").exists()
    assert runs["faster_coco_eval"]["analyze"][0] == 0  # the reference backend still works
    assert runs["faster_coco_eval"]["import"] == "imported"
