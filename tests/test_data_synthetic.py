"""Tests of densecontrast.data.synthetic: the SyntheticInstances dataset and collate_detection."""

from __future__ import annotations

import hashlib

import pytest
import torch

from densecontrast.data import MIN_VISIBLE_AREA, SyntheticInstances, collate_detection

SIZE = 64


def _naive_box(mask: torch.Tensor) -> list[float]:
    rows, cols = mask.nonzero(as_tuple=True)
    return [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]


def _assert_same_item(a: tuple, b: tuple) -> None:
    assert torch.equal(a[0], b[0])
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        assert torch.equal(a[1][key], b[1][key]), key


# --- format -------------------------------------------------------------------------------------


def test_item_format(small_items: list) -> None:
    for i, (image, target) in enumerate(small_items):
        n = target["labels"].shape[0]
        assert image.dtype == torch.float32 and image.shape == (3, SIZE, SIZE)
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (n, 4)
        assert target["labels"].dtype == torch.int64
        assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (n, SIZE, SIZE)
        assert target["image_id"].dtype == torch.int64 and target["image_id"].shape == ()
        assert int(target["image_id"]) == i + 1
        assert target["area"].dtype == torch.float32 and target["area"].shape == (n,)
        assert target["iscrowd"].dtype == torch.int64 and torch.equal(
            target["iscrowd"], torch.zeros(n).long()
        )


def test_targets_match_masks(small_items: list) -> None:
    for _, target in small_items:
        masks = target["masks"].bool()
        assert masks.shape[0] >= 1
        assert ((target["labels"] >= 1) & (target["labels"] <= 4)).all()
        assert set(torch.unique(target["masks"]).tolist()) <= {0, 1}
        # every target is visible enough, and its box and area are its visible mask's
        assert (masks.sum(dim=(1, 2)) >= MIN_VISIBLE_AREA).all()
        assert torch.equal(target["area"], masks.sum(dim=(1, 2)).float())
        assert target["boxes"].tolist() == [_naive_box(m) for m in masks]
        # visible masks are disjoint: occlusion was resolved
        assert int(masks.sum(dim=0).max()) <= 1


def test_image_ids_unique(small_dataset: SyntheticInstances) -> None:
    ids = [int(small_dataset[i][1]["image_id"]) for i in range(len(small_dataset))]
    assert len(set(ids)) == len(ids) and min(ids) >= 1


def test_pixels_are_quantised(small_items: list) -> None:
    """Images are multiples of 1/255 so that a PNG export is lossless."""
    image = small_items[0][0]
    assert torch.equal(torch.round(image * 255) / 255, image)


def test_categories(small_dataset: SyntheticInstances) -> None:
    assert [c["id"] for c in small_dataset.categories] == [1, 2, 3, 4]
    assert len({c["name"] for c in SyntheticInstances(num_categories=12).categories}) == 12


# --- determinism --------------------------------------------------------------------------------


def test_same_seed_same_item_in_any_order(small_dataset: SyntheticInstances, small_items: list) -> None:
    again = SyntheticInstances(6, image_size=SIZE, num_categories=4, seed=7)
    for i in reversed(range(len(again))):
        _assert_same_item(again[i], small_items[i])
    _assert_same_item(again[-1], small_items[5])


def test_seeds_and_splits_differ(small_items: list) -> None:
    for other in (
        SyntheticInstances(6, image_size=SIZE, num_categories=4, seed=8),
        SyntheticInstances(6, image_size=SIZE, num_categories=4, seed=7, split="val"),
    ):
        assert not torch.equal(other[0][0], small_items[0][0])


def test_item_independent_of_length(small_items: list) -> None:
    longer = SyntheticInstances(50, image_size=SIZE, num_categories=4, seed=7)
    _assert_same_item(longer[3], small_items[3])


def test_dataloader_workers_match(small_dataset: SyntheticInstances, small_items: list) -> None:
    loader = torch.utils.data.DataLoader(
        small_dataset, batch_size=4, num_workers=2, collate_fn=collate_detection
    )
    images, targets = [], []
    for batch_images, batch_targets in loader:
        images += batch_images
        targets += batch_targets
    for got, want in zip(zip(images, targets), small_items):
        _assert_same_item(got, want)


def test_items_leave_torch_threads_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generating an item never changes torch's process-wide thread count, not even for a while."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    try:
        SyntheticInstances(2, image_size=SIZE)[1]
    finally:
        monkeypatch.undo()
        torch.set_num_threads(previous)
    assert calls == []


def test_collate_detection(small_items: list) -> None:
    images, targets = collate_detection(small_items[:3])
    assert isinstance(images, list) and isinstance(targets, list)
    assert all(a is b[0] for a, b in zip(images, small_items)) and all(
        a is b[1] for a, b in zip(targets, small_items)
    )


def _digest(dataset: SyntheticInstances) -> str:
    """sha256 of every item: image bytes (uint8) and every target tensor, in key order."""
    h = hashlib.sha256()
    for i in range(len(dataset)):
        image, target = dataset[i]
        h.update(torch.round(image * 255).to(torch.uint8).numpy().tobytes())
        for key in ("boxes", "labels", "masks", "image_id", "area", "iscrowd"):
            h.update(target[key].numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"length": 4, "image_size": 64, "num_categories": 7, "seed": 5}, "c483f8c4454821b3"),
        ({"length": 2, "image_size": 128, "seed": 0, "split": "val"}, "25bde8c8b7783f58"),
        (
            {
                "length": 3,
                "image_size": 32,
                "min_instances": 0,
                "max_instances": 8,
                "seed": 9,
                "split": "test",
            },
            "79ec3456904abb30",
        ),
    ],
)
def test_items_are_pinned(kwargs: dict, expected: str) -> None:
    """The generator's output for a seed is fixed: any change to the items (images or targets) changes
    these digests."""
    assert _digest(SyntheticInstances(**kwargs)) == expected


# --- instance counts ----------------------------------------------------------------------------


def test_at_least_one_instance_in_tiny_images() -> None:
    ds = SyntheticInstances(40, image_size=32, min_instances=1, max_instances=8, seed=3)
    assert all(ds[i][1]["labels"].shape[0] >= 1 for i in range(len(ds)))


def test_no_instances() -> None:
    image, target = SyntheticInstances(1, image_size=SIZE, min_instances=0, max_instances=0)[0]
    assert image.shape == (3, SIZE, SIZE)
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, SIZE, SIZE)
    assert target["labels"].shape == (0,) and target["area"].shape == (0,)


def test_crowded_images_keep_most_instances() -> None:
    """The benchmark configuration: 60 objects in 384 x 384 stay (nearly) all visible."""
    _, target = SyntheticInstances(1, image_size=384, min_instances=60, max_instances=60)[0]
    assert 55 <= target["labels"].shape[0] <= 60
    assert int(target["masks"].sum(dim=0).max()) <= 1


# --- arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"length": -1}, ValueError, "length"),
        ({"length": 2.0}, TypeError, "length"),
        ({"image_size": 16}, ValueError, "image_size"),
        ({"image_size": True}, TypeError, "image_size"),
        ({"num_categories": 0}, ValueError, "num_categories"),
        ({"min_instances": -1}, ValueError, "min_instances"),
        ({"min_instances": 5, "max_instances": 3}, ValueError, "max_instances"),
        ({"seed": "0"}, TypeError, "seed"),
        ({"split": "validation"}, ValueError, "split"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type, name: str) -> None:
    with pytest.raises(error, match=name):
        SyntheticInstances(**kwargs)


def test_len_and_index_errors() -> None:
    ds = SyntheticInstances(3, image_size=32)
    assert len(ds) == 3 and len(SyntheticInstances(0)) == 0
    for bad in (3, -4):
        with pytest.raises(IndexError, match="index"):
            ds[bad]
    with pytest.raises(TypeError, match="index"):
        ds[1.0]  # type: ignore[index]
