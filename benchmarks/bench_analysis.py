"""Segmentation-error analysis against one plain COCO mask evaluation, on synthetic data.

1000 images of 320-640 px per side, about 5 categories, 3-8 ground-truth masks and 16 predictions per image
(random rectangles and ellipses, noisy copies and clutter; fixed seed). For each backend:

- ``plain``: the textbook evaluation: COCO ground truth from the dict, ``loadRes``, ``COCOeval`` with its
  default parameters, ``evaluate()`` + ``accumulate()``;
- ``evaluate_segm_ap``: densecontrast's validated AP (area "all", 100 detections only);
- ``analyze``: the full report (validation; detection errors: COCO matching, classification, 9 oracle
  evaluations; pixel errors: matching, corrections, 4 evaluations; 1 base evaluation);
- ``analyze_pixels``: the pixel errors only (``detection=False``: validation, matching, corrections,
  5 evaluations), the analysis as it was before the detection errors;
- ``check_masks``: the part of the validation that decodes every result's compressed RLE to check that
  its counts sum to H * W (vectorised over all results at once).

Run: ``pytest benchmarks/bench_analysis.py -o python_files='bench_*.py' --benchmark-group-by=param:backend``
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import Any

import pytest

from densecontrast.analysis import analyze, evaluate_segm_ap
from densecontrast.analysis._inputs import prepare
from densecontrast.analysis._rle import check_compressed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _synthetic_coco import synthetic_coco

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

NUM_IMAGES = 1000
DETS_PER_IMAGE = 16


@pytest.fixture(scope="module")
def data() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return synthetic_coco(NUM_IMAGES, dets_per_image=DETS_PER_IMAGE, size=(320, 640), seed=0)


def plain_evaluation(gt: dict[str, Any], results: list[dict[str, Any]], backend: str) -> float:
    """One ordinary COCO mask evaluation; returns AP@[.50:.95] from the precision array."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        dets = coco.loadRes([dict(r) for r in results])  # loadRes mutates its dicts
        ev = COCOeval(coco, dets, "segm")
        ev.evaluate()
        ev.accumulate()
    p = ev.eval["precision"][:, :, :, 0, -1]
    return float(p[p > -1].mean())


@pytest.mark.parametrize("backend", ["pycocotools", "faster-coco-eval"])
def test_plain_evaluation(benchmark, request, data, backend: str) -> None:
    gt, results = data
    benchmark.pedantic(
        lambda: plain_evaluation({k: [dict(x) for x in v] for k, v in gt.items()}, results, backend),
        rounds=request.config.getoption("--analysis-rounds"),
        iterations=1,
    )


@pytest.mark.parametrize("backend", ["pycocotools", "faster-coco-eval"])
def test_evaluate_segm_ap(benchmark, request, data, backend: str) -> None:
    gt, results = data
    benchmark.pedantic(
        evaluate_segm_ap,
        args=(gt, results),
        kwargs={"backend": backend},
        rounds=request.config.getoption("--analysis-rounds"),
        iterations=1,
    )


@pytest.mark.parametrize("backend", ["pycocotools", "faster-coco-eval"])
def test_analyze(benchmark, request, data, backend: str) -> None:
    gt, results = data
    report = benchmark.pedantic(
        analyze,
        args=(gt, results),
        kwargs={"backend": backend},
        rounds=request.config.getoption("--analysis-rounds"),
        iterations=1,
    )
    assert report.num_matched > 0


@pytest.mark.parametrize("backend", ["pycocotools", "faster-coco-eval"])
def test_analyze_pixels(benchmark, request, data, backend: str) -> None:
    gt, results = data
    report = benchmark.pedantic(
        analyze,
        args=(gt, results),
        kwargs={"backend": backend, "detection": False},
        rounds=request.config.getoption("--analysis-rounds"),
        iterations=1,
    )
    assert report.num_matched > 0 and not report.detection


def test_check_masks(benchmark, request, data) -> None:
    gt, results = data
    rles = [r["segmentation"] for r in prepare(gt, results).results]
    names = [f"results[{i}]" for i in range(len(rles))]
    rounds = request.config.getoption("--analysis-rounds")
    benchmark.pedantic(check_compressed, args=(rles, names), rounds=rounds, iterations=1)
