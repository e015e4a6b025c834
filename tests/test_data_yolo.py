"""Tests of densecontrast.data.yolo: what Ultralytics' own dataset code reads back from the export."""

from __future__ import annotations

import json
import os
import sys
import warnings

import pytest
import torch

os.environ.setdefault("YOLO_OFFLINE", "1")
pytest.importorskip("ultralytics")

from _helpers import record_loaders
from test_data_polygons import ring_and_occluder, with_background_hole

from densecontrast.data import SyntheticInstances, YoloExportWarning, export_yolo
from densecontrast.data.yolo import DEFAULT_MIN_IOU

cv2 = pytest.importorskip("cv2")
np = pytest.importorskip("numpy")

SIZE = 96


def _read_back(data_yaml, split: str, count: int, size: int, *, overlap: bool) -> list[dict]:
    """The items of an exported split as Ultralytics' YOLODataset gives them (full resolution, no
    augmentation): one mask per instance, or one index map per image with ``overlap``."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import DEFAULT_CFG

    data = check_det_dataset(str(data_yaml))
    cfg = get_cfg(DEFAULT_CFG, {"task": "segment", "imgsz": size, "overlap_mask": overlap, "mask_ratio": 1,
                                "plots": False})  # fmt: skip
    dataset = build_yolo_dataset(cfg, data[split], count, data, mode="val", stride=32)
    return [dataset[i] for i in range(count)]


def _read_masks(item: dict, target: dict, *, overlap: bool) -> torch.Tensor:
    """bool (N, H, W): the mask Ultralytics gives each of the target's N instances, in target order.

    With ``overlap`` the index map's values follow Ultralytics' own order (by area); each is matched to
    the target instance with the same box (a polygon through the boundary pixels' centres has the mask's
    box centre, and its width and height less one pixel).
    """
    if not overlap:
        return item["masks"].bool()
    height, width = target["masks"].shape[-2:]
    x1, y1, x2, y2 = target["boxes"].unbind(dim=1)
    boxes = torch.stack(
        [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1 - 1) / width, (y2 - y1 - 1) / height], 1
    )
    read = torch.zeros_like(target["masks"], dtype=torch.bool)
    taken: set[int] = set()
    for rank, (box, cls) in enumerate(zip(item["bboxes"], item["cls"].reshape(-1).tolist())):
        distance = (boxes - box).abs().sum(dim=1)
        k = int(distance.argmin())
        assert float(distance[k]) < 1e-3 and k not in taken, (rank, distance.tolist())
        assert cls == float(target["labels"][k] - 1)
        taken.add(k)
        read[k] = item["masks"][0] == rank + 1
    assert len(taken) == len(boxes)
    return read


def _iou(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return (inter / union).tolist()


def _parts_and_holes(mask: torch.Tensor) -> tuple[int, int]:
    """Connected parts (8-connected) and background holes (4-connected, off the border) of a mask."""
    array = mask.to(torch.uint8).numpy()
    parts = cv2.connectedComponents(array, connectivity=8)[0] - 1
    count, labels = cv2.connectedComponents(1 - array, connectivity=4)
    border = set(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]).tolist())
    return parts, len(set(range(1, count)) - border)


@pytest.fixture(scope="module")
def crowded() -> SyntheticInstances:
    """Crowded scenes: 10 to 16 objects in 96 x 96 pixels, most of them occluded."""
    return SyntheticInstances(
        12, image_size=SIZE, num_categories=3, min_instances=10, max_instances=16, seed=7
    )


@pytest.fixture(scope="module")
def crowded_export(crowded: SyntheticInstances, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("crowded")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_yolo(crowded, root, val_dataset=crowded)
    report = json.loads((root / "report.json").read_text())
    return path, report, caught


@pytest.mark.parametrize("overlap", [False, True], ids=["one-mask-per-instance", "overlap_mask"])
def test_every_instance_round_trips_or_is_reported(crowded, crowded_export, overlap: bool) -> None:
    """Every instance of crowded scenes, read back by Ultralytics' YOLODataset in both overlap_mask
    modes: an instance in one part (holes included) comes back exactly when it has its own mask, and
    with IoU >= DEFAULT_MIN_IOU in the index map unless the report lists it; an instance in several
    parts comes back with IoU >= DEFAULT_MIN_IOU or is listed in the report with the IoU measured here."""
    path, report, _ = crowded_export
    items = _read_back(path, "train", len(crowded), SIZE, overlap=overlap)
    listed = {(u["image"], u["instance"]): u for u in report["splits"]["train"]["unfaithful"]}
    key = "iou_overlap" if overlap else "iou"
    checked = with_holes = in_parts = 0
    for index, item in enumerate(items):
        image, target = crowded[index]
        assert torch.equal(item["img"], torch.round(image * 255).to(torch.uint8))
        want = target["masks"].bool()
        got = _read_masks(item, target, overlap=overlap)
        for k, iou in enumerate(_iou(got, want)):
            parts, holes = _parts_and_holes(want[k])
            with_holes += holes > 0
            in_parts += parts > 1
            entry = listed.get((f"{index + 1:06d}", k))
            if parts == 1 and not overlap:
                assert iou == 1.0, (index, k, iou)
            if entry is None:
                assert iou >= DEFAULT_MIN_IOU, (index, k, iou, parts, holes)
            else:
                assert entry[key] == pytest.approx(iou, abs=1e-12), (index, k)
            checked += 1
    assert checked == report["splits"]["train"]["instances"] >= 120
    assert with_holes >= 1 and in_parts >= 10  # the scenes hold the shapes that outline-only export got wrong


def test_report_lists_only_instances_below_the_bound_and_warns_once(crowded_export) -> None:
    _, report, caught = crowded_export
    split = report["splits"]["train"]
    assert report["min_iou"] == DEFAULT_MIN_IOU and report["val"] == "images/train"
    for entry in split["unfaithful"]:
        assert min(entry["iou"], entry["iou_overlap"]) < DEFAULT_MIN_IOU
    messages = [str(w.message) for w in caught if issubclass(w.category, YoloExportWarning)]
    if split["unfaithful"]:
        assert len(messages) == 1 and f"{len(split['unfaithful'])} of {split['instances']}" in messages[0]
        assert "report.json" in messages[0]
    else:
        assert messages == []


class _Masks(torch.utils.data.Dataset):
    """Images holding given masks (N, H, W) and labels, one image per entry."""

    def __init__(self, masks: list[torch.Tensor], labels: list[list[int]] | None = None) -> None:
        self.masks = masks
        self.labels = labels or [[1] * len(m) for m in masks]

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        masks = self.masks[index]
        rows = masks.any(dim=2)
        cols = masks.any(dim=1)
        boxes = []
        for r, c in zip(rows, cols):
            ys, xs = r.nonzero().flatten(), c.nonzero().flatten()
            if xs.numel() == 0:  # an empty mask
                boxes.append([0.0, 0.0, 0.0, 0.0])
                continue
            boxes.append([float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)])
        target = {"masks": masks.to(torch.uint8), "labels": torch.tensor(self.labels[index]),
                  "boxes": torch.tensor(boxes)}  # fmt: skip
        return torch.zeros(3, *masks.shape[-2:]), target


@pytest.mark.parametrize("overlap", [False, True], ids=["one-mask-per-instance", "overlap_mask"])
def test_rings_and_holes_read_back_exactly(tmp_path, overlap: bool) -> None:
    data = _Masks([ring_and_occluder(), with_background_hole()], [[1, 2], [1]])
    path = export_yolo(data, tmp_path, val_dataset=data, names=["a", "b"])
    items = _read_back(path, "train", 2, 64, overlap=overlap)
    for index, item in enumerate(items):
        _, target = data[index]
        assert _iou(_read_masks(item, target, overlap=overlap), target["masks"].bool()) == [1.0] * len(
            target["masks"]
        )
    assert json.loads((tmp_path / "report.json").read_text())["splits"]["train"]["unfaithful"] == []


def test_parts_are_joined_and_the_loss_is_reported(tmp_path) -> None:
    """Two 10 x 10 squares with 20 columns between them: one polygon visits both; the bridge covers the
    20 pixels of the gap on one row (IoU 200 / 220), below a bound of 0.95, so the export says so."""
    masks = torch.zeros(1, 40, 60, dtype=torch.bool)
    masks[0, 10:20, 10:20] = True
    masks[0, 10:20, 40:50] = True
    data = _Masks([masks])
    with pytest.warns(YoloExportWarning, match=r"1 of 1 instances .* IoU 0\.909 \(in 2 parts"):
        export_yolo(data, tmp_path, val_dataset=data, min_iou=0.95)
    entry = json.loads((tmp_path / "report.json").read_text())["splits"]["train"]["unfaithful"][0]
    assert entry["parts"] == 2 and entry["iou"] == pytest.approx(200 / 220) == entry["iou_overlap"]
    line = (tmp_path / "labels" / "train" / "000001.txt").read_text().split()
    xs = [float(v) * 60 - 0.5 for v in line[1::2]]
    assert min(xs) == pytest.approx(10, abs=1e-3) and max(xs) == pytest.approx(49, abs=1e-3)


def test_tiny_and_empty_masks_are_written_or_reported(tmp_path) -> None:
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[0, 3, 3] = True  # one pixel: three copies of one point
    masks[1, 8, 8:10] = True  # two pixels
    data = _Masks([masks])
    with pytest.warns(YoloExportWarning, match="empty mask"):
        export_yolo(data, tmp_path, val_dataset=data)
    lines = (tmp_path / "labels" / "train" / "000001.txt").read_text().splitlines()
    assert len(lines) == 2 and all(len(line.split()) >= 7 for line in lines)
    report = json.loads((tmp_path / "report.json").read_text())["splits"]["train"]
    assert [(u["instance"], u["pixels"]) for u in report["unfaithful"]] == [(2, 0)]


# --- the validation split ------------------------------------------------------------------------


def test_without_val_dataset_the_export_warns_that_val_is_the_training_set(tmp_path) -> None:
    ds = SyntheticInstances(2, image_size=32, num_categories=2, seed=1)
    with pytest.warns(YoloExportWarning, match="no val_dataset.*training images"):
        path = export_yolo(ds, tmp_path, min_iou=0.0)
    assert 'val: "images/train"' in path.read_text()


def test_val_dataset_is_written_and_silences_the_warning(tmp_path) -> None:
    train = SyntheticInstances(2, image_size=32, num_categories=2, seed=1)
    val = SyntheticInstances(1, image_size=32, num_categories=2, seed=1, split="val")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "export_yolo: no val_dataset", YoloExportWarning)
        path = export_yolo(train, tmp_path / "a", val_dataset=val, min_iou=0.0)
        same = export_yolo(train, tmp_path / "b", val_dataset=train, min_iou=0.0)  # on purpose: no warning
    assert 'val: "images/val"' in path.read_text()
    assert sorted(p.name for p in (tmp_path / "a" / "images" / "val").iterdir()) == ["000001.png"]
    assert 'val: "images/train"' in same.read_text() and not (tmp_path / "b" / "images" / "val").exists()


# --- arguments and dependencies -------------------------------------------------------------------


def test_the_method_writes_what_the_function_writes(tmp_path) -> None:
    ds = SyntheticInstances(2, image_size=32, num_categories=2, seed=1)
    a = export_yolo(ds, tmp_path / "a", val_dataset=ds, min_iou=0.0)
    b = ds.export_yolo(tmp_path / "b", val_dataset=ds, min_iou=0.0)
    labels = sorted((a.parent / "labels" / "train").iterdir())
    assert len(labels) == 2
    for label in labels:
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
    data = _Items(labels)
    with pytest.raises(ValueError, match=match):
        export_yolo(data, tmp_path, names=names, val_dataset=data)


def test_labels_in_range_name_the_classes(tmp_path) -> None:
    data = _Items([[1], [3, 1]])
    path = export_yolo(data, tmp_path, val_dataset=data)
    assert '  2: "class2"' in path.read_text()
    assert (tmp_path / "labels" / "train" / "000002.txt").read_text().split("\n")[0].startswith("2 ")


@pytest.mark.parametrize("min_iou", [-0.1, 1.5, "0.9", True])
def test_min_iou_must_be_a_fraction(tmp_path, min_iou) -> None:
    with pytest.raises(ValueError, match="min_iou must be a number in"):
        export_yolo(_Items([[1]]), tmp_path, min_iou=min_iou)


def test_missing_ultralytics_says_what_to_install(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ultralytics.data.utils", None)
    with pytest.raises(ImportError, match=r"pip install 'densecontrast\[ultralytics\]'"):
        export_yolo(_Items([[1]]), tmp_path)
    assert not any(tmp_path.iterdir()), "files were written before the import failed"


def test_a_worker_process_writes_the_same_files(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = SyntheticInstances(3, image_size=32, num_categories=2, seed=2)
    plain = ds.export_yolo(tmp_path / "plain", val_dataset=ds).parent
    loaders = record_loaders(monkeypatch)
    worker = ds.export_yolo(tmp_path / "worker", val_dataset=ds).parent
    assert len(loaders) == 1 and loaders[0]["num_workers"] == 1
    files = sorted(
        p.relative_to(plain) for p in plain.rglob("*") if p.is_file() and p.suffix in (".png", ".txt")
    )
    assert len(files) == 6
    for name in files:
        assert (worker / name).read_bytes() == (plain / name).read_bytes(), name
    assert (worker / "report.json").read_text() == (plain / "report.json").read_text()


def test_instances_sharing_a_class_and_a_box_are_both_read(tmp_path) -> None:
    """Two instances of one class with the same box (each in two parts, crosswise): Ultralytics' label
    check drops only rows with the same class and polygon, which distinct masks never share, so the
    round trip need not check for dropped rows; both come back."""
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, 2:5, 2:5] = masks[0, 10:13, 10:13] = True
    masks[1, 2:5, 10:13] = masks[1, 10:13, 2:5] = True
    data = _Masks([masks])
    path = export_yolo(data, tmp_path, val_dataset=data, min_iou=0.0)
    (item,) = _read_back(path, "train", 1, 16, overlap=False)
    assert item["cls"].reshape(-1).tolist() == [0.0, 0.0]
    got = item["masks"].bool()
    assert all((got[k] & masks[k]).sum() == masks[k].sum() for k in range(2))  # each covers its mask
