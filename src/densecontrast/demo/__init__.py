"""``densecontrast demo``: does the dense contrastive loss help? Train torchvision Mask R-CNN and see.

The demo generates :class:`~densecontrast.datasets.SyntheticInstances` (occluded, camouflaged objects),
trains a Mask R-CNN from scratch on it twice, without the loss and with ``attach(model)``, on the same
data from the same seed, evaluates mask AP on a held-out split with the segmentation-error analysis,
measures how compact the mask head's per-pixel features are (:mod:`densecontrast.analysis.compactness`),
prints the difference next to the seed-to-seed noise of the evidence page, and writes metrics,
checkpoints and pictures to ``--out``. ``--no-compare`` and ``--baseline`` train one model.

Modules: :mod:`.config` (configuration and presets), :mod:`.model` (the Mask R-CNN),
:mod:`.training` (data, training loop, one whole run), :mod:`.parallel` (both runs at once, in two
processes), :mod:`.evaluation` (eval outputs, features), :mod:`.pictures` (figures), :mod:`.report`
(console text) and :mod:`.cli` (options, the run).

Needs the ``demo`` extra (torchvision, pycocotools, matplotlib, tqdm, scikit-learn).
"""

from .cli import add_arguments, config_from_args, run
from .config import DEFAULT_OUT, SCORE_THRESHOLD, DemoConfig, config_fields, default_threads, preset
from .evaluation import predict, roi_features
from .model import build_model
from .pictures import classify_detections, error_map, plot_errors, plot_losses, plot_predictions
from .training import datasets, lr_at, run_one, train

__all__ = [
    "DEFAULT_OUT",
    "SCORE_THRESHOLD",
    "DemoConfig",
    "add_arguments",
    "build_model",
    "classify_detections",
    "config_fields",
    "config_from_args",
    "datasets",
    "default_threads",
    "error_map",
    "lr_at",
    "plot_errors",
    "plot_losses",
    "plot_predictions",
    "predict",
    "preset",
    "roi_features",
    "run",
    "run_one",
    "train",
]
