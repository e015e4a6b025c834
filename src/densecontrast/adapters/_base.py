"""What every framework adapter shares: the handle's lifecycle, the argument checks, the criterion.

An adapter attaches the loss to a model with hooks only. :class:`AdapterHandle` owns what that leaves on
the model (the hooks, the loss registered as the submodule ``model.dense_contrast``, a back-reference to
the handle) and takes it all away again in :meth:`AdapterHandle.remove`. A framework's handle subclasses
it, registers its hooks with :meth:`AdapterHandle._add_hook` and forgets what it captured in
:meth:`AdapterHandle._clear`, which the base calls on removal.

This module is private: the framework modules re-export what users need.
"""

from __future__ import annotations

import math
from types import TracebackType
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..loss import DEFAULT_K, DEFAULT_TAU, DenseContrastiveLoss

SUBMODULE_NAME = "dense_contrast"
"""The name under which the loss module is registered on the model."""
HANDLE_ATTR = "_densecontrast_handle"
"""The model attribute that points back at its handle (so deep copies carry their own)."""

_H = TypeVar("_H", bound="AdapterHandle")


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


def check_not_attached(model: nn.Module, module_path: str) -> None:
    """Refuse a model that already carries a ``dense_contrast`` submodule or a handle."""
    if SUBMODULE_NAME in model._modules or isinstance(getattr(model, HANDLE_ATTR, None), AdapterHandle):
        raise ValueError(
            f"model already has a {SUBMODULE_NAME!r} submodule (attached twice?); call handle.remove() "
            f"or {module_path}.get_handle(model).remove() first"
        )


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
    device: torch.device | None = None,
) -> nn.Module:
    """The user's criterion, or the default ``DenseContrastiveLoss(k, tau, in_channels=channels)``.

    Args:
        criterion: the user's loss module, or None for the default.
        channels: C, the channels of the features the loss sees (an int), or anything else when the
            adapter could not tell (then the default criterion cannot be built and the error says so).
        k: samples per set for the default criterion (None: the library's default).
        tau: temperature for the default criterion (None: the library's default).
        where: where the features come from, for the messages.
        device: where to put the default criterion.
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
            f"cannot tell how many channels {where} has; "
            "pass criterion=DenseContrastiveLoss(k, tau, in_channels=C)"
        )
    crit = DenseContrastiveLoss(
        DEFAULT_K if k is None else k, DEFAULT_TAU if tau is None else tau, in_channels=channels
    )
    return crit if device is None else crit.to(device)


def module_device(module: nn.Module) -> torch.device | None:
    """The device of a module's first parameter or buffer, or None for a module without any."""
    for tensor in (*module.parameters(recurse=True), *module.buffers(recurse=True)):
        return tensor.device
    return None


def is_library_loss(criterion: nn.Module) -> bool:
    """Whether ``criterion`` is exactly the library's loss (whose internals an adapter may use)."""
    return type(criterion) is DenseContrastiveLoss


class AdapterHandle:
    """Base of the handles the adapters return: owns the hooks and the loss submodule, removes them.

    On construction it registers ``criterion`` as ``model.dense_contrast`` (so the optimizer, the
    ``state_dict``, ``.to()`` and DDP see its parameters) and stores itself on the model, so that
    ``copy.deepcopy(model)`` carries a handle of its own. A framework's subclass registers its hooks with
    :meth:`_add_hook` and overrides :meth:`_clear` to forget what its hooks captured.

    Attributes:
        model: the model the loss is attached to.
        criterion: the loss module (also ``model.dense_contrast``).
        weight: the factor applied to the loss before it reaches the framework's losses.
    """

    def __init__(self, model: nn.Module, criterion: nn.Module, *, weight: float) -> None:
        self.model = model
        self.criterion = criterion
        self.weight = weight
        self._hooks: list[RemovableHandle] = []
        model.add_module(SUBMODULE_NAME, criterion)
        setattr(model, HANDLE_ATTR, self)

    def _add_hook(self, hook: RemovableHandle) -> None:
        self._hooks.append(hook)

    @property
    def attached(self) -> bool:
        """Whether the hooks and the submodule are still in place."""
        return bool(self._hooks)

    def remove(self) -> None:
        """Remove every hook, the ``dense_contrast`` submodule and any captured value. Idempotent."""
        hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook.remove()
        self._clear()
        if getattr(self.model, SUBMODULE_NAME, None) is self.criterion:
            delattr(self.model, SUBMODULE_NAME)
        if getattr(self.model, HANDLE_ATTR, None) is self:
            delattr(self.model, HANDLE_ATTR)

    def _clear(self) -> None:
        """Forget everything captured during a step (subclasses extend this)."""

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def _repr_fields(self) -> list[str]:
        return [f"weight={self.weight}"]

    def __repr__(self) -> str:
        state = "attached" if self.attached else "removed"
        fields = ", ".join([type(self.model).__name__, *self._repr_fields(), state])
        return f"{type(self).__name__}({fields})"


def find_handle(model: nn.Module, cls: type[_H]) -> _H | None:
    """The handle of type ``cls`` attached to ``model`` (or to the model it was deep-copied from), or None."""
    handle: Any = getattr(model, HANDLE_ATTR, None)
    return handle if isinstance(handle, cls) else None
