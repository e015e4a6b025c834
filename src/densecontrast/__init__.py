"""densecontrast: the Dense Contrastive Loss for instance segmentation (Chen, Tang, Hu, BMVC 2022).

The core imports torch only. Framework adapters live in :mod:`densecontrast.adapters`, the
segmentation-error analysis in :mod:`densecontrast.analysis`, synthetic data in
:mod:`densecontrast.data`; each imports its optional dependencies when used.
"""

from .gather import gather_pixels
from .gather import gather_pixels_passthrough as gather_pixels_passthrough  # deprecated, not in __all__
from .infonce import dense_info_nce
from .loss import DenseContrastiveLoss, dense_contrastive_loss, loss_from_rows, sample_index
from .projection import ProjectionHead
from .sampling import PixelSamples, sample_pixels
from .taps import FeatureTap

__version__ = "0.1.0"

__all__ = [
    "DenseContrastiveLoss",
    "FeatureTap",
    "PixelSamples",
    "ProjectionHead",
    "__version__",
    "dense_contrastive_loss",
    "dense_info_nce",
    "gather_pixels",
    "loss_from_rows",
    "sample_index",
    "sample_pixels",
]
