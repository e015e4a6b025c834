"""Tests of densecontrast.data.polygons: masks as single polygons that keep their holes and parts."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from densecontrast.data import mask_to_polygon
from densecontrast.data.polygons import normalise, outline

cv2 = pytest.importorskip("cv2")
np = pytest.importorskip("numpy")
os.environ.setdefault("YOLO_OFFLINE", "1")


def ring_and_occluder(size: int = 64) -> torch.Tensor:
    """A square ring (the visible part of an object) around the square object that occludes it."""
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    masks[0, 8:56, 8:56] = True
    masks[0, 20:44, 20:44] = False
    masks[1, 20:44, 20:44] = True
    return masks


def with_background_hole(size: int = 64) -> torch.Tensor:
    """One object with a hole that shows the background (and a one-pixel hole)."""
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, 10:50, 12:52] = True
    mask[0, 20:30, 25:40] = False
    mask[0, 40, 20] = False
    return mask


@st.composite
def masks(draw) -> torch.Tensor:
    """Random masks up to 40 x 40: smoothed noise (blobs, rings, holes, islands) or raw noise."""
    height, width = draw(st.integers(3, 40)), draw(st.integers(3, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    noise = torch.rand(1, 1, height, width, generator=torch.Generator().manual_seed(seed))
    size = draw(st.sampled_from([1, 3, 5, 7]))
    smooth = F.avg_pool2d(noise, size, 1, size // 2)
    return smooth[0, 0] > draw(st.floats(0.3, 0.7))


@given(masks())
def test_filling_the_outline_gives_a_one_part_mask_back_and_covers_every_part(mask: torch.Tensor) -> None:
    """Filled as Ultralytics fills a polygon (cv2.fillPoly, even-odd), the outline of a mask in one part,
    holes included, is the mask exactly; a mask in several parts is covered, plus the pixels under the
    bridges, fewer than one bridge per part and hole, each at most the image's larger side long."""
    found = outline(mask)
    if not mask.any():
        assert found.points.shape == (0, 2)
        return
    filled = np.zeros(mask.shape, dtype=np.uint8)
    cv2.fillPoly(filled, [found.points.astype(np.int32)], 1)
    filled = torch.from_numpy(filled).bool()
    if found.parts == 1:
        assert torch.equal(filled, mask)
    else:
        assert not (mask & ~filled).any()
        bridges = found.parts + found.holes - 1
        assert int((filled & ~mask).sum()) <= bridges * max(mask.shape)


@given(masks())
def test_parts_and_holes_are_counted(mask: torch.Tensor) -> None:
    array = mask.to(torch.uint8).numpy()
    parts = cv2.connectedComponents(array, connectivity=8)[0] - 1
    count, labels = cv2.connectedComponents(1 - array, connectivity=4)
    border = set(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]).tolist())
    holes = len(set(range(1, count)) - border)
    found = outline(mask)
    assert (found.parts, found.holes) == (parts, holes)


def test_polygon_points_are_pixel_centres_normalised() -> None:
    mask = torch.zeros(4, 8, dtype=torch.bool)
    mask[1:3, 2:6] = True
    points = outline(mask).points
    assert sorted(map(tuple, points.tolist())) == [(2, 1), (2, 2), (5, 1), (5, 2)]
    polygon = mask_to_polygon(mask)
    assert polygon == normalise(points, 4, 8).reshape(-1).tolist()
    assert sorted(zip(polygon[0::2], polygon[1::2])) == [
        (2.5 / 8, 1.5 / 4),
        (2.5 / 8, 2.5 / 4),
        (5.5 / 8, 1.5 / 4),
        (5.5 / 8, 2.5 / 4),
    ]


def test_tiny_masks_give_three_points_and_empty_ones_none() -> None:
    for pixels in ([(3, 3)], [(3, 3), (3, 4)]):
        mask = torch.zeros(6, 6, dtype=torch.bool)
        for y, x in pixels:
            mask[y, x] = True
        points = outline(mask).points
        assert len(points) == 3 and {tuple(p) for p in points.tolist()} == {(x, y) for y, x in pixels}
    assert mask_to_polygon(torch.zeros(5, 7)) == []


def test_missing_opencv_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r"pip install 'densecontrast\[ultralytics\]'"):
        outline(torch.ones(3, 3))


def test_outline_polygons_fill_back_to_rings_and_holes() -> None:
    """The shapes of the issue: a ring around its occluder (exported covering the occluder, IoU 0.25,
    when only outer contours were written) and a background hole (exported solid, IoU 0.75). Filled
    with Ultralytics' own polygon2mask, each comes back exactly."""
    polygon2mask = pytest.importorskip("ultralytics.data.utils").polygon2mask
    for masks in (ring_and_occluder(), with_background_hole()):
        height, width = masks.shape[-2:]
        for mask in masks:
            polygon = np.array(mask_to_polygon(mask), dtype=np.float32).reshape(-1, 2) * [width, height]
            filled = polygon2mask((height, width), [polygon.reshape(-1)], color=1)
            assert torch.equal(torch.from_numpy(filled).bool(), mask)
