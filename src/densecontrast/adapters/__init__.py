"""Framework adapters: add the dense contrastive loss to an existing model with hooks only.

Each adapter lives in its own module and imports its framework there, so ``import densecontrast`` stays
torch-only:

- :mod:`densecontrast.adapters.torchvision`: torchvision's Mask R-CNN (``attach(model)`` adds
  ``losses["loss_dcl"]``).
"""
