"""Error analysis for instance segmentation and detection: where every point of AP went.

:func:`analyze` measures each error type as the COCO AP gained by an oracle that fixes it: the detection
errors as TIDE defines them (Bolya et al., ECCV 2020: cls, loc, both, dupe, bkg, missed), for masks or
boxes, and for masks the pixel errors of each matched prediction (Chen, Tang, Hu, BMVC 2022, section 3):
foreground false positives (fFP), background false positives (bFP) and false negatives (FN).
:class:`ErrorAnalysis` does the same inside a validation loop; :func:`feature_compactness` measures how
compact instance features are (the paper's Figure 4). Needs the ``analysis`` extra (pycocotools, numpy,
matplotlib, tqdm); the ``fast`` extra (faster-coco-eval) makes the evaluations faster.
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
from ._detection import DETECTION_TYPES, SPECIAL_TYPES
from ._errors import ERROR_TYPES
from ._report import CategoryErrors, SegmentationErrorReport, compare_table, plot_comparison
from .compactness import FeatureCompactness, feature_compactness, plot_tsne
from .convert import coco_from_targets, results_from_outputs
from .metric import ErrorAnalysis

__all__ = [
    "BACKENDS",
    "DETECTION_TYPES",
    "ERROR_TYPES",
    "SPECIAL_TYPES",
    "CategoryErrors",
    "ErrorAnalysis",
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
