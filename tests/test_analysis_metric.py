"""ErrorAnalysis: update/compute/reset over batches equals one analyze() call; states gather across ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _synthetic_coco import synthetic_coco
from pycocotools import mask as mask_utils

from densecontrast.analysis import ErrorAnalysis, analyze

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


def _batches(num_images: int = 12) -> tuple[dict, list[dict], list[tuple[list[dict], list[dict]]]]:
    """Synthetic COCO data and the same images as torchvision-style (preds, targets), 4 images a batch."""
    gt, results = synthetic_coco(num_images, dets_per_image=10, size=(24, 40), seed=5)
    per_image = []
    for image in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"]]
        res = [r for r in results if r["image_id"] == image["id"]]
        masks = lambda items: torch.from_numpy(  # noqa: E731
            mask_utils.decode([x["segmentation"] for x in items]).transpose(2, 0, 1).astype(bool)
        )
        target = {"masks": masks(anns), "labels": torch.tensor([a["category_id"] for a in anns]),
                  "iscrowd": torch.tensor([a["iscrowd"] for a in anns])}  # fmt: skip
        pred = {"masks": masks(res).float()[:, None] * 0.8,
                "labels": torch.tensor([r["category_id"] for r in res]),
                "scores": torch.tensor([r["score"] for r in res], dtype=torch.float64)}  # fmt: skip
        per_image.append((pred, target))
    batches = [
        ([p for p, _ in per_image[i : i + 4]], [t for _, t in per_image[i : i + 4]])
        for i in range(0, num_images, 4)
    ]
    return gt, results, batches


def test_batches_equal_one_analysis() -> None:
    gt, results, batches = _batches()
    metric = ErrorAnalysis(categories={c["id"]: c["name"] for c in gt["categories"]}, backend="pycocotools")
    for preds, targets in batches:
        metric.update(preds, targets)
    got = metric.compute().to_dict()
    expected = analyze(gt, results, backend="pycocotools").to_dict()
    assert got == expected
    metric.reset()
    metric.update(*batches[0])
    assert metric.compute().to_dict() != expected  # only the first batch now


def test_box_mode_takes_boxes_or_mask_boxes() -> None:
    target = {
        "boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0], [5.0, 5.0, 9.0, 9.0]]),
        "labels": torch.tensor([1, 2]),
    }
    pred = {
        "boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]]),
        "labels": torch.tensor([1]),
        "scores": torch.tensor([0.9]),
    }
    metric = ErrorAnalysis(iou_type="bbox", categories={1: "a", 2: "b"}, backend="pycocotools")
    metric.update([pred], [target])
    rep = metric.compute()
    assert rep.iou_type == "bbox" and rep.ap == pytest.approx(0.5)
    assert rep.detection["missed"] == pytest.approx(0.5) and rep.detection_counts["missed"] == 1


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        ({"labels": torch.tensor([1])}, {"labels": torch.tensor([1])},
         r"preds\[0\] must be a dict with \['scores'"),
        ({"labels": torch.tensor([1]), "scores": torch.tensor([0.5])}, {"labels": torch.tensor([1])},
         r"preds\[0\]: iou_type 'segm' needs 'masks'"),
        ({"labels": torch.tensor([1]), "scores": torch.tensor([0.5]), "masks": torch.zeros(2, 4, 4)},
         {"labels": torch.tensor([1]), "masks": torch.zeros(1, 4, 4)},
         r"preds\[0\]: 'masks' must be .* N = 1"),
    ],
)  # fmt: skip
def test_bad_batches_name_the_entry(pred, target, match) -> None:
    with pytest.raises(ValueError, match=match):
        ErrorAnalysis().update([pred], [target])
    with pytest.raises(ValueError, match="one entry per image"):
        ErrorAnalysis().update([pred], [])


_RANK = """
import json, os, sys
import torch.distributed as dist
sys.path[:0] = [sys.argv[3], sys.argv[4]]
from test_analysis_metric import _batches
from densecontrast.analysis import ErrorAnalysis
rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=rank, world_size=2)
gt, _, batches = _batches()
metric = ErrorAnalysis(categories={c["id"]: c["name"] for c in gt["categories"]}, backend="pycocotools")
for preds, targets in batches[rank::2]:  # rank 0: batches 0 and 2, rank 1: batch 1
    metric.update(preds, targets)
print(json.dumps(metric.compute().to_dict()))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_processes_gather_every_image(tmp_path: Path) -> None:
    """Two gloo ranks, each with part of the batches, compute the report of all images (renumbered in
    rank order: rank 0's 8 images, then rank 1's 4)."""
    tests, src = str(Path(__file__).parent), str(Path(__file__).parents[1] / "src")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen([sys.executable, "-c", _RANK, str(r), str(tmp_path / "init"), tests, src],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for r in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    reports = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert reports[0] == reports[1]
    gt, _, batches = _batches()
    metric = ErrorAnalysis(categories={c["id"]: c["name"] for c in gt["categories"]}, backend="pycocotools")
    for preds, targets in (batches[0], batches[2], batches[1]):
        metric.update(preds, targets)
    assert reports[0] == json.loads(json.dumps(metric.compute().to_dict()))
