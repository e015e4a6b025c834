"""Small hand-built COCO inputs for the analysis tests: 10 x 10 images, rectangles as masks."""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

BACKENDS = ["pycocotools", "faster-coco-eval"]
H = W = 10


def rle(mask: np.ndarray) -> dict[str, Any]:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}


def rect(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def box_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def make_gt(objects: list[tuple[int, np.ndarray, int]], num_categories: int = 2) -> dict[str, Any]:
    """objects: (category_id, mask, iscrowd), all in image 1 of size H x W."""
    return {
        "images": [{"id": 1, "height": H, "width": W}],
        "categories": [{"id": c, "name": f"c{c}"} for c in range(1, num_categories + 1)],
        "annotations": [
            {"id": k + 1, "image_id": 1, "category_id": c, "segmentation": rle(m), "area": float(m.sum()),
             "bbox": box_of(m), "iscrowd": crowd}
            for k, (c, m, crowd) in enumerate(objects)
        ],
    }  # fmt: skip


def make_results(preds: list[tuple[int, np.ndarray, float]], *, boxes: bool = False) -> list[dict[str, Any]]:
    """preds: (category_id, mask, score), all in image 1; ``boxes`` adds each mask's box."""
    out = [{"image_id": 1, "category_id": c, "segmentation": rle(m), "score": s} for c, m, s in preds]
    if boxes:
        for r, (_, m, _) in zip(out, preds):
            r["bbox"] = box_of(m)
    return out


def approx(x: float) -> Any:
    return pytest.approx(x, abs=1e-9)


def plain_coco_ap(
    gt: dict[str, Any], results: list[dict[str, Any]], backend: str, iou_type: str = "segm"
) -> tuple[float, float, float]:
    """AP, AP50, AP75 of a textbook COCOeval run (loadRes, default parameters), from its precision array."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    drop = "bbox" if iou_type == "segm" else "segmentation"
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        dets = coco.loadRes([{k: v for k, v in r.items() if k != drop} for r in copy.deepcopy(results)])
        ev = COCOeval(coco, dets, iou_type)
        ev.evaluate()
        ev.accumulate()
    p = np.asarray(ev.eval["precision"])[:, :, :, 0, -1]  # area "all", 100 detections
    ap, ap50, ap75 = (float(x[x > -1].mean()) for x in (p, p[0], p[5]))
    return ap, ap50, ap75
