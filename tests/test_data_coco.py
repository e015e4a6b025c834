"""Tests of densecontrast.data.coco: COCO ground truth of a dataset, in memory and on disk."""

from __future__ import annotations

import json

import pytest
import torch
from _helpers import record_loaders

from densecontrast.data import SyntheticInstances, coco_ground_truth, export_coco

_PYCOCOTOOLS_NUMPY2 = "ignore:__array__ implementation:DeprecationWarning"  # pycocotools with numpy 2
pytestmark = pytest.mark.filterwarnings(_PYCOCOTOOLS_NUMPY2)


# --- COCO ---------------------------------------------------------------------------------------


def test_coco_ground_truth_round_trip(small_dataset: SyntheticInstances, small_items: list) -> None:
    coco_module = pytest.importorskip("pycocotools.coco")
    gt = small_dataset.coco_ground_truth()
    coco = coco_module.COCO()
    coco.dataset = json.loads(json.dumps(gt))  # must survive JSON
    coco.createIndex()
    assert sorted(coco.getImgIds()) == list(range(1, len(small_dataset) + 1))
    ann_ids = [a["id"] for a in gt["annotations"]]
    assert ann_ids == list(range(1, len(ann_ids) + 1))
    assert gt["categories"] == small_dataset.categories
    assert all(isinstance(a["segmentation"]["counts"], str) for a in gt["annotations"])  # compressed RLE
    # written by the analysis package's converter, the one COCO writer
    from densecontrast.analysis import coco_from_targets

    alone = coco_from_targets(
        [t for _, t in small_items], list(range(1, len(small_items) + 1)), small_dataset.categories
    )
    assert gt["annotations"] == alone["annotations"]
    assert [{k: v for k, v in i.items() if k != "file_name"} for i in gt["images"]] == alone["images"]
    for _, target in small_items:
        image_id = int(target["image_id"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert [a["category_id"] for a in anns] == target["labels"].tolist()
        for ann, mask, box, area in zip(
            anns, target["masks"], target["boxes"].tolist(), target["area"].tolist()
        ):
            assert torch.equal(torch.from_numpy(coco.annToMask(ann)), mask)
            x1, y1, x2, y2 = box
            assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1]
            assert ann["area"] == area and ann["iscrowd"] == 0


def test_export_coco_loads_back(tmp_path, small_dataset: SyntheticInstances, small_items: list) -> None:
    np = pytest.importorskip("numpy")
    pil_image = pytest.importorskip("PIL.Image")
    mask_utils = pytest.importorskip("pycocotools.mask")
    root = small_dataset.export_coco(tmp_path / "coco")
    assert root == tmp_path / "coco"
    gt = json.loads((root / "annotations.json").read_text())
    assert gt == json.loads(json.dumps(small_dataset.coco_ground_truth()))
    by_image: dict[int, list] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for record, (image, target) in zip(gt["images"], small_items):
        with pil_image.open(root / "images" / record["file_name"]) as png:
            assert png.mode == "RGB"
            pixels = torch.from_numpy(np.array(png)).permute(2, 0, 1)
        assert torch.equal(pixels, torch.round(image * 255).to(torch.uint8))
        masks = [mask_utils.decode(a["segmentation"]) for a in by_image[record["id"]]]
        assert torch.equal(torch.stack([torch.from_numpy(m) for m in masks]), target["masks"])


# --- exporters in a worker process --------------------------------------------------------------


def test_exporters_read_items_in_a_worker_and_write_the_same(
    tmp_path, monkeypatch: pytest.MonkeyPatch, small_dataset: SyntheticInstances
) -> None:
    """Forced through the worker path, export_coco writes exactly the in-process JSON and images, and
    torch's thread count in this process is left alone."""
    pytest.importorskip("pycocotools")
    pytest.importorskip("PIL")
    in_process = json.loads(json.dumps(small_dataset.coco_ground_truth()))
    plain_root = small_dataset.export_coco(tmp_path / "plain")
    loaders = record_loaders(monkeypatch)
    threads = torch.get_num_threads()
    assert small_dataset.coco_ground_truth() == in_process
    root = small_dataset.export_coco(tmp_path / "worker")
    assert torch.get_num_threads() == threads
    assert len(loaders) == 2 and all(k["num_workers"] == 1 and k["batch_size"] is None for k in loaders)
    assert (root / "annotations.json").read_text() == (plain_root / "annotations.json").read_text()
    for image in sorted((plain_root / "images").iterdir()):
        assert (root / "images" / image.name).read_bytes() == image.read_bytes()


# --- any dataset ----------------------------------------------------------------------------------


class _Plain(torch.utils.data.Dataset):
    """Two images without ``image_id`` or ``categories``: one instance, then none."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        masks = torch.zeros(1 - index, 5, 6, dtype=torch.uint8)
        if index == 0:
            masks[0, 1:3, 2:5] = 1
        return torch.full((3, 5, 6), 0.5), {
            "masks": masks,
            "labels": torch.ones(1 - index, dtype=torch.int64),
        }


def test_functions_work_on_any_dataset(tmp_path) -> None:
    pytest.importorskip("pycocotools")
    with pytest.raises(ValueError, match="categories must be given"):
        coco_ground_truth(_Plain())
    gt = coco_ground_truth(_Plain(), categories=[{"id": 1, "name": "thing"}], info={"description": "x"})
    assert [(i["id"], i["file_name"], i["height"], i["width"]) for i in gt["images"]] == [
        (1, "000001.png", 5, 6),
        (2, "000002.png", 5, 6),
    ]
    assert [(a["image_id"], a["area"], a["bbox"]) for a in gt["annotations"]] == [
        (1, 6.0, [2.0, 1.0, 3.0, 2.0])
    ]
    assert gt["info"] == {"description": "x"} and gt["categories"] == [{"id": 1, "name": "thing"}]
    root = export_coco(_Plain(), tmp_path, categories=[{"id": 1, "name": "thing"}])
    assert json.loads((root / "annotations.json").read_text()) == json.loads(json.dumps({**gt, "info": {}}))
    assert sorted(p.name for p in (root / "images").iterdir()) == ["000001.png", "000002.png"]


def test_methods_are_the_functions_with_the_datasets_info(small_dataset: SyntheticInstances) -> None:
    pytest.importorskip("pycocotools")
    gt = coco_ground_truth(small_dataset)
    assert gt["info"] == {}
    assert {**gt, "info": small_dataset.coco_ground_truth()["info"]} == small_dataset.coco_ground_truth()
    assert "seed=7 split=train" in small_dataset.coco_ground_truth()["info"]["description"]
