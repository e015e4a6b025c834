"""``densecontrast analyze``: tables, files written, comparison of several results, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _coco_cases import approx, make_gt, make_results, rect

from densecontrast.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools

G1, G2 = rect(0, 4, 0, 4), rect(5, 9, 5, 9)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """gt.json (two objects), base.json (G1 found, a bFP-heavy mask), dcl.json (both found)."""
    gt = make_gt([(1, G1, 0), (2, G2, 0)])
    paths = {"gt": tmp_path / "gt.json", "base": tmp_path / "base.json", "dcl": tmp_path / "dcl.json"}
    paths["gt"].write_text(json.dumps(gt))
    paths["base"].write_text(json.dumps(make_results([(1, rect(0, 4, 0, 6), 0.9)])))
    paths["dcl"].write_text(json.dumps(make_results([(1, G1, 0.9), (2, G2, 0.8)])))
    return {k: str(v) for k, v in paths.items()}


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_one_results_file(files, tmp_path, capsys) -> None:
    # G1 found with 8 bFP pixels (IoU 16/24: AP .4, AP50 1, AP75 0 for category 1), G2 missed: AP = .2.
    # Without G2 only category 1 counts: ΔAP_missed = .2, ΔAP50 = .5, ΔAP75 = 0.
    argv = ["analyze", files["gt"], files["base"], "--backend", "pycocotools", "--min-iou", "0.2",
            "--plot", str(tmp_path / "e.png"), "--json", str(tmp_path / "r.json"), "--per-category",
            "--sort-by", "total", "--plot-categories", str(tmp_path / "c.png")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["mask", "AP", "20.0"]
    rows = {line.split()[0]: line.split() for line in out if line.startswith("  ")}
    assert rows["missed"][1:] == ["20.0", "50.0", "0.0", "1"] and rows["bFP"][1] == "30.0"
    assert [line.split()[0] for line in out[out.index("") + 2 :]] == ["c2", "c1"]  # AP 0 before AP 40
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["delta"]["bFP"] == approx(0.3) and report["min_iou"] == 0.2
    assert report["detection"]["missed"] == approx(0.2)
    assert (tmp_path / "e.png").stat().st_size > 0 and (tmp_path / "c.png").stat().st_size > 0


def test_several_results_files_give_one_comparison(files, tmp_path, capsys) -> None:
    argv = ["analyze", files["gt"], files["base"], files["dcl"], "--names", "base,dcl", "--backend",
            "pycocotools", "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "p.png")]  # fmt: skip
    assert main(argv) == 0
    head, *rows = capsys.readouterr().out.strip().splitlines()
    assert head.split()[:2] == ["name", "AP"]
    assert [r.split()[:2] for r in rows] == [["base", "20.0"], ["dcl", "100.0"]]
    assert set(json.loads((tmp_path / "r.json").read_text())) == {"base", "dcl"}
    assert main(["analyze", files["gt"], files["base"], files["dcl"], "--names", "only-one"]) == 2
    assert "--names only-one: give 2 distinct" in _error_line(capsys)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", r"the results file is empty"),
        ("not json", r"the results file is not JSON \(Expecting value: line 1 column 1"),
        ('[{"image_id": 5}]', r"results\[0\]: missing field"),
        ('[{"image_id": 1, "category_id": 1, "score": 0.5, "bbox": [0, 0, 2, 2]}]', "box-only result"),
    ],
)
def test_bad_results_file_one_line_naming_the_file(files, tmp_path, capsys, content, expected) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["analyze", files["gt"], str(bad), "--backend", "pycocotools"]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"densecontrast analyze: error: {bad}: ")
    assert __import__("re").search(expected, line), line


def test_box_results_in_box_mode(files, tmp_path, capsys) -> None:
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [0, 0, 4, 4]}]))
    assert main(["analyze", files["gt"], str(boxes), "--iou-type", "bbox", "--backend", "pycocotools"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("box AP 50.0") and "fFP" not in out


@pytest.mark.parametrize("which", ["gt", "base"])
def test_json_never_overwrites_an_input(files, capsys, which) -> None:
    before = Path(files[which]).read_text()
    assert main(["analyze", files["gt"], files["base"], "--json", files[which]]) == 2
    assert "is one of the input files" in _error_line(capsys)
    assert Path(files[which]).read_text() == before


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_write_failure_is_one_line_exit_2(files, capsys) -> None:
    # /dev/full accepts the open and fails the write (no space left on device), for any user.
    assert (
        main(["analyze", files["gt"], files["base"], "--json", "/dev/full", "--backend", "pycocotools"]) == 2
    )
    assert (
        _error_line(capsys) == "densecontrast analyze: error: cannot write /dev/full: No space left on device"
    )


def test_degenerate_polygons_listed_and_skippable(files, tmp_path, capsys) -> None:
    gt = json.loads(Path(files["gt"]).read_text())
    gt["annotations"].append({"id": 9, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 3, 3]]})
    gt["annotations"].append({"id": 10, "image_id": 1, "category_id": 2,
                              "segmentation": [[1, 1, 3, 3, 5, 5]]})  # fmt: skip
    path = tmp_path / "gt_bad.json"
    path.write_text(json.dumps(gt))
    assert main(["analyze", str(path), files["dcl"], "--backend", "pycocotools"]) == 2
    line = _error_line(capsys)
    assert "2 degenerate ground-truth annotation(s)" in line and "--skip-degenerate" in line
    assert "(id 9): polygon 0 has fewer than 3 points" in line and "(id 10): the mask has zero area" in line
    assert main(["analyze", str(path), files["dcl"], "--backend", "pycocotools", "--skip-degenerate"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("skipped: ") == 2 and captured.out.split()[:3] == ["mask", "AP", "100.0"]
