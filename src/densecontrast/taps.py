"""Feature taps: read a module's input or output during the forward pass, without touching the model.

A :class:`FeatureTap` is a forward hook (or forward pre-hook) that keeps the latest value seen at one
module. It never changes what the module computes: the hook always returns ``None``. The value is kept
until :meth:`FeatureTap.pop` hands it over, so read it once per step and no autograd graph outlives the
step that built it.

Shapes are whatever the tapped module sees; for the mask head of Mask R-CNN that is (R, C, H, W) with
R RoIs, C channels and an H x W RoI grid.
"""

from __future__ import annotations

import difflib
from types import TracebackType
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["FeatureTap", "resolve_module"]

TapWhat = Literal["output", "input", "args", "inputs"]
_WHATS: tuple[str, ...] = ("output", "input", "args")
# "inputs" names all positional arguments, like "args" (not the one tensor of "input").
_ALIASES = {"inputs": "args"}


def _check_not_scripted(name: str, module: nn.Module) -> None:
    if isinstance(module, torch.jit.ScriptModule):
        raise TypeError(
            f"{name} is a ScriptModule ({type(module).__name__}); Python forward hooks do not run inside "
            "TorchScript. Tap the eager model before calling torch.jit.script"
        )


def resolve_module(model: nn.Module, target: str | nn.Module) -> nn.Module:
    """Find a submodule of ``model`` by dotted name, or check that a module object belongs to it.

    Args:
        model: the root module.
        target: a dotted name as listed by ``model.named_modules()`` (``""`` is the root itself), or a
            module object that is ``model`` or one of its submodules.

    Returns:
        The submodule.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or ``target`` is neither a str nor an ``nn.Module``.
        ValueError: no submodule has that name (the message lists close matches), or the module object is
            not part of ``model``.

    Examples:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> resolve_module(net, "1")
        ReLU()
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(target, nn.Module):
        if not any(m is target for m in model.modules()):
            raise ValueError(
                f"the module {type(target).__name__} passed as target is not a submodule of model "
                f"({type(model).__name__}); pass a module of this model or its dotted name"
            )
        return target
    if not isinstance(target, str):
        raise TypeError(
            f"target must be a dotted module name (str) or an nn.Module; got {type(target).__name__}"
        )
    names = dict(model.named_modules())
    if target in names:
        return names[target]
    close = difflib.get_close_matches(target, [n for n in names if n], n=5, cutoff=0.5)
    hint = f"; close matches: {', '.join(repr(n) for n in close)}" if close else ""
    raise ValueError(
        f"model ({type(model).__name__}) has no submodule named {target!r}{hint}. "
        "See model.named_modules() for the available names"
    )


def _first_tensor_kwarg(module: nn.Module, kwargs: dict[str, Any]) -> torch.Tensor:
    """The input of a call with keyword arguments only: its first tensor keyword argument."""
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return value
    raise ValueError(
        f"FeatureTap(what='input') on {type(module).__name__}: the module was called with no positional "
        f"argument and no tensor keyword argument (keywords: {sorted(kwargs)}), so there is no input to "
        "capture. Tap what='output' of this module, or tap the module that produces the tensor you want"
    )


class FeatureTap:
    """Keep the latest input or output of one module.

    Args:
        module: the module to tap.
        what: ``"output"`` (what the module returns), ``"input"`` (its first positional argument or,
            for a call with keyword arguments only, its first tensor keyword argument) or ``"args"``
            (the tuple of all its positional arguments; ``"inputs"`` is another name for ``"args"``).
            Inputs are read by a forward pre-hook, before the module runs, so an in-place operation
            inside the module cannot have changed them.
        training_only: capture only while ``module.training`` is True.

    Attributes:
        module: the tapped module.
        what: what is captured: ``"output"``, ``"input"`` or ``"args"``.
        training_only: whether captures happen in training mode only.

    The tap is a context manager: leaving the ``with`` block removes the hook. Tapping a ScriptModule
    raises ``TypeError``, since TorchScript does not run Python hooks. With ``what="input"``, a call
    that has neither a positional argument nor a tensor keyword argument raises ``ValueError`` (from
    the module's call), naming the module and what to tap instead: the tap never reports a capture of
    nothing.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> with FeatureTap.on(net, "2", what="input") as tap:
        ...     out = net(torch.randn(5, 4))
        ...     hidden = tap.pop()
        >>> hidden.shape, tap.pop()
        (torch.Size([5, 8]), None)
    """

    def __init__(self, module: nn.Module, *, what: TapWhat = "output", training_only: bool = False) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module; got {type(module).__name__}")
        _check_not_scripted("module", module)
        what = _ALIASES.get(what, what)  # type: ignore[assignment]
        if what not in _WHATS:
            raise ValueError(f"what must be one of {_WHATS}; got {what!r}")
        if not isinstance(training_only, bool):
            raise TypeError(f"training_only must be a bool; got {type(training_only).__name__}")
        self.module = module
        self.what: TapWhat = what
        self.training_only = training_only
        self._value: Any = None
        self._captured = False
        self._handle: RemovableHandle | None
        if what == "output":
            self._handle = module.register_forward_hook(self._on_output)
        else:
            self._handle = module.register_forward_pre_hook(self._on_input, with_kwargs=True)

    @classmethod
    def on(
        cls,
        model: nn.Module,
        target: str | nn.Module,
        *,
        what: TapWhat = "output",
        training_only: bool = False,
    ) -> FeatureTap:
        """Tap a submodule of ``model`` given by dotted name (``"roi_heads.mask_head"``) or by object.

        Args:
            model: the root module; a ScriptModule is refused with ``TypeError``.
            target: dotted name or module object (see :func:`resolve_module`).
            what: ``"output"``, ``"input"`` or ``"args"`` (``"inputs"``: another name for ``"args"``).
            training_only: capture only in training mode.

        Returns:
            The attached :class:`FeatureTap`.
        """
        if isinstance(model, nn.Module):
            _check_not_scripted("model", model)
        return cls(resolve_module(model, target), what=what, training_only=training_only)

    def _wanted(self, module: nn.Module) -> bool:
        return not self.training_only or module.training

    def _on_input(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not self._wanted(module):
            return
        if self.what == "args":
            self._value = args
        elif args:
            self._value = args[0]
        else:
            self._value = _first_tensor_kwarg(module, kwargs)
        self._captured = True

    def _on_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._wanted(module):
            self._value = output
            self._captured = True

    @property
    def captured(self) -> bool:
        """Whether a value is waiting to be popped."""
        return self._captured

    @property
    def active(self) -> bool:
        """Whether the hook is still registered."""
        return self._handle is not None

    def peek(self) -> Any:
        """Return the latest captured value and keep it (None when nothing was captured since)."""
        return self._value

    def pop(self) -> Any:
        """Return the latest captured value and forget it (None when nothing was captured since)."""
        value = self._value
        self.clear()
        return value

    def clear(self) -> None:
        """Forget the captured value, if any."""
        self._value = None
        self._captured = False

    def remove(self) -> None:
        """Remove the hook and forget any captured value. Calling it again does nothing."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self.clear()

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return (
            f"FeatureTap({type(self.module).__name__}, what={self.what!r}, "
            f"training_only={self.training_only}, {state})"
        )
