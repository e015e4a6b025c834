"""Data: a synthetic instance-segmentation dataset and exporters to the COCO and YOLO formats.

- :mod:`~densecontrast.data.synthetic`: :class:`SyntheticInstances` (scenes drawn by the private
  ``_scenes`` generator, torch alone) and :func:`collate_detection`;
- :mod:`~densecontrast.data.coco`: COCO instances ground truth of a dataset (:func:`coco_ground_truth`,
  :func:`export_coco`; the ``analysis`` extra);
- :mod:`~densecontrast.data.yolo`: the YOLO segmentation format (:func:`export_yolo`; the
  ``ultralytics`` extra), its polygons made by :mod:`~densecontrast.data.polygons`
  (:func:`mask_to_polygon`);
- :mod:`~densecontrast.data.iterate`: :func:`iterate_items`, how the exporters read a dataset.

The package imports torch only (and ``densecontrast._coco``, which loads numpy and pycocotools when
called); it never imports :mod:`densecontrast.analysis`.
"""

from .coco import coco_ground_truth, export_coco
from .iterate import iterate_items
from .polygons import mask_to_polygon
from .synthetic import MIN_VISIBLE_AREA, SyntheticInstances, collate_detection
from .yolo import YoloExportWarning, export_yolo

__all__ = [
    "MIN_VISIBLE_AREA",
    "SyntheticInstances",
    "YoloExportWarning",
    "coco_ground_truth",
    "collate_detection",
    "export_coco",
    "export_yolo",
    "iterate_items",
    "mask_to_polygon",
]
