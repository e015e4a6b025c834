"""Segmentation-error analysis for instance segmentation (Chen, Tang, Hu, BMVC 2022, section 3).

Splits the error pixels of each matched prediction into foreground false positives (fFP), background
false positives (bFP) and false negatives (FN), and measures each type as the COCO mask AP gained by
correcting it. Needs the ``analysis`` extra (pycocotools, numpy, matplotlib, tqdm); the ``fast`` extra
(faster-coco-eval) makes the evaluations faster.
"""

from ._analyze import analyze, evaluate_segm_ap
from ._backend import BACKENDS
from ._errors import ERROR_TYPES
from ._report import CategoryErrors, SegmentationErrorReport, compare_table, plot_comparison
from .compactness import feature_compactness as feature_compactness
from .convert import coco_from_targets, results_from_outputs

__all__ = [
    "BACKENDS",
    "ERROR_TYPES",
    "CategoryErrors",
    "SegmentationErrorReport",
    "analyze",
    "coco_from_targets",
    "compare_table",
    "evaluate_segm_ap",
    "plot_comparison",
    "results_from_outputs",
]
