"""Matching and error pixels of one image (fFP, bFP, FN and the corrected masks) against a dense reference."""

from __future__ import annotations

import numpy as np
import pytest
from _coco_cases import rle
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pycocotools import mask as mask_utils

from densecontrast.analysis._errors import image_errors

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


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
