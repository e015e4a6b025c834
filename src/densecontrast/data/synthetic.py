"""A synthetic instance-segmentation dataset that is hard for the mask head in the paper's ways.

Shapes: S image size (S x S pixels), N instances of one image.

Each item is a scene of overlapping, textured, partly camouflaged objects (drawn by the private
``densecontrast.data._scenes`` generator, with torch alone) turned into a torchvision detection target.
Items are generated on the fly and depend only on ``(seed, split, index)``.
"""

from __future__ import annotations

import operator
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._validation import check_int, check_positive_int
from ._scenes import MIN_VISIBLE_AREA as MIN_VISIBLE_AREA  # re-exported: the docs name it here
from ._scenes import SHAPE_FAMILIES, Scene, generate, item_seed
from .coco import coco_ground_truth, export_coco
from .yolo import DEFAULT_MIN_IOU, export_yolo

__all__ = ["MIN_VISIBLE_AREA", "SyntheticInstances", "collate_detection"]


SPLITS = ("train", "val", "test")
MIN_IMAGE_SIZE = 32


def _owner_boxes(owner: Tensor, count: int) -> Tensor:
    """Boxes of the visible parts of ``count`` instances from the owner map ``owner`` (S, S).

    Returns float32 (count, 4) ``(x1, y1, x2, y2)``: first column and row, last column and row + 1.

    Examples:
        >>> owner = torch.tensor([[-1, 0, 0], [1, 1, -1]])
        >>> _owner_boxes(owner, 2).tolist()
        [[1.0, 0.0, 3.0, 1.0], [0.0, 1.0, 2.0, 2.0]]
    """
    height, width = owner.shape
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    seen = owner >= 0
    who, rows, cols = owner[seen], rows[seen], cols[seen]

    def reduce(values: Tensor, fill: int, how: str) -> Tensor:
        return torch.full((count,), fill, dtype=torch.int64).scatter_reduce(0, who, values, how)

    first_col, first_row = reduce(cols, width, "amin"), reduce(rows, height, "amin")
    last_col, last_row = reduce(cols, -1, "amax") + 1, reduce(rows, -1, "amax") + 1
    return torch.stack([first_col, first_row, last_col, last_row], dim=1).float()


class SyntheticInstances(torch.utils.data.Dataset):
    """Images of overlapping, textured, partly camouflaged objects with torchvision-format targets.

    Item ``i`` depends only on ``(seed, split, i)`` (and the size arguments), so repeated access and
    DataLoader workers give identical items; splits with the same seed differ.

    Args:
        length: number of images.
        image_size: side S of the square images, at least 32.
        num_categories: number of categories; category ``c`` uses shape family
            ``SHAPE_FAMILIES[(c - 1) % 5]``, elongated ``(c - 1) // 5 + 1`` times beyond the fifth.
        min_instances: least number of objects placed in an image (>= 0).
        max_instances: largest number of objects placed in an image (>= min_instances). Objects whose
            visible area falls under ``MIN_VISIBLE_AREA`` pixels are replaced behind the others, up to
            three rounds, so an image usually holds the number drawn, rarely a few fewer (never 0 when
            ``min_instances >= 1``).
        seed: base seed.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Items are ``(image, target)`` with image float32 (3, S, S) in [0, 1] and target holding ``boxes``
    float32 (N, 4) xyxy (far edges exclusive), ``labels`` int64 (N,), ``masks`` uint8 (N, S, S) visible
    and disjoint, ``image_id`` int64 scalar (index + 1), ``area`` float32 (N,) and ``iscrowd`` int64 (N,).

    Examples:
        >>> ds = SyntheticInstances(4, image_size=64, seed=1)
        >>> image, target = ds[0]
        >>> image.shape, target["masks"].shape[1:], int(target["image_id"])
        (torch.Size([3, 64, 64]), torch.Size([64, 64]), 1)
    """

    def __init__(
        self,
        length: int = 64,
        *,
        image_size: int = 128,
        num_categories: int = 3,
        min_instances: int = 2,
        max_instances: int = 6,
        seed: int = 0,
        split: str = "train",
    ) -> None:
        self.length = check_int("length", length, 0)
        self.image_size = check_int("image_size", image_size, MIN_IMAGE_SIZE)
        self.num_categories = check_positive_int("num_categories", num_categories)
        self.min_instances = check_int("min_instances", min_instances, 0)
        self.max_instances = check_int("max_instances", max_instances, 0)
        if self.max_instances < self.min_instances:
            raise ValueError(
                f"max_instances must be >= min_instances; got min_instances={min_instances}, "
                f"max_instances={max_instances}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int; got {seed!r} ({type(seed).__name__})")
        self.seed = seed
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
        self.split = split
        self.categories: list[dict[str, Any]] = [
            {"id": c, "name": _category_name(c), "supercategory": "shape"}
            for c in range(1, num_categories + 1)
        ]

    def __len__(self) -> int:
        return self.length

    def _index(self, index: int) -> int:
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"index must be an int; got {index!r} ({type(index).__name__})") from None
        if not -self.length <= i < self.length:
            raise IndexError(f"index must be in [{-self.length}, {self.length}); got {i}")
        return i % self.length

    def _scene(self, index: int) -> Scene:
        i = self._index(index)
        gen = torch.Generator().manual_seed(item_seed(self.seed, self.split, i))
        return generate(gen, self.image_size, self.num_categories, self.min_instances, self.max_instances)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Return ``(image, target)`` of image ``index`` (negative indices count from the end)."""
        scene = self._scene(index)
        count = scene.labels.shape[0]
        area = torch.bincount(scene.owner.flatten() + 1, minlength=count + 1)[1:]
        target = {
            "boxes": _owner_boxes(scene.owner, count),
            "labels": scene.labels,
            "masks": (scene.owner == torch.arange(count).view(-1, 1, 1)).view(torch.uint8),
            "image_id": torch.tensor(self._index(index) + 1, dtype=torch.int64),
            "area": area.float(),
            "iscrowd": torch.zeros(count, dtype=torch.int64),
        }
        return scene.image, target

    def coco_ground_truth(self) -> dict[str, Any]:
        """The whole split as a COCO instances dict with compressed-RLE segmentations.

        :func:`densecontrast.data.coco_ground_truth` of this split and its categories, so it needs the
        ``analysis`` extra (numpy, pycocotools). Image ``i`` has id ``i + 1`` and file name
        ``{i + 1:06d}.png``; annotation ids start at 1; ``area`` is the visible pixel count and ``bbox``
        the visible mask's ``[x, y, width, height]``.
        """
        return coco_ground_truth(self, info=self._info())

    def export_coco(self, root: str | os.PathLike[str]) -> pathlib.Path:
        """Write ``root/images/000001.png ...`` and ``root/annotations.json`` (``coco_ground_truth()``).

        Needs the ``analysis`` extra (numpy, pycocotools, and Pillow, which comes with matplotlib).

        Returns:
            ``root`` as a ``pathlib.Path``. The PNGs hold exactly the dataset's images (they are multiples
            of 1/255), so ``read / 255`` gives back ``dataset[i][0]``.
        """
        return export_coco(self, root, info=self._info())

    def export_yolo(
        self,
        root: str | os.PathLike[str],
        *,
        val_dataset: Any | None = None,
        names: Sequence[str] | None = None,
        min_iou: float = DEFAULT_MIN_IOU,
    ) -> pathlib.Path:
        """Write the split as a YOLO-format segmentation dataset: :func:`densecontrast.data.export_yolo`.

        Args:
            root: the folder to write (created if missing).
            val_dataset: the validation split (without one, a warning says that ``val`` points at this
                split's images; ``val_dataset=self`` chooses that on purpose).
            names: the class names (default: this dataset's category names).
            min_iou: the round-trip IoU under which an instance is reported.

        Returns:
            The path of ``root/data.yaml``, for ``YOLO(...).train(data=...)``.
        """
        return export_yolo(self, root, val_dataset=val_dataset, names=names, min_iou=min_iou)

    def _info(self) -> dict[str, Any]:
        return {"description": f"densecontrast SyntheticInstances seed={self.seed} split={self.split}"}


def _category_name(category: int) -> str:
    family = SHAPE_FAMILIES[(category - 1) % len(SHAPE_FAMILIES)]
    variant = (category - 1) // len(SHAPE_FAMILIES)
    return family if variant == 0 else f"{family}-{variant + 1}"


def collate_detection(
    batch: Sequence[tuple[Tensor, dict[str, Tensor]]],
) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Collate ``(image, target)`` pairs into a list of images and a list of targets.

    Use as ``DataLoader(dataset, batch_size=..., collate_fn=collate_detection)``; detection models take
    lists because images hold different numbers of instances.

    Examples:
        >>> images, targets = collate_detection([(torch.zeros(3, 2, 2), {"labels": torch.tensor([1])})])
        >>> first = targets[0]
        >>> len(images), first["labels"].tolist()
        (1, [1])
    """
    return [image for image, _ in batch], [target for _, target in batch]
