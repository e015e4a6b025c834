"""torchvision targets and outputs to COCO ground truth and results."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _coco_cases import H, W, approx, rle

from densecontrast.analysis import coco_from_targets, evaluate_segm_ap, results_from_outputs

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


def test_converters_roundtrip_with_torch() -> None:
    torch = pytest.importorskip("torch")
    masks = torch.zeros(2, H, W, dtype=torch.uint8)
    masks[0, 1:5, 1:5] = 1
    masks[1, 5:9, 3:9] = 1
    targets = [
        {
            "boxes": torch.tensor([[1.0, 1, 5, 5], [3, 5, 9, 9]]),
            "labels": torch.tensor([1, 2]),
            "masks": masks,
        },
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 8, 6),
        },
    ]
    gt = coco_from_targets(targets, [10, 11], {1: "a", 2: "b"})
    assert gt["images"] == [{"id": 10, "height": H, "width": W}, {"id": 11, "height": 8, "width": 6}]
    assert [a["id"] for a in gt["annotations"]] == [1, 2]
    assert gt["annotations"][1]["bbox"] == [3.0, 5.0, 6.0, 4.0] and gt["annotations"][1]["area"] == 24.0
    outputs = [
        {
            "masks": masks[:, None].float() * 0.9,
            "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([1, 2]),
        },
        {
            "masks": torch.zeros(0, 1, 8, 6),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64),
        },
    ]
    results = results_from_outputs(outputs, [10, 11])
    json.dumps(results)
    assert evaluate_segm_ap(gt, results) == {"AP": approx(1.0), "AP50": approx(1.0), "AP75": approx(1.0)}
    assert results_from_outputs(outputs, [10, 11], mask_threshold=0.95) == [
        {**r, "segmentation": rle(np.zeros((H, W), bool))} for r in results
    ]
    with pytest.raises(ValueError, match="not a category id"):
        coco_from_targets(targets, [10, 11], {1: "a"})
    with pytest.raises(ValueError, match="image_ids"):
        results_from_outputs(outputs, [10])
