"""Tests of densecontrast.datasets.export_yolo: what Ultralytics' own dataset code reads back."""

from __future__ import annotations

import os
import sys

import pytest
import torch

os.environ.setdefault("YOLO_OFFLINE", "1")
pytest.importorskip("ultralytics")
pytest.importorskip("cv2")

from densecontrast.datasets import SyntheticInstances, export_yolo

SIZE = 64


def _read_back(data_yaml, count: int) -> list[dict]:
    """The items of the exported train split as Ultralytics' YOLODataset gives them (one mask per
    instance at full resolution, no augmentation)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import DEFAULT_CFG

    data = check_det_dataset(str(data_yaml))
    cfg = get_cfg(DEFAULT_CFG, {"task": "segment", "imgsz": SIZE, "overlap_mask": False, "mask_ratio": 1,
                                "plots": False})  # fmt: skip
    dataset = build_yolo_dataset(cfg, data["train"], count, data, mode="val", stride=32)
    return [dataset[i] for i in range(count)]


def test_every_instance_reads_back_through_ultralytics_dataset(tmp_path) -> None:
    ds = SyntheticInstances(6, image_size=SIZE, num_categories=3, min_instances=3, max_instances=6, seed=0)
    path = ds.export_yolo(tmp_path / "yolo")
    items = _read_back(path, len(ds))
    checked = 0
    for index, item in enumerate(items):
        image, target = ds[index]
        assert torch.equal(item["img"], torch.round(image * 255).to(torch.uint8))
        assert item["cls"].reshape(-1).tolist() == [float(v - 1) for v in target["labels"].tolist()]
        got, want = item["masks"].bool(), target["masks"].bool()
        assert got.shape == want.shape, index
        inter = (got & want).flatten(1).sum(1).double()
        union = (got | want).flatten(1).sum(1).double()
        iou = inter / union
        assert (iou >= 0.85).all(), (index, iou.tolist())
        checked += len(iou)
    assert checked >= 18


def test_export_yolo_is_the_public_function(tmp_path) -> None:
    import densecontrast.datasets

    assert "export_yolo" in densecontrast.datasets.__all__
    ds = SyntheticInstances(2, image_size=32, num_categories=2, seed=1)
    a = export_yolo(ds, tmp_path / "a")
    b = ds.export_yolo(tmp_path / "b")
    for label in sorted((a.parent / "labels" / "train").iterdir()):
        assert (b.parent / "labels" / "train" / label.name).read_text() == label.read_text()


class _Items(torch.utils.data.Dataset):
    def __init__(self, labels: list[list[int]]) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        masks = torch.zeros(len(self.labels[index]), 16, 16, dtype=torch.uint8)
        for j in range(len(masks)):
            masks[j, 2 + 3 * j : 5 + 3 * j, 2:10] = 1
        return torch.zeros(3, 16, 16), {"masks": masks, "labels": torch.tensor(self.labels[index])}


@pytest.mark.parametrize(
    ("labels", "names", "match"),
    [
        ([[1], [2, 0]], None, r"train image 1: labels must lie in >= 1 .*got \[0\]"),
        ([[1], [1], [3, 1]], ["a", "b"], r"train image 2: labels must lie in \[1, 2\] .*got \[3\]"),
        ([[-1]], ["a"], r"train image 0: labels must lie in \[1, 1\] .*got \[-1\]"),
    ],
)
def test_labels_outside_the_classes_are_refused(
    tmp_path, labels: list, names: list | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        export_yolo(_Items(labels), tmp_path, names=names)


def test_labels_in_range_name_the_classes(tmp_path) -> None:
    path = export_yolo(_Items([[1], [3, 1]]), tmp_path)
    assert '  2: "class2"' in path.read_text()
    assert (tmp_path / "labels" / "train" / "000002.txt").read_text().split("\n")[0].startswith("2 ")


def test_missing_ultralytics_says_what_to_install(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ultralytics.data.converter", None)
    with pytest.raises(ImportError, match=r"pip install 'densecontrast\[ultralytics\]'"):
        export_yolo(_Items([[1]]), tmp_path)
    assert not any(tmp_path.iterdir()), "files were written before the import failed"


def test_a_worker_process_writes_the_same_files(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import densecontrast.datasets as exporter

    ds = SyntheticInstances(3, image_size=32, num_categories=2, seed=2)
    plain = ds.export_yolo(tmp_path / "plain").parent
    monkeypatch.setattr(exporter, "WORKER_MIN_ITEMS", 2)
    worker = ds.export_yolo(tmp_path / "worker").parent
    files = sorted(p.relative_to(plain) for p in plain.rglob("*") if p.is_file() and p.suffix != ".yaml")
    assert len(files) == 6
    for name in files:
        assert (worker / name).read_bytes() == (plain / name).read_bytes(), name
