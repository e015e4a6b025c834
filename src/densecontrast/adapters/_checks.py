"""Argument checks and the default criterion, shared by every framework adapter.

This module is private: the framework modules re-export what users need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

from ..loss import DEFAULT_K, DEFAULT_TAU, DenseContrastiveLoss


def check_eager_model(model: object, expected: str) -> nn.Module:
    """Refuse what hooks cannot work on: non-modules, TorchScript, compiled and data-parallel wrappers.

    Args:
        model: what the user passed.
        expected: what the adapter wants, for the messages (``"a torchvision MaskRCNN"``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be {expected} (nn.Module); got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            "model is a ScriptModule; Python hooks do not run inside TorchScript. Attach to the eager model "
            "and train it eagerly (script a copy for deployment after handle.remove())"
        )
    if hasattr(model, "_orig_mod"):
        raise TypeError(
            "model is a torch.compile wrapper; attach to the eager model first, then compile: "
            "handle = attach(model); model = torch.compile(model)"
        )
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        raise TypeError(
            f"model is wrapped in {type(model).__name__}; attach to the inner model before wrapping: "
            "handle = attach(model); model = DistributedDataParallel(model, ...)"
        )
    return model


def check_weight(weight: object) -> float:
    """λ, the factor of the loss: a finite number >= 0."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise TypeError(
            f"weight must be a finite non-negative number; got {weight!r} ({type(weight).__name__})"
        )
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"weight must be a finite non-negative number; got {weight!r}")
    return float(weight)


def check_margin(margin: object) -> float:
    """The box margin, a fraction of the box's size added on every side: a finite number >= 0.

    Raises:
        TypeError: not an int or float (bools are refused).
        ValueError: negative, infinite or NaN.
    """
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise TypeError(f"margin must be a finite number >= 0; got {margin!r} ({type(margin).__name__})")
    if not 0 <= margin < math.inf:
        raise ValueError(f"margin must be a finite number >= 0; got {margin!r}")
    return float(margin)


def check_size_pair(name: str, value: object) -> tuple[int, int]:
    """A positive int ``n`` (read as ``(n, n)``) or a pair ``(h, w)`` of positive ints, as ``(h, w)``.

    Raises:
        TypeError: not an int, nor a tuple or list of two ints (bools and floats are refused).
        ValueError: a pair of another length, or a value <= 0.
    """
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not is_int and not isinstance(value, (tuple, list)):
        raise TypeError(
            f"{name} must be a positive int or a pair (h, w) of them; got {value!r} ({type(value).__name__})"
        )
    items: tuple[object, ...] = (value, value) if is_int else tuple(value)  # type: ignore[arg-type]
    if len(items) != 2:
        raise ValueError(f"{name} must be a positive int or a pair (h, w) of them; got {len(items)} values")
    ints = [v for v in items if isinstance(v, int) and not isinstance(v, bool)]
    if len(ints) != 2:
        raise TypeError(
            f"{name} must be a positive int or a pair (h, w) of them; got {value!r} with "
            f"{', '.join(type(v).__name__ for v in items)}"
        )
    if not all(v > 0 for v in ints):
        raise ValueError(f"{name} must be a positive int or a pair (h, w) of them; got {value!r}")
    return ints[0], ints[1]


def check_output_size(output_size: object) -> tuple[int, int]:
    """The RoI grid: a positive int ``n`` (``n x n``) or a pair ``(h, w)`` of positive ints.

    Raises:
        TypeError: not an int nor a pair of ints.
        ValueError: a value <= 0, or a sequence that is not a pair.
    """
    return check_size_pair("output_size", output_size)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError that names the argument and the choices."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")
    return cast(str, value)


def check_ignore_band(ignore_band: object) -> float | None:
    """None, or the half-width in (0, 0.5] of the band of soft mask values marked as ignored."""
    if ignore_band is None:
        return None
    if isinstance(ignore_band, bool) or not isinstance(ignore_band, (int, float)):
        raise TypeError(f"ignore_band must be None or a float in (0, 0.5]; got {type(ignore_band).__name__}")
    if not 0.0 < ignore_band <= 0.5:
        raise ValueError(f"ignore_band must be None or a float in (0, 0.5]; got {ignore_band!r}")
    return float(ignore_band)


def build_criterion(
    criterion: nn.Module | None,
    channels: object,
    k: int | None,
    tau: float | None,
    *,
    where: str,
    like: nn.Module | None = None,
) -> nn.Module:
    """The user's criterion, or the default ``DenseContrastiveLoss(k, tau, in_channels=channels)``.

    The default criterion is put on the device and in the floating dtype of ``like`` (the module the
    features come from), so attaching to a model already in float64, bfloat16 or float16 gives a
    projector in the model's dtype. A user's criterion is taken as it is.

    Args:
        criterion: the user's loss module, or None for the default.
        channels: C, the channels of the features the loss sees (an int), or anything else when the
            adapter could not tell (then the default criterion cannot be built and the error says so).
        k: samples per set for the default criterion (None: the library's default).
        tau: temperature for the default criterion (None: the library's default).
        where: where the features come from, for the messages.
        like: the module whose device and floating dtype the default criterion takes, or None.
    """
    if criterion is not None:
        if not isinstance(criterion, nn.Module):
            raise TypeError(
                "criterion must be an nn.Module called as criterion(feats, masks) -> scalar, or None; "
                f"got {type(criterion).__name__}"
            )
        if k is not None or tau is not None:
            raise ValueError(
                "k and tau configure the default criterion; with criterion= given, set them on it instead "
                f"(got k={k!r}, tau={tau!r})"
            )
        return criterion
    if isinstance(channels, bool) or not isinstance(channels, int):
        raise ValueError(
            f"cannot tell how many channels {where} has (expected an int, got {channels!r}); "
            "pass criterion=DenseContrastiveLoss(k, tau, in_channels=C) with C the channels of the features"
        )
    crit = DenseContrastiveLoss(
        DEFAULT_K if k is None else k, DEFAULT_TAU if tau is None else tau, in_channels=channels
    )
    if like is None:
        return crit
    device, dtype = module_device(like), floating_dtype(like)
    return crit.to(device=device, dtype=dtype)


def module_device(module: nn.Module) -> torch.device | None:
    """The device of a module's first parameter or buffer, or None for a module without any."""
    for tensor in (*module.parameters(recurse=True), *module.buffers(recurse=True)):
        return tensor.device
    return None


def floating_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype of a module's first floating-point parameter or buffer, or None."""
    for tensor in (*module.parameters(recurse=True), *module.buffers(recurse=True)):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def is_library_loss(criterion: nn.Module) -> bool:
    """Whether ``criterion`` is exactly the library's loss (whose internals an adapter may use)."""
    return type(criterion) is DenseContrastiveLoss


def read_option(args: Any, name: str, default: Any) -> Any:
    """An option from a namespace or a mapping (``model.args`` of Ultralytics is either), or ``default``."""
    if isinstance(args, Mapping):
        return args.get(name, default)
    return getattr(args, name, default)


def resolve_layer(
    model: nn.Module, layer: object, *, default: str, within: str | None, role: str
) -> nn.Module:
    """The module the features come from: ``layer`` (a dotted name or a module) or ``default``.

    Args:
        model: the model.
        layer: what the user passed (None for ``default``).
        default: the dotted name of the framework's usual module.
        within: a dotted name the layer must lie inside (not be), or None.
        role: what the layer's input or output is, for the messages ("input is the per-RoI feature map").
    """
    from ..taps import resolve_module

    if layer is not None and not isinstance(layer, (str, nn.Module)):
        raise TypeError(
            f"layer must be None, a dotted module name or an nn.Module; got {type(layer).__name__}"
        )
    if layer is None:
        try:
            return resolve_module(model, default)
        except ValueError:
            raise ValueError(
                f"model ({type(model).__name__}) has no {default}; pass layer=, the module whose {role}"
            ) from None
    module = resolve_module(model, layer)
    if within is not None:
        outer = resolve_module(model, within)
        if module is outer or not any(m is module for m in outer.modules()):
            raise ValueError(
                f"layer must be a module inside model.{within}, the module whose {role}; got {layer!r} "
                f"({type(module).__name__})"
            )
    return module
