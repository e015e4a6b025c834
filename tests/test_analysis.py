"""Tests of densecontrast.analysis: hand-derived ΔAP cases, pixel invariants, backends, validation, CLI."""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pycocotools import mask as mask_utils

from densecontrast.analysis import (
    analyze,
    coco_from_targets,
    compare_table,
    evaluate_segm_ap,
    plot_comparison,
    results_from_outputs,
)
from densecontrast.analysis import cli as analysis_cli
from densecontrast.analysis._analyze import _corrections
from densecontrast.analysis._backend import Evaluator, ap_triple
from densecontrast.analysis._errors import image_errors
from densecontrast.analysis._inputs import prepare
from densecontrast.analysis._rle import _decode, check_compressed, complement
from densecontrast.analysis._rle import counts as rle_counts
from _synthetic_coco import synthetic_coco

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools

BACKENDS = ["pycocotools", "faster-coco-eval"]
# COCO thresholds .50:.05:.95 and recall thresholds 0:.01:1 (101 points).
H = W = 10


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}


def rect(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def make_gt(objects: list[tuple[int, np.ndarray, int]], num_categories: int = 2) -> dict:
    """objects: (category_id, mask, iscrowd), all in image 1 of size H x W."""
    return {
        "images": [{"id": 1, "height": H, "width": W}],
        "categories": [{"id": c, "name": f"c{c}"} for c in range(1, num_categories + 1)],
        "annotations": [
            {"id": k + 1, "image_id": 1, "category_id": c, "segmentation": rle(m), "area": float(m.sum()),
             "iscrowd": crowd}
            for k, (c, m, crowd) in enumerate(objects)
        ],
    }  # fmt: skip


def make_results(preds: list[tuple[int, np.ndarray, float]]) -> list[dict]:
    return [{"image_id": 1, "category_id": c, "segmentation": rle(m), "score": s} for c, m, s in preds]


def approx(x: float) -> object:
    return pytest.approx(x, abs=1e-9)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


# ---------------------------------------------------------------- hand-derived cases


def test_bfp_only(backend: str) -> None:
    # G: 4x4 = 16 px; D = G + 8 background px, IoU 16/24 = .667: a hit at .50-.65 (4 of 10 thresholds).
    g = rect(2, 6, 2, 6)
    rep = analyze(make_gt([(1, g, 0)]), make_results([(1, rect(2, 6, 2, 8), 0.9)]), backend=backend)
    assert (rep.ap, rep.ap50, rep.ap75) == (approx(0.4), approx(1.0), approx(0.0))
    assert rep.pixels == {"fFP": 0, "bFP": 8, "FN": 0}
    assert rep.delta == {"fFP": approx(0.0), "bFP": approx(0.6), "FN": approx(0.0)}
    assert rep.delta50 == {"fFP": approx(0.0), "bFP": approx(0.0), "FN": approx(0.0)}
    assert rep.delta75["bFP"] == approx(1.0)
    assert rep.ap_upper == approx(1.0)
    assert rep.pixel_shares == {"fFP": 0.0, "bFP": 1.0, "FN": 0.0}
    assert (rep.num_matched, rep.num_unmatched) == (1, 0)


def test_fn_only(backend: str) -> None:
    # D = 13 of G's 16 px: IoU .8125, a hit at .50-.80 (7 thresholds); 3 FN pixels.
    g = rect(2, 6, 2, 6)
    d = rect(2, 6, 2, 5)
    d[2, 5] = True
    rep = analyze(make_gt([(1, g, 0)]), make_results([(1, d, 0.9)]), backend=backend)
    assert (rep.ap, rep.ap50, rep.ap75) == (approx(0.7), approx(1.0), approx(1.0))
    assert rep.pixels == {"fFP": 0, "bFP": 0, "FN": 3}
    assert rep.delta == {"fFP": approx(0.0), "bFP": approx(0.0), "FN": approx(0.3)}
    assert rep.ap_upper == approx(1.0)


def test_ffp_two_categories(backend: str) -> None:
    # A (cat 1) above B (cat 2); the cat-1 prediction spills 8 px into B: fFP, although B is another class.
    a, b = rect(1, 5, 1, 5), rect(5, 9, 1, 5)
    gt = make_gt([(1, a, 0), (2, b, 0)])
    rep = analyze(gt, make_results([(1, rect(1, 7, 1, 5), 0.9), (2, b, 0.8)]), backend=backend)
    assert rep.pixels == {"fFP": 8, "bFP": 0, "FN": 0}
    assert rep.ap == approx((0.4 + 1.0) / 2)
    assert rep.delta == {"fFP": approx(0.3), "bFP": approx(0.0), "FN": approx(0.0)}
    cat1, cat2 = rep.per_category[1], rep.per_category[2]
    assert (cat1.ap, cat1.delta["fFP"], cat1.pixels["fFP"], cat1.num_gt) == (approx(0.4), approx(0.6), 8, 1)
    assert (cat2.ap, cat2.delta["fFP"], cat2.pixels["fFP"]) == (approx(1.0), approx(0.0), 0)


def test_correcting_ffp_can_lower_ap(backend: str) -> None:
    # Two touching objects of one class. D0 = G1 (score 1); D covers G1 and G2 (IoU .5 with both, the tie
    # goes to G1). COCOeval credits D with G2 at .50; removing D's fFP pixels (all of G2) leaves a duplicate
    # of G1.
    g1, g2 = rect(0, 4, 0, 10), rect(4, 8, 0, 10)
    gt = make_gt([(1, g1, 0), (1, g2, 0)], num_categories=1)
    rep = analyze(gt, make_results([(1, g1, 1.0), (1, rect(0, 8, 0, 10), 0.9)]), backend=backend)
    half = 51 / 101  # precision 1 up to recall .5, then 0
    assert rep.ap == approx((1 + 9 * half) / 10)
    assert rep.pixels == {"fFP": 40, "bFP": 0, "FN": 0}
    assert rep.delta["fFP"] == approx(-50 / 1010)
    assert rep.delta["fFP"] < 0
    assert rep.delta50["fFP"] == approx(half - 1)


def test_unmatched_prediction_left_unchanged(backend: str) -> None:
    # U (score .95) touches G with 1 px of its 12 (IoU 1/27 < .1): unmatched, an FP in every run.
    g = rect(2, 6, 2, 6)
    u = rect(5, 8, 5, 9)  # 12 px, (5, 5) inside G
    rep = analyze(
        make_gt([(1, g, 0)]), make_results([(1, rect(2, 6, 2, 8), 0.9), (1, u, 0.95)]), backend=backend
    )
    assert (rep.num_matched, rep.num_unmatched) == (1, 1)
    assert rep.pixels == {"fFP": 0, "bFP": 8, "FN": 0}
    assert rep.ap == approx(4 * 0.5 / 10)  # U ranks first: precision .5 where D hits
    assert rep.delta["bFP"] == approx(0.5 - 0.2)
    assert rep.ap_upper == approx(0.5)  # U was not turned into G


def test_perfect_predictions(backend: str) -> None:
    a, b = rect(1, 5, 1, 5), rect(5, 9, 3, 9)
    gt = make_gt([(1, a, 0), (2, b, 0)])
    rep = analyze(gt, make_results([(1, a, 0.9), (2, b, 0.8)]), backend=backend)
    assert (rep.ap, rep.ap50, rep.ap75, rep.ap_upper) == (approx(1.0),) * 4
    assert all(v == approx(0.0) for v in rep.delta.values())
    assert rep.pixels == {"fFP": 0, "bFP": 0, "FN": 0}
    assert all(math.isnan(v) for v in rep.pixel_shares.values())


def test_crowd_pixels_are_dont_care(backend: str) -> None:
    g, crowd = rect(2, 6, 2, 6), rect(2, 6, 6, 9)
    d = rect(2, 6, 2, 8)  # G plus 8 crowd pixels
    rep = analyze(make_gt([(1, g, 0), (1, crowd, 1)]), make_results([(1, d, 0.9)]), backend=backend)
    assert rep.pixels == {"fFP": 0, "bFP": 0, "FN": 0}
    assert rep.ap == approx(0.4)
    assert all(v == approx(0.0) for v in rep.delta.values())
    assert rep.per_category[1].num_gt == 1


def test_empty_results(backend: str) -> None:
    gt = make_gt([(1, rect(2, 6, 2, 6), 0)])
    rep = analyze(gt, [], backend=backend)
    assert (rep.ap, rep.ap50, rep.ap75, rep.ap_upper) == (0.0, 0.0, 0.0, 0.0)
    assert rep.delta == {"fFP": 0.0, "bFP": 0.0, "FN": 0.0}
    assert (rep.num_matched, rep.num_unmatched) == (0, 0)
    assert evaluate_segm_ap(gt, [], backend=backend) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}


# ---------------------------------------------------------------- pixel sets vs a dense reference


def _reference(dt, dt_cats, gt, gt_cats, crowd, min_iou):
    """Dense float64/bool reference of the matching and of the three error sets."""
    g_union = np.any(gt[~crowd], axis=0) if (~crowd).any() else np.zeros(gt.shape[1:], bool)
    c_union = np.any(gt[crowd], axis=0) if crowd.any() else np.zeros(gt.shape[1:], bool)
    out: list[tuple | None] = []
    for d, c in zip(dt, dt_cats):
        best, best_iou = -1, -1.0
        for j, (g, gc) in enumerate(zip(gt, gt_cats)):
            if gc != c or crowd[j]:
                continue
            union = np.logical_or(d, g).sum()
            iou = np.logical_and(d, g).sum() / union if union else 0.0
            if iou > best_iou:
                best, best_iou = j, iou
        if best < 0 or best_iou < min_iou:
            out.append(None)
            continue
        gs = gt[best]
        ffp = d & g_union & ~gs & ~c_union
        bfp = d & ~g_union & ~c_union
        fn = gs & ~d & ~c_union
        tp = d & gs & ~c_union
        out.append((best, ffp, bfp, fn, tp, gs, c_union))
    return out


@settings(max_examples=60, deadline=None)
@given(
    gt=hnp.arrays(np.bool_, st.tuples(st.integers(1, 4), st.just(7), st.just(6))),
    dt=hnp.arrays(np.bool_, st.tuples(st.integers(1, 5), st.just(7), st.just(6))),
    cats=st.lists(st.integers(1, 2), min_size=9, max_size=9),
    crowd_bits=st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_error_pixels_match_dense_reference(gt, dt, cats, crowd_bits) -> None:
    m, n = gt.shape[0], dt.shape[0]
    gt_cats, dt_cats = cats[:m], cats[m : m + n]
    crowd = np.array(crowd_bits[:m])
    err = image_errors(
        [rle(x) for x in dt], dt_cats, [rle(x) for x in gt], gt_cats, crowd.astype(int).tolist(), 7, 6, 0.1
    )
    ref = _reference(dt, dt_cats, gt, gt_cats, crowd, 0.1)
    k = 0
    for i, r in enumerate(ref):
        if r is None:
            assert err.match[i] == -1 and not err.pixels[i].any()
            continue
        best, ffp, bfp, fn, tp, gs, c_union = r
        d = dt[i]
        assert err.match[i] == best
        # the three sets are disjoint and partition D and G* (outside crowd regions)
        assert not (ffp & bfp).any() and not (ffp & fn).any() and not (bfp & fn).any()
        assert tp.sum() + ffp.sum() + bfp.sum() == (d & ~c_union).sum()
        assert tp.sum() + fn.sum() == (gs & ~c_union).sum()
        if not crowd.any():
            assert tp.sum() + ffp.sum() + bfp.sum() == d.sum() and tp.sum() + fn.sum() == gs.sum()
        assert err.pixels[i].tolist() == [ffp.sum(), bfp.sum(), fn.sum()]
        assert err.tp[i] == tp.sum()
        expected = {"fFP": d & ~ffp, "bFP": d & ~bfp, "FN": d | fn, "all": (d & ~ffp & ~bfp) | fn}
        for run, mask in expected.items():
            np.testing.assert_array_equal(mask_utils.decode(err.corrected[run][k]).astype(bool), mask)
            assert err.corrected_area[run][k] == mask.sum()
        k += 1


# ---------------------------------------------------------------- agreement with COCOeval, backends


def _plain_coco_ap(gt: dict, results: list[dict], backend: str) -> tuple[float, float, float]:
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        dets = coco.loadRes([{k: v for k, v in r.items() if k != "bbox"} for r in copy.deepcopy(results)])
        ev = COCOeval(coco, dets, "segm")
        ev.evaluate()
        ev.accumulate()
    p = np.asarray(ev.eval["precision"])[:, :, :, 0, -1]  # area "all", 100 detections
    ap, ap50, ap75 = (float(x[x > -1].mean()) for x in (p, p[0], p[5]))
    return ap, ap50, ap75


@pytest.fixture(scope="module")
def synthetic() -> tuple[dict, list[dict]]:
    return synthetic_coco(25, dets_per_image=12, size=(24, 40), seed=3)


@pytest.fixture(scope="module")
def reports(synthetic) -> dict:
    gt, results = synthetic
    return {b: analyze(gt, results, backend=b) for b in BACKENDS}


def test_base_ap_equals_plain_cocoeval(synthetic, reports, backend: str) -> None:
    gt, results = synthetic
    expected = _plain_coco_ap(gt, results, backend)
    rep = reports[backend]
    assert (rep.ap, rep.ap50, rep.ap75) == pytest.approx(expected, abs=1e-12)
    got = evaluate_segm_ap(gt, results, backend=backend)
    assert (got["AP"], got["AP50"], got["AP75"]) == pytest.approx(expected, abs=1e-12)
    assert 0 < rep.ap < 1 and rep.num_matched > 0 and rep.num_unmatched > 0


def test_backends_agree(reports) -> None:
    a, b = (reports[x].to_dict() for x in BACKENDS)
    a.pop("backend"), b.pop("backend")

    def check(x, y) -> None:
        if isinstance(x, dict):
            assert x.keys() == y.keys()
            for k in x:
                check(x[k], y[k])
        elif isinstance(x, float):
            assert y == pytest.approx(x, abs=1e-9)
        else:
            assert x == y

    check(a, b)


def test_inputs_not_mutated(synthetic) -> None:
    gt, results = synthetic
    gt = copy.deepcopy(gt)
    gt["annotations"][0]["segmentation"] = [[2.0, 2.0, 9.0, 2.0, 9.0, 9.0, 2.0, 9.0]]  # a polygon
    results = copy.deepcopy(results)[:40]
    for r in results:
        r["bbox"] = [0.0, 0.0, 1.0, 1.0]  # loadRes would take the area from it
    gt_before, res_before = copy.deepcopy(gt), copy.deepcopy(results)
    analyze(gt, results, backend="pycocotools")
    analyze(gt, results, backend="faster-coco-eval")
    evaluate_segm_ap(gt, results, backend="pycocotools")
    assert gt == gt_before and results == res_before


def test_auto_backend_and_paths(tmp_path) -> None:
    gt = make_gt([(1, rect(2, 6, 2, 6), 0)])
    res = make_results([(1, rect(2, 6, 2, 8), 0.9)])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    rep = analyze(str(tmp_path / "gt.json"), tmp_path / "res.json")
    assert rep.backend == "faster-coco-eval" and rep.delta["bFP"] == approx(0.6)
    assert json.loads(json.dumps(rep.to_dict()))["pixels"]["bFP"] == 8


# ---------------------------------------------------------------- validation


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


def test_invalid_arguments_raise() -> None:
    gt = make_gt([(1, rect(2, 6, 2, 6), 0)])
    with pytest.raises(ValueError, match="min_iou"):
        analyze(gt, [], min_iou=1.5)
    with pytest.raises(ValueError, match="backend"):
        analyze(gt, [], backend="detectron2")
    with pytest.raises(TypeError, match="results"):
        analyze(gt, {"not": "a list"})
    with pytest.raises(ValueError, match="not a file"):
        analyze("/nonexistent/gt.json", [])


# ---------------------------------------------------------------- converters, comparison, CLI


def test_converters_roundtrip_with_torch() -> None:
    torch = pytest.importorskip("torch")
    masks = torch.zeros(2, H, W, dtype=torch.uint8)
    masks[0, 1:5, 1:5] = 1
    masks[1, 5:9, 3:9] = 1
    targets = [
        {
            "boxes": torch.tensor([[1.0, 1, 5, 5], [3, 5, 9, 9]]),
            "labels": torch.tensor([1, 2]),
            "masks": masks,
        },
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 8, 6),
        },
    ]
    gt = coco_from_targets(targets, [10, 11], {1: "a", 2: "b"})
    assert gt["images"] == [{"id": 10, "height": H, "width": W}, {"id": 11, "height": 8, "width": 6}]
    assert [a["id"] for a in gt["annotations"]] == [1, 2]
    assert gt["annotations"][1]["bbox"] == [3.0, 5.0, 6.0, 4.0] and gt["annotations"][1]["area"] == 24.0
    outputs = [
        {
            "masks": masks[:, None].float() * 0.9,
            "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([1, 2]),
        },
        {
            "masks": torch.zeros(0, 1, 8, 6),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64),
        },
    ]
    results = results_from_outputs(outputs, [10, 11])
    json.dumps(results)
    assert evaluate_segm_ap(gt, results) == {"AP": approx(1.0), "AP50": approx(1.0), "AP75": approx(1.0)}
    assert results_from_outputs(outputs, [10, 11], mask_threshold=0.95) == [
        {**r, "segmentation": rle(np.zeros((H, W), bool))} for r in results
    ]
    with pytest.raises(ValueError, match="not a category id"):
        coco_from_targets(targets, [10, 11], {1: "a"})
    with pytest.raises(ValueError, match="image_ids"):
        results_from_outputs(outputs, [10])


def test_compare_table_and_plots(tmp_path, reports) -> None:
    table = compare_table({"Baseline": reports["pycocotools"], "+Ours": reports["faster-coco-eval"]})
    lines = table.splitlines()
    assert lines[0].split() == ["name", "AP", "ΔAP_fFP", "ΔAP_bFP", "ΔAP_FN"]
    rep = reports["pycocotools"]
    assert lines[1].split() == ["Baseline"] + [f"{100 * v:.1f}" for v in (rep.ap, *rep.delta.values())]
    plot_comparison({"Baseline": rep, "+Ours": reports["faster-coco-eval"]}, tmp_path / "cmp.png")
    rep.plot(tmp_path / "one.png")
    for name in ("cmp.png", "one.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ΔfFP" in rep.table() and "class1" in rep.table(per_category=True)
    with pytest.raises(ValueError, match="non-empty"):
        compare_table({})


def test_cli_run(tmp_path, capsys) -> None:
    gt = make_gt([(1, rect(2, 6, 2, 6), 0)])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(make_results([(1, rect(2, 6, 2, 8), 0.9)])))
    parser = argparse.ArgumentParser()
    analysis_cli.add_arguments(parser)
    args = parser.parse_args(
        [str(tmp_path / "gt.json"), str(tmp_path / "res.json"), "--backend", "pycocotools",
         "--plot", str(tmp_path / "e.png"), "--json", str(tmp_path / "r.json"), "--min-iou", "0.2"]
    )  # fmt: skip
    assert analysis_cli.run(args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:5] == ["AP", "40.0", "0.0", "60.0", "0.0"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["delta"]["bFP"] == approx(0.6) and report["min_iou"] == 0.2
    assert (tmp_path / "e.png").stat().st_size > 0
    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": 5}]))
    assert analysis_cli.run(parser.parse_args([str(tmp_path / "gt.json"), str(tmp_path / "bad.json")])) == 2
    assert "results[0]" in capsys.readouterr().err


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.bool_, st.tuples(st.integers(1, 9), st.integers(1, 9))), st.booleans())
def test_rle_counts_and_complement(mask, as_str) -> None:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if as_str:
        r["counts"] = r["counts"].decode("ascii")
    counts = rle_counts(r)
    np.testing.assert_array_equal(np.repeat(np.arange(counts.size) % 2, counts).astype(bool), mask.T.ravel())
    np.testing.assert_array_equal(mask_utils.decode(complement(r)).astype(bool), ~mask)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(hnp.arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40))), min_size=1, max_size=6),
    st.data(),
)
def test_check_compressed_batch(masks, data) -> None:
    """Many RLEs decoded at once give each one's counts; the first RLE whose size was relabelled is named."""
    rles = [rle(m) for m in masks]
    values, owner, corrupt = _decode([r["counts"].encode("ascii") for r in rles])
    assert not corrupt.any()
    for i, (r, m) in enumerate(zip(rles, masks)):
        runs = values[owner == i]
        np.testing.assert_array_equal(runs, rle_counts(r))
        np.testing.assert_array_equal(np.repeat(np.arange(runs.size) % 2, runs).astype(bool), m.T.ravel())
    names = [f"mask{i}" for i in range(len(rles))]
    check_compressed(rles, names)
    i = data.draw(st.integers(0, len(rles) - 1))
    h, w = rles[i]["size"]
    rles[i] = {**rles[i], "size": [h + 1, w]}
    with pytest.raises(
        ValueError, match=rf"^mask{i}: the RLE counts sum to {h * w}, expected H \* W = {h + 1} \*"
    ):
        check_compressed(rles, names)


def test_rle_counts_large_runs() -> None:
    mask = np.zeros((700, 900), dtype=bool)
    mask[3:650, 5:880] = True
    mask[100, 100] = False
    counts = rle_counts(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))
    np.testing.assert_array_equal(np.repeat(np.arange(counts.size) % 2, counts).astype(bool), mask.T.ravel())


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_corrected_runs_equal_full_reevaluation(synthetic, reports, backend_name: str) -> None:
    # analyze() reuses the base run's IoUs for (image, category) pairs whose masks did not change;
    # evaluating each corrected result list from scratch must give the same numbers.
    gt, results = synthetic
    data = prepare(gt, results)
    runs, _, _ = _corrections(data, 0.1, None, 1)
    rep = reports[backend_name]
    for run in ("fFP", "bFP", "FN"):
        ap, ap50, ap75 = ap_triple(Evaluator(backend_name, data).precision(runs[run]))
        assert ap - rep.ap == pytest.approx(rep.delta[run], abs=1e-12)
        assert ap50 - rep.ap50 == pytest.approx(rep.delta50[run], abs=1e-12)
        assert ap75 - rep.ap75 == pytest.approx(rep.delta75[run], abs=1e-12)
    assert ap_triple(Evaluator(backend_name, data).precision(runs["all"]))[0] == pytest.approx(
        rep.ap_upper, abs=1e-12
    )


def test_faster_coco_eval_variant_prepares_only_altered_results(synthetic, monkeypatch) -> None:
    # After the base evaluation, a variant run must turn only its altered results into
    # faster-coco-eval's RLEs (not the ground truth, not the unaltered results), and still give the
    # precision of a from-scratch evaluation.
    from faster_coco_eval.core import mask as fce_mask

    gt, results = synthetic
    data = prepare(gt, results)
    runs, _, pixels = _corrections(data, 0.1, None, 1)
    altered = pixels[:, 1] > 0  # the bFP run
    assert 0 < altered.sum() < len(altered)
    evaluator = Evaluator("faster-coco-eval", data)
    evaluator.precision(data.results)
    prepared: list[int] = []
    real = fce_mask.calculateRleForAllAnnotations

    def spy(anns, *args):
        prepared.append(len(anns))
        return real(anns, *args)

    monkeypatch.setattr(fce_mask, "calculateRleForAllAnnotations", spy)
    variant = evaluator.precision(runs["bFP"], altered=altered)
    assert prepared == [int(altered.sum())]
    monkeypatch.setattr(fce_mask, "calculateRleForAllAnnotations", real)
    np.testing.assert_array_equal(variant, Evaluator("faster-coco-eval", data).precision(runs["bFP"]))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_variant_with_nothing_altered_equals_base(synthetic, backend_name: str) -> None:
    gt, results = synthetic
    data = prepare(gt, results)
    evaluator = Evaluator(backend_name, data)
    base = evaluator.precision(data.results)
    same = evaluator.precision(data.results, altered=np.zeros(len(data.results), dtype=bool))
    np.testing.assert_array_equal(same, base)
    with pytest.raises(ValueError, match="altered has 3 entries"):
        evaluator.precision(data.results, altered=np.zeros(3, dtype=bool))
