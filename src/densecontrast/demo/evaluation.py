"""Evaluation helpers of the demo: eval-mode outputs and the mask head's per-pixel features.

Shapes: G ground-truth instances of an image, C mask-head channels, h x w the mask grid (28 x 28).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Any, device: str = "cpu", batch_size: int = 8
) -> list[dict[str, Tensor]]:
    """Eval-mode outputs of ``model`` for every image of ``dataset`` (on the CPU)."""
    from ..datasets import collate_detection

    model.to(device).eval()
    outputs: list[dict[str, Tensor]] = []
    loader = torch.utils.data.DataLoader(  # images generated in a single-threaded worker, in order
        dataset, batch_size=batch_size, collate_fn=collate_detection, num_workers=1
    )
    for images, _ in loader:
        batch = model([im.to(device) for im in images])
        outputs.extend({k: v.cpu() for k, v in out.items()} for out in batch)
    return outputs


@torch.no_grad()
def roi_features(
    model: nn.Module, dataset: Any, *, images: int = 20, device: str = "cpu"
) -> tuple[Tensor, Tensor, Tensor]:
    """The mask head's per-pixel features on the ground-truth boxes of held-out images, with labels.

    Every ground-truth box of the first ``images`` images is an RoI; its features are the input of the
    mask predictor's last convolution (captured with :class:`~densecontrast.taps.FeatureTap`), the map
    the loss acts on. Each RoI pixel is labelled with the instance it shows: 0 for the RoI's own
    instance, 1, 2, ... for other instances (occluders, neighbours), -1 for background; a pixel belongs
    to an instance when more than half of it is covered (the same rule as the loss's masks).

    Returns:
        ``(feats, labels, groups)``: float (N, C), int64 (N,) and int64 (N,) (the RoI of each pixel),
        N = RoIs x h x w.
    """
    from torchvision.ops import roi_align

    from ..taps import FeatureTap

    model.to(device).eval()
    heads: Any = model.roi_heads
    transform: Any = model.transform
    backbone: Any = model.backbone
    feats_all, labels_all, groups_all = [], [], []
    offset = 0
    with FeatureTap.on(model, "roi_heads.mask_predictor.mask_fcn_logits", what="input") as tap:
        for index in range(min(images, len(dataset))):
            image, target = dataset[index]
            boxes, masks = target["boxes"], target["masks"]
            if boxes.shape[0] == 0:
                continue
            batch, _ = transform([image.to(device)])
            scale = batch.image_sizes[0][0] / image.shape[-2]
            rois = boxes.to(device) * scale
            features = backbone(batch.tensors)
            x = heads.mask_head(heads.mask_roi_pool(features, [rois], batch.image_sizes))
            heads.mask_predictor(x)
            feats = tap.pop()  # (G, C, h, w)
            g, h, w = feats.shape[0], feats.shape[-2], feats.shape[-1]
            # every instance's mask in every RoI: (G rois x G instances, h, w)
            which = torch.arange(g).repeat_interleave(g)
            paired = torch.cat([torch.arange(g).repeat(g)[:, None].float(), boxes[which]], dim=1)
            soft = roi_align(masks[:, None].float(), paired, (h, w), 1.0)[:, 0].view(g, g, h, w)
            best, owner = soft.max(dim=1)  # (G, h, w)
            own = torch.arange(g).view(g, 1, 1)
            # relabel so that the RoI's own instance is 0 and others are 1..G-1
            label = torch.where(owner == own, 0, torch.where(owner < own, owner + 1, owner))
            label = torch.where(best > 0.5, label, -1)
            feats_all.append(feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]).float().cpu())
            labels_all.append(label.reshape(-1))
            groups_all.append((torch.arange(g) + offset).repeat_interleave(h * w))
            offset += g
    if not feats_all:
        return torch.zeros(0, 1), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    return torch.cat(feats_all), torch.cat(labels_all), torch.cat(groups_all)
