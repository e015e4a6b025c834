"""``densecontrast demo``: train torchvision Mask R-CNN from scratch with the dense contrastive loss.

The demo generates :class:`~densecontrast.datasets.SyntheticInstances` (occluded, camouflaged objects),
trains a Mask R-CNN on it with ``attach(model)`` (or without, ``--baseline``), evaluates mask AP on a
held-out split with the segmentation-error analysis, measures how compact the mask head's per-pixel
features are (:mod:`densecontrast.analysis.compactness`), and writes metrics, checkpoints and pictures
to ``--out``. ``--compare`` trains both on the same data with the same seed and prints them side by side.

Modules: :mod:`.config` (configuration and presets), :mod:`.model` (the Mask R-CNN),
:mod:`.training` (data, training loop, one whole run), :mod:`.evaluation` (eval outputs, features),
:mod:`.pictures` (PNG figures) and :mod:`.cli` (options and console output).

Needs the ``demo`` extra (torchvision, pycocotools, matplotlib, tqdm, scikit-learn).
"""

from .cli import add_arguments, config_from_args, run
from .config import DEFAULT_OUT, SCORE_THRESHOLD, DemoConfig, config_fields, preset
from .evaluation import predict, roi_features
from .model import build_model
from .pictures import error_map, plot_losses, plot_predictions
from .training import datasets, lr_at, run_one, train

__all__ = [
    "DEFAULT_OUT",
    "SCORE_THRESHOLD",
    "DemoConfig",
    "add_arguments",
    "build_model",
    "config_fields",
    "config_from_args",
    "datasets",
    "error_map",
    "lr_at",
    "plot_losses",
    "plot_predictions",
    "predict",
    "preset",
    "roi_features",
    "run",
    "run_one",
    "train",
]
