"""The evaluator: variants that reuse the base evaluation equal from-scratch evaluations."""

from __future__ import annotations

import numpy as np
import pytest
from _coco_cases import BACKENDS

from densecontrast.analysis._analyze import _corrections
from densecontrast.analysis._backend import Evaluator, ap_triple
from densecontrast.analysis._inputs import prepare

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_corrected_runs_equal_full_reevaluation(coco_scene, coco_scene_reports, backend_name: str) -> None:
    # analyze() reuses the base run's IoUs for (image, category) pairs whose masks did not change;
    # evaluating each corrected result list from scratch must give the same numbers.
    gt, results = coco_scene
    data = prepare(gt, results)
    runs, _, _ = _corrections(data, 0.1, None, 1)
    rep = coco_scene_reports[backend_name]
    for run in ("fFP", "bFP", "FN"):
        ap, ap50, ap75 = ap_triple(Evaluator(backend_name, data).precision(runs[run]))
        assert ap - rep.ap == pytest.approx(rep.delta[run], abs=1e-12)
        assert ap50 - rep.ap50 == pytest.approx(rep.delta50[run], abs=1e-12)
        assert ap75 - rep.ap75 == pytest.approx(rep.delta75[run], abs=1e-12)
    assert ap_triple(Evaluator(backend_name, data).precision(runs["all"]))[0] == pytest.approx(
        rep.ap_upper, abs=1e-12
    )


def test_faster_coco_eval_variant_prepares_only_altered_results(coco_scene, monkeypatch) -> None:
    # After the base evaluation, a variant run must turn only its altered results into
    # faster-coco-eval's RLEs (not the ground truth, not the unaltered results), and still give the
    # precision of a from-scratch evaluation.
    from faster_coco_eval.core import mask as fce_mask

    gt, results = coco_scene
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
def test_variant_with_nothing_altered_equals_base(coco_scene, backend_name: str) -> None:
    gt, results = coco_scene
    data = prepare(gt, results)
    evaluator = Evaluator(backend_name, data)
    base = evaluator.precision(data.results)
    same = evaluator.precision(data.results, altered=np.zeros(len(data.results), dtype=bool))
    np.testing.assert_array_equal(same, base)
    with pytest.raises(ValueError, match="altered has 3 entries"):
        evaluator.precision(data.results, altered=np.zeros(3, dtype=bool))
