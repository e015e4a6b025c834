"""Dense contrastive loss for Ultralytics YOLO-seg models, added with hooks only.

Shapes: B images, P prototypes (32), Hp x Wp the prototype maps (a quarter of the input), R RoIs, h x w
the RoI grid (28 x 28 by default).

YOLO-seg has no proposals and no per-RoI mask head: its mask branch is the ``Segment`` head's ``proto``
module, whose output (B, P, Hp, Wp) are the prototype maps every instance mask is assembled from. As the
paper does for the one-stage SparseInst, the loss runs on the ground-truth boxes cut out of those maps
(:func:`~densecontrast.adapters.rois.gt_box_rois`). A training call ``model(batch)`` (the call Ultralytics'
trainer makes) is a step of the shared lifecycle (:class:`~densecontrast.adapters.DenseContrastHandle`);
a forward hook on ``model.model[-1].proto`` (or a pre-hook on ``proto.cv3``, ``features="proto_input"``)
keeps its prototype maps, and a forward hook on the model appends the loss to the criterion's loss vector
and items as ``dcl_loss``, with the ground truth of the batch dict (:func:`batch_instances`). For
``YOLO(...).train()`` use :class:`DenseContrastSegmentationTrainer`: Ultralytics' trainer rebuilds the
model, so hooks put on ``YOLO(...).model`` before ``train()`` are lost.
Tested versions, and what breaks outside them: docs/ultralytics.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from ._base import (
    DEFAULT_WEIGHT,
    SUBMODULE_NAME,
    DenseContrastHandle,
    Framework,
    check_not_attached,
    deprecated_alias,
    find_handle,
)
from ._checks import (
    build_criterion,
    check_choice,
    check_eager_model,
    check_ignore_band,
    check_margin,
    check_output_size,
    check_weight,
    read_option,
)
from ._targets import batch_instances

try:
    from ultralytics.engine.model import Model as _UltralyticsModel
    from ultralytics.nn.modules.block import Proto
except ImportError as err:  # pragma: no cover - exercised only without ultralytics
    raise ImportError(
        "densecontrast.adapters.ultralytics needs ultralytics; install it with "
        "`pip install 'densecontrast[ultralytics]'`"
    ) from err

__all__ = [
    "LOSS_KEY",
    "SUBMODULE_NAME",
    "DenseContrastHandle",
    "DenseContrastSegmentationTrainer",  # noqa: F822 (loaded on first use by __getattr__)
    "attach",
    "batch_instances",
    "get_handle",
]

LOSS_KEY = "dcl_loss"
"""The name of the loss in Ultralytics' loss dict, progress bar and ``results.csv``."""
Features = Literal["proto", "proto_input"]
_FEATURES: tuple[str, ...] = ("proto", "proto_input")
_DEFAULT_SEG_GAIN = 7.5  # Ultralytics' default `box` gain, which also scales seg_loss
_MODULE_PATH = "densecontrast.adapters.ultralytics"


class _YoloSeg(Framework):
    """YOLO-seg: the batch dict of a training call ``model(batch)`` and the Segment head's prototypes."""

    public = ("features", "overlap_mask")

    def __init__(self, layer: nn.Module, *, features: Features, overlap_mask: bool | None) -> None:
        super().__init__(layer)
        self.features = features
        self.overlap_mask = overlap_mask
        self._warned = False

    def install(self, handle: DenseContrastHandle) -> None:
        if self.features == "proto":
            handle.add_hook(self.layer.register_forward_hook(self._on_proto_output))
        else:
            handle.add_hook(self.layer.register_forward_pre_hook(self._on_proto_input))
        handle.add_hook(handle.model.register_forward_hook(self._on_model_output))

    def begin(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any] | None:
        # model(batch) runs model.loss(batch), which runs the network on batch["img"] inside: only the
        # outer call (a dict) in training is a step.
        if module.training and args and isinstance(args[0], Mapping):
            return {"batch": args[0]}
        return None

    def _on_proto_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self._capture(module, output)

    def _on_proto_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._capture(module, args[0] if args else None)

    def _capture(self, module: nn.Module, value: Any) -> None:
        step = self.handle.current_step()
        if step is not None:
            step.values["protos"] = value
        elif module.training and torch.is_grad_enabled() and not self._warned:
            # model(images) or model.loss(...) in training: no step, so the prototypes are not kept (their
            # graph would outlive the call) and no term is added.
            self._warned = True
            warnings.warn(
                f"densecontrast: the YOLO-seg prototypes were computed in training mode outside a training "
                f"call model(batch) (model(images), or model.loss(...) called directly), so {LOSS_KEY} was "
                "not computed. Call model(batch) with Ultralytics' batch dict, as its trainer does, to train "
                "with the dense contrastive loss (warned once)",
                RuntimeWarning,
                stacklevel=4,
            )

    def _on_model_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        step = self.handle.current_step()
        if step is None or not args or args[0] is not step.values.get("batch"):
            return None  # not a step, or a call on the images inside one
        protos = step.values.pop("protos", None)
        if protos is None:
            raise RuntimeError(
                f"densecontrast: expected the training call model(batch) to run {self.layer_name} of the "
                "Segment head (model.model[-1].proto), whose prototypes the loss needs; it did not run. "
                "Attach to a YOLO-seg SegmentationModel whose last layer is the Segment head that made the "
                "masks"
            )
        if isinstance(protos, (tuple, list)):  # YOLO26's Proto26 returns (prototypes, semantic logits)
            protos = protos[0]
        loss_vec, items = output
        batch = step.values["batch"]
        overlap = self.overlap_mask
        if overlap is None:
            overlap = bool(read_option(getattr(module, "args", None), "overlap_mask", True))
        masks, boxes = batch_instances(
            {k: batch[k].to(protos.device) for k in ("masks", "bboxes", "batch_idx")},
            protos.shape[0],
            overlap_mask=overlap,
        )
        gain = float(read_option(getattr(module, "args", None), "box", _DEFAULT_SEG_GAIN))
        term = self.handle.gt_box_loss(step, protos, masks, boxes, scale=gain)
        loss_vec = torch.cat([loss_vec, (term * protos.shape[0]).reshape(1).to(loss_vec.dtype)])
        if isinstance(items, Tensor):  # Ultralytics before the loss dict: a tensor of items, names apart
            return loss_vec, torch.cat([items, term.detach().reshape(1).to(items.dtype)])
        return loss_vec, {**items, LOSS_KEY: term.detach()}


def _proto(model: nn.Module) -> nn.Module:
    """The ``proto`` module of the model's last layer, the Segment head (checked by :func:`_check_model`)."""
    return cast(nn.Module, cast(Any, model).model[-1].proto)


def _check_model(model: object) -> nn.Module:
    if isinstance(model, _UltralyticsModel):
        raise TypeError(
            f"model is an Ultralytics {type(model).__name__} wrapper; its trainer rebuilds the network, so "
            "hooks on it would be lost in train(). Use YOLO(...).train(..., "
            "trainer=DenseContrastSegmentationTrainer), or attach(yolo.model) for your own training loop"
        )
    model = check_eager_model(model, "an Ultralytics SegmentationModel")
    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential) or len(layers) == 0:
        raise ValueError(
            f"model ({type(model).__name__}) is not an Ultralytics YOLO model (no model.model layer list); "
            "attach expects a SegmentationModel such as YOLO('yolo11n-seg.yaml').model"
        )
    head = layers[-1]
    proto = getattr(head, "proto", None)
    if not isinstance(proto, Proto):
        raise ValueError(
            f"the model's head ({type(head).__name__}) has no prototype module (proto): a detection-only "
            "model? The dense contrastive loss needs a YOLO-seg model with a Segment head (e.g. "
            "yolo11n-seg.yaml)"
        )
    return model


def get_handle(model: nn.Module) -> DenseContrastHandle | None:
    """The handle attached to ``model`` (also on a deep copy of an attached model), or None."""
    return find_handle(model, _YoloSeg)


_deprecated = deprecated_alias(_MODULE_PATH, "UltralyticsHandle", "DenseContrastHandle", DenseContrastHandle)


def __getattr__(name: str) -> Any:
    # The trainer lives in its own module (it imports this one), loaded on first use.
    if name == "DenseContrastSegmentationTrainer":
        from ._ultralytics_trainer import DenseContrastSegmentationTrainer

        return DenseContrastSegmentationTrainer
    return _deprecated(name)


def attach(
    model: nn.Module,
    criterion: nn.Module | None = None,
    *,
    weight: float = DEFAULT_WEIGHT,
    k: int | None = None,
    tau: float | None = None,
    features: Features = "proto",
    output_size: int | tuple[int, int] = 28,
    margin: float = 0.0,
    ignore_band: float | None = None,
    overlap_mask: bool | None = None,
) -> DenseContrastHandle:
    """Add the dense contrastive loss to an Ultralytics YOLO-seg model as ``dcl_loss``.

    In training, ``model(batch)`` (what Ultralytics' trainer calls) returns the criterion's loss vector
    with one more entry, ``weight * box * L * B``, and its loss dict with ``dcl_loss = weight * box * L``:
    ``L = criterion(feats, masks)`` on the ground-truth boxes of the batch cut out of the prototype maps,
    ``box`` Ultralytics' gain of the box and segmentation losses (``model.args.box``, 7.5 by default) and
    B the batch size, the same scaling Ultralytics gives ``seg_loss``. So ``weight`` is the paper's λ
    relative to the mask loss: the paper's 1.2 is ``weight=1.2``. Eval mode and ``model(images)`` are
    untouched.

    For ``YOLO(...).train()`` use :class:`DenseContrastSegmentationTrainer` instead: Ultralytics' trainer
    builds its own model.

    Args:
        model: an Ultralytics ``SegmentationModel`` (``YOLO("yolo11n-seg.yaml").model``), eager, unwrapped.
        criterion: the loss module, called as ``criterion(feats, masks) -> scalar``; default
            ``DenseContrastiveLoss(k, tau, in_channels=C)`` with C the channels of ``features`` (32
            prototypes). It becomes ``model.dense_contrast``.
        weight: λ, relative to the segmentation loss before Ultralytics' ``box`` gain. Default
            ``DEFAULT_WEIGHT`` (0.3, chosen on the evidence study's tuning split; the paper: 1.2).
        k: samples per set for the default criterion. Default 32.
        tau: temperature for the default criterion. Default 0.07.
        features: ``"proto"`` (the prototype maps, the mask branch's output) or ``"proto_input"`` (the
            input of the Proto module's last 1x1 convolution, ``proto.cv3``: wider, before the final
            projection to the prototypes).
        output_size: the RoI grid. Default 28 (28 x 28).
        margin: enlarge each ground-truth box by this fraction of its size on every side, so objects
            that fill their box still have negatives. Default 0 (the paper).
        ignore_band: mark RoI pixels whose soft mask lies within this distance of 0.5 as ignored.
        overlap_mask: the layout of ``batch["masks"]``; None (default) reads ``model.args.overlap_mask``
            at every step (the trainer's setting; True when absent).

    Returns:
        A :class:`~densecontrast.adapters.DenseContrastHandle`; ``handle.remove()`` restores the model.

    Raises:
        TypeError: a ``YOLO`` wrapper, a compiled, scripted or data-parallel model, or wrong types.
        ValueError: a model without a Segment head (detection-only), bad values, or attaching twice.

    Examples:
        >>> from ultralytics.nn.tasks import SegmentationModel
        >>> model = SegmentationModel("yolov8n-seg.yaml", nc=2, verbose=False)
        >>> handle = attach(model)
        >>> model.dense_contrast.projector.in_channels
        32
        >>> handle.remove()
        >>> hasattr(model, "dense_contrast")
        False
    """
    model = _check_model(model)
    weight = check_weight(weight)
    band = check_ignore_band(ignore_band)
    check_choice("features", features, _FEATURES)
    margin = check_margin(margin)
    size = check_output_size(output_size)
    if overlap_mask is not None and not isinstance(overlap_mask, bool):
        raise TypeError(f"overlap_mask must be None or a bool; got {type(overlap_mask).__name__}")
    check_not_attached(model, "densecontrast.adapters.ultralytics")
    proto = _proto(model)
    last_conv = getattr(getattr(proto, "cv3", None), "conv", None)  # Proto's final 1x1 convolution
    channels = getattr(last_conv, "in_channels" if features == "proto_input" else "out_channels", None)
    layer = cast(nn.Module, proto.cv3) if features == "proto_input" else proto
    crit = build_criterion(criterion, channels, k, tau, where=f"the {features} features", like=proto)
    framework = _YoloSeg(layer, features=features, overlap_mask=overlap_mask)
    return DenseContrastHandle(
        model, crit, framework, weight=weight, ignore_band=band, margin=margin, output_size=size
    )
