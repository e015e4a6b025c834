"""Dense contrastive loss for Hugging Face Mask2Former and MaskFormer, added with hooks only.

Shapes: B images, G segments of an image (``mask_labels[b]`` is (G, H, W)), R RoIs of the batch, D the
mask-feature channels, H x W the labels' (padded) frame, H/4 x W/4 the mask features, h x w the RoI grid.

Mask2Former and MaskFormer have no proposals and no per-RoI mask head: every query's mask is a dot product
of its embedding with the per-pixel mask features (B, D, H/4, W/4) that the pixel decoder's
``mask_projection`` produces. The loss runs on ground-truth-box RoIs of that map, as the paper does for
one-stage models (:func:`~densecontrast.adapters.rois.gt_box_rois`). :func:`attach` registers the loss as
the submodule ``model.dense_contrast`` and four hooks:

- a forward pre-hook on the model arms the capture when the call is a training forward with
  ``mask_labels`` (and keeps ``pixel_mask``, the padding, when it is passed);
- a forward hook on ``model.model.pixel_level_module.decoder.mask_projection`` (or ``layer``) keeps the
  mask features, only while armed (a training call of the inner ``model.model``, or one without labels,
  keeps nothing);
- a forward hook on ``model.criterion`` (``Mask2FormerLoss`` / ``MaskFormerLoss``, an ``nn.Module``)
  reads ``mask_labels`` and ``class_labels`` from its call, evaluates the loss and returns the criterion's
  loss dict with ``loss_dcl = weight * L`` added. The model sums every entry of that dict into
  ``outputs.loss`` (it scales only entries whose name contains one of its ``weight_dict`` keys), so
  ``outputs.loss`` includes the term and ``transformers.Trainer`` trains on it with no custom step;
- a forward hook on the model, always called (also when the forward raised), disarms and forgets what
  the step captured.

In eval mode nothing is captured or added, also when labels are passed (Trainer's evaluation loss stays
the model's own).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..taps import resolve_module
from ._base import (
    AdapterHandle,
    build_criterion,
    check_eager_model,
    check_ignore_band,
    check_margin,
    check_not_attached,
    check_output_size,
    check_weight,
    find_handle,
    module_device,
)
from .rois import gt_box_rois

__all__ = ["DEFAULT_LAYER", "LOSS_KEY", "DenseContrastHandle", "attach", "get_handle", "instance_masks"]

LOSS_KEY = "loss_dcl"
"""The key of the term in the criterion's loss dict (it must not contain a ``weight_dict`` key)."""
DEFAULT_LAYER = "model.pixel_level_module.decoder.mask_projection"
"""The module whose output is the per-pixel mask-feature map (B, D, H/4, W/4)."""
_MODULE_PATH = "densecontrast.adapters.transformers"
_EXPECTED = "a Hugging Face Mask2FormerForUniversalSegmentation or MaskFormerForInstanceSegmentation"


def instance_masks(
    mask_labels: Sequence[Tensor],
    class_labels: Sequence[Tensor],
    *,
    instance_classes: Collection[int] | None = None,
    pixel_mask: Tensor | None = None,
) -> list[Tensor]:
    """The instance segments of a batch's labels as 1 / 0 / -1 masks, the ignore value never foreground.

    A label pixel in [0.5, 1] is the instance (1), one in [0, 0.5) is not (0), and any other value, such
    as the image processor's padding with ``ignore_index=255``, is ignored (-1). Where ``pixel_mask`` is 0
    (padding) every segment is -1 too. Segments whose class is not in ``instance_classes`` (stuff,
    background) are left out.

    Args:
        mask_labels: B float tensors (G, H, W), the model's ``mask_labels``.
        class_labels: B int64 tensors (G,), the model's ``class_labels``.
        instance_classes: class ids that count as instances; None (default) keeps every segment.
        pixel_mask: int or bool tensor (B, H, W), 1 on the image and 0 on padding, or None. Applied when its
            size equals the labels' size.

    Returns:
        B int8 tensors (G', H, W) with G' <= G the kept segments, in their order.

    Raises:
        TypeError: labels that are not lists of tensors.
        ValueError: lists of different lengths, or shapes that do not agree.

    Examples:
        >>> import torch
        >>> labels = torch.tensor([[[0.0, 1.0, 255.0]], [[1.0, 0.0, 255.0]]])  # two segments, padded
        >>> [m.tolist() for m in instance_masks([labels], [torch.tensor([3, 0])], instance_classes={3})]
        [[[[0, 1, -1]]]]
    """
    _check_labels(mask_labels, class_labels)
    wanted = None if instance_classes is None else _class_ids(instance_classes)
    out = []
    for b, (labels, classes) in enumerate(zip(mask_labels, class_labels)):
        if wanted is not None:
            keep = torch.isin(classes, wanted.to(classes.device))
            labels = labels[keep.to(labels.device)]
        masks = torch.zeros(labels.shape, dtype=torch.int8, device=labels.device)
        masks = masks.masked_fill((labels >= 0.5) & (labels <= 1), 1)
        masks = masks.masked_fill(~((labels >= 0) & (labels <= 1)), -1)  # NaN, negative, 255: ignored
        if pixel_mask is not None and tuple(pixel_mask.shape[-2:]) == tuple(labels.shape[-2:]):
            masks = masks.masked_fill(pixel_mask[b].to(labels.device) == 0, -1)
        out.append(masks)
    return out


def _check_labels(mask_labels: object, class_labels: object) -> None:
    for name, value in (("mask_labels", mask_labels), ("class_labels", class_labels)):
        if isinstance(value, Tensor) or not isinstance(value, Sequence):
            raise TypeError(f"{name} must be a list of B tensors, one per image; got {type(value).__name__}")
    mask_labels = cast(Sequence[Any], mask_labels)
    class_labels = cast(Sequence[Any], class_labels)
    if len(mask_labels) != len(class_labels):
        raise ValueError(
            f"mask_labels and class_labels must hold one tensor per image; got {len(mask_labels)} and "
            f"{len(class_labels)}"
        )
    for b, (labels, classes) in enumerate(zip(mask_labels, class_labels)):
        if not isinstance(labels, Tensor) or not isinstance(classes, Tensor):
            raise TypeError(
                f"mask_labels[{b}] and class_labels[{b}] must be tensors; got {type(labels).__name__} and "
                f"{type(classes).__name__}"
            )
        if labels.ndim != 3 or classes.shape != (labels.shape[0],):
            raise ValueError(
                f"mask_labels[{b}] must have shape (G, H, W) and class_labels[{b}] shape (G,); got "
                f"{tuple(labels.shape)} and {tuple(classes.shape)}"
            )


def _class_ids(instance_classes: object) -> Tensor:
    if isinstance(instance_classes, (str, bytes, Tensor)) or not isinstance(instance_classes, Collection):
        raise TypeError(
            "instance_classes must be None or a collection of int class ids; got "
            f"{type(instance_classes).__name__}"
        )
    ids = list(instance_classes)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise TypeError(f"instance_classes must hold int class ids; got {ids!r}")
    return torch.tensor(ids, dtype=torch.int64)


def _check_model(model: object) -> nn.Module:
    model = check_eager_model(model, _EXPECTED)
    criterion = getattr(model, "criterion", None)
    if not isinstance(criterion, nn.Module):
        raise ValueError(
            f"model ({type(model).__name__}) has no criterion module; attach expects {_EXPECTED} "
            "(the segmentation model with its loss, not Mask2FormerModel)"
        )
    weight_dict = getattr(model, "weight_dict", None)
    if isinstance(weight_dict, dict) and any(key in LOSS_KEY for key in weight_dict):
        raise ValueError(
            f"model.weight_dict has a key contained in {LOSS_KEY!r} ({sorted(weight_dict)}); the model would "
            "scale the dense contrastive term by it"
        )
    return model


def _resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> nn.Module:
    if layer is not None and not isinstance(layer, (str, nn.Module)):
        raise TypeError(
            f"layer must be None, a dotted module name or an nn.Module; got {type(layer).__name__}"
        )
    if layer is None:
        try:
            return resolve_module(model, DEFAULT_LAYER)
        except ValueError:
            raise ValueError(
                f"model ({type(model).__name__}) has no {DEFAULT_LAYER}; attach expects {_EXPECTED}, or pass "
                "layer=, the module whose output is the per-pixel mask-feature map (B, D, Hf, Wf)"
            ) from None
    return resolve_module(model, layer)


class DenseContrastHandle(AdapterHandle):
    """What :func:`attach` returns: owns the hooks and the loss submodule, and takes them away again.

    Attributes:
        model: the model the loss is attached to.
        criterion: the loss module (also ``model.dense_contrast``).
        layer: the module whose output is the mask-feature map.
        weight: λ, the factor applied to the loss before it enters the loss dict.
        margin, output_size, instance_classes, ignore_band: see :func:`attach`.
        last_loss: the weighted term of the latest training step, detached (for logging), or None.
        last_num_rois: how many instances the latest training step used, or None.

    The handle is a context manager (``with attach(model): ...`` removes it on exit).
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        layer: nn.Module,
        *,
        weight: float,
        margin: float,
        output_size: tuple[int, int],
        instance_classes: Collection[int] | None,
        ignore_band: float | None,
    ) -> None:
        super().__init__(model, criterion, weight=weight)
        self.layer = layer
        self.margin = margin
        self.output_size = output_size
        self.instance_classes = instance_classes
        self.ignore_band = ignore_band
        self.last_loss: Tensor | None = None
        self.last_num_rois: int | None = None
        self._pixel_mask: Tensor | None = None
        self._armed = False  # True only inside a training forward of the model given mask_labels
        self._feats: Any = None
        loss_module = cast(nn.Module, model.criterion)
        self._add_hook(layer.register_forward_hook(self._on_layer_output))
        self._add_hook(model.register_forward_pre_hook(self._on_model_input, with_kwargs=True))
        self._add_hook(
            loss_module.register_forward_hook(self._on_criterion_output, with_kwargs=True, always_call=True)
        )
        # Whatever a forward leaves captured (no labels, or an exception) is dropped when it ends.
        self._add_hook(model.register_forward_hook(self._on_model_output, always_call=True))

    def _clear(self) -> None:
        self._pixel_mask = None
        self._armed = False
        self._feats = None

    def _repr_fields(self) -> list[str]:
        return [
            f"weight={self.weight}",
            f"layer={type(self.layer).__name__}",
            f"margin={self.margin}",
            f"instance_classes={self.instance_classes}",
        ]

    def _on_model_input(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._clear()  # drop anything an interrupted step left
        mask_labels = kwargs.get("mask_labels", args[1] if len(args) > 1 else None)
        # Only a training forward with labels computes the loss: only then is the feature map kept (a
        # call of the inner model, or one without labels, must not leave it and its graph behind).
        if module.training and mask_labels is not None:
            self._armed = True
            pixel_mask = kwargs.get("pixel_mask", args[3] if len(args) > 3 else None)
            self._pixel_mask = pixel_mask if isinstance(pixel_mask, Tensor) else None

    def _on_layer_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._armed:
            self._feats = output

    def _on_model_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self._clear()

    def _on_criterion_output(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> Any:
        feats, self._feats = self._feats, None
        pixel_mask, self._pixel_mask = self._pixel_mask, None
        # output is None when the criterion raised (this hook is always called).
        if not module.training or not isinstance(output, dict):
            return None
        # Mask2Former passes keyword arguments, MaskFormer positional ones (logits, logits, masks, classes).
        mask_labels = kwargs.get("mask_labels", args[2] if len(args) > 2 else None)
        class_labels = kwargs.get("class_labels", args[3] if len(args) > 3 else None)
        if mask_labels is None or class_labels is None:
            raise RuntimeError(
                "densecontrast: the criterion was called without mask_labels and class_labels; is "
                f"model.criterion the loss of {_EXPECTED}?"
            )
        if not isinstance(feats, Tensor) or feats.ndim != 4:
            got = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
            raise RuntimeError(
                f"densecontrast: the output of layer ({type(self.layer).__name__}) in this training step "
                f"must be a mask-feature map (B, D, Hf, Wf); got {got}. Does the model call it before its "
                "criterion?"
            )
        loss = self.weight * self._loss(feats, mask_labels, class_labels, pixel_mask)
        self.last_loss = loss.detach()
        extended = dict(output)
        extended[LOSS_KEY] = loss
        return extended

    def _loss(
        self, feats: Tensor, mask_labels: Sequence[Tensor], class_labels: Sequence[Tensor], pixel_mask: Any
    ) -> Tensor:
        masks = instance_masks(
            mask_labels, class_labels, instance_classes=self.instance_classes, pixel_mask=pixel_mask
        )
        masks = [m.to(feats.device) for m in masks]
        if len(masks) != feats.shape[0]:
            raise RuntimeError(
                f"densecontrast: mask_labels holds {len(masks)} images but the mask features "
                f"{tuple(feats.shape)} {feats.shape[0]}"
            )
        # The labels of a batch share the padded frame; HF's own loss pads smaller ones at the bottom/right.
        frame = (max(m.shape[-2] for m in masks), max(m.shape[-1] for m in masks)) if masks else None
        rois = gt_box_rois(
            feats,
            masks,
            output_size=self.output_size,
            image_size=frame,
            margin=self.margin,
            ignore_band=self.ignore_band,
        )
        self.last_num_rois = int(rois.feats.shape[0])
        return self.criterion(rois.feats, rois.masks)


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
    margin: float = 0.0,
    output_size: int | tuple[int, int] = 28,
    instance_classes: Collection[int] | None = None,
    ignore_band: float | None = None,
    layer: str | nn.Module | None = None,
) -> DenseContrastHandle:
    """Add the dense contrastive loss to a Hugging Face Mask2Former or MaskFormer as ``loss_dcl``.

    In training, ``model(pixel_values=..., mask_labels=..., class_labels=...)`` then returns an
    ``outputs.loss`` that includes ``weight * criterion(feats, masks)``, with ``feats`` (R, D, h, w) the
    mask-feature map cut out at every ground-truth instance's box (RoIAlign) and ``masks`` (R, h, w) the
    instance's label on the same grid (1 instance, 0 the rest, -1 ignore value and padding). Eval mode is
    untouched. Attach before building the optimizer, and before wrapping or compiling the model.

    Args:
        model: a ``Mask2FormerForUniversalSegmentation`` or ``MaskFormerForInstanceSegmentation`` (eager).
        criterion: the loss module, called as ``criterion(feats, masks) -> scalar``. Default:
            ``DenseContrastiveLoss(k, tau, in_channels=D)`` (the learnable similarity), D the channels of
            the mask features. It becomes ``model.dense_contrast``.
        weight: λ, the factor of the term. Default 1.2 (the paper's value for Mask R-CNN; Mask2Former's own
            losses are weighted 2 / 5 / 5 and repeated for every decoder layer, so tune it).
        k: samples per set for the default criterion. Default 32. Only with ``criterion=None``.
        tau: temperature for the default criterion. Default 0.07. Only with ``criterion=None``.
        margin: enlarge each ground-truth box by this fraction of its size on every side, so that an
            object filling its box still has negatives. Default 0 (the tight box).
        output_size: the RoI grid h x w. Default 28.
        instance_classes: class ids (as in ``class_labels``) whose segments are instances; None (default)
            takes every segment. Leave out stuff and background segments here.
        ignore_band: mark RoI pixels whose cropped label lies within this distance of 0.5 as ignored.
        layer: dotted name or module whose output is the mask-feature map (B, D, Hf, Wf). Default
            ``model.pixel_level_module.decoder.mask_projection``.

    Returns:
        A :class:`DenseContrastHandle`; ``handle.remove()`` restores the model.

    Raises:
        TypeError: a wrapped, compiled or scripted model, or arguments of the wrong type.
        ValueError: a model without a criterion or mask projection, bad values, ``k`` or ``tau`` together
            with a ``criterion``, or a model that already has a ``dense_contrast`` submodule.

    Examples:
        >>> from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig
        >>> swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
        ...                   out_features=["stage1", "stage2", "stage3", "stage4"])
        >>> config = Mask2FormerConfig(backbone_config=swin, num_labels=3, feature_size=32, hidden_dim=32,
        ...                            mask_feature_size=32, encoder_layers=1, decoder_layers=2)
        >>> model = Mask2FormerForUniversalSegmentation(config)
        >>> handle = attach(model, weight=1.2, margin=0.1)
        >>> model.dense_contrast.projector.in_channels
        32
        >>> handle.remove()
    """
    model = _check_model(model)
    weight = check_weight(weight)
    margin = check_margin(margin)
    size = check_output_size(output_size)
    if instance_classes is not None:
        _class_ids(instance_classes)
        instance_classes = frozenset(instance_classes)
    band = check_ignore_band(ignore_band)
    check_not_attached(model, _MODULE_PATH)
    resolved = _resolve_layer(model, layer)
    channels = getattr(resolved, "out_channels", None)
    crit = build_criterion(
        criterion,
        channels,
        k,
        tau,
        where=f"the output of layer ({type(resolved).__name__}: no int out_channels)",
        device=module_device(resolved),
    )
    return DenseContrastHandle(
        model,
        crit,
        resolved,
        weight=weight,
        margin=margin,
        output_size=size,
        instance_classes=instance_classes,
        ignore_band=band,
    )
