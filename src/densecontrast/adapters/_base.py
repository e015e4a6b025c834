"""What every framework adapter shares: the capture lifecycle, the argument checks, the criterion.

An adapter attaches the loss to a model with hooks only. :class:`DenseContrastHandle` is the one handle
class of every framework: it owns what attaching leaves on the model (the hooks, the loss registered as
the submodule ``model.dense_contrast``, a back-reference to the handle), runs the capture lifecycle of a
training step, and takes it all away again in :meth:`DenseContrastHandle.remove`.

The lifecycle. A forward pre-hook on the model opens a *step* when the framework part says the call is a
training step (:meth:`Framework.begin`); the framework's own hooks write what they capture into that
step (:meth:`DenseContrastHandle.current_step`) and compute the loss where the framework collects its
losses (:meth:`DenseContrastHandle.evaluate`, or :meth:`DenseContrastHandle.gt_box_loss` for models
without proposals); a forward hook on the model, always called (also when the forward raised), closes
the step and drops everything it captured. Steps are kept per thread, so one model stepped from several
threads at once (a threaded loop, ``nn.DataParallel``'s replicas) gives each call its own captures.

A framework adapter is a :class:`Framework` subclass: where its features and ground truth are, and how
its framework collects losses. This module is private: the framework modules re-export what users need.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ._checks import floating_dtype, is_library_loss

SUBMODULE_NAME = "dense_contrast"
"""The name under which the loss module is registered on the model."""
HANDLE_ATTR = "_densecontrast_handle"
"""The model attribute that points back at its handle (so deep copies carry their own)."""

DEFAULT_WEIGHT = 0.3
"""λ, the default factor of the loss in every adapter's ``attach``.

Chosen on the tuning split of the project's evidence study (docs/evidence.md), never on an evaluation
split: in the fine-tuning regime (pretrained backbone, the paper's regime) no λ of 0.1, 0.3, 0.6 and 1.2
raised mask AP over the Baseline there, and 0.3 lowered it least (42.0 against 43.0; 0.1: 40.4, 0.6:
40.4, 1.2: 39.3); from scratch, 0.1 and 0.4 scored above the Baseline and 1.2 far below it. So 0.3 is
the weight that hurt least. The five evaluation seeds, which played no part in the choice, found no λ
that raises mask AP in either regime: 0.3 within noise of the Baseline (-0.5 AP, 95% interval -2.3 to
+1.2), 1.2 costing 1.5 AP after fine-tuning and 6.2 from scratch. The paper uses 1.2 on Cityscapes
(its Table 1), the released code 0.1 on COCO; pass ``weight=`` to use either, and measure on your data.
"""

_H = TypeVar("_H", bound="DenseContrastHandle")


def check_not_attached(model: nn.Module, module_path: str) -> None:
    """Refuse a model that already carries a ``dense_contrast`` submodule or a handle."""
    if SUBMODULE_NAME in model._modules or isinstance(getattr(model, HANDLE_ATTR, None), DenseContrastHandle):
        raise ValueError(
            f"model already has a {SUBMODULE_NAME!r} submodule (attached twice?); call handle.remove() "
            f"or {module_path}.get_handle(model).remove() first"
        )


class Step:
    """What one training call of the model captured, for one thread.

    Attributes:
        model: the module the call ran on (the attached model, or a replica of it made by
            ``nn.DataParallel``): its ``dense_contrast`` submodule is the criterion of this call.
        values: the captures, by name (written by the framework's hooks).
    """

    __slots__ = ("model", "values")

    def __init__(self, model: nn.Module, values: dict[str, Any]) -> None:
        self.model = model
        self.values = values

    @property
    def criterion(self) -> nn.Module | None:
        crit = getattr(self.model, SUBMODULE_NAME, None)
        return crit if isinstance(crit, nn.Module) else None


class Framework:
    """The framework-specific part of an adapter: where the features and the ground truth are.

    A subclass registers its capture hooks in :meth:`install` (with :meth:`DenseContrastHandle.add_hook`;
    hook functions must be bound methods of the framework object, so that a deep copy of the model
    carries hooks bound to its own copy), says in :meth:`begin` which calls of the model are training
    steps, and computes the loss with :meth:`DenseContrastHandle.evaluate` where its framework collects
    losses.

    Attributes:
        handle: the handle this part belongs to (set by the handle).
        layer: the module the features come from (its input or output).
        layer_name: its dotted name in the model and its type, for messages (``"model.x.y (Conv2d)"``).
        public: names of the attributes the handle exposes as its own (``handle.features``...).
    """

    public: tuple[str, ...] = ()
    handle: DenseContrastHandle

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.layer_name = type(layer).__name__

    def install(self, handle: DenseContrastHandle) -> None:
        """Register the framework's hooks on ``handle.model`` with ``handle.add_hook``."""

    def begin(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The first captures of a call of the model that is a training step, or None for any other call.

        By default every call in training mode is a step, with nothing captured yet.
        """
        return {} if module.training else None

    def repr_fields(self) -> list[str]:
        return [f"{name}={getattr(self, name)!r}" for name in self.public]


def _thread_id() -> int:
    return threading.get_ident()


class DenseContrastHandle:
    """What every adapter's ``attach`` returns: owns the hooks and the loss submodule, and removes them.

    On construction it registers ``criterion`` as ``model.dense_contrast`` (so the optimizer, the
    ``state_dict``, ``.to()`` and DDP see its parameters) and stores itself on the model, so that
    ``copy.deepcopy(model)`` carries a handle of its own (found with the framework's ``get_handle``).
    It is a context manager: ``with attach(model): ...`` removes it on exit.

    Each training call of the model keeps its captures in a step of its own thread, opened when the call
    starts and dropped when it ends, also when it raised; calls from several threads at once do not share
    them. The ``last_*`` attributes are written by the latest step of any thread.

    Attributes:
        model: the model the loss is attached to.
        criterion: the loss module (also ``model.dense_contrast``).
        weight: λ, the factor applied to the loss before it reaches the framework's losses.
        layer: the module whose input or output are the features the loss sees.
        ignore_band: soft mask values within this distance of 0.5 are ignored (-1), or None.
        margin: box margin of ground-truth-box RoIs (see :func:`~densecontrast.adapters.rois.gt_box_rois`),
            None for adapters whose RoIs are the model's own proposals.
        output_size: RoI grid (h, w) of ground-truth-box RoIs, or None (the model's own grid).
        framework: the framework-specific part (:class:`Framework`); its public options (``features``,
            ``overlap_mask``, ``instance_classes``) read as attributes of the handle too.
        last_loss: the weighted term of the latest training step, detached (for logging), or None.
        last_num_rois: how many RoIs the latest training step gave the loss, or None.
        last_valid_rois: how many of them contributed (the criterion's ``last_valid_rois``, a detached
            0-dim int64 tensor), or None when the criterion does not report it.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        framework: Framework,
        *,
        weight: float,
        ignore_band: float | None = None,
        margin: float | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> None:
        self.model = model
        self.criterion = criterion
        self.weight = weight
        self.layer = framework.layer
        self.ignore_band = ignore_band
        self.margin = margin
        self.output_size = output_size
        self.framework = framework
        self.last_loss: torch.Tensor | None = None
        self.last_num_rois: int | None = None
        self.last_valid_rois: torch.Tensor | None = None
        self._hooks: list[RemovableHandle] = []
        self._lock = threading.Lock()
        self._steps: dict[int, list[Step | None]] = {}
        framework.handle = self
        name = next((n for n, m in model.named_modules() if m is framework.layer), None)
        if name is not None:
            framework.layer_name = f"model.{name} ({type(framework.layer).__name__})"
        model.add_module(SUBMODULE_NAME, criterion)
        setattr(model, HANDLE_ATTR, self)
        # Opens a step first, closes it last (always, also when the forward or a later hook raised).
        self.add_hook(model.register_forward_pre_hook(self._begin, with_kwargs=True))
        framework.install(self)
        self.add_hook(model.register_forward_hook(self._end, always_call=True))

    # ------------------------------------------------------------------ lifecycle

    def add_hook(self, hook: RemovableHandle) -> None:
        """Keep a hook handle so that :meth:`remove` removes the hook."""
        self._hooks.append(hook)

    def _begin(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        stack = self._stack(create=True)
        stack.append(None)  # pushed before anything can raise: _end always has its entry to pop
        values = self.framework.begin(module, args, kwargs)
        if values is not None:
            stack[-1] = Step(module, values)

    def _end(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        stack = self._stack(create=False)
        if stack:
            stack.pop()
        if not stack:
            with self._lock:
                self._steps.pop(_thread_id(), None)

    def _stack(self, *, create: bool) -> list[Step | None]:
        key = _thread_id()
        stack = self._steps.get(key)
        if stack is None:
            stack = []
            if create:
                with self._lock:
                    self._steps[key] = stack
        return stack

    def current_step(self) -> Step | None:
        """The innermost training step in progress in the calling thread, or None."""
        for step in reversed(self._steps.get(_thread_id(), ())):
            if step is not None:
                return step
        return None

    @property
    def pending_steps(self) -> int:
        """How many training steps (of all threads) are in progress and hold captures: 0 between steps."""
        with self._lock:
            stacks = list(self._steps.values())
        return sum(step is not None for stack in stacks for step in stack)

    @property
    def attached(self) -> bool:
        """Whether the hooks and the submodule are still in place."""
        return bool(self._hooks)

    def remove(self) -> None:
        """Remove every hook, the ``dense_contrast`` submodule and any captured value. Idempotent."""
        hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook.remove()
        with self._lock:
            self._steps.clear()
        if getattr(self.model, SUBMODULE_NAME, None) is self.criterion:
            delattr(self.model, SUBMODULE_NAME)
        if getattr(self.model, HANDLE_ATTR, None) is self:
            delattr(self.model, HANDLE_ATTR)

    # ------------------------------------------------------------------ the loss

    def step_criterion(self, step: Step) -> nn.Module:
        """The criterion of a step: the ``dense_contrast`` of the module the step ran on.

        Under ``nn.DataParallel`` that is the replica's copy, on the replica's device.
        """
        crit = step.criterion
        return self.criterion if crit is None else crit

    def evaluate(
        self, step: Step, feats: torch.Tensor, masks: torch.Tensor, *, scale: float = 1.0
    ) -> torch.Tensor:
        """``weight * scale * criterion(feats, masks)`` for one step, recorded in the ``last_*`` attributes.

        Features whose dtype differs from the criterion's parameters are cast to it (outside autocast,
        where the criterion computes in float32 on its own), so a user criterion in float32 also works on
        a model in another dtype.

        Args:
            step: the step (from :meth:`current_step`).
            feats: float tensor (R, C, h, w).
            masks: tensor (R, h, w), bool or int8 1 / 0 / -1.
            scale: an extra factor of the framework (Ultralytics' box gain).
        """
        crit = self.step_criterion(step)
        feats = _to_criterion_dtype(crit, feats)
        term = (self.weight * scale) * crit(feats, masks)
        self._record(crit, term, feats.shape[0])
        return term

    def evaluate_passthrough(
        self, step: Step, feats: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(feats_out, weight * loss)`` by the loss's in-place-gradient path, or None where it cannot run.

        The path needs the library's own loss, in the dtype of ``feats`` (or under autocast); the caller
        feeds ``feats_out`` to the one layer that reads the features, or falls back to :meth:`evaluate`.
        """
        crit = self.step_criterion(step)
        passthrough = getattr(crit, "forward_passthrough", None)
        if not is_library_loss(crit) or passthrough is None or _to_criterion_dtype(crit, feats) is not feats:
            return None
        feats_out, loss = passthrough(feats, masks)
        term = self.weight * loss
        self._record(crit, term, feats.shape[0])
        return feats_out, term

    def gt_box_loss(
        self,
        step: Step,
        feats: torch.Tensor,
        masks: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor] | None = None,
        *,
        image_size: tuple[int, int] | None = None,
        scale: float = 1.0,
    ) -> torch.Tensor:
        """The loss on ground-truth-box RoIs of a dense feature map (models without proposals).

        Cuts every instance's box out of ``feats`` and out of its mask with
        :func:`~densecontrast.adapters.rois.gt_box_rois` (with this handle's ``output_size``, ``margin``
        and ``ignore_band``) and returns :meth:`evaluate` of them.

        Args:
            step: the step.
            feats: float tensor (B, C, Hf, Wf).
            masks: B tensors (G, Hm, Wm), each image's instance masks.
            boxes: B float tensors (G, 4) in mask pixels, or None for the masks' tight boxes.
            image_size: (H, W), the frame the feature map covers, or None (the masks' common size).
            scale: an extra factor of the framework.
        """
        from .rois import gt_box_rois  # needs torchvision; the torch-only lifecycle does not

        rois = gt_box_rois(
            feats,
            masks,
            boxes,
            output_size=self.output_size if self.output_size is not None else 28,
            image_size=image_size,
            margin=self.margin or 0.0,
            ignore_band=self.ignore_band,
        )
        return self.evaluate(step, rois.feats, rois.masks, scale=scale)

    def _record(self, crit: nn.Module, term: torch.Tensor, num_rois: int) -> None:
        self.last_loss = term.detach()
        self.last_num_rois = int(num_rois)
        valid = getattr(crit, "last_valid_rois", None)
        self.last_valid_rois = valid if isinstance(valid, torch.Tensor) else None

    # ------------------------------------------------------------------ Python protocol

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not found the normal way: the framework's public options.
        framework = self.__dict__.get("framework")
        if framework is not None and name in framework.public:
            return getattr(framework, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict[str, Any]:
        # Copies (deepcopy, pickle) start with no step in progress and a lock of their own.
        state = self.__dict__.copy()
        state.pop("_lock", None)
        state["_steps"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "attached" if self.attached else "removed"
        fields = [type(self.model).__name__, f"weight={self.weight}", f"layer={type(self.layer).__name__}"]
        fields += self.framework.repr_fields()
        if self.margin is not None:
            fields += [f"margin={self.margin}", f"output_size={self.output_size}"]
        if self.ignore_band is not None:
            fields.append(f"ignore_band={self.ignore_band}")
        return f"{type(self).__name__}({', '.join([*fields, state])})"


def _to_criterion_dtype(crit: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    """``feats`` cast to the criterion's floating dtype, unless autocast decides the dtypes."""
    dtype = floating_dtype(crit)
    if dtype is None or feats.dtype == dtype or torch.is_autocast_enabled(feats.device.type):
        return feats
    return feats.to(dtype)


def find_handle(model: nn.Module, framework: type[Framework] | None = None) -> DenseContrastHandle | None:
    """The handle attached to ``model`` (or to the model it was deep-copied from), or None.

    With ``framework``, only a handle whose framework is an instance of that class (an adapter's
    ``get_handle`` does not return another adapter's handle).
    """
    handle: Any = getattr(model, HANDLE_ATTR, None)
    if not isinstance(handle, DenseContrastHandle):
        return None
    return handle if framework is None or isinstance(handle.framework, framework) else None


def call_arg(args: tuple[Any, ...], kwargs: dict[str, Any], name: str, index: int) -> Any:
    """The argument ``name`` of a module call, passed by keyword or at position ``index``, or None."""
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else None


def deprecated_alias(module: str, old: str, new: str, value: object) -> Callable[[str], Any]:
    """A module ``__getattr__`` that returns ``value`` for ``old`` with a ``DeprecationWarning``."""

    def __getattr__(name: str) -> Any:
        if name == old:
            warnings.warn(
                f"{module}.{old} is deprecated; use {module}.{new} (the same class)",
                DeprecationWarning,
                stacklevel=2,
            )
            return value
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
