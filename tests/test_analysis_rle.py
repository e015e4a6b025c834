"""Run-length encodings: decoding many at once, complements, checks that name the bad entry."""

from __future__ import annotations

import numpy as np
import pytest
from _coco_cases import rle
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pycocotools import mask as mask_utils

from densecontrast.analysis._rle import _decode, check_compressed, complement
from densecontrast.analysis._rle import counts as rle_counts

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


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
