"""Segmentation-error analysis for instance segmentation (Chen, Tang, Hu, BMVC 2022, section 3).

Splits the error pixels of each matched prediction into foreground false positives (fFP), background
false positives (bFP) and false negatives (FN), and measures each type as the COCO mask AP gained by
correcting it; :func:`feature_compactness` measures how compact instance features are (the paper's
Figure 4). Needs the ``analysis`` extra (pycocotools, numpy, matplotlib, tqdm); the ``fast`` extra
(faster-coco-eval) makes the evaluations faster.
"""

try:
    import numpy  # noqa: F401
    import pycocotools.mask  # noqa: F401
except ImportError as _err:
    raise ImportError(
        f"densecontrast.analysis needs numpy and pycocotools ({_err.name!r} is missing): "
        "pip install 'densecontrast[analysis]'"
    ) from None

from ._analyze import analyze, evaluate_segm_ap
from ._backend import BACKENDS
from ._errors import ERROR_TYPES
from ._report import CategoryErrors, SegmentationErrorReport, compare_table, plot_comparison
from .compactness import FeatureCompactness, feature_compactness, plot_tsne
from .convert import coco_from_targets, results_from_outputs

__all__ = [
    "BACKENDS",
    "ERROR_TYPES",
    "CategoryErrors",
    "FeatureCompactness",
    "SegmentationErrorReport",
    "analyze",
    "coco_from_targets",
    "compare_table",
    "evaluate_segm_ap",
    "feature_compactness",
    "plot_comparison",
    "plot_tsne",
    "results_from_outputs",
]
