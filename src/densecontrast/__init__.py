"""densecontrast: the Dense Contrastive Loss for instance segmentation (Chen, Tang, Hu, BMVC 2022)."""

__version__ = "0.1.0"
