"""Dense contrastive loss for Hugging Face Mask2Former and MaskFormer, added with hooks only.

Shapes: B images, G segments of an image (``mask_labels[b]`` is (G, H, W)), R RoIs of the batch, D the
mask-feature channels, H x W the labels' (padded) frame, H/4 x W/4 the mask features, h x w the RoI grid.

Mask2Former and MaskFormer have no proposals and no per-RoI mask head: every query's mask is a dot product
of its embedding with the per-pixel mask features (B, D, H/4, W/4) that the pixel decoder's
``mask_projection`` produces. The loss runs on ground-truth-box RoIs of that map, as the paper does for
one-stage models (:func:`~densecontrast.adapters.rois.gt_box_rois`). :func:`attach` registers the loss as
the submodule ``model.dense_contrast`` and, besides the step hooks every adapter shares (a training call
of the model given ``mask_labels`` opens a step, keeping ``pixel_mask``, the padding, when passed; its
end drops what the step captured, also when the forward raised), two hooks:

- a forward hook on ``model.model.pixel_level_module.decoder.mask_projection`` (or ``layer``) keeps the
  mask features of the step (a training call of the inner ``model.model``, or one without labels, keeps
  nothing);
- a forward hook on ``model.criterion`` (``Mask2FormerLoss`` / ``MaskFormerLoss``, an ``nn.Module``)
  reads ``mask_labels`` and ``class_labels`` from its call, evaluates the loss and returns the criterion's
  loss dict with ``loss_dcl = weight * L`` added. The model sums every entry of that dict into
  ``outputs.loss`` (it scales only entries whose name contains one of its ``weight_dict`` keys), so
  ``outputs.loss`` includes the term and ``transformers.Trainer`` trains on it with no custom step.

In eval mode nothing is captured or added, also when labels are passed (Trainer's evaluation loss stays
the model's own). Tested with transformers 4.57 to 5.24; see docs/transformers.md.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast

from torch import Tensor, nn

from ._base import (
    DEFAULT_WEIGHT,
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
    check_margin,
    check_output_size,
    check_weight,
    resolve_layer,
)
from ._targets import _class_ids, instance_masks

__all__ = ["DEFAULT_LAYER", "LOSS_KEY", "DenseContrastHandle", "attach", "get_handle", "instance_masks"]

LOSS_KEY = "loss_dcl"
"""The key of the term in the criterion's loss dict (it must not contain a ``weight_dict`` key)."""
DEFAULT_LAYER = "model.pixel_level_module.decoder.mask_projection"
"""The module whose output is the per-pixel mask-feature map (B, D, H/4, W/4)."""
_MODULE_PATH = "densecontrast.adapters.transformers"
_EXPECTED = "a Hugging Face Mask2FormerForUniversalSegmentation or MaskFormerForInstanceSegmentation"


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
            f"expected no key of model.weight_dict to be contained in {LOSS_KEY!r}; got "
            f"{sorted(weight_dict)}. The model would scale the dense contrastive term by that entry: "
            "rename the key, and set the term's factor with weight="
        )
    return model


class _MaskFormer(Framework):
    """Mask2Former / MaskFormer: the mask features, and the labels the criterion is called with."""

    public = ("instance_classes",)

    def __init__(self, layer: nn.Module, instance_classes: Collection[int] | None) -> None:
        super().__init__(layer)
        self.instance_classes = instance_classes

    def install(self, handle: DenseContrastHandle) -> None:
        handle.add_hook(self.layer.register_forward_hook(self._on_layer_output))
        loss_module = cast(nn.Module, cast(Any, handle.model).criterion)
        handle.add_hook(loss_module.register_forward_hook(self._on_criterion_output, with_kwargs=True))

    def begin(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any] | None:
        # Only a training forward with labels computes the loss: only then is the feature map kept (a
        # call of the inner model, or one without labels, must not leave it and its graph behind).
        if not module.training or call_arg(args, kwargs, "mask_labels", 1) is None:
            return None
        pixel_mask = call_arg(args, kwargs, "pixel_mask", 3)
        return {"pixel_mask": pixel_mask if isinstance(pixel_mask, Tensor) else None}

    def _on_layer_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        step = self.handle.current_step()
        if step is not None:
            step.values["feats"] = output

    def _on_criterion_output(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> Any:
        step = self.handle.current_step()
        if step is None or not module.training or not isinstance(output, dict):
            return None
        feats, step.values["feats"] = step.values.get("feats"), None
        # Mask2Former passes keyword arguments, MaskFormer positional ones (logits, logits, masks, classes).
        mask_labels = call_arg(args, kwargs, "mask_labels", 2)
        class_labels = call_arg(args, kwargs, "class_labels", 3)
        if mask_labels is None or class_labels is None:
            raise RuntimeError(
                "densecontrast: expected model.criterion to be called with mask_labels and class_labels, as "
                f"{_EXPECTED} calls its loss; got neither. Attach to one of those models"
            )
        if not isinstance(feats, Tensor) or feats.ndim != 4:
            got = f"shape {tuple(feats.shape)}" if isinstance(feats, Tensor) else type(feats).__name__
            raise RuntimeError(
                f"densecontrast: expected the output of layer {self.layer_name} in this training step to be "
                f"the mask-feature map (B, D, Hf, Wf) before model.criterion ran; got {got}. Pass layer= the "
                "module whose output that map is"
            )
        masks = instance_masks(
            mask_labels,
            class_labels,
            instance_classes=self.instance_classes,
            pixel_mask=step.values.get("pixel_mask"),
        )
        if len(masks) != feats.shape[0]:
            raise RuntimeError(
                "densecontrast: expected mask_labels to hold one tensor per image, "
                f"{feats.shape[0]} as in the mask features {tuple(feats.shape)}; got {len(masks)}. "
                "Pass mask_labels and class_labels as lists with one entry per image of pixel_values"
            )
        # The labels of a batch share the padded frame; HF's own loss pads smaller ones at the bottom/right.
        frame = (max(m.shape[-2] for m in masks), max(m.shape[-1] for m in masks)) if masks else None
        masks = [m.to(feats.device) for m in masks]
        return {**output, LOSS_KEY: self.handle.gt_box_loss(step, feats, masks, image_size=frame)}


def get_handle(model: nn.Module) -> DenseContrastHandle | None:
    """The handle attached to ``model`` (also on a deep copy of an attached model), or None."""
    return find_handle(model, _MaskFormer)


def attach(
    model: nn.Module,
    criterion: nn.Module | None = None,
    *,
    weight: float = DEFAULT_WEIGHT,
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
        model: a ``Mask2FormerForUniversalSegmentation`` or ``MaskFormerForInstanceSegmentation`` (eager),
            in any floating dtype its own loss supports.
        criterion: the loss module, called as ``criterion(feats, masks) -> scalar``. Default:
            ``DenseContrastiveLoss(k, tau, in_channels=D)`` (the learnable similarity), D the channels of
            the mask features. It becomes ``model.dense_contrast``.
        weight: λ, the factor of the term. Default ``DEFAULT_WEIGHT`` (0.3, chosen for Mask R-CNN on the
            evidence study's tuning split; Mask2Former's own losses are weighted 2 / 5 / 5 and repeated
            for every decoder layer, so tune it).
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
        A :class:`~densecontrast.adapters.DenseContrastHandle`; ``handle.remove()`` restores the model.

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
    resolved = resolve_layer(
        model, layer, default=DEFAULT_LAYER, within=None, role="output is the mask-feature map (B, D, Hf, Wf)"
    )
    crit = build_criterion(
        criterion,
        getattr(resolved, "out_channels", None),
        k,
        tau,
        where=f"the output of layer ({type(resolved).__name__}: no int out_channels)",
        like=resolved,
    )
    return DenseContrastHandle(
        model,
        crit,
        _MaskFormer(resolved, instance_classes),
        weight=weight,
        ignore_band=band,
        margin=margin,
        output_size=size,
    )
