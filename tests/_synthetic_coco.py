"""Random COCO ground truth and noisy predictions, for the analysis tests and benchmarks.

Shape letters: N masks, H x W the image size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def encode(masks: np.ndarray) -> list[dict[str, Any]]:
    """Compressed RLEs (``counts`` a str) of bool masks (N, H, W)."""
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def _shape(rng: np.random.Generator, h: int, w: int, box: np.ndarray) -> np.ndarray:
    """A filled rectangle or ellipse inside box (x0, y0, x1, y1), as bool (H, W)."""
    x0, y0, x1, y1 = box
    mask = np.zeros((h, w), dtype=bool)
    if rng.random() < 0.5:
        mask[y0:y1, x0:x1] = True
        return mask
    yy, xx = np.ogrid[y0:y1, x0:x1]
    cy, cx = (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2
    ry, rx = max((y1 - y0) / 2, 0.5), max((x1 - x0) / 2, 0.5)
    mask[y0:y1, x0:x1] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return mask


def _random_box(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    bw, bh = rng.integers(w // 10, w // 2, endpoint=True), rng.integers(h // 10, h // 2, endpoint=True)
    x0, y0 = rng.integers(0, w - bw, endpoint=True), rng.integers(0, h - bh, endpoint=True)
    return np.array([x0, y0, x0 + bw, y0 + bh])


def _jitter(rng: np.random.Generator, box: np.ndarray, h: int, w: int) -> np.ndarray:
    size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
    new = box + np.round(rng.normal(0.0, 0.12, 4) * size).astype(int)
    new[[0, 2]] = np.clip(new[[0, 2]], 0, w)
    new[[1, 3]] = np.clip(new[[1, 3]], 0, h)
    new[2], new[3] = max(new[2], new[0] + 1), max(new[3], new[1] + 1)
    new[0], new[1] = min(new[0], w - 1), min(new[1], h - 1)
    return new


def synthetic_coco(
    num_images: int,
    *,
    dets_per_image: int = 16,
    num_categories: int = 5,
    size: tuple[int, int] = (48, 64),
    crowd_prob: float = 0.05,
    seed: int = 0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Random rectangles/ellipses as ground truth and noisy copies plus clutter as predictions.

    Args:
        num_images: number of images.
        dets_per_image: predictions per image (about 3/4 near a ground truth, the rest random).
        num_categories: categories 1..num_categories.
        size: the smallest and largest image side; H and W are drawn in between.
        crowd_prob: probability that a ground-truth mask is a crowd region.
        seed: the random seed.

    Returns:
        (gt, results): a COCO ground-truth dict and a list of RLE results.
    """
    rng = np.random.default_rng(seed)
    gt: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": c, "name": f"class{c}"} for c in range(1, num_categories + 1)],
    }
    results: list[dict[str, Any]] = []
    for image_id in range(1, num_images + 1):
        h, w = (int(v) for v in rng.integers(size[0], size[1], 2, endpoint=True))
        gt["images"].append({"id": image_id, "height": h, "width": w})
        n_gt = int(rng.integers(3, max(4, dets_per_image // 2), endpoint=True))
        boxes = [_random_box(rng, h, w) for _ in range(n_gt)]
        cats = rng.integers(1, num_categories, n_gt, endpoint=True)
        masks = [_shape(rng, h, w, b) for b in boxes]
        for box, cat, rle, m in zip(boxes, cats, encode(np.stack(masks)), masks):
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": int(cat),
                    "segmentation": rle,
                    "area": float(m.sum()),
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                    "iscrowd": int(rng.random() < crowd_prob),
                }
            )
        det_masks, det_cats = [], []
        for _ in range(dets_per_image):
            if rng.random() < 0.75:
                k = int(rng.integers(n_gt))
                box, cat = (
                    _jitter(rng, boxes[k], h, w),
                    int(cats[k]) if rng.random() < 0.9 else int(rng.integers(1, num_categories + 1)),
                )
            else:
                box, cat = _random_box(rng, h, w), int(rng.integers(1, num_categories + 1))
            det_masks.append(_shape(rng, h, w, box))
            det_cats.append(cat)
        for rle, cat in zip(encode(np.stack(det_masks)), det_cats):
            results.append(
                {"image_id": image_id, "category_id": cat, "score": float(rng.random()), "segmentation": rle}
            )
    return gt, results
