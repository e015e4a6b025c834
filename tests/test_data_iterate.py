"""Tests of densecontrast.data.iterate: reading a dataset's items in order, in place or in a worker."""

from __future__ import annotations

import pytest
import torch

import densecontrast.data.iterate
from densecontrast.data import SyntheticInstances, iterate_items


class _Squares(torch.utils.data.Dataset):
    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"index": torch.tensor(index), "square": torch.full((2, 2), float(index * index))}


@pytest.fixture
def loaders(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The keyword arguments of every DataLoader made while the test runs."""
    made: list[dict] = []

    class CountingLoader(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs) -> None:
            made.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", CountingLoader)
    return made


@pytest.mark.parametrize("length", [0, 1, 5])
def test_small_datasets_are_read_in_place_in_order(length: int, loaders: list[dict]) -> None:
    items = list(iterate_items(_Squares(length)))
    assert [int(i["index"]) for i in items] == list(range(length))
    assert loaders == []


def test_from_the_threshold_on_one_worker_gives_the_same_items(loaders: list[dict]) -> None:
    data = _Squares(5)
    in_place = list(iterate_items(data, min_items_for_worker=6))
    in_worker = list(iterate_items(data, min_items_for_worker=5))
    assert len(loaders) == 1 and loaders[0]["num_workers"] == 1 and loaders[0]["batch_size"] is None
    assert loaders[0]["shuffle"] is False
    assert len(in_worker) == 5
    for a, b in zip(in_place, in_worker):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_default_threshold_is_read_when_called(
    monkeypatch: pytest.MonkeyPatch, loaders: list[dict]
) -> None:
    monkeypatch.setattr(densecontrast.data.iterate, "WORKER_MIN_ITEMS", 3)
    list(iterate_items(_Squares(2)))
    assert loaders == []
    list(iterate_items(_Squares(3)))
    assert len(loaders) == 1


def test_the_worker_leaves_this_processs_threads_alone(loaders: list[dict]) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ds = SyntheticInstances(2, image_size=32, seed=3)
        images = [image for image, _ in iterate_items(ds, min_items_for_worker=1)]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    assert len(loaders) == 1 and all(torch.equal(a, ds[i][0]) for i, a in enumerate(images))
