"""Train an Ultralytics YOLO-seg model with the dense contrastive loss.

The only densecontrast-specific part is the trainer class passed to ``YOLO(...).train``: Ultralytics
builds the model inside its trainer, and ``DenseContrastSegmentationTrainer`` attaches the loss to that
model. Everything else (data, augmentation, logging, checkpoints, validation) is Ultralytics' own; the
loss shows up as ``dcl_loss`` in the progress bar and in ``results.csv``, and ``last.pt``/``best.pt``
load in plain Ultralytics. ``--weight 0`` trains the plain baseline with Ultralytics' own trainer.

    # a YOLO-format dataset (data.yaml with train/val/names)
    python examples/train_ultralytics_yolo_seg.py --data path/to/data.yaml --model yolo11n-seg.yaml \\
        --epochs 100 --imgsz 640 --batch 16 --weight 1.2

    # or a synthetic one, written to --out first (no download needed)
    python examples/train_ultralytics_yolo_seg.py --synthetic 64 --imgsz 128 --epochs 10

Needs ultralytics (``pip install 'densecontrast[ultralytics]'``). Models are built from Ultralytics'
bundled yaml files with random weights; pass a ``.pt`` file to ``--model`` to start from weights you have.
"""

from __future__ import annotations

import argparse
import os
import pathlib

os.environ.setdefault("YOLO_OFFLINE", "1")  # never reach the network from this script

from ultralytics import YOLO
from ultralytics.models.yolo.segment import SegmentationTrainer

from densecontrast.adapters import DEFAULT_WEIGHT
from densecontrast.adapters.ultralytics import DenseContrastSegmentationTrainer


def synthetic_dataset(root: pathlib.Path, count: int, image_size: int, seed: int) -> pathlib.Path:
    """Write ``count`` training and ``count // 4`` validation images of SyntheticInstances, YOLO format."""
    from densecontrast.datasets import SyntheticInstances, export_yolo

    train = SyntheticInstances(count, image_size=image_size, seed=seed, split="train")
    val = SyntheticInstances(max(count // 4, 1), image_size=image_size, seed=seed, split="val")
    return export_yolo(train, root, val_dataset=val)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a YOLO-format data.yaml")
    source.add_argument(
        "--synthetic", type=int, metavar="N", help="write N synthetic training images and use them"
    )
    parser.add_argument(
        "--model", default="yolo11n-seg.yaml", help="a YOLO-seg yaml (random init) or .pt file"
    )
    parser.add_argument("--out", default="runs/ultralytics_dcl", help="where runs (and synthetic data) go")
    parser.add_argument("--name", default="train", help="run name under --out")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu, 0, 0,1, ...")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--weight", type=float, default=DEFAULT_WEIGHT, help="λ; 0 trains the baseline without DCL"
    )
    parser.add_argument(
        "--margin", type=float, default=0.0, help="enlarge GT boxes by this fraction per side"
    )
    parser.add_argument("--features", choices=("proto", "proto_input"), default="proto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    args = parser.parse_args(argv)

    out = pathlib.Path(args.out).resolve()
    if args.synthetic is not None:
        data = synthetic_dataset(out / "data", args.synthetic, args.imgsz, args.seed)
    else:
        data = pathlib.Path(args.data)
    trainer = (
        DenseContrastSegmentationTrainer.with_options(
            weight=args.weight, margin=args.margin, features=args.features
        )
        if args.weight > 0
        else SegmentationTrainer
    )
    model = YOLO(args.model)
    model.train(
        data=str(data),
        trainer=trainer,
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        device=args.device,
        workers=args.workers,
        seed=args.seed,
        amp=args.amp,
        plots=False,
        project=str(out),
        name=args.name,
        exist_ok=True,
    )
    print(f"results: {out / args.name / 'results.csv'}")


if __name__ == "__main__":
    main()
