"""Binary masks as single polygons that keep their holes and parts, for the YOLO segmentation format.

Shape letters: H x W the mask size, P the points of a polygon.

A YOLO label line holds one polygon per instance, which Ultralytics fills with ``cv2.fillPoly``
(even-odd: a region enclosed twice is left empty). A visible mask is often a ring around its occluder,
has background holes, or is cut into parts. Its outline here is every boundary of it (outer boundaries
and hole boundaries, traced through the boundary pixels' centres) joined into one closed path by bridges
that are walked there and back over the same pixels (zero width, as Ultralytics joins the parts of COCO
polygons). The bridges are the shortest that connect all boundaries (a minimum spanning tree over the
boundaries' Chebyshev distances). Filling the polygon at the mask's size gives the mask back exactly,
except the pixels under a bridge that crosses pixels outside the mask: a bridge between two parts, or
one reaching an island inside a hole.

Needs numpy and ``opencv-python`` (``pip install 'densecontrast[ultralytics]'`` installs both).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["Outline", "mask_to_polygon", "normalise", "outline"]


class Outline(NamedTuple):
    """The outline of a mask.

    Attributes:
        points: int64 numpy array (P, 2) of pixel ``(x, y)``, the closed path (its last point joins its
            first); at least three points for a non-empty mask (one or two pixels repeat the last), none
            for an empty one.
        parts: the mask's 8-connected parts.
        holes: the holes of its parts (regions outside the mask that the mask encloses).
    """

    points: Any
    parts: int
    holes: int


def _imports() -> tuple[Any, Any]:
    try:
        import cv2
        import numpy as np
    except ImportError as err:
        raise ImportError(
            f"outlining masks needs opencv-python and numpy ({err.name} is missing); install them with "
            "`pip install 'densecontrast[ultralytics]'`"
        ) from err
    return cv2, np


def _rings(array: Any) -> tuple[list[Any], int, int]:
    """Every boundary of a uint8 mask (H, W) as int64 (P, 2) ``(x, y)`` pixel paths; and parts, holes.

    OpenCV traces a boundary through 8-connected pixels. A diagonal step is split in two through the one
    of its two corner pixels that belongs to the mask (where there is one): Ultralytics fills a polygon
    after resampling its edges and truncating the coordinates, and on a diagonal edge the two coordinates
    cross a pixel border at the same point, where rounding noise would add or drop a pixel.
    """
    cv2, np = _imports()
    contours, hierarchy = cv2.findContours(array, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return [], 0, 0
    parents = hierarchy.reshape(-1, 4)[:, 3]
    rings = []
    for contour in contours:
        points = contour.reshape(-1, 2).astype(np.int64)
        step = np.roll(points, -1, axis=0) - points
        diagonal = np.flatnonzero((np.abs(step) == 1).all(axis=1))
        if len(points) > 1 and len(diagonal):
            along_x = points[diagonal] + step[diagonal] * [1, 0]
            along_y = points[diagonal] + step[diagonal] * [0, 1]
            use_x = array[along_x[:, 1], along_x[:, 0]] > 0
            use_y = ~use_x & (array[along_y[:, 1], along_y[:, 0]] > 0)
            corner = np.where(use_x[:, None], along_x, along_y)
            split = use_x | use_y
            points = np.insert(points, diagonal[split] + 1, corner[split], axis=0)
        rings.append(points)
    parts = int((parents < 0).sum())
    return rings, parts, len(rings) - parts


def _line(a: Any, b: Any) -> Any:
    """The pixels strictly between pixels ``a`` and ``b`` on the straight line joining them, (L, 2)."""
    _, np = _imports()
    steps = int(np.abs(b - a).max())
    fractions = np.arange(1, steps)[:, None] / max(steps, 1)
    return np.rint(a + (b - a) * fractions).astype(np.int64)


def _spanning_bridges(rings: list[Any]) -> list[list[tuple[int, int, int]]]:
    """The shortest bridges joining all rings (Prim's minimum spanning tree over ring distances).

    Returns, for every ring, its children as ``(point index on this ring, child ring, point index on
    the child)``, rooted at ring 0.
    """
    _, np = _imports()
    count = len(rings)
    children: list[list[tuple[int, int, int]]] = [[] for _ in range(count)]
    if count == 1:
        return children
    distance = np.full((count, count), np.inf)
    ends = np.zeros((count, count, 2), dtype=np.int64)
    for i in range(count):
        for j in range(i + 1, count):
            # Chebyshev distance: a bridge of length L covers L - 1 pixels between its ends
            steps = np.abs(rings[i][:, None, :] - rings[j][None, :, :]).max(axis=2)
            a, b = np.unravel_index(int(steps.argmin()), steps.shape)
            distance[i, j] = distance[j, i] = steps[a, b]
            ends[i, j], ends[j, i] = (a, b), (b, a)
    in_tree = np.zeros(count, dtype=bool)
    in_tree[0] = True
    best, best_from = distance[0].copy(), np.zeros(count, dtype=np.int64)
    for _ in range(count - 1):
        candidates = np.where(in_tree, np.inf, best)
        j = int(candidates.argmin())
        i = int(best_from[j])
        children[i].append((int(ends[i, j, 0]), j, int(ends[i, j, 1])))
        in_tree[j] = True
        closer = distance[j] < best
        best[closer], best_from[closer] = distance[j][closer], j
    return children


def _tour(rings: list[Any], children: list[list[tuple[int, int, int]]], ring: int, entry: int) -> list[Any]:
    """The points of ``ring`` from ``entry`` round to ``entry`` again, each child's tour inserted (over its
    bridge and back) at the point where it hangs."""
    points = rings[ring]
    hanging: dict[int, list[tuple[int, int]]] = {}
    for at, child, child_entry in children[ring]:
        hanging.setdefault(at, []).append((child, child_entry))
    out = []
    n = len(points)
    for step in range(n + 1):
        k = (entry + step) % n
        out.append(points[k])
        if step < n:
            for child, child_entry in hanging.get(k, ()):
                # the bridge, pixel by pixel, walked back over the very same pixels
                bridge = list(_line(points[k], rings[child][child_entry]))
                out.extend(bridge)
                out.extend(_tour(rings, children, child, child_entry))
                out.extend(bridge[::-1])
                out.append(points[k])
    return out


def _simplify(points: Any) -> Any:
    """Drop repeated points and points in the middle of a straight run (same direction in and out)."""
    _, np = _imports()
    keep = np.any(points != np.roll(points, 1, axis=0), axis=1)
    points = points[keep] if keep.any() else points[:1]
    if len(points) < 3:
        return points
    into = points - np.roll(points, 1, axis=0)
    out = np.roll(points, -1, axis=0) - points
    straight = (into[:, 0] * out[:, 1] == into[:, 1] * out[:, 0]) & ((into * out).sum(axis=1) > 0)
    return points[~straight]


def outline(mask: Tensor) -> Outline:
    """The closed path of pixels through every boundary of ``mask`` (H, W), and its parts and holes.

    Examples:
        >>> ring = torch.ones(5, 5, dtype=torch.uint8)
        >>> ring[2, 2] = 0
        >>> found = outline(ring)
        >>> found.points.shape, found.parts, found.holes
        ((10, 2), 1, 1)
    """
    _, np = _imports()
    array = np.ascontiguousarray((mask != 0).to(torch.uint8).cpu().numpy())
    rings, parts, holes = _rings(array)
    if not rings:
        return Outline(np.zeros((0, 2), dtype=np.int64), 0, 0)
    path = np.stack(_tour(rings, _spanning_bridges(rings), 0, 0)[:-1])  # the polygon closes by itself
    path = _simplify(path)
    if len(path) < 3:  # one or two pixels: a polygon needs three points, repeat the last
        path = np.concatenate([path, np.repeat(path[-1:], 3 - len(path), axis=0)])
    return Outline(path, parts, holes)


def mask_to_polygon(mask: Tensor) -> list[float]:
    """One polygon whose even-odd filling is a binary mask, as ``[x1, y1, x2, y2, ...]`` normalised to [0, 1].

    The polygon runs through the centres of the mask's boundary pixels (pixel ``(x, y)`` is written
    ``(x + 0.5) / W, (y + 0.5) / H``), around every part and every hole, the boundaries joined by bridges
    walked there and back (see the module docstring). Filled with ``cv2.fillPoly`` at the mask's size it
    gives the mask back exactly, up to the pixels under bridges that cross pixels outside the mask.

    Args:
        mask: tensor (H, W), nonzero on the instance.

    Returns:
        The flat list of normalised coordinates, at least three points (a mask of one or two pixels
        repeats its last point); empty for an empty mask.

    Examples:
        >>> ring = torch.ones(5, 5, dtype=torch.uint8)
        >>> ring[2, 2] = 0
        >>> points = mask_to_polygon(ring)
        >>> len(points) // 2, min(points), max(points)
        (10, 0.1, 0.9)
    """
    height, width = mask.shape
    return normalise(outline(mask).points, height, width).reshape(-1).tolist()


def normalise(points: Any, height: int, width: int) -> Any:
    """Pixel ``(x, y)`` points (P, 2) as their centres normalised to the image, ``((x + 0.5) / W,
    (y + 0.5) / H)``, float64 (P, 2): filled at any size, the polygon runs through the same pixel centres."""
    _, np = _imports()
    return (np.asarray(points, dtype=np.float64) + 0.5) / np.array([width, height], dtype=np.float64)
