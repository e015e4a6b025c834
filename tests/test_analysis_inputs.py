"""Validation of ground truth and results: every bad entry or file is named in one ValueError."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from _coco_cases import BACKENDS, make_gt, make_results, rect, rle
from pycocotools import mask as mask_utils

from densecontrast.analysis import analyze

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


def _bad_cases() -> list[tuple[str, dict, list, str]]:
    g = rect(2, 6, 2, 6)
    gt = make_gt([(1, g, 0)])
    ok = make_results([(1, g, 0.9)])[0]
    small = {"size": [5, 5], "counts": rle(np.ones((5, 5), bool))["counts"]}
    gt_id0 = copy.deepcopy(gt)
    gt_id0["annotations"][0]["id"] = 0
    gt_dup = copy.deepcopy(gt)
    gt_dup["annotations"].append(dict(gt_dup["annotations"][0]))
    gt_size = copy.deepcopy(gt)
    gt_size["annotations"][0]["segmentation"] = small
    gt_img = copy.deepcopy(gt)
    gt_img["annotations"][0]["image_id"] = 9
    gt_noimg = copy.deepcopy(gt)
    del gt_noimg["images"][0]["height"]
    gt_nocats = {k: v for k, v in gt.items() if k != "categories"}
    return [
        ("unknown image", gt, [ok, {**ok, "image_id": 2}], r"results\[1\].*image_id 2"),
        ("unknown category", gt, [{**ok, "category_id": 7}], r"results\[0\].*category_id 7"),
        ("missing score", gt, [{k: v for k, v in ok.items() if k != "score"}], r"results\[0\].*score"),
        ("missing segmentation", gt, [{k: v for k, v in ok.items() if k != "segmentation"}], "segmentation"),
        ("nan score", gt, [{**ok, "score": float("nan")}], r"results\[0\].*score"),
        ("result mask size", gt, [{**ok, "segmentation": small}], r"results\[0\].*mask size \[5, 5\]"),
        ("annotation id 0", gt_id0, [ok], r"gt\['annotations'\]\[0\].*id 0"),
        ("duplicate annotation id", gt_dup, [ok], r"gt\['annotations'\]\[1\].*duplicate"),
        ("gt mask size", gt_size, [ok], r"gt\['annotations'\]\[0\].*mask size"),
        ("gt unknown image", gt_img, [ok], r"gt\['annotations'\]\[0\].*image_id 9"),
        ("image without height", gt_noimg, [ok], r"gt\['images'\]\[0\].*height"),
        ("no categories", gt_nocats, [ok], "categories"),
    ]


@pytest.mark.parametrize(
    ("gt", "results", "match"), [c[1:] for c in _bad_cases()], ids=[c[0] for c in _bad_cases()]
)
def test_invalid_inputs_raise(gt, results, match) -> None:
    with pytest.raises(ValueError, match=match):
        analyze(gt, results, backend="pycocotools")


_ISOLATED = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a runaway rasteriser fails instead of swapping
from densecontrast.analysis import analyze
for name, gt, results, backend in json.load(open(sys.argv[1])):
    try:
        analyze(gt, results, backend=backend)
        print(json.dumps([name, backend, "no error"]), flush=True)
    except Exception as err:
        print(json.dumps([name, backend, f"{type(err).__name__}: {err}"]), flush=True)
"""


def _analyze_isolated(cases: dict[str, tuple[dict, list, str]], tmp_path) -> dict[tuple[str, str], str]:
    """Run analyze on each case (name -> (gt, results, expected regex)) with both backends in a fresh
    interpreter with a timeout and a memory limit: inputs that used to hang fail the test, not the machine.

    Returns:
        (name, backend) -> "ExceptionType: message" (or "no error").
    """
    path = tmp_path / "cases.json"
    path.write_text(
        json.dumps([[name, gt, res, b] for name, (gt, res, _) in cases.items() for b in BACKENDS])
    )
    done = subprocess.run(
        [sys.executable, "-c", _ISOLATED, str(path)], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {(name, b): out for name, b, out in map(json.loads, done.stdout.splitlines())}


def _two_images_gt(segmentation: object) -> dict:
    """Image 1 (10 x 10) and image 2 (12 x 12); annotation id 7 in image 1 with ``segmentation``."""
    return {
        "images": [{"id": 1, "height": 10, "width": 10}, {"id": 2, "height": 12, "width": 12}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "segmentation": segmentation}],
    }


@pytest.mark.slow
def test_bad_polygons_and_rles_raise_naming_the_entry(tmp_path) -> None:
    """Non-finite or absurd polygon coordinates and RLEs whose counts do not sum to H * W (or are not a
    valid coding) raise a ValueError naming the entry, with both backends, before anything hangs."""
    square = [2.0, 2.0, 7.0, 2.0, 7.0, 7.0, 2.0, 7.0]
    gt = _two_images_gt([square])
    ok = {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": rle(rect(2, 7, 2, 7))}

    def compressed(runs: list[int], size: tuple[int, int] = (10, 10)) -> dict:
        r = mask_utils.frPyObjects({"size": list(size), "counts": runs}, *size)
        return {"size": list(size), "counts": r["counts"].decode("ascii")}

    def result(segmentation: dict, image_id: int = 1) -> list[dict]:
        return [ok, {**ok, "image_id": image_id, "segmentation": segmentation}]

    gt_ann = r"gt\['annotations'\]\[0\] \(id 7\): .*"
    res1 = r"results\[1\] \(image_id 1\): .*"
    long_runs, short_runs = [22, 4, 6, 4, 6, 4, 6, 4, 44, 100], [22, 4, 6, 4]
    sum_200, sum_36 = r"counts sum to 200, expected H \* W = 10 \* 10 = 100", "counts sum to 36"
    cases: dict[str, tuple[dict, list, str]] = {}
    for bad in (math.nan, math.inf, -math.inf, 1e30, -1e30, 31.0):
        poly = [*square[:4], bad, *square[5:]]  # the third point's x
        cases[f"polygon x={bad}"] = (
            _two_images_gt([poly]),
            [ok],
            gt_ann + re.escape(f"polygon 0 has x = {bad!r} at point 2"),
        )
    cases["polygon text"] = (
        _two_images_gt([[*square[:7], "7"], square]),
        [ok],
        gt_ann + "polygon 0 must hold numbers only",
    )
    cases["second polygon nan"] = (
        _two_images_gt([square, [*square[:7], math.nan]]),
        [ok],
        gt_ann + "polygon 1",
    )
    cases |= {
        "result sums past H*W": (gt, result({"size": [10, 10], "counts": long_runs}), res1 + sum_200),
        "result sums past H*W, compressed": (gt, result(compressed(long_runs)), res1 + sum_200),
        "result sums short": (gt, result({"size": [10, 10], "counts": short_runs}), res1 + sum_36),
        "result sums short, compressed": (gt, result(compressed(short_runs)), res1 + sum_36),
        "result negative count": (gt, result({"size": [10, 10], "counts": [50, -5, 55]}), res1 + ">= 0"),
        "result float counts": (gt, result({"size": [10, 10], "counts": [50.0, 50.0]}), res1 + "integers"),
        "result relabelled to another image's size": (
            gt,
            result({**compressed([22, 4, 74]), "size": [12, 12]}, image_id=2),
            r"results\[1\] \(image_id 2\): the RLE counts sum to 100, expected H \* W = 12 \* 12 = 144",
        ),
        "result corrupt string": (gt, result({"size": [10, 10], "counts": "\x01\x02zz~~"}), res1 + "corrupt"),
        "result unfinished string": (gt, result({"size": [10, 10], "counts": "0P"}), res1 + "corrupt"),
        "result non-ascii string": (gt, result({"size": [10, 10], "counts": "Ü2"}), res1 + "corrupt"),
        "result bad size": (gt, result({"size": [10, "10"], "counts": "22"}), res1 + "'size' must be"),
        "gt sums past H*W": (_two_images_gt(compressed(long_runs)), [ok], gt_ann + sum_200),
        "gt sums short": (_two_images_gt({"size": [10, 10], "counts": short_runs}), [ok], gt_ann + sum_36),
        "gt corrupt string": (_two_images_gt({"size": [10, 10], "counts": "~~"}), [ok], gt_ann + "corrupt"),
    }
    got = _analyze_isolated(cases, tmp_path)
    for name, (_, _, expected) in cases.items():
        for b in BACKENDS:
            assert re.match("ValueError: " + expected, got[name, b]), (name, b, got[name, b])


# ---------------------------------------------------------------- result formats of the common tools


def _square_gt() -> dict:
    return make_gt([(1, rect(2, 6, 2, 6), 0), (2, rect(6, 9, 1, 9), 0)])


def test_polygon_and_rle_results_give_the_same_report() -> None:
    # The polygon of a 4 x 4 square at pixel (2, 2) traces pixel edges; pycocotools rasterises it to the
    # same 16 pixels as the RLE.
    gt = _square_gt()
    as_rle = make_results([(1, rect(2, 6, 2, 6), 0.9)])
    as_poly = [{**as_rle[0], "segmentation": [[2.0, 2.0, 5.75, 2.0, 5.75, 5.75, 2.0, 5.75]]}]
    a = analyze(gt, as_rle, backend="pycocotools")
    b = analyze(gt, as_poly, backend="pycocotools")
    assert a.to_dict() == b.to_dict() and a.ap == pytest.approx(0.5)


def test_tool_outputs_are_accepted() -> None:
    """detectron2/MMDetection (RLE with str counts and a bbox), Ultralytics save_json (the same keys with
    rounded floats), and a bbox-only file in box mode."""
    gt = _square_gt()
    mask = rect(2, 6, 2, 6)
    seg = rle(mask)
    detectron2 = [
        {"image_id": 1, "category_id": 1, "bbox": [2.0, 2.0, 4.0, 4.0], "score": 0.98, "segmentation": seg}
    ]
    ultralytics = [{"image_id": 1, "category_id": 1, "bbox": [2.0, 2.0, 4.0, 4.0], "score": 0.98765,
                    "segmentation": {"size": [10, 10], "counts": seg["counts"]}}]  # fmt: skip
    boxes_only = [{k: v for k, v in detectron2[0].items() if k != "segmentation"}]
    for results, iou_type in (
        (detectron2, "segm"),
        (ultralytics, "segm"),
        (detectron2, "bbox"),
        (boxes_only, "bbox"),
    ):
        rep = analyze(gt, results, backend="pycocotools", iou_type=iou_type)
        assert rep.ap == pytest.approx(0.5) and rep.detection["missed"] == pytest.approx(0.5), (
            results,
            iou_type,
        )
    with pytest.raises(ValueError, match=r"results\[0\]: a box-only result .* iou_type='bbox'"):
        analyze(gt, boxes_only)


def test_box_mode_takes_the_masks_box_when_there_is_none() -> None:
    gt = _square_gt()
    res = make_results([(1, rect(2, 6, 2, 6), 0.9)])  # no 'bbox'
    assert analyze(gt, res, backend="pycocotools", iou_type="bbox").ap == pytest.approx(0.5)


def test_box_mode_ground_truth_may_be_boxes_only() -> None:
    gt = _square_gt()
    for a in gt["annotations"]:
        del a["segmentation"]
    res = [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [2, 2, 4, 4]}]
    assert analyze(gt, res, backend="pycocotools", iou_type="bbox").ap == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"gt\['annotations'\]\[0\]: missing field.*segmentation"):
        analyze(gt, res)


@pytest.mark.parametrize(
    ("bbox", "match"),
    [([1, 2, 3], r"'bbox' must be \[x, y, width, height\]"),
     ([0, 0, -1, 2], "'bbox' width and height must be >= 0"),
     ([0, 0, float("nan"), 2], "'bbox' must be a finite number")],
)  # fmt: skip
def test_bad_boxes_name_the_entry(bbox, match) -> None:
    res = [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": bbox}]
    with pytest.raises(ValueError, match=r"results\[0\] \(image_id 1\): " + match):
        analyze(_square_gt(), res, iou_type="bbox")


def test_degenerate_ground_truth_is_reported_per_entry() -> None:
    gt = _square_gt()
    gt["annotations"].append({"id": 5, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 3, 3]]})
    gt["annotations"].append(
        {"id": 6, "image_id": 1, "category_id": 2, "segmentation": {"size": [10, 10], "counts": [100]}}
    )
    res = make_results([(1, rect(2, 6, 2, 6), 0.9), (2, rect(6, 9, 1, 9), 0.8)])
    expected = (
        r"^2 degenerate ground-truth annotation\(s\): gt\['annotations'\]\[2\] \(id 5\): polygon 0 has fewer "
        r"than 3 points; gt\['annotations'\]\[3\] \(id 6\): the mask has zero area"
    )
    with pytest.raises(ValueError, match=expected):
        analyze(gt, res)
    rep = analyze(gt, res, skip_degenerate=True, backend="pycocotools")
    assert rep.ap == pytest.approx(1.0) and len(rep.skipped) == 2 and rep.per_category[1].num_gt == 1


def test_unreadable_files_name_the_file(tmp_path) -> None:
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(_square_gt()))
    empty, broken = tmp_path / "empty.json", tmp_path / "broken.json"
    empty.write_text("  \n")
    broken.write_text('[{"image_id": 1,')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(empty))}: the results file is empty$"):
        analyze(gt, empty)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(broken))}: the results file is not JSON"):
        analyze(gt, broken)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(empty))}: the gt file is empty$"):
        analyze(empty, [])
    entry = tmp_path / "entry.json"
    entry.write_text(
        json.dumps([{"image_id": 1, "category_id": 9, "score": 1, "segmentation": rle(rect(0, 1, 0, 1))}])
    )
    with pytest.raises(ValueError, match=rf"^{re.escape(str(entry))}: results\[0\]: category_id 9 is not in"):
        analyze(gt, entry)
