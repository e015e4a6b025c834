"""Tests of densecontrast._coco: the COCO and RLE helpers below both the data and the analysis layer."""

from __future__ import annotations

import pytest
import torch

np = pytest.importorskip("numpy")
mask_utils = pytest.importorskip("pycocotools.mask")

from densecontrast import _coco  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _masks(seed: int, n: int = 5, height: int = 7, width: int = 9) -> np.ndarray:
    return np.random.default_rng(seed).random((n, height, width)) < 0.4


@pytest.mark.parametrize("seed", range(4))
def test_encode_decodes_back_and_areas_count_pixels(seed: int) -> None:
    masks = _masks(seed)
    rles = _coco.encode(masks)
    assert all(isinstance(r["counts"], str) and r["size"] == [7, 9] for r in rles)
    decoded = np.stack([mask_utils.decode({**r, "counts": r["counts"].encode()}) for r in rles])
    assert np.array_equal(decoded.astype(bool), masks)
    assert _coco.areas(rles) == [float(m.sum()) for m in masks]


def test_encode_no_masks_and_areas_past_pycocotools_chunk() -> None:
    assert _coco.encode(np.zeros((0, 3, 4), dtype=bool)) == []
    masks = _masks(0, n=300, height=3, width=4)
    assert _coco.areas(_coco.encode(masks)) == [float(m.sum()) for m in masks]


def test_coco_from_targets_reads_tensors_and_arrays_alike() -> None:
    masks = torch.from_numpy(_masks(1, n=3)).to(torch.uint8)
    labels = torch.tensor([1, 2, 1])
    from_tensors = _coco.coco_from_targets([{"masks": masks, "labels": labels}], [4], {1: "a", 2: "b"})
    from_arrays = _coco.coco_from_targets(
        [{"masks": masks.numpy(), "labels": labels.numpy()}],
        [4],
        [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    )
    assert from_tensors == from_arrays
    anns = from_tensors["annotations"]
    assert [a["id"] for a in anns] == [1, 2, 3] and [a["category_id"] for a in anns] == [1, 2, 1]
    for ann, mask in zip(anns, masks.numpy().astype(bool)):
        rows, cols = np.nonzero(mask)
        assert ann["bbox"] == [
            float(cols.min()),
            float(rows.min()),
            float(np.ptp(cols) + 1),
            float(np.ptp(rows) + 1),
        ]
        assert ann["area"] == float(mask.sum()) and ann["iscrowd"] == 0


@pytest.mark.parametrize(
    ("targets", "ids", "match"),
    [
        ([{"masks": np.zeros((1, 2, 2))}], [1], "needs 'masks'"),
        ([{"masks": np.zeros((1, 2, 2)), "labels": np.array([1, 1])}], [1], "masks must be"),
        ([{"masks": np.zeros((1, 2, 2)), "labels": np.array([3])}], [1], "3 is not a category id"),
        ([{"masks": np.zeros((0, 2, 2)), "labels": np.zeros(0)}], [1, 2], "one id per entry"),
        ([{"masks": np.zeros((0, 2, 2)), "labels": np.zeros(0)}] * 2, [1, 1], "unique"),
    ],
)
def test_coco_from_targets_refuses_bad_input(targets: list, ids: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _coco.coco_from_targets(targets, ids, {1: "a"})


def test_analysis_and_data_share_the_one_implementation() -> None:
    pytest.importorskip("matplotlib")
    from densecontrast.analysis import _rle, coco_from_targets

    assert coco_from_targets is _coco.coco_from_targets
    assert _rle.encode is _coco.encode and _rle.areas is _coco.areas


# Importing this module loads neither pycocotools nor numpy itself: tests/test_datasets.py checks the
# whole data layer, which imports it, in a fresh process.
