"""Configuration of a demo run: :class:`DemoConfig` and the per-device :func:`preset`."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

DEFAULT_OUT = "densecontrast-demo"
DEFAULT_WEIGHT = 0.1
"""λ, the weight of the loss in the demo (chosen on the tuning split: docs/demo.md)."""
PAIRED_AP_STD = {0.1: 1.7, 1.2: 2.6}
"""λ -> standard deviation over seeds 0 to 4 of (+DCL AP - Baseline AP) in AP points, the seed-to-seed
noise of the demo's comparison, from the from-scratch runs of the evidence study
(``benchmarks/results/evidence/cpu/``, CPU configuration, 1200 steps; docs/evidence.md)."""
PAIRED_AP_SEEDS = "0-4"
"""The seeds ``PAIRED_AP_STD`` was measured over, as the demo prints them."""
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
    weight: float = DEFAULT_WEIGHT
    device: str = "cpu"
    val_split: str = "val"
    val_seed: int | None = None

    def resolved(self) -> DemoConfig:
        """A copy with the 0 ("standard") widths and ``val_seed`` filled in."""
        standard = is_standard_backbone(self.backbone)
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


def default_threads() -> int:
    """torch threads of ``densecontrast demo``: half the cores this process may use, at least one.

    The other half is left to the DataLoader worker that generates the images and to other programs:
    when a thread of torch's pool has to wait for a core, every parallel op waits for it, and a step
    becomes many times slower (on 2 cores with one other busy process, 2 threads were 12x slower than 1;
    docs/demo.md has the measurements).
    """
    return max(1, available_cores() // 2)


def available_cores() -> int:
    """The number of CPU cores this process may run on (its affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def is_standard_backbone(name: str) -> bool:
    """Whether ``name`` is a ResNet that gets the standard widths (256 FPN, 1024 box head, 4 stages)."""
    return name in ("resnet50", "resnet101", "resnet152", "resnext50_32x4d", "wide_resnet50_2")


def config_fields() -> list[str]:
    """Names of the :class:`DemoConfig` fields (for scripts that build configurations)."""
    return [f.name for f in fields(DemoConfig)]
