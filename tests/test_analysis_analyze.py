"""analyze(): hand-derived pixel-error ΔAP cases, agreement with COCOeval, sanity laws of the whole report."""

from __future__ import annotations

import copy
import json
import math
import random

import numpy as np
import pytest
from _coco_cases import BACKENDS, approx, make_gt, make_results, plain_coco_ap, rect

from densecontrast.analysis import analyze, evaluate_segm_ap

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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


def test_base_ap_equals_plain_cocoeval(coco_scene, coco_scene_reports, backend: str) -> None:
    gt, results = coco_scene
    expected = plain_coco_ap(gt, results, backend)
    rep = coco_scene_reports[backend]
    assert (rep.ap, rep.ap50, rep.ap75) == pytest.approx(expected, abs=1e-12)
    got = evaluate_segm_ap(gt, results, backend=backend)
    assert (got["AP"], got["AP50"], got["AP75"]) == pytest.approx(expected, abs=1e-12)
    assert 0 < rep.ap < 1 and rep.num_matched > 0 and rep.num_unmatched > 0


def test_backends_agree(coco_scene_reports) -> None:
    a, b = (coco_scene_reports[x].to_dict() for x in BACKENDS)
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


def test_inputs_not_mutated(coco_scene) -> None:
    gt, results = coco_scene
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
    with pytest.raises(ValueError, match="iou_type must be one of"):
        analyze(gt, [], iou_type="mask")
    with pytest.raises(ValueError, match="bg_iou must be <= fg_iou"):
        analyze(gt, [], fg_iou=0.3, bg_iou=0.4)
    with pytest.raises(ValueError, match="fg_iou must be a number"):
        analyze(gt, [], fg_iou=True)


# ---------------------------------------------------------------- laws of the whole report


def _all_deltas(rep) -> list[float]:
    return [
        *rep.delta.values(), *rep.delta50.values(), *rep.delta75.values(),
        *rep.detection.values(), *rep.detection50.values(), *rep.detection75.values(),
    ]  # fmt: skip


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_ground_truth_as_predictions_loses_nothing(coco_scene, backend: str, iou_type: str) -> None:
    gt, _ = coco_scene
    solid = [a for a in gt["annotations"] if not a["iscrowd"]]
    scores = np.linspace(0.99, 0.01, len(solid))
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "score": float(s),
         "segmentation": a["segmentation"], "bbox": a["bbox"]}
        for a, s in zip(solid, scores)
    ]  # fmt: skip
    rep = analyze(gt, results, backend=backend, iou_type=iou_type)
    assert (rep.ap, rep.ap50, rep.ap75) == (approx(1.0),) * 3
    assert rep.detection_upper == approx(1.0)
    deltas = _all_deltas(rep)
    assert all(d == approx(0.0) for d in deltas if not math.isnan(d))
    assert sum(math.isnan(d) for d in deltas) == (9 if iou_type == "bbox" else 0)
    assert sum(rep.detection_counts.values()) == 0 and sum(rep.pixels.values()) == 0


def test_report_does_not_depend_on_input_order(coco_scene) -> None:
    # Scores are distinct and no two masks tie in IoU, so COCOeval's tie rules (input order) never apply.
    gt, results = coco_scene
    assert len({r["score"] for r in results}) == len(results)
    rng = random.Random(0)
    shuffled_gt = {**gt, "annotations": rng.sample(gt["annotations"], len(gt["annotations"])),
                   "images": rng.sample(gt["images"], len(gt["images"]))}  # fmt: skip
    shuffled = rng.sample(results, len(results))
    a = analyze(gt, results, backend="faster-coco-eval").to_dict()
    b = analyze(shuffled_gt, shuffled, backend="faster-coco-eval").to_dict()
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or _close(a, b)


def _close(a, b) -> bool:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float):
        assert b == pytest.approx(a, abs=1e-12)
        return True
    assert a == b
    return True


def test_pixel_errors_alone_give_the_same_pixel_numbers(coco_scene) -> None:
    gt, results = coco_scene
    full = analyze(gt, results, backend="pycocotools")
    pixels = analyze(gt, results, backend="pycocotools", detection=False)
    assert (pixels.ap, pixels.delta, pixels.ap_upper, pixels.pixels) == (
        full.ap,
        full.delta,
        full.ap_upper,
        full.pixels,
    )
    assert pixels.detection == {} and pixels.detection_counts == {} and math.isnan(pixels.detection_upper)
    assert "detection errors" not in pixels.table() and "detection errors" in full.table()
