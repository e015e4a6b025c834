"""Argument checks shared by the public entry points.

They look at metadata only (ndim, shapes, dtypes, devices), so they never synchronise with an
accelerator; the one exception, the value check of non-boolean masks, is documented where it happens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")
MIN_TAU = 2.0 / torch.finfo(torch.float32).max
"""The smallest temperature: similarities / tau and their differences (up to 2 / tau) stay finite."""


def check_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    return value


def check_ndim(name: str, value: Tensor, ndim: int, symbolic: str) -> None:
    if value.ndim != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions {symbolic}; "
            f"got shape {tuple(value.shape)} ({value.ndim} dimensions)"
        )


def check_floating(name: str, value: Tensor) -> None:
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {value.dtype}")


def check_same_device(**tensors: Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"tensors must be on one device; got {listing}")


def check_int(name: str, value: object, minimum: int) -> int:
    """An int (not a bool: True as a count is almost certainly a mistake) of at least ``minimum``."""
    expected = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {expected}; got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be {expected}; got {value}")
    return value


def check_positive_int(name: str, value: object) -> int:
    return check_int(name, value, 1)


def check_tau(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"tau must be a finite positive number; got {value!r} ({type(value).__name__})")
    tau = float(value)
    if not math.isfinite(tau) or tau <= 0.0:
        raise ValueError(f"tau must be a finite positive number; got {value!r}")
    if tau < MIN_TAU:
        raise ValueError(
            f"tau must be at least {MIN_TAU:.3g}, so that 2 / tau is finite in float32 (the similarities "
            f"are computed in float32); got {value!r}"
        )
    return tau


def check_reduction(value: object) -> str:
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {value!r}")
    return str(value)


def shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def check_mask_values(masks: Tensor) -> None:
    """Reject non-boolean masks holding values other than -1, 0 and 1.

    This reads the values, so for a CUDA tensor it synchronises; boolean masks skip it entirely.
    """
    if masks.dtype == torch.bool or masks.numel() == 0:
        return
    if masks.dtype == torch.uint8:
        bad = masks > 1  # -1 cannot be stored; 255 must not pass as it
    else:
        bad = (masks != 0) & (masks != 1) & (masks != -1)
    if bool(bad.any()):
        example = masks[bad][0].item()
        hint = (
            " (threshold soft masks first, e.g. masks >= 0.5)"
            if masks.is_floating_point()
            else " (pass masks == value, or a bool tensor)"
        )
        raise ValueError(
            "masks must hold only 0 (background), 1 (instance) and -1 (ignore); "
            f"got dtype {masks.dtype} with value {example!r}{hint}"
        )
