"""Train torchvision's Mask R-CNN (R50-FPN by default) with the dense contrastive loss on a COCO folder.

The folder holds ``images/`` and ``annotations.json`` (COCO instances; polygon or RLE segmentations), for
example one written by ``densecontrast.datasets.SyntheticInstances(...).export_coco(root)``.

The only densecontrast-specific line is the ``attach`` call in ``build`` (made before the optimizer is
built, so that the projection head's parameters are optimised); the loss then arrives in the usual loss
dict as ``loss_dcl`` and is summed with the others. ``--weight 0`` trains the plain baseline.

    python examples/train_torchvision_maskrcnn.py --data path/to/coco_folder --out runs/dcl \\
        --epochs 12 --batch-size 2 --lr 0.02 --weight 1.2

Multi-GPU: attach to the plain model first, then wrap it in DistributedDataParallel (hooks live on the
inner modules). Resume with ``--resume runs/dcl/last.pt``.

Needs torchvision, pycocotools and tqdm (``pip install densecontrast[torchvision,analysis]``).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import time
from typing import Any

import torch
from pycocotools import mask as mask_utils
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, read_image
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from tqdm import tqdm

from densecontrast.adapters import DEFAULT_WEIGHT
from densecontrast.adapters.torchvision import attach


class CocoInstances(Dataset):
    """A COCO instances folder as (image float (3, H, W) in [0, 1], torchvision target) pairs.

    Category ids are mapped to contiguous labels 1..C in increasing id order (0 is the background).
    Crowd annotations and degenerate boxes are left out.
    """

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        coco = json.loads((root / "annotations.json").read_text())
        self.images = sorted(coco["images"], key=lambda im: im["id"])
        self.label_of = {
            c["id"]: i + 1 for i, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))
        }
        self.annotations: dict[int, list[dict[str, Any]]] = {im["id"]: [] for im in self.images}
        for ann in coco["annotations"]:
            if not ann.get("iscrowd", 0):
                self.annotations[ann["image_id"]].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def _mask(self, segmentation: Any, height: int, width: int) -> Tensor:
        if isinstance(segmentation, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        return torch.from_numpy(mask_utils.decode(rle)).to(torch.uint8)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        info = self.images[index]
        image = read_image(str(self.root / "images" / info["file_name"]), ImageReadMode.RGB).float() / 255
        height, width = image.shape[-2:]
        boxes, labels, masks = [], [], []
        for ann in self.annotations[info["id"]]:
            x, y, w, h = ann["bbox"]
            if w <= 1 or h <= 1:
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(self.label_of[ann["category_id"]])
            masks.append(self._mask(ann["segmentation"], height, width))
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.stack(masks) if masks else torch.zeros(0, height, width, dtype=torch.uint8),
        }
        return image, target


def collate(batch: list[tuple[Tensor, dict[str, Tensor]]]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    return [image for image, _ in batch], [target for _, target in batch]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data", type=pathlib.Path, required=True, help="folder with images/ and annotations.json"
    )
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/dcl"), help="checkpoint folder")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.02, help="SGD learning rate (0.02 for 16 images a batch)")
    p.add_argument("--weight", type=float, default=DEFAULT_WEIGHT, help="λ of the loss; 0 = plain Mask R-CNN")
    p.add_argument("--k", type=int, default=32, help="samples per set")
    p.add_argument("--tau", type=float, default=0.07, help="temperature")
    p.add_argument("--image-size", type=int, default=800, help="shorter side after resizing")
    p.add_argument(
        "--rois-per-image", type=int, default=512, help="RoIs sampled per image (a quarter at most positive)"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--warmup", type=int, default=500, help="linear warm-up steps")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    p.add_argument(
        "--backbone", default="resnet50", choices=("resnet50", "resnet18", "resnet34", "resnet101"),
        help="ResNet-FPN backbone (resnet50: torchvision's maskrcnn_resnet50_fpn)",
    )  # fmt: skip
    p.add_argument("--weights-backbone", default=None, help='e.g. "IMAGENET1K_V1" (downloads weights)')
    p.add_argument("--resume", type=pathlib.Path, default=None, help="checkpoint to continue from")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build(args: argparse.Namespace, num_classes: int) -> torch.nn.Module:
    sizes = {
        "min_size": args.image_size,
        "max_size": math.ceil(args.image_size * 1333 / 800),
        "box_batch_size_per_image": args.rois_per_image,
    }
    if args.backbone == "resnet50":
        model = maskrcnn_resnet50_fpn(
            weights=None, weights_backbone=args.weights_backbone, num_classes=num_classes, **sizes
        )
    else:  # the same Mask R-CNN on a smaller ResNet-FPN (for quick runs)
        backbone = resnet_fpn_backbone(
            backbone_name=args.backbone, weights=args.weights_backbone, trainable_layers=3
        )
        model = MaskRCNN(backbone, num_classes=num_classes, **sizes)
    # Attach before moving, wrapping (DDP) or compiling, and before building the optimizer: the loss's
    # projection head becomes model.dense_contrast and travels with the model.
    if args.weight > 0:
        attach(model, weight=args.weight, k=args.k, tau=args.tau)
    return model.to(args.device)


def save(path: pathlib.Path, **state: Any) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    dataset = CocoInstances(args.data)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        collate_fn=collate,
        drop_last=len(dataset) >= args.batch_size,
    )
    model = build(args, num_classes=len(dataset.label_of) + 1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    total = args.epochs * len(loader)
    milestones = [int(total * 8 / 12), int(total * 11 / 12)]

    def lr_factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, args.warmup))
        return warm * 0.1 ** sum(step >= m for m in milestones)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    use_amp = args.amp and args.device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_epoch, step = 0, 0
    if args.resume is not None:
        state = torch.load(args.resume, map_location=args.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step = state["epoch"] + 1, state["step"]
    args.out.mkdir(parents=True, exist_ok=True)

    def checkpoint(epoch: int, name: str) -> None:
        save(
            args.out / name,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            epoch=epoch,
            step=step,
            args={k: str(v) for k, v in vars(args).items()},
        )

    model.train()
    for epoch in range(start_epoch, args.epochs):
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", dynamic_ncols=True)
        started = time.perf_counter()
        for images, targets in bar:
            images = [im.to(args.device, non_blocking=True) for im in images]
            targets = [{k: v.to(args.device, non_blocking=True) for k, v in t.items()} for t in targets]
            with torch.autocast("cuda", enabled=use_amp):
                losses = model(images, targets)  # includes losses["loss_dcl"] when attached
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at step {step}: {losses}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            bar.set_postfix({k.removeprefix("loss_"): f"{v.item():.3f}" for k, v in losses.items()})
            if args.max_steps is not None and step >= args.max_steps:
                break
        bar.close()
        checkpoint(epoch, f"epoch_{epoch + 1:03d}.pt")
        checkpoint(epoch, "last.pt")
        tqdm.write(
            f"epoch {epoch + 1}: {time.perf_counter() - started:.1f} s, checkpoint {args.out / 'last.pt'}"
        )
        if args.max_steps is not None and step >= args.max_steps:
            break


if __name__ == "__main__":
    main()
