"""Turn torchvision-style Mask R-CNN targets and outputs into COCO ground truth and RLE results.

Shape letters: N instances (or detections) of an image, H x W the image size.
Tensors are read with ``.detach().cpu().numpy()``; numpy arrays work as well.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._coco import as_numpy as _numpy
from .._coco import check_image_ids as _check_ids
from .._coco import coco_from_targets as coco_from_targets  # the one COCO ground-truth writer
from . import _rle


def results_from_outputs(
    outputs: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int],
    *,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Build COCO segmentation results (RLE) from torchvision Mask R-CNN outputs in eval mode.

    Args:
        outputs: one dict per image with ``masks``: float (N, 1, H, W) or (N, H, W) probabilities,
            ``scores``: float (N,), ``labels``: int (N,) category ids.
        image_ids: one id per output.
        mask_threshold: a pixel belongs to the mask when its probability is greater than this.

    Returns:
        A list of result dicts (``image_id``, ``category_id``, ``score``, ``segmentation``) ready for
        :func:`~densecontrast.analysis.analyze` or ``json.dump``.

    Examples:
        >>> import numpy as np
        >>> probs = np.zeros((1, 1, 2, 2), dtype=np.float32); probs[0, 0, 0, :] = 0.9
        >>> out = {"masks": probs, "scores": np.array([0.8]), "labels": np.array([1])}
        >>> res = results_from_outputs([out], [5])
        >>> r = res[0]
        >>> r["image_id"], r["category_id"], round(r["score"], 2), r["segmentation"]["size"]
        (5, 1, 0.8, [2, 2])
    """
    ids = _check_ids(image_ids, len(outputs), "outputs")
    results: list[dict[str, Any]] = []
    for t, (image_id, out) in enumerate(zip(ids, outputs)):
        if not all(k in out for k in ("masks", "scores", "labels")):
            raise ValueError(f"outputs[{t}] needs 'masks', 'scores' and 'labels'; got keys {sorted(out)}")
        probs = _numpy(out["masks"])
        if probs.ndim == 4 and probs.shape[1] == 1:
            probs = probs[:, 0]
        scores = _numpy(out["scores"]).reshape(-1)
        labels = _numpy(out["labels"]).reshape(-1)
        if probs.ndim != 3 or not probs.shape[0] == scores.shape[0] == labels.shape[0]:
            raise ValueError(
                f"outputs[{t}]: masks must be (N, 1, H, W) or (N, H, W) with scores and labels (N,); "
                f"got masks {probs.shape}, scores {scores.shape}, labels {labels.shape}"
            )
        rles = _rle.encode(probs > mask_threshold)
        for k, rle in enumerate(rles):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(labels[k]),
                    "score": float(scores[k]),
                    "segmentation": rle,
                }
            )
    return results
