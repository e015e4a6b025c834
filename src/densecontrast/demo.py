"""``densecontrast demo``: train torchvision Mask R-CNN from scratch with the dense contrastive loss.

The demo generates :class:`~densecontrast.datasets.SyntheticInstances` (occluded, camouflaged objects),
trains a Mask R-CNN on it with ``attach(model)`` (or without, ``--baseline``), evaluates mask AP on a
held-out split with the segmentation-error analysis, measures how compact the mask head's per-pixel
features are (:mod:`densecontrast.analysis.compactness`), and writes metrics, checkpoints and pictures
to ``--out``. ``--compare`` trains both on the same data with the same seed and prints them side by side.

Shapes: B images of a batch, S image side, G ground-truth instances of an image, C mask-head channels,
h x w the mask grid (28 x 28).

Needs the ``demo`` extra (torchvision, pycocotools, matplotlib, tqdm, scikit-learn).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

DEFAULT_OUT = "densecontrast-demo"
SCORE_THRESHOLD = 0.5
"""Detections below this score are not drawn in the pictures (AP uses every detection)."""


@dataclass
class DemoConfig:
    """Everything that defines a demo run (saved next to its metrics).

    The defaults are the CPU configuration (:func:`preset` ``("cpu")``): a light Mask R-CNN that learns
    in about five minutes on two cores. ``fpn_channels`` and ``box_head_dim`` of 0 mean "the standard
    width for this backbone": 256 and 1024 for ``resnet50``/``resnet101`` (the paper's R50-FPN), the
    light 64 and 256 otherwise.
    """

    steps: int = 1200
    seed: int = 0
    image_size: int = 128
    batch_size: int = 4
    train_images: int = 4000
    val_images: int = 100
    num_categories: int = 3
    backbone: str = "resnet18"
    fpn_channels: int = 0
    mask_channels: int = 64
    box_head_dim: int = 0
    proposals: int = 100
    rois_per_image: int = 64
    lr: float = 1e-3
    warmup: int = 100
    weight: float = 0.1
    device: str = "cpu"
    val_split: str = "val"
    val_seed: int | None = None

    def resolved(self) -> DemoConfig:
        """A copy with the 0 ("standard") widths and ``val_seed`` filled in."""
        standard = _standard_backbone(self.backbone)
        return replace(
            self,
            fpn_channels=self.fpn_channels or (256 if standard else 64),
            box_head_dim=self.box_head_dim or (1024 if standard else 256),
            val_seed=self.seed if self.val_seed is None else self.val_seed,
        )


def preset(device: str) -> DemoConfig:
    """The default configuration for a device: ``"cpu"`` (light model) or ``"cuda"`` (bigger).

    Examples:
        >>> preset("cpu").backbone, preset("cuda").backbone
        ('resnet18', 'resnet50')
    """
    if device.startswith("cuda"):
        return DemoConfig(
            steps=6000, image_size=256, batch_size=8, train_images=20000, val_images=200, backbone="resnet50",
            mask_channels=256, proposals=500, rois_per_image=256, lr=1e-3, warmup=300, device=device,
        )  # fmt: skip
    return DemoConfig(device=device)


def _standard_backbone(name: str) -> bool:
    return name in ("resnet50", "resnet101", "resnet152", "resnext50_32x4d", "wide_resnet50_2")


def build_model(config: DemoConfig) -> nn.Module:
    """A torchvision ``MaskRCNN`` with a randomly initialised ResNet-FPN backbone (no downloads).

    Trained from scratch, so the backbone's batch norm is trainable (``nn.BatchNorm2d``; torchvision's
    default frozen batch norm is the identity at random init), and the mask head has batch norm too.

    The light configuration (ResNet-18, ``fpn_channels`` 64): FPN levels from the stride-4, 8 and 16
    stages plus a pooled level, a 256-wide box head, a 64-wide mask head, ``proposals`` RPN proposals and
    ``rois_per_image`` sampled RoIs per image, anchors from 8 to 64 pixels at S = 128 (scaled with S).
    With ``resnet50`` and ``mask_channels=256`` it is the paper's R50-FPN Mask R-CNN (FPN and mask head
    256 wide, a 1024-wide box head, four stages), at the demo's image size.

    Args:
        config: the run's configuration (``config.resolved()`` is applied).
    """
    import torchvision
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    c = config.resolved()
    num_classes = c.num_categories + 1
    try:
        body = getattr(torchvision.models, c.backbone)(weights=None, norm_layer=nn.BatchNorm2d)
    except AttributeError:
        raise ValueError(f"backbone must be a torchvision ResNet name; got {c.backbone!r}") from None
    stages = (1, 2, 3, 4) if _standard_backbone(c.backbone) else (1, 2, 3)
    in_channels = [body.inplanes // 8 * 2 ** (k - 1) for k in stages]
    names = {f"layer{k}": str(i) for i, k in enumerate(stages)}
    backbone = BackboneWithFPN(body, names, in_channels, c.fpn_channels, extra_blocks=LastLevelMaxPool())
    levels = len(stages) + 1
    scale = c.image_size / 128
    anchors = AnchorGenerator(
        tuple((max(4, round(8 * scale * 2**i)),) for i in range(levels)), ((0.5, 1.0, 2.0),) * levels
    )
    maps = [str(i) for i in range(len(stages))]
    return MaskRCNN(
        backbone,
        num_classes=None,
        min_size=c.image_size,
        max_size=c.image_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=2 * c.proposals,
        rpn_post_nms_top_n_train=c.proposals,
        rpn_pre_nms_top_n_test=2 * c.proposals,
        rpn_post_nms_top_n_test=c.proposals,
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=c.rois_per_image,
        box_detections_per_img=50,
        box_roi_pool=MultiScaleRoIAlign(maps, 7, 2),
        mask_roi_pool=MultiScaleRoIAlign(maps, 14, 2),
        box_head=TwoMLPHead(c.fpn_channels * 49, c.box_head_dim),
        box_predictor=FastRCNNPredictor(c.box_head_dim, num_classes),
        mask_head=MaskRCNNHeads(c.fpn_channels, [c.mask_channels] * 4, 1, norm_layer=nn.BatchNorm2d),
        mask_predictor=MaskRCNNPredictor(c.mask_channels, c.mask_channels, num_classes),
    )


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up from 0.1% of ``base`` over ``warmup`` steps, then cosine decay to 2% of ``base``.

    Examples:
        >>> lr_at(0, 100, 1.0, 10), lr_at(10, 100, 1.0, 10), round(lr_at(100, 100, 1.0, 10), 3)
        (0.001, 1.0, 0.02)
    """
    warmup = min(warmup, total)
    if step < warmup:
        return base * (0.001 + 0.999 * step / warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def datasets(config: DemoConfig) -> tuple[Any, Any]:
    """The training split and the held-out split of a run (``SyntheticInstances``)."""
    from .datasets import SyntheticInstances

    c = config.resolved()
    train_set = SyntheticInstances(
        c.train_images, image_size=c.image_size, num_categories=c.num_categories, seed=c.seed
    )
    val_set = SyntheticInstances(
        c.val_images,
        image_size=c.image_size,
        num_categories=c.num_categories,
        seed=c.val_seed if c.val_seed is not None else c.seed,
        split=c.val_split,
    )
    return train_set, val_set


def train(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    config: DemoConfig,
    *,
    desc: str = "train",
    show_progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` for ``config.steps`` steps; returns the loss dict of every step (floats).

    AdamW (weight decay 1e-4) with :func:`lr_at`'s warm-up and cosine decay, gradients clipped at norm
    10. From scratch on a CPU budget it learns faster than SGD: on the tuning split (seed 1000, split
    "test"), 800 steps of the CPU configuration reached mask AP 28.0 with AdamW at 1e-3 and 23.5 with
    SGD (momentum 0.9) at 0.04.
    """
    from tqdm.auto import tqdm

    from .datasets import collate_detection

    device = torch.device(config.device)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(config.seed)
    # One worker process generates the images while the model trains. Workers run torch single-threaded,
    # which is what the generator's many small operations want; the main process keeps its threads.
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=collate_detection,
        generator=generator,
        num_workers=1,
        persistent_workers=True,
    )
    history: list[dict[str, float]] = []
    bar = tqdm(total=config.steps, desc=desc, disable=not show_progress, dynamic_ncols=True, file=sys.stdout)
    step = 0
    while step < config.steps:
        for images, targets in loader:
            if step >= config.steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config.steps, config.lr, config.warmup)
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [{key: value.to(device) for key, value in t.items()} for t in targets]
            losses = model(images, targets)
            total = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            record = {name: float(value.detach()) for name, value in losses.items()}
            record["loss"] = float(total.detach())
            history.append(record)
            if step % 10 == 0 or step == config.steps - 1:
                bar.set_postfix(
                    {name.removeprefix("loss_"): f"{value:.3f}" for name, value in record.items()},
                    refresh=False,
                )
            bar.update(1)
            step += 1
    bar.close()
    return history


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Any, device: str = "cpu", batch_size: int = 8
) -> list[dict[str, Tensor]]:
    """Eval-mode outputs of ``model`` for every image of ``dataset`` (on the CPU)."""
    from .datasets import collate_detection

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

    from .taps import FeatureTap

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


def run_one(
    config: DemoConfig,
    *,
    dcl: bool,
    out: Path | None,
    show_progress: bool = True,
    datasets_: Any = None,
    init: Callable[[nn.Module], None] | None = None,
) -> dict[str, Any]:
    """Train one model (with or without DCL), evaluate it, and write its files under ``out``.

    ``init``, when given, is called on the freshly built model before the loss is attached and training
    starts (the evidence study's fine-tuning regime loads pretrained weights and freezes stages there).

    Returns a dict with ``name``, ``model``, ``report`` (a ``SegmentationErrorReport``), ``history``
    (loss dicts per step), ``outputs`` (eval outputs on the held-out split), ``compactness`` (a
    ``FeatureCompactness``), ``features`` (the ``roi_features`` triple) and ``metrics`` (JSON-ready).
    """
    from .adapters.torchvision import attach
    from .analysis import analyze, results_from_outputs
    from .analysis.compactness import feature_compactness

    config = config.resolved()
    name = "dcl" if dcl else "baseline"
    train_set, val_set = datasets_ if datasets_ is not None else datasets(config)
    torch.manual_seed(config.seed)
    model = build_model(config)
    if init is not None:
        init(model)
    handle = attach(model, weight=config.weight) if dcl else None
    start = time.perf_counter()
    cpu_start = time.process_time()
    history = train(model, train_set, config, desc=name, show_progress=show_progress)
    train_seconds = time.perf_counter() - start
    if handle is not None:
        handle.remove()  # the checkpoint is a plain torchvision state_dict; DCL adds nothing at inference
    outputs = predict(model, val_set, config.device)
    ids = [i + 1 for i in range(len(val_set))]
    results = results_from_outputs(outputs, ids)
    report = analyze(val_set.coco_ground_truth(), results, backend="pycocotools")  # the reference evaluator
    features = roi_features(model, val_set, device=config.device)
    compactness = feature_compactness(features[0], features[1], groups=features[2])
    metrics = {
        "name": name,
        "config": asdict(config),
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "final_losses": history[-1] if history else {},
        "report": report.to_dict(),
        "compactness": compactness.to_dict(),
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out / f"{name}.pt")
        report.plot(out / f"{name}_errors.png", title=f"{name}: mask AP {100 * report.ap:.1f}")
        (out / f"{name}_metrics.json").write_text(json.dumps(metrics, indent=2))
        (out / f"{name}_losses.json").write_text(json.dumps(history))
    return {
        "name": name,
        "model": model,
        "report": report,
        "history": history,
        "outputs": outputs,
        "compactness": compactness,
        "features": features,
        "metrics": metrics,
    }


# ----------------------------------------------------------------------------------------------------------
# pictures


_PALETTE = (
    (0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.4, 0.74),
    (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.74, 0.74, 0.13), (0.09, 0.75, 0.81), (0.4, 0.4, 0.4),
)  # fmt: skip
_ERROR_COLOURS = {
    "FN": (0.9, 0.1, 0.1),
    "bFP": (0.1, 0.35, 1.0),
    "fFP": (1.0, 0.85, 0.0),
    "ok": (0.2, 0.8, 0.2),
}


def _kept(output: dict[str, Tensor]) -> Tensor:
    """Binary masks (D, S, S) of the detections drawn in the pictures."""
    keep = output["scores"] >= SCORE_THRESHOLD
    return output["masks"][keep, 0] > 0.5


def error_map(gt_masks: Tensor, pred_masks: Tensor) -> Tensor:
    """Per-pixel error type of drawn predictions against the ground truth; int64 (S, S).

    Each prediction is matched to the ground truth of largest mask IoU (ignored when IoU < 0.1, as in
    the error analysis). Values: 0 nothing, 1 correct (a matched prediction on its instance), 2 FN (an
    instance pixel no matched prediction covers), 3 bFP (prediction on background), 4 fFP (prediction on
    another instance; shown instead of FN where both apply).

    Args:
        gt_masks: bool or uint8 (G, S, S), disjoint instance masks.
        pred_masks: bool (D, S, S).

    Examples:
        >>> gt = torch.zeros(1, 4, 4, dtype=torch.bool); gt[0, :2] = True
        >>> pred = torch.zeros(1, 4, 4, dtype=torch.bool); pred[0, 1:3] = True
        >>> error_map(gt, pred)[:, 0].tolist()
        [2, 1, 3, 0]
    """
    gt = gt_masks.bool()
    size = gt.shape[-2:]
    owner = torch.full(size, -1, dtype=torch.int64)
    for g in range(gt.shape[0]):
        owner[gt[g]] = g
    result = torch.zeros(size, dtype=torch.int64)
    covered = torch.zeros((gt.shape[0], *size), dtype=torch.bool)
    if pred_masks.shape[0] and gt.shape[0]:
        inter = (pred_masks[:, None] & gt[None]).flatten(2).sum(-1).float()
        union = (pred_masks[:, None] | gt[None]).flatten(2).sum(-1).float()
        iou, match = (inter / union.clamp_min(1)).max(dim=1)
        for d in range(pred_masks.shape[0]):
            p = pred_masks[d]
            if float(iou[d]) < 0.1:
                continue
            g = int(match[d])
            covered[g] |= p
            result[p & (owner == -1) & (result == 0)] = 3
            result[p & (owner >= 0) & (owner != g) & (result == 0)] = 4
    any_gt = owner >= 0
    own_cov = torch.zeros(size, dtype=torch.bool)
    for g in range(gt.shape[0]):
        own_cov |= covered[g] & gt[g]
    result[any_gt & own_cov] = 1
    result[any_gt & ~own_cov & (result != 4)] = 2  # a pixel another prediction claims shows as fFP
    return result


def _overlay(image: Tensor, masks: Tensor, alpha: float = 0.55, colours: Sequence[int] | None = None) -> Any:
    """Image (3, S, S) with masks (N, S, S) painted in palette colours and outlined; numpy (S, S, 3)."""
    import numpy as np

    out = image.permute(1, 2, 0).numpy().astype(np.float64) * 0.75
    for i in range(masks.shape[0]):
        m = masks[i].bool().numpy()
        colour = np.array(_PALETTE[(colours[i] if colours is not None else i) % len(_PALETTE)])
        out[m] = (1 - alpha) * out[m] + alpha * colour
        edge = m & ~(
            np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)
        )  # mask pixels with a neighbour outside
        out[edge] = colour
    return out.clip(0, 1)


def _matched_colours(gt: Tensor, pred: Tensor) -> list[int]:
    """Colour index of each prediction: its best-IoU ground truth's, or a spare colour when IoU < 0.1."""
    if pred.shape[0] == 0:
        return []
    if gt.shape[0] == 0:
        return [len(_PALETTE) - 1] * pred.shape[0]
    inter = (pred[:, None] & gt[None].bool()).flatten(2).sum(-1).float()
    union = (pred[:, None] | gt[None].bool()).flatten(2).sum(-1).float()
    iou, match = (inter / union.clamp_min(1)).max(dim=1)
    return [int(m) if float(v) >= 0.1 else len(_PALETTE) - 1 for v, m in zip(iou, match)]


def plot_predictions(
    dataset: Any,
    outputs: dict[str, Sequence[dict[str, Tensor]]],
    path: str | Path,
    *,
    images: int = 6,
    aps: dict[str, float] | None = None,
) -> None:
    """Save a grid: held-out images, their ground truth, then per model its masks and its error pixels.

    Args:
        dataset: the held-out split (``SyntheticInstances``).
        outputs: model name -> eval outputs, one per image of ``dataset`` (in order).
        path: the PNG to write.
        images: number of columns (the first images of the split).
        aps: model name -> mask AP (fraction), shown in the row titles.
    """
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures stay untouched
    from matplotlib.patches import Patch

    cols = min(images, len(dataset))
    rows = 2 + 2 * len(outputs)
    fig = Figure(figsize=(2.1 * cols + 1.2, 2.1 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    row_titles = ["image", "ground truth"]
    for name in outputs:
        ap = f" (AP {100 * aps[name]:.1f})" if aps and name in aps else ""
        row_titles += [f"{name}{ap}\nmasks, score ≥ {SCORE_THRESHOLD}", f"{name}\nerror pixels"]
    lut = np.array([(1.0, 1.0, 1.0), _ERROR_COLOURS["ok"], _ERROR_COLOURS["FN"], _ERROR_COLOURS["bFP"],
                    _ERROR_COLOURS["fFP"]])  # fmt: skip
    for j in range(cols):
        image, target = dataset[j]
        gt = target["masks"].bool()
        axes[0, j].imshow(image.permute(1, 2, 0).numpy())
        axes[1, j].imshow(_overlay(image, gt))
        for k, outs in enumerate(outputs.values()):
            pred = _kept(outs[j])
            axes[2 + 2 * k, j].imshow(_overlay(image, pred, colours=_matched_colours(gt, pred)))
            errors = error_map(gt, pred).numpy()
            shown = lut[errors] * 0.85 + image.permute(1, 2, 0).numpy() * 0.15
            axes[3 + 2 * k, j].imshow(shown.clip(0, 1))
            n_gt, n_pred = gt.shape[0], pred.shape[0]
            axes[2 + 2 * k, j].set_xlabel(f"{n_pred} masks / {n_gt} objects", fontsize=8)
    for i in range(rows):
        for j in range(cols):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(row_titles[i], fontsize=9)
    handles = [
        Patch(color=lut[1], label="correct"),
        Patch(color=_ERROR_COLOURS["FN"], label="FN: object pixel missed (all red: no mask found it)"),
        Patch(color=_ERROR_COLOURS["bFP"], label="bFP: background predicted"),
        Patch(color=_ERROR_COLOURS["fFP"], label="fFP: another object's pixel"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle(
        "Held-out images: ground truth, predicted masks (colour of the matched object; grey = unmatched), "
        "error pixels",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    fig.savefig(str(path), dpi=100)


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_losses(histories: dict[str, Sequence[dict[str, float]]], path: str | Path) -> None:
    """Save the loss curves: one panel per loss term, one line per model (moving average, raw faint).

    Args:
        histories: model name -> the loss dict of every step (as :func:`train` returns).
        path: the PNG to write.
    """
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures stay untouched
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    terms: list[str] = []
    for hist in histories.values():
        for key in hist[0] if hist else {}:
            if key not in terms:
                terms.append(key)
    cols = 4
    rows = max(1, math.ceil(len(terms) / cols))
    fig = Figure(figsize=(4.0 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    colours = {"baseline": "#1f77b4", "dcl": "#d62728"}
    for ax, term in zip(axes.flat, terms):
        for name, hist in histories.items():
            values = [h[term] for h in hist if term in h]
            if not values:
                continue
            colour = colours.get(name)
            window = max(1, len(values) // 40)
            ax.plot(values, color=colour, alpha=0.18, linewidth=0.6)
            ax.plot(_smooth(values, window), color=colour, linewidth=1.6, label=name)
        ax.set_title(term if term != "loss" else "loss (total; +DCL's includes loss_dcl)", fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(terms) :]:
        ax.axis("off")
    fig.suptitle("Training losses (thin: each step; thick: moving average; log scale)", fontsize=11)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)


def _tsne_panels(runs: Sequence[dict[str, Any]], rois: int = 6) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """The first ``rois`` RoIs of each run's features, for the t-SNE picture."""
    panels = {}
    for r in runs:
        feats, labels, groups = r["features"]
        keep = groups < rois
        panels[r["name"]] = (feats[keep], labels[keep], groups[keep])
    return panels


# ----------------------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``densecontrast demo``; options left out take the device's preset."""
    cpu = preset("cpu")
    parser.add_argument("--steps", type=int, help=f"training steps per model (CPU default {cpu.steps})")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, model and sampling (default 0)")
    parser.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help="output folder (default %(default)s)"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu or cuda (default %(default)s)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--baseline", action="store_true", help="train without the dense contrastive loss")
    mode.add_argument("--compare", action="store_true", help="train the baseline and DCL and compare them")
    parser.add_argument("--image-size", type=int, help=f"image side (CPU default {cpu.image_size})")
    parser.add_argument("--batch-size", type=int, help=f"images per step (CPU default {cpu.batch_size})")
    parser.add_argument("--train-images", type=int, help=f"training images (CPU default {cpu.train_images})")
    parser.add_argument("--val-images", type=int, help=f"held-out images (CPU default {cpu.val_images})")
    parser.add_argument("--backbone", help=f"ResNet of the FPN backbone (CPU default {cpu.backbone})")
    parser.add_argument("--fpn-channels", type=int, help="FPN width (default 256 for resnet50/101, else 64)")
    parser.add_argument(
        "--mask-channels", type=int, help=f"mask head width (CPU default {cpu.mask_channels}; 256 standard)"
    )
    parser.add_argument("--lr", type=float, help=f"AdamW learning rate (default {cpu.lr})")
    parser.add_argument(
        "--weight",
        type=float,
        help="λ, the weight of the loss (default 0.1, chosen on a tuning split; the paper: 1.2 Cityscapes)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice; 1 is faster on a busy machine)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


_OPTION_FIELDS = (
    "steps", "image_size", "batch_size", "train_images", "val_images", "backbone", "fpn_channels",
    "mask_channels", "lr", "weight",
)  # fmt: skip


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The run's configuration: the device's preset, overridden by the options given."""
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    for name in ("steps", "image_size", "batch_size", "train_images", "val_images", "mask_channels"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise SystemExit(f"densecontrast demo: --{name.replace('_', '-')} must be at least 1")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"densecontrast demo: --device {device} was asked for, but CUDA is not available")
    if not (device == "cpu" or device.startswith("cuda")):
        raise SystemExit(f"densecontrast demo: --device must be auto, cpu or cuda[:N]; got {device!r}")
    config = preset(device)
    given = {name: getattr(args, name) for name in _OPTION_FIELDS if getattr(args, name, None) is not None}
    if "backbone" in given and "mask_channels" not in given and _standard_backbone(given["backbone"]):
        given["mask_channels"] = 256
    config = replace(config, seed=args.seed, **given)
    if not config.steps or config.steps < 1:
        raise SystemExit("densecontrast demo: --steps must be at least 1")
    return config.resolved()


def _compactness_table(runs: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'name':<14}{'intra':>8}{'inst-inst':>11}{'inst-bg':>9}{'separation':>12}{'RoIs':>6}"]
    for r in runs:
        c = r["compactness"]
        lines.append(
            f"{r['name']:<14}{c.intra:>8.3f}{c.inter:>11.3f}{c.background:>9.3f}{c.separation:>12.2f}"
            f"{c.num_instances:>6}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the demo as the command line asked; returns the exit status."""
    from .analysis import compare_table, plot_comparison
    from .analysis.compactness import plot_tsne

    config = config_from_args(args)
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise SystemExit("densecontrast demo: --threads must be at least 1")
        torch.set_num_threads(threads)
    out: Path = args.out
    show = not args.no_progress
    print(
        f"densecontrast demo on {config.device}: Mask R-CNN {config.backbone}-FPN{config.fpn_channels}, "
        f"mask head {config.mask_channels}, {config.steps} steps x {config.batch_size} images of "
        f"{config.image_size}px, evaluated on {config.val_images} held-out images"
    )
    data = datasets(config)
    variants = [False, True] if args.compare else [not args.baseline]
    runs = []
    for dcl in variants:
        run_info = run_one(config, dcl=dcl, out=out, show_progress=show, datasets_=data)
        report = run_info["report"]
        print(f"\n{run_info['name']}: mask AP on {config.val_images} held-out images (percent)")
        print(report.table())
        runs.append(run_info)
    label = {"baseline": "Baseline", "dcl": "+DCL"}
    reports = {label[r["name"]]: r["report"] for r in runs}
    print("\nTable 8 layout (percent; ΔAP is the AP gained by correcting each error type, lower is better)")
    print(compare_table(reports))
    print("\nFeature compactness of the mask head on ground-truth RoIs (cosine similarity; see docs/demo.md)")
    print(_compactness_table(runs))
    plot_comparison(reports, out / "compare.png" if args.compare else out / "errors.png")
    plot_predictions(
        data[1],
        {label[r["name"]]: r["outputs"] for r in runs},
        out / "predictions.png",
        aps={label[r["name"]]: r["report"].ap for r in runs},
    )
    plot_losses({r["name"]: r["history"] for r in runs}, out / "losses.png")
    plot_tsne(
        {label[r["name"]]: panel for r, panel in zip(runs, _tsne_panels(runs).values())},
        out / "tsne.png",
        figures={label[r["name"]]: r["compactness"] for r in runs},
    )
    summary = {
        r["name"]: {**r["metrics"]["report"], "compactness": r["metrics"]["compactness"]} for r in runs
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    print(f"\nwrote to {out}/: " + ", ".join(files))
    print(
        "  predictions.png: held-out images, ground truth, masks and error pixels; losses.png: loss curves; "
        "tsne.png: pixel features; " + ("compare.png" if args.compare else "errors.png") + ": ΔAP bars"
    )
    return 0


def config_fields() -> list[str]:
    """Names of the :class:`DemoConfig` fields (for scripts that build configurations)."""
    return [f.name for f in fields(DemoConfig)]
