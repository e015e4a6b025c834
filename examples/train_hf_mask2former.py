"""Train Hugging Face Mask2Former (Swin backbone) with the dense contrastive loss on a COCO-format folder.

The folder holds ``images/`` and ``annotations.json`` (COCO instances, polygon or RLE segmentations), for
example one written by ``densecontrast.datasets.SyntheticInstances(...).export_coco(root)``. Each image's
instances are written into an instance-id map (background and overlaps: 255) and prepared by
``Mask2FormerImageProcessor`` exactly as for any Mask2Former fine-tuning: it resizes, normalises, pads the
batch and turns the map into ``mask_labels`` (G, H, W) and ``class_labels`` (G,), padding the labels with
the ignore value 255.

The only densecontrast-specific line is ``attach(model, ...)`` in ``build`` (before the optimizer or the
Trainer is made): the term then is part of ``outputs.loss``, so a plain loop (default) and
``transformers.Trainer`` (``--trainer``, needs ``accelerate``) train on it unchanged. ``--weight 0``
trains the plain model.

    python examples/train_hf_mask2former.py --data path/to/coco_folder --out runs/m2f \\
        --epochs 12 --batch-size 2 --image-size 384 --weight 1.2 --margin 0.1

The model is built from a config (random weights, no download): ``--backbone swin-t`` (default) or the
tiny ``--backbone tiny`` for smoke runs. Needs ``pip install 'densecontrast[transformers,analysis]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything below is built locally

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch.utils.data import DataLoader, Dataset
from transformers import (
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerImageProcessor,
    SwinConfig,
)

from densecontrast.adapters import DEFAULT_WEIGHT
from densecontrast.adapters.transformers import attach, get_handle

BACKGROUND = 255
"""Instance-id value of pixels without an instance (and the processor's ignore value)."""


class CocoInstanceMaps(Dataset):
    """A COCO instances folder as (image uint8 (H, W, 3), instance-id map uint8 (H, W), id -> class) items.

    Category ids map to contiguous classes 0..C-1 in increasing id order. Instance k of an image (in
    annotation order) has id k + 1; later instances overwrite earlier ones where they overlap. Crowd
    annotations are left out.
    """

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        coco = json.loads((root / "annotations.json").read_text())
        self.images = sorted(coco["images"], key=lambda im: im["id"])
        self.class_of = {c["id"]: i for i, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}
        self.annotations: dict[int, list[dict[str, Any]]] = {im["id"]: [] for im in self.images}
        for ann in coco["annotations"]:
            if not ann.get("iscrowd", 0):
                self.annotations[ann["image_id"]].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = self.images[index]
        image = np.array(Image.open(self.root / "images" / info["file_name"]).convert("RGB"))
        height, width = image.shape[:2]
        ids = np.full((height, width), BACKGROUND, dtype=np.uint8)
        id_to_class = {}
        for k, ann in enumerate(self.annotations[info["id"]][: BACKGROUND - 1]):
            segmentation = ann["segmentation"]
            if isinstance(segmentation, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation["counts"], list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(segmentation, height, width)
            else:
                rle = segmentation
            ids[mask_utils.decode(rle) > 0] = k + 1
            id_to_class[k + 1] = self.class_of[ann["category_id"]]
        return {"image": image, "instance_ids": ids, "id_to_class": id_to_class}


class Collate:
    """Batch items with the image processor into the model's inputs.

    Returns ``pixel_values``, ``pixel_mask``, ``mask_labels`` and ``class_labels``.
    """

    def __init__(self, processor: Mask2FormerImageProcessor) -> None:
        self.processor = processor

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.processor(
            images=[item["image"] for item in items],
            segmentation_maps=[item["instance_ids"] for item in items],
            instance_id_to_semantic_id=[item["id_to_class"] for item in items],
            return_tensors="pt",
        )
        return dict(batch)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data", type=pathlib.Path, required=True, help="folder with images/ and annotations.json"
    )
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/m2f"), help="checkpoint folder")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    p.add_argument(
        "--weight", type=float, default=DEFAULT_WEIGHT, help="λ of the loss; 0 = plain Mask2Former"
    )
    p.add_argument("--margin", type=float, default=0.1, help="box enlargement (fraction of w/h per side)")
    p.add_argument("--k", type=int, default=32, help="samples per set")
    p.add_argument("--tau", type=float, default=0.07, help="temperature")
    p.add_argument("--image-size", type=int, default=384, help="shorter side after resizing")
    p.add_argument("--backbone", choices=("swin-t", "tiny"), default="swin-t")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--trainer", action="store_true", help="train with transformers.Trainer (needs accelerate)"
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def model_config(backbone: str, num_labels: int) -> Mask2FormerConfig:
    """Mask2Former on Swin-T (Mask2Former's own default sizes), or a tiny model for smoke runs."""
    stages = ["stage1", "stage2", "stage3", "stage4"]
    if backbone == "swin-t":
        swin = SwinConfig(
            embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
            drop_path_rate=0.3, out_features=stages,
        )  # fmt: skip
        return Mask2FormerConfig(backbone_config=swin, num_labels=num_labels)
    swin = SwinConfig(
        embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4, out_features=stages
    )
    return Mask2FormerConfig(
        backbone_config=swin, num_labels=num_labels, feature_size=32, mask_feature_size=32, hidden_dim=32,
        encoder_feedforward_dim=64, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
        dim_feedforward=64, num_queries=16, train_num_points=1024,
    )  # fmt: skip


def build(args: argparse.Namespace, num_labels: int) -> Mask2FormerForUniversalSegmentation:
    model = Mask2FormerForUniversalSegmentation(model_config(args.backbone, num_labels))
    # Attach before moving, wrapping or compiling the model, and before the optimizer or Trainer exists:
    # the loss's projection head becomes model.dense_contrast and trains with the model.
    if args.weight > 0:
        attach(model, weight=args.weight, k=args.k, tau=args.tau, margin=args.margin)
    return model.to(args.device)


def processor_for(image_size: int) -> Mask2FormerImageProcessor:
    longest = max(image_size, image_size * 1333 // 800)
    return Mask2FormerImageProcessor(
        size={"shortest_edge": image_size, "longest_edge": longest}, ignore_index=BACKGROUND
    )


def train_plain(args: argparse.Namespace, model: torch.nn.Module, loader: DataLoader) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    handle = get_handle(model)
    step = 0
    model.train()
    for epoch in range(args.epochs):
        started = time.perf_counter()
        for batch in loader:
            batch = {
                "pixel_values": batch["pixel_values"].to(args.device),
                "pixel_mask": batch["pixel_mask"].to(args.device),
                "mask_labels": [m.to(args.device) for m in batch["mask_labels"]],
                "class_labels": [c.to(args.device) for c in batch["class_labels"]],
            }
            outputs = model(**batch)  # outputs.loss includes weight * L when attached
            if not torch.isfinite(outputs.loss):
                raise FloatingPointError(f"non-finite loss at step {step}")
            optimizer.zero_grad(set_to_none=True)
            outputs.loss.backward()
            optimizer.step()
            step += 1
            dcl = (
                f" loss_dcl={handle.last_loss.item():.4f}" if handle and handle.last_loss is not None else ""
            )
            print(f"epoch {epoch + 1} step {step}: loss={outputs.loss.item():.4f}{dcl}", flush=True)
            if args.max_steps is not None and step >= args.max_steps:
                break
        torch.save({"model": model.state_dict(), "epoch": epoch, "step": step}, args.out / "last.pt")
        print(f"epoch {epoch + 1}: {time.perf_counter() - started:.1f} s, checkpoint {args.out / 'last.pt'}")
        if args.max_steps is not None and step >= args.max_steps:
            break


def train_with_trainer(
    args: argparse.Namespace, model: torch.nn.Module, dataset: Dataset, collate: Collate
) -> None:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class LogDenseContrast(TrainerCallback):
        """Add the latest step's loss_dcl to Trainer's printed logs (Trainer logs ``loss`` only)."""

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any
        ):
            handle = get_handle(model)
            if logs is not None and "loss" in logs and handle and handle.last_loss is not None:
                logs["loss_dcl"] = round(handle.last_loss.item(), 4)

    training_args = TrainingArguments(
        output_dir=str(args.out),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps if args.max_steps is not None else -1,
        learning_rate=args.lr,
        weight_decay=0.05,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,  # the items hold images and maps, not model inputs
        dataloader_num_workers=args.workers,
        use_cpu=args.device == "cpu",
        seed=args.seed,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=training_args, train_dataset=dataset, data_collator=collate,
        callbacks=[LogDenseContrast()],
    )  # fmt: skip
    trainer.train()  # Trainer's loss is outputs.loss: the term is in it, no custom step
    trainer.save_model(str(args.out))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = CocoInstanceMaps(args.data)
    collate = Collate(processor_for(args.image_size))
    model = build(args, num_labels=len(dataset.class_of))
    if args.trainer:
        train_with_trainer(args, model, dataset, collate)
        return
    loader = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, collate_fn=collate
    )
    train_plain(args, model, loader)


if __name__ == "__main__":
    main()
