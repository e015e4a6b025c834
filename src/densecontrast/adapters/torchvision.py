"""Dense contrastive loss for torchvision's Mask R-CNN, added with hooks only.

Shapes: B images, G ground-truth instances of an image, P positive proposals of an image, R positive
RoIs of the batch, C channels, h x w the mask predictor's grid (28 x 28 by default), Hi x Wi an image.

:func:`attach` registers a :class:`~densecontrast.DenseContrastiveLoss` as the submodule
``model.dense_contrast`` and four hooks:

- a forward pre-hook on ``roi_heads`` keeps the transformed targets of a training step;
- a forward pre-hook on ``roi_heads.mask_roi_pool`` keeps the positive proposals of each image;
- a forward pre-hook on ``roi_heads.mask_predictor.mask_fcn_logits`` (or ``layer``) keeps the per-RoI
  feature map entering the predictor's last convolution, after the in-place ReLU;
- a forward hook on ``roi_heads`` rebuilds each positive RoI's ground-truth mask on that grid exactly as
  torchvision builds its mask targets, evaluates the loss and returns ``losses["loss_dcl"]``.

Nothing else in the model changes: in eval mode the hooks capture nothing and return nothing.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from ..loss import DenseContrastiveLoss
from ..taps import FeatureTap, resolve_module
from ._base import (
    SUBMODULE_NAME,
    AdapterHandle,
    build_criterion,
    check_eager_model,
    check_ignore_band,
    check_not_attached,
    check_weight,
    find_handle,
    is_library_loss,
    module_device,
)
from ._targets import masks_from_soft

try:
    from torchvision.ops import box_iou, roi_align
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


def match_positives(gt_boxes: Tensor, boxes: Tensor) -> Tensor:
    """Index of the ground truth each positive proposal was matched to, as torchvision's ``Matcher`` does.

    torchvision matches every proposal to the ground truth of largest IoU (first one on ties); for the
    positives (IoU >= 0.5) that index is kept, so the column-wise maximum recovers it.

    Args:
        gt_boxes: float tensor (G, 4), ground-truth boxes (x1, y1, x2, y2) of one image.
        boxes: float tensor (P, 4), the image's positive proposals.

    Returns:
        int64 tensor (P,) with values in [0, G).

    Raises:
        ValueError: there are proposals but no ground truth.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    if gt_boxes.shape[0] == 0:
        raise ValueError(
            f"gt_boxes is empty (shape {tuple(gt_boxes.shape)}) but boxes holds {boxes.shape[0]} positive "
            "proposals; positives need a ground truth to match"
        )
    iou = box_iou(gt_boxes.to(boxes.dtype), boxes)  # (G, P)
    return iou.max(dim=0).indices


def project_masks(gt_masks: Tensor, boxes: Tensor, matched: Tensor, size: tuple[int, int]) -> Tensor:
    """Crop and resize each proposal's matched ground-truth mask to the mask grid (soft values).

    The same computation as torchvision's mask targets: ``roi_align`` with spatial scale 1.0 and the
    default sampling ratio, in the dtype of ``boxes``.

    Args:
        gt_masks: tensor (G, Hi, Wi), the image's instance masks (uint8, bool or float).
        boxes: float tensor (P, 4), the proposals in image coordinates.
        matched: int64 tensor (P,), the ground truth of each proposal.
        size: (h, w), the grid.

    Returns:
        float tensor (P, h, w) with values in [0, 1].
    """
    rois = torch.cat([matched[:, None].to(boxes), boxes], dim=1)  # (P, 5)
    return roi_align(gt_masks[:, None].to(rois), rois, size, 1.0)[:, 0]


def positive_mask_targets(
    targets: list[dict[str, Tensor]], proposals: list[Tensor], size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Soft ground-truth masks and labels of a batch's positive proposals, in torchvision's order.

    Args:
        targets: B dicts with ``"boxes"`` (G, 4), ``"labels"`` (G,) and ``"masks"`` (G, Hi, Wi), as
            produced by the model's transform (the input of ``roi_heads``).
        proposals: B float tensors (P, 4), the positive proposals (the input of ``mask_roi_pool``).
        size: (h, w), the mask grid.

    Returns:
        ``(soft, labels)``: float tensor (R, h, w) and int64 tensor (R,), R = sum of the P.
    """
    if len(targets) != len(proposals):
        raise ValueError(
            f"targets and proposals must hold one entry per image; got {len(targets)} targets and "
            f"{len(proposals)} proposal tensors"
        )
    soft, labels = [], []
    for target, boxes in zip(targets, proposals):
        matched = match_positives(target["boxes"], boxes)
        if boxes.shape[0] == 0:
            soft.append(boxes.new_zeros((0, *size)))
        else:
            soft.append(project_masks(target["masks"], boxes, matched, size))
        labels.append(target["labels"][matched])
    return torch.cat(soft), torch.cat(labels)


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


def _submodule(module: nn.Module, name: str) -> nn.Module:
    """``getattr`` typed as a module (the attribute was checked by :func:`_check_model`)."""
    return cast(nn.Module, getattr(module, name))


def _resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> nn.Module:
    roi_heads = _submodule(model, "roi_heads")
    if layer is None:
        predictor = _submodule(roi_heads, "mask_predictor")
        if not isinstance(getattr(predictor, "mask_fcn_logits", None), nn.Module):
            raise ValueError(
                f"model.roi_heads.mask_predictor ({type(predictor).__name__}) has no mask_fcn_logits; for a "
                "custom predictor pass layer=, the module whose input is the per-RoI feature map (R, C, h, w)"
            )
        return _submodule(predictor, "mask_fcn_logits")
    if not isinstance(layer, (str, nn.Module)):
        raise TypeError(
            f"layer must be None, a dotted module name or an nn.Module; got {type(layer).__name__}"
        )
    module = resolve_module(model, layer)
    if not any(m is module for m in roi_heads.modules()) or module is roi_heads:
        raise ValueError(
            f"layer must be a module inside model.roi_heads (its mask branch); got {layer!r} "
            f"({type(module).__name__})"
        )
    return module


class DenseContrastHandle(AdapterHandle):
    """What :func:`attach` returns: owns the hooks and the loss submodule, and takes them away again.

    Attributes:
        model: the model the loss is attached to.
        criterion: the loss module (also ``model.dense_contrast``).
        layer: the module whose input is the feature map.
        weight: the factor applied to the loss before it enters the loss dict.
        ignore_band: see :func:`masks_from_soft`.

    The handle is also a context manager (``with attach(model): ...`` removes it on exit). Deep copies of
    the model carry their own handle, found with :func:`get_handle`.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        layer: nn.Module,
        *,
        weight: float,
        ignore_band: float | None,
    ) -> None:
        super().__init__(model, criterion, weight=weight)
        self.layer = layer
        self.ignore_band = ignore_band
        self._targets: list[dict[str, Tensor]] | None = None
        self._fast_loss: Tensor | None = None
        roi_heads = _submodule(model, "roi_heads")
        self._proposal_tap = FeatureTap(
            _submodule(roi_heads, "mask_roi_pool"), what="args", training_only=True
        )
        self._feature_tap = FeatureTap(layer, what="input", training_only=True)
        self._add_hook(roi_heads.register_forward_pre_hook(self._on_roi_heads_input, with_kwargs=True))
        self._add_hook(roi_heads.register_forward_hook(self._on_roi_heads_output, always_call=True))
        if _fast_path_applies(criterion, layer):
            self._add_hook(layer.register_forward_pre_hook(self._on_layer_input))

    def remove(self) -> None:
        """Remove every hook, the ``dense_contrast`` submodule and any captured value. Idempotent."""
        super().remove()
        self._proposal_tap.remove()
        self._feature_tap.remove()

    def _repr_fields(self) -> list[str]:
        layer = type(self.layer).__name__
        return [f"weight={self.weight}", f"layer={layer}", f"ignore_band={self.ignore_band}"]

    def _clear(self) -> None:
        self._targets = None
        self._fast_loss = None
        self._proposal_tap.clear()
        self._feature_tap.clear()

    def _on_roi_heads_input(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._clear()  # drop anything an interrupted step may have left
        if module.training:
            self._targets = kwargs["targets"] if "targets" in kwargs else (args[3] if len(args) > 3 else None)

    def _on_roi_heads_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        # Always called, also when roi_heads raised (output is None then): whatever the step captured,
        # including the fast path's loss and with it the step's graph, is dropped on every exit path.
        targets, inputs, feats, fast_loss = (
            self._targets,
            self._proposal_tap.peek(),
            self._feature_tap.peek(),
            self._fast_loss,
        )
        self._clear()
        if output is None or targets is None or not module.training:
            return None
        if inputs is None or feats is None:
            missing = (
                "the mask_roi_pool input" if inputs is None else f"the input of {type(self.layer).__name__}"
            )
            raise RuntimeError(
                f"densecontrast: a training step ran with targets but {missing} was not captured. "
                "Is the model's roi_heads a torchvision RoIHeads with its mask branch, and is layer= a "
                "module that the mask branch calls (by default roi_heads.mask_predictor.mask_fcn_logits)?"
            )
        detections, losses = output
        extended = dict(losses)
        loss = fast_loss if fast_loss is not None else self._loss(feats, targets, inputs[1])
        extended[LOSS_KEY] = self.weight * loss
        return detections, extended

    def _on_layer_input(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """Fast path: compute the loss where the features enter the layer, and pass them through.

        The layer (a Conv2d) then reads the features through :func:`gather_pixels_passthrough`, whose
        backward adds the loss's gradient into the convolution's input gradient in place: training holds
        one dense gradient of the features instead of two.
        """
        targets = self._targets
        proposals = self._proposal_tap.peek()
        if not module.training or targets is None or proposals is None or len(args) != 1:
            return None
        feats = args[0]
        masks = self._roi_masks(feats, targets, proposals[1])
        crit = cast(DenseContrastiveLoss, self.criterion)
        feats_out, self._fast_loss = crit.forward_passthrough(feats, masks)
        return (feats_out,)

    def _loss(self, feats: Tensor, targets: list[dict[str, Tensor]], proposals: list[Tensor]) -> Tensor:
        return self.criterion(feats, self._roi_masks(feats, targets, proposals))

    def _roi_masks(self, feats: Tensor, targets: list[dict[str, Tensor]], proposals: list[Tensor]) -> Tensor:
        """Ground-truth instance of every positive RoI on the feature grid, checked against feats."""
        if not isinstance(feats, Tensor) or feats.ndim != 4:
            got = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
            raise RuntimeError(
                f"densecontrast: the input of layer ({type(self.layer).__name__}) must be a per-RoI feature "
                f"map (R, C, h, w); got {got}. Pass layer= a module of the mask branch that takes one"
            )
        num_rois = sum(int(p.shape[0]) for p in proposals)
        if feats.shape[0] != num_rois:
            raise RuntimeError(
                f"densecontrast: layer ({type(self.layer).__name__}) saw {feats.shape[0]} RoIs but "
                f"mask_roi_pool received {num_rois} positive proposals; layer must see each positive RoI once"
            )
        soft, _ = positive_mask_targets(targets, proposals, (feats.shape[-2], feats.shape[-1]))
        return masks_from_soft(soft, ignore_band=self.ignore_band).to(feats.device)


def _fast_path_applies(criterion: nn.Module, layer: nn.Module) -> bool:
    """The in-place gradient path needs the library's own loss and a plain convolution reading the feats."""
    return is_library_loss(criterion) and type(layer) is nn.Conv2d


def get_handle(model: nn.Module) -> DenseContrastHandle | None:
    """The handle attached to ``model`` (also on a deep copy of an attached model), or None."""
    return find_handle(model, DenseContrastHandle)


def attach(
    model: nn.Module,
    criterion: nn.Module | None = None,
    *,
    weight: float = 1.2,
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
        model: a torchvision ``MaskRCNN`` (eager, unwrapped).
        criterion: the loss module, called as ``criterion(feats, masks) -> scalar``. Default:
            ``DenseContrastiveLoss(k, tau, in_channels=C)`` with C the channels entering ``layer``
            (the learnable similarity). It becomes ``model.dense_contrast``, so the optimizer, the
            ``state_dict`` and DDP see its parameters.
        weight: λ, the factor of the loss in the dict. Default 1.2 (the paper's value).
        k: samples per set for the default criterion. Default 32. Only with ``criterion=None``.
        tau: temperature for the default criterion. Default 0.07. Only with ``criterion=None``.
        layer: dotted name or module inside ``model.roi_heads`` whose input is the per-RoI feature map,
            for custom predictors. Default ``roi_heads.mask_predictor.mask_fcn_logits``.
        ignore_band: mark RoI pixels whose soft ground truth lies within this distance of 0.5 as
            ignored (-1) instead of thresholding them. Default None.

    Returns:
        A :class:`DenseContrastHandle`; ``handle.remove()`` restores the model.

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
    check_not_attached(model, "densecontrast.adapters.torchvision")
    resolved = _resolve_layer(model, layer)
    crit = build_criterion(
        criterion,
        getattr(resolved, "in_channels", None),
        k,
        tau,
        where=f"the input of layer ({type(resolved).__name__}: no int in_channels)",
        device=module_device(resolved),
    )
    return DenseContrastHandle(model, crit, resolved, weight=weight, ignore_band=ignore_band)
