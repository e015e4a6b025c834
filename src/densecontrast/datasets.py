"""The synthetic dataset and the YOLO export under their first import path.

``from densecontrast.datasets import SyntheticInstances, collate_detection, export_yolo`` keeps working
and gives the very objects of :mod:`densecontrast.data`, where they live (with the COCO exporter and
:func:`~densecontrast.data.iterate_items`). New code imports from :mod:`densecontrast.data`.
"""

from .data import MIN_VISIBLE_AREA, SyntheticInstances, collate_detection, export_yolo

__all__ = ["MIN_VISIBLE_AREA", "SyntheticInstances", "collate_detection", "export_yolo"]
