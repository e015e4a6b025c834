"""Dense contrastive loss for torchvision's Mask R-CNN, added with hooks only.

Shapes: R positive RoIs of the batch, C channels, h x w the mask predictor's grid (28 x 28 by default).

:func:`attach` registers the loss as ``model.dense_contrast`` and, besides the step hooks every adapter
shares (see :class:`~densecontrast.adapters.DenseContrastHandle`), four hooks:

- a forward pre-hook on ``roi_heads`` keeps the transformed targets of a training step;
- a forward pre-hook on ``roi_heads.mask_roi_pool`` keeps the positive proposals of each image;
- a forward pre-hook on ``roi_heads.mask_predictor.mask_fcn_logits`` (or ``layer``) keeps the per-RoI
  feature map entering the predictor's last convolution, after the in-place ReLU;
- a forward hook on ``roi_heads`` rebuilds each positive RoI's ground-truth mask on that grid exactly as
  torchvision builds its mask targets, evaluates the loss and returns ``losses["loss_dcl"]``.

Nothing else in the model changes: in eval mode the hooks capture nothing and return nothing.
Tested versions, and what breaks outside them: docs/torchvision.md.
"""

from __future__ import annotations

from typing import Any, cast

from torch import Tensor, nn

from ._base import (
    DEFAULT_WEIGHT,
    SUBMODULE_NAME,
    DenseContrastHandle,
    Framework,
    call_arg,
    check_not_attached,
    find_handle,
)
from ._checks import (
    build_criterion,
    check_eager_model,
    check_ignore_band,
    check_weight,
    resolve_layer,
)
from ._targets import masks_from_soft, match_positives, positive_mask_targets, project_masks

try:
    import torchvision.ops  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without torchvision
    raise ImportError(
        "densecontrast.adapters.torchvision needs torchvision; install it with "
        "`pip install densecontrast[torchvision]`"
    ) from err

__all__ = [
    "LOSS_KEY",
    "SUBMODULE_NAME",
    "DenseContrastHandle",
    "attach",
    "get_handle",
    "masks_from_soft",
    "match_positives",
    "positive_mask_targets",
    "project_masks",
]

LOSS_KEY = "loss_dcl"
_MODULE_PATH = "densecontrast.adapters.torchvision"
_LAYER = "roi_heads.mask_predictor.mask_fcn_logits"


def _child(module: nn.Module, name: str) -> nn.Module:
    return cast(nn.Module, getattr(module, name))


class _MaskRCNN(Framework):
    """torchvision's RoIHeads: targets, positive proposals and the mask predictor's input."""

    def install(self, handle: DenseContrastHandle) -> None:
        roi_heads = _child(handle.model, "roi_heads")
        handle.add_hook(roi_heads.register_forward_pre_hook(self._on_heads_input, with_kwargs=True))
        pool = _child(roi_heads, "mask_roi_pool")
        handle.add_hook(pool.register_forward_pre_hook(self._on_pool_input, with_kwargs=True))
        handle.add_hook(self.layer.register_forward_pre_hook(self._on_layer_input, with_kwargs=True))
        handle.add_hook(roi_heads.register_forward_hook(self._on_heads_output))

    def _on_heads_input(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        step = self.handle.current_step()
        if step is not None and module.training:
            step.values.clear()
            step.values["targets"] = call_arg(args, kwargs, "targets", 3)

    def _on_pool_input(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        step = self.handle.current_step()
        if step is not None and step.values.get("targets") is not None:
            step.values["proposals"] = call_arg(args, kwargs, "boxes", 1)

    def _on_layer_input(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        step = self.handle.current_step()
        if step is None or step.values.get("proposals") is None or not module.training:
            return None
        tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, Tensor)]
        feats = args[0] if args else (tensors[0] if len(tensors) == 1 else None)
        step.values["feats"] = feats
        # The in-place gradient path: the loss is computed here and the layer (a plain convolution)
        # reads the features through the loss's pass-through, so training holds one dense gradient.
        if type(module) is nn.Conv2d and isinstance(feats, Tensor) and len(args) == 1 and not kwargs:
            fast = self.handle.evaluate_passthrough(step, feats, self._roi_masks(step.values, feats))
            if fast is not None:
                step.values["term"] = fast[1]
                return (fast[0],), {}
        return None

    def _on_heads_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        step = self.handle.current_step()
        if step is None or step.values.get("targets") is None or not module.training:
            return None
        values, step.values = step.values, {}  # the step's graph is not kept past this hook
        term, feats = values.get("term"), values.get("feats")
        if term is None:
            if values.get("proposals") is None or feats is None:
                where = "mask_roi_pool" if values.get("proposals") is None else f"layer {self.layer_name}"
                raise RuntimeError(
                    f"densecontrast: a training step of roi_heads ran but {where} was never called with a "
                    "tensor, so the loss has no features. Expected a torchvision RoIHeads whose mask branch "
                    f"calls roi_heads.mask_roi_pool and then layer (default {_LAYER}); pass layer= a module "
                    "the mask branch calls with the per-RoI feature map"
                )
            term = self.handle.evaluate(step, feats, self._roi_masks(values, feats))
        detections, losses = output
        return detections, {**losses, LOSS_KEY: term}

    def _roi_masks(self, values: dict[str, Any], feats: Any) -> Tensor:
        """Ground-truth instance of every positive RoI on the feature grid, checked against feats."""
        name = self.layer_name
        if not isinstance(feats, Tensor) or feats.ndim != 4:
            got = f"shape {tuple(feats.shape)}" if isinstance(feats, Tensor) else type(feats).__name__
            raise RuntimeError(
                f"densecontrast: expected the input of layer {name} to be the per-RoI feature map "
                f"(R, C, h, w); got {got}. Pass layer= the module of the mask branch whose input it is"
            )
        proposals = values["proposals"]
        num_rois = sum(int(p.shape[0]) for p in proposals)
        if feats.shape[0] != num_rois:
            raise RuntimeError(
                f"densecontrast: expected layer {name} to see each of the {num_rois} positive proposals "
                f"that mask_roi_pool received once; it saw {feats.shape[0]} RoIs (feats "
                f"{tuple(feats.shape)}). Pass layer= a module that the mask branch calls once per step on "
                "all positive RoIs"
            )
        soft, _ = positive_mask_targets(values["targets"], proposals, (feats.shape[-2], feats.shape[-1]))
        return masks_from_soft(soft, ignore_band=self.handle.ignore_band).to(feats.device)


def _check_model(model: object) -> nn.Module:
    model = check_eager_model(model, "a torchvision MaskRCNN")
    roi_heads = getattr(model, "roi_heads", None)
    if not isinstance(roi_heads, nn.Module):
        raise ValueError(
            f"model ({type(model).__name__}) has no roi_heads module; attach expects a torchvision "
            "GeneralizedRCNN such as maskrcnn_resnet50_fpn"
        )
    for part in ("mask_roi_pool", "mask_head", "mask_predictor"):
        if getattr(roi_heads, part, None) is None:
            raise ValueError(
                f"model.roi_heads.{part} is None: the model has no mask branch (a Faster R-CNN?); "
                "the dense contrastive loss needs Mask R-CNN's mask head"
            )
    return model


def get_handle(model: nn.Module) -> DenseContrastHandle | None:
    """The handle attached to ``model`` (also on a deep copy of an attached model), or None."""
    return find_handle(model, _MaskRCNN)


def attach(
    model: nn.Module,
    criterion: nn.Module | None = None,
    *,
    weight: float = DEFAULT_WEIGHT,
    k: int | None = None,
    tau: float | None = None,
    layer: str | nn.Module | None = None,
    ignore_band: float | None = None,
) -> DenseContrastHandle:
    """Add the dense contrastive loss to a torchvision Mask R-CNN as ``losses["loss_dcl"]``.

    In training, ``model(images, targets)`` then returns the usual loss dict plus
    ``loss_dcl = weight * criterion(feats, masks)``, with ``feats`` (R, C, h, w) the input of the mask
    predictor's last convolution for the R positive RoIs and ``masks`` (R, h, w) their ground-truth
    instance on the same grid, built as torchvision builds its mask targets and thresholded at 0.5.
    Eval mode is untouched. Attach before wrapping the model in DistributedDataParallel or compiling it.

    Args:
        model: a torchvision ``MaskRCNN`` (eager, unwrapped), in any floating dtype.
        criterion: the loss module, called as ``criterion(feats, masks) -> scalar``. Default:
            ``DenseContrastiveLoss(k, tau, in_channels=C)`` with C the channels entering ``layer``
            (the learnable similarity), on the layer's device and in its dtype. It becomes
            ``model.dense_contrast``, so the optimizer, the ``state_dict`` and DDP see its parameters.
        weight: λ, the factor of the loss in the dict. Default ``DEFAULT_WEIGHT`` (0.3, chosen on the
            evidence study's tuning split; the paper: 1.2 on Cityscapes, its released code 0.1 on COCO).
        k: samples per set for the default criterion. Default 32. Only with ``criterion=None``.
        tau: temperature for the default criterion. Default 0.07. Only with ``criterion=None``.
        layer: dotted name or module inside ``model.roi_heads`` whose input is the per-RoI feature map,
            for custom predictors. Default ``roi_heads.mask_predictor.mask_fcn_logits``.
        ignore_band: mark RoI pixels whose soft ground truth lies within this distance of 0.5 as
            ignored (-1) instead of thresholding them. Default None.

    Returns:
        A :class:`~densecontrast.adapters.DenseContrastHandle`; ``handle.remove()`` restores the model.

    Raises:
        TypeError: a wrapped, compiled or scripted model, or arguments of the wrong type.
        ValueError: a model without a mask branch, an unknown ``layer``, bad values, ``k`` or ``tau``
            together with a ``criterion``, or a model that already has a ``dense_contrast`` submodule.

    Examples:
        >>> from torchvision.models.detection import MaskRCNN
        >>> from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
        >>> backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None)
        >>> model = MaskRCNN(backbone, num_classes=3)  # or maskrcnn_resnet50_fpn(weights=None, ...)
        >>> handle = attach(model, weight=1.2)
        >>> model.dense_contrast.projector.in_channels
        256
        >>> handle.remove()
        >>> hasattr(model, "dense_contrast")
        False
    """
    model = _check_model(model)
    weight = check_weight(weight)
    ignore_band = check_ignore_band(ignore_band)
    check_not_attached(model, _MODULE_PATH)
    resolved = resolve_layer(
        model, layer, default=_LAYER, within="roi_heads", role="input is the per-RoI feature map (R, C, h, w)"
    )
    crit = build_criterion(
        criterion,
        getattr(resolved, "in_channels", None),
        k,
        tau,
        where=f"the input of layer ({type(resolved).__name__}: no int in_channels)",
        like=resolved,
    )
    return DenseContrastHandle(model, crit, _MaskRCNN(resolved), weight=weight, ignore_band=ignore_band)
