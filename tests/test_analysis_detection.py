"""Detection error types (TIDE) and their oracles: hand-derived cases, COCO's matching, full re-evaluation.

Every expected ΔAP below is worked out by hand from COCO's 101-point interpolated precision: a category
whose results rank (TP, FP, ...) gives AP = mean over recall points r in {0, .01, ..., 1} of the largest
precision at recall >= r.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from _coco_cases import BACKENDS, approx, make_gt, make_results, plain_coco_ap, rect
from hypothesis import given, settings
from hypothesis import strategies as st

from densecontrast.analysis import analyze
from densecontrast.analysis._detection import FIX_RUNS, classify, coco_match, fix
from densecontrast.analysis._inputs import prepare

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TYPES = ("cls", "loc", "both", "dupe", "bkg", "missed")

# Two categories, one object each; the perfect predictions of both (scores .9 and .8).
G1, G2 = rect(0, 4, 0, 4), rect(5, 9, 5, 9)  # category 1, category 2
SHIFTED = rect(5, 9, 7, 10)  # IoU with G2: 8 / 20 = .4
BACKGROUND = rect(5, 9, 0, 3)  # touches no object


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _two_objects(extra: list[tuple[int, np.ndarray, float]]) -> tuple[dict, list[dict]]:
    gt = make_gt([(1, G1, 0), (2, G2, 0)])
    return gt, make_results([(1, G1, 0.9), (2, G2, 0.8), *extra])


def _only(report, error: str, value: float) -> None:
    """``error`` (and FalsePos/FalseNeg as stated by the caller) costs ``value``, the other types 0."""
    for t in TYPES:
        expected = value if t == error else 0.0
        assert report.detection[t] == approx(expected), (t, report.detection)


@pytest.mark.parametrize(
    ("error", "extra"),
    [
        ("both", (1, SHIFTED, 0.95)),  # category 1 on category 2's object, IoU .4
        ("bkg", (1, BACKGROUND, 0.95)),
        ("cls", (1, G2, 0.95)),  # category 1 on category 2's object, IoU 1; that object is taken
    ],
)
def test_false_positive_above_a_true_positive_costs_a_quarter(backend: str, error: str, extra) -> None:
    # Category 1 ranks FP, TP: precision 1/2 at every recall, AP_1 = .5; category 2: AP_2 = 1; AP = .75.
    # Suppressing the FP gives AP_1 = 1: ΔAP = .25 at every threshold. A cls error whose object is matched
    # already would be a duplicate after relabelling, so its oracle suppresses it too.
    rep = analyze(*_two_objects([extra]), backend=backend)
    assert (rep.ap, rep.ap50, rep.ap75) == (approx(0.75),) * 3
    _only(rep, error, 0.25)
    assert (rep.detection50[error], rep.detection75[error]) == (approx(0.25), approx(0.25))
    assert rep.detection["FalsePos"] == approx(0.25) and rep.detection["FalseNeg"] == approx(0.0)
    assert rep.detection_counts == {t: int(t == error) for t in TYPES}
    assert rep.detection_upper == approx(1.0)


def test_cls_error_on_a_free_object_is_relabelled(backend: str) -> None:
    # G2 has no category-2 prediction; a category-1 copy of it (IoU 1) is a cls error. Category 1 ranks
    # TP(.9); the copy is in category 1 too but ranks below: AP_1 = 1, AP_2 = 0, AP = .5. Relabelling
    # it makes it G2's true positive: AP = 1. FalsePos removes it: nothing changes; FalseNeg drops G2: 1.
    gt = make_gt([(1, G1, 0), (2, G2, 0)])
    rep = analyze(gt, make_results([(1, G1, 0.9), (1, G2, 0.5)]), backend=backend)
    assert rep.ap == approx(0.5)
    _only(rep, "cls", 0.5)
    assert rep.detection["FalsePos"] == approx(0.0) and rep.detection["FalseNeg"] == approx(0.5)
    assert rep.detection_counts["missed"] == 0  # a cls error points at G2: not missed


def test_loc_error_takes_the_objects_mask(backend: str) -> None:
    # Category 2's only prediction overlaps G2 with IoU .4: a loc error, G2 unmatched. AP_2 = 0, AP = .5;
    # given G2's mask it is a true positive: ΔAP_loc = .5. FalsePos: AP_2 stays 0; FalseNeg drops G2.
    gt = make_gt([(1, G1, 0), (2, G2, 0)])
    rep = analyze(gt, make_results([(1, G1, 0.9), (2, SHIFTED, 0.8)]), backend=backend)
    assert rep.ap == approx(0.5)
    _only(rep, "loc", 0.5)
    assert rep.detection["FalsePos"] == approx(0.0) and rep.detection["FalseNeg"] == approx(0.5)


def test_duplicate_between_two_true_positives(backend: str) -> None:
    # Category 1 has G1 and G3; it ranks TP(.9), a copy of G1 (.85: duplicate), TP(.8): precision 1 up to
    # recall .5 (51 points), then 2/3 (50 points). AP_1 = (51 + 100/3) / 101, AP_2 = 1. Suppressing the
    # duplicate gives AP_1 = 1: ΔAP = (1 - AP_1) / 2 = 25/303.
    g3 = rect(0, 4, 5, 9)
    gt = make_gt([(1, G1, 0), (2, G2, 0), (1, g3, 0)])
    rep = analyze(
        gt, make_results([(1, G1, 0.9), (2, G2, 0.8), (1, G1, 0.85), (1, g3, 0.8)]), backend=backend
    )
    assert rep.ap == approx((1 + (51 + 100 / 3) / 101) / 2)
    _only(rep, "dupe", 25 / 303)
    assert rep.detection["FalsePos"] == approx(25 / 303)


def test_missed_object_is_dropped_from_the_ground_truth(backend: str) -> None:
    # Nothing predicted on G2: AP_2 = 0, AP = .5. Without G2, category 2 has no ground truth and drops
    # out of the mean: AP = AP_1 = 1.
    gt = make_gt([(1, G1, 0), (2, G2, 0)])
    rep = analyze(gt, make_results([(1, G1, 0.9)]), backend=backend)
    _only(rep, "missed", 0.5)
    assert rep.detection["FalseNeg"] == approx(0.5)
    assert rep.detection_counts["missed"] == 1
    assert rep.per_category[2].detection_counts["missed"] == 1


def test_best_overlap_decides_between_cls_and_loc() -> None:
    # The paper's reading (followed here): the ground truth with the largest IoU decides. The category-1
    # prediction overlaps category 2's object with IoU 20/35 = .57 and its own category's object with
    # 10/45 = .22: a cls error. tidecv's code tests loc first and would call it loc.
    ga, gb = rect(0, 5, 0, 5), rect(5, 10, 0, 5)
    gt = make_gt([(2, ga, 0), (1, gb, 0)])
    data = prepare(gt, make_results([(1, rect(1, 7, 0, 5), 0.9)]))
    err = classify(data)
    assert err.counts() == {"cls": 1, "loc": 0, "both": 0, "dupe": 0, "bkg": 0, "missed": 1}
    assert err.target.tolist() == [0]  # ga, which the cls oracle gives it; gb counts as missed


def test_several_errors_on_one_object_fix_only_the_best_scoring() -> None:
    # Two category-1 copies of G2 (.7 and .6): both cls errors pointing at the free G2; the oracle
    # relabels the .7 one and suppresses the .6 one (it would be a duplicate).
    gt = make_gt([(1, G1, 0), (2, G2, 0)])
    data = prepare(gt, make_results([(1, G1, 0.9), (1, G2, 0.6), (1, G2, 0.7)]))
    fixed = fix(data, classify(data), "cls")
    assert [(r["category_id"], r["score"]) for r in fixed.results] == [(1, 0.9), (2, 0.7)]
    assert fixed.origin.tolist() == [0, -1]


def test_thresholds_bound_the_types() -> None:
    # IoU .4 is loc at bg_iou .1, background at bg_iou .5; with fg_iou .4 it is a true positive.
    gt = make_gt([(1, G1, 0), (2, G2, 0)])
    data = prepare(gt, make_results([(2, SHIFTED, 0.8)]))
    assert classify(data).counts()["loc"] == 1
    assert classify(data, bg_iou=0.5).counts()["bkg"] == 1
    assert sum(classify(data, fg_iou=0.4).counts().values()) == 1  # only G1 is missed


def test_crowd_match_is_not_an_error(backend: str) -> None:
    crowd = rect(5, 10, 0, 10)
    gt = make_gt([(1, G1, 0), (1, crowd, 1)])
    rep = analyze(gt, make_results([(1, G1, 0.9), (1, rect(6, 9, 1, 9), 0.95)]), backend=backend)
    assert rep.ap == approx(1.0)
    assert sum(rep.detection_counts.values()) == 0
    assert all(v == approx(0.0) for v in rep.detection.values())


def test_box_mode_loc_error(backend: str) -> None:
    # The same loc case with boxes: the prediction's box takes G2's box.
    gt = make_gt([(1, G1, 0), (2, G2, 0)])
    res = make_results([(1, G1, 0.9), (2, SHIFTED, 0.8)], boxes=True)
    res = [{k: v for k, v in r.items() if k != "segmentation"} for r in res]
    rep = analyze(gt, res, backend=backend, iou_type="bbox")
    assert rep.iou_type == "bbox" and rep.ap == approx(0.5)
    _only(rep, "loc", 0.5)
    assert all(np.isnan(v) for v in rep.delta.values())  # no pixel errors for boxes


# ---------------------------------------------------------------- COCO's matching, full re-evaluation


@pytest.mark.parametrize("threshold", [0.5, 0.75])
def test_matching_equals_pycocotools(coco_scene, threshold: float) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, results = coco_scene
    data = prepare(gt, results)
    err = classify(data, fg_iou=threshold)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": data.images, "categories": data.categories,
                        "annotations": [dict(a) for a in data.annotations]}  # fmt: skip
        coco.createIndex()
        dt = coco.loadRes([{**r, "id": i + 1} for i, r in enumerate(data.results)])
        ev = COCOeval(coco, dt, "segm")
        ev.params.iouThrs = np.array([threshold])
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.evaluate()
    tp = np.zeros(len(data.results), dtype=bool)
    ignored = np.zeros(len(data.results), dtype=bool)
    for e in ev.evalImgs:
        if e is None:
            continue
        for d, m, ig in zip(e["dtIds"], e["dtMatches"][0], e["dtIgnore"][0]):
            tp[d - 1], ignored[d - 1] = m > 0 and not ig, bool(ig)
    assert ((err.kind == 0) == tp).all() and ((err.kind == 1) == ignored).all()
    assert tp.sum() > 10 and (~tp & ~ignored).sum() > 10


def test_coco_match_breaks_ties_like_cocoeval() -> None:
    # Equal IoUs: COCOeval keeps the later ground truth ('<' comparison); scores tie: input order.
    ious = np.array([[0.6, 0.6], [0.6, 0.6]])
    assert coco_match(ious, np.array([0.5, 0.5]), np.array([False, False]), 0.5).tolist() == [1, 0]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_each_oracle_equals_a_from_scratch_evaluation(coco_scene, backend_name: str) -> None:
    # analyze() reuses the base evaluation for unchanged (image, category) pairs; a textbook COCOeval run
    # of each oracle's results and ground truth must give the same numbers.
    gt, results = coco_scene
    rep = analyze(gt, results, backend=backend_name)
    data = prepare(gt, results)
    err = classify(data)
    for run in FIX_RUNS:
        fixed = fix(data, err, run)
        keep = np.ones(len(data.annotations), bool) if fixed.keep_gt is None else fixed.keep_gt
        gt_run = {**gt, "annotations": [a for a, k in zip(data.annotations, keep) if k]}
        ap, ap50, ap75 = plain_coco_ap(gt_run, fixed.results, backend_name)
        if run == "all":
            assert (ap, ap50, ap75) == pytest.approx(
                (rep.detection_upper, rep.detection50_upper, rep.detection75_upper), abs=1e-12
            )
            continue
        got = (rep.detection[run], rep.detection50[run], rep.detection75[run])
        assert (ap - rep.ap, ap50 - rep.ap50, ap75 - rep.ap75) == pytest.approx(got, abs=1e-12), run
    assert min(rep.detection_counts.values()) > 0  # every type occurs in this scene


def test_fixing_the_six_types_at_once_gives_ap50_one(coco_scene, backend: str) -> None:
    gt, results = coco_scene
    for iou_type in ("segm", "bbox"):
        rep = analyze(gt, results, backend=backend, iou_type=iou_type)
        assert rep.detection50_upper == approx(1.0)
        assert all(c.detection_upper <= 1 for c in rep.per_category.values())


# ---------------------------------------------------------------- the rules against a plain reference


def _box_iou(a: list[float], b: list[float]) -> float:
    """IoU of two [x, y, w, h] boxes in float64, written out."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


_box = st.tuples(st.integers(0, 12), st.integers(0, 12), st.integers(1, 8), st.integers(1, 8))


@settings(max_examples=60, deadline=None)
@given(
    gts=st.lists(st.tuples(_box, st.integers(1, 2)), max_size=5),
    dts=st.lists(st.tuples(_box, st.integers(1, 2)), min_size=1, max_size=7),
    fg=st.sampled_from([0.3, 0.5, 0.7]),
)
def test_types_follow_the_rules(gts, dts, fg) -> None:
    """Every false positive gets the type its best-overlapping object dictates; every unmatched object not
    pointed at by a cls or loc error is missed; each result has one kind."""
    gt = {
        "images": [{"id": 1, "height": 20, "width": 20}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [{"id": k + 1, "image_id": 1, "category_id": c, "bbox": list(map(float, b)),
                         "area": float(b[2] * b[3]), "iscrowd": 0} for k, (b, c) in enumerate(gts)],
    }  # fmt: skip
    res = [{"image_id": 1, "category_id": c, "bbox": list(map(float, b)), "score": 1.0 - 0.1 * i}
           for i, (b, c) in enumerate(dts)]  # fmt: skip
    err = classify(prepare(gt, res, iou_type="bbox"), fg_iou=fg, bg_iou=0.1)
    names = {2: "cls", 3: "loc", 4: "both", 5: "dupe", 6: "bkg"}
    pointed = set()
    for i, r in enumerate(res):
        if err.kind[i] == 0:  # a true positive: an object of its category with IoU >= fg
            g = gt["annotations"][err.target[i]]
            assert g["category_id"] == r["category_id"] and _box_iou(r["bbox"], g["bbox"]) >= fg - 1e-12
            continue
        ious = [_box_iou(r["bbox"], a["bbox"]) for a in gt["annotations"]]
        best = int(np.argmax(ious)) if ious else -1
        top = ious[best] if ious else 0.0
        same = best >= 0 and gt["annotations"][best]["category_id"] == r["category_id"]
        if top < 0.1:
            expected = "bkg"
        elif top >= fg:
            expected = "dupe" if same else "cls"
        else:
            expected = "loc" if same else "both"
        assert names[int(err.kind[i])] == expected, (i, ious)
        if expected in ("cls", "loc"):
            pointed.add(best)
        assert err.target[i] == (best if expected != "bkg" else -1)
    for j in range(len(gts)):
        assert err.missed[j] == (not err.matched_gt[j] and j not in pointed)
