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

Every ``attach`` returns the same :class:`DenseContrastHandle` and defaults to ``weight=DEFAULT_WEIGHT``.
The framework-neutral parts live in private modules: ``_base`` (the handle and its capture lifecycle),
``_checks`` (argument checks, the default criterion), ``_targets`` (RoI mask targets and the ground
truth read out of a framework's batch) and ``_checkpoint`` (the loss's optimizer state in a framework's
checkpoints).
"""

from ._base import DEFAULT_WEIGHT, DenseContrastHandle

__all__ = ["DEFAULT_WEIGHT", "DenseContrastHandle"]
