"""Framework adapters: add the dense contrastive loss to an existing model with hooks only.

Each adapter lives in its own module and imports its framework there, so ``import densecontrast`` stays
torch-only:

- :mod:`densecontrast.adapters.torchvision`: torchvision's Mask R-CNN (``attach(model)`` adds
  ``losses["loss_dcl"]``).
- :mod:`densecontrast.adapters.ultralytics`: Ultralytics YOLO-seg (a trainer class, or ``attach(model)``
  for your own loop; the loss appears as ``dcl_loss``).
- :mod:`densecontrast.adapters.transformers`: Hugging Face Mask2Former and MaskFormer (``attach(model)``
  adds ``loss_dcl`` to the criterion's loss dict and to ``outputs.loss``).
- :mod:`densecontrast.adapters.rois`: ground-truth boxes as RoIs on any dense mask-feature map
  (:func:`~densecontrast.adapters.rois.gt_box_rois`), for models without proposals.

The framework-neutral parts (the handle's lifecycle, argument checks, the default criterion, mask
targets) live in the private modules ``_base`` and ``_targets``.
"""
