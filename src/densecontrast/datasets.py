"""A synthetic instance-segmentation dataset that is hard for the mask head in the paper's ways.

Shapes: S image size (S x S pixels), N instances of one image, M objects placed before occlusion is
resolved (N <= M), P palette colours, L strokes or clutter patches.

Every image shows several textured objects of a few categories, one shape family per category, on a
cluttered background. Two properties make it hard for the mask head in the way the paper's error
analysis (section 3) describes, so that false negatives dominate:

* objects overlap in a z-order, so later objects occlude earlier ones and visible masks are fragmented
  (the "occlusion between foreground objects" of COCO-OCC and crowded street scenes);
* about half the objects take their colours from the background palette, picked at the object's own
  position, so their colour matches their surroundings (the "occlusion of foreground objects by the
  background"), and unlabelled clutter patches of the same palette sit in the background.

Items are generated on the fly with torch alone and depend only on ``(seed, split, index)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import math
import operator
import os
import pathlib
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._validation import check_int, check_positive_int

__all__ = ["SyntheticInstances", "collate_detection"]

SPLITS = ("train", "val", "test")
SHAPE_FAMILIES = ("ellipse", "box", "triangle", "blob", "cross")
MIN_IMAGE_SIZE = 32
MIN_VISIBLE_AREA = 20
"""Instances with fewer visible pixels than this after occlusion are left out of the image."""

_NUM_PALETTE = 4
_CAMOUFLAGE_PROB = 0.5
_CLUSTER_PROB = 0.6
_COVERAGE = 0.9
_REFILL_ROUNDS = 3

# Columns of the per-object parameter table (M, len(_COLS)).
_COLS = (
    "cx", "cy", "rx", "ry", "angle", "family", "label",
    "texture", "period", "tex_angle", "phase", "noise",
    "r1", "g1", "b1", "r2", "g2", "b2", "shade",
    "lobes", "lobe_phase", "lobe_amp",
)  # fmt: skip
_C = {name: i for i, name in enumerate(_COLS)}
_TEXTURES = ("flat", "stripes", "checker", "noise")


class _Scene(NamedTuple):
    """One generated image before conversion to a torchvision target.

    Attributes:
        image: float32 (3, S, S) in [0, 1], quantised to multiples of 1/255.
        owner: int64 (S, S), the instance seen at each pixel (0..N-1 in z-order, bottom first), -1 for
            background.
        labels: int64 (N,), categories in 1..num_categories.
        amodal_area: int64 (N,), pixels of each instance's full shape inside the image, occluders ignored.
    """

    image: Tensor
    owner: Tensor
    labels: Tensor
    amodal_area: Tensor


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch single-threaded for a while and restore the previous setting afterwards.

    Generation is many small tensor operations; on a loaded machine torch's intra-op thread pool makes them
    up to 20 times slower (threads wait on each other), and one thread loses nothing when it is idle.
    """
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _item_seed(seed: int, split: str, index: int) -> int:
    key = f"densecontrast.SyntheticInstances|{seed}|{split}|{index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & ((1 << 63) - 1)


def _uniform(gen: torch.Generator, shape: Sequence[int], low: float, high: float) -> Tensor:
    return torch.rand(tuple(shape), generator=gen) * (high - low) + low


def _pixel_grid(size: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates, each float32 (S, S): rows ``ys`` and columns ``xs``."""
    coords = torch.arange(size, dtype=torch.float32)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return ys, xs


def _noise_fields(gen: torch.Generator, count: int, size: int, cells: int) -> Tensor:
    """Smooth random fields, float32 (count, S, S) in [0, 1], with about ``cells`` blobs per side."""
    coarse = torch.rand((1, count, cells, cells), generator=gen)
    # bicubic to a quarter of the size, then bilinear: smooth and about 4 times cheaper than bicubic alone
    middle = max(min(size, 4 * cells), size // 4)
    smooth = F.interpolate(coarse, size=(middle, middle), mode="bicubic", align_corners=False)
    return F.interpolate(smooth, size=(size, size), mode="bilinear", align_corners=False)[0].clamp(0, 1)


def _segments(gen: torch.Generator, count: int, size: int, length: tuple[float, float],
              width: tuple[float, float]) -> Tensor:  # fmt: skip
    """Random segments, float32 (count, 5) = (x0, y0, x1, y1, half-width), lengths as fractions of S."""
    start = torch.rand((count, 2), generator=gen) * size
    span = _uniform(gen, (count, 1), *length) * size
    angle = _uniform(gen, (count, 1), 0, 2 * math.pi)
    end = start + span * torch.cat([torch.cos(angle), torch.sin(angle)], dim=1)
    return torch.cat([start, end, _uniform(gen, (count, 1), *width)], dim=1)


def _paint_segments(image: Tensor, segments: Tensor, colours: Tensor) -> Tensor:
    """Paint anti-aliased capsules (thick segments) in order, each in its own window; float32 (3, S, S).

    Args:
        image: float32 (3, S, S).
        segments: float32 (L, 5) = (x0, y0, x1, y1, half-width) in pixels.
        colours: float32 (L, 3).
    """
    if segments.shape[0] == 0:
        return image
    x0, y0, x1, y1, half = segments.unbind(dim=1)
    left = (torch.minimum(x0, x1) - half - 1).floor().long()
    top = (torch.minimum(y0, y1) - half - 1).floor().long()
    side = int(((x1 - x0).abs().max().maximum((y1 - y0).abs().max()) + 2 * half.max() + 3).ceil())
    offsets = torch.arange(side, dtype=torch.float32)
    xs = left[:, None, None] + offsets[None, None, :]  # (L, 1, W)
    ys = top[:, None, None] + offsets[None, :, None]  # (L, W, 1)
    dx, dy = (x1 - x0)[:, None, None], (y1 - y0)[:, None, None]
    t = ((xs - x0[:, None, None]) * dx + (ys - y0[:, None, None]) * dy) / (dx * dx + dy * dy).clamp_min(1e-6)
    t = t.clamp(0, 1)
    distance = torch.hypot(xs - (x0[:, None, None] + t * dx), ys - (y0[:, None, None] + t * dy))
    ink = (half[:, None, None] + 0.5 - distance).clamp(0, 1)  # (L, W, W)
    size = image.shape[-1]
    canvas = F.pad(image, (side, side, side, side))
    rows = (top + side).clamp(0, size + side).tolist()
    cols = (left + side).clamp(0, size + side).tolist()
    for k, (r, c) in enumerate(zip(rows, cols)):
        window = canvas[:, r : r + side, c : c + side]
        window.copy_(torch.lerp(window, colours[k, :, None, None], ink[k]))
    return canvas[:, side : side + size, side : side + size]


def _background(gen: torch.Generator, palette: Tensor, weights: Tensor) -> Tensor:
    """Cluttered background: palette regions, strokes, unlabelled patches and fine noise; (3, S, S).

    ``weights`` (P, S, S) are the soft region maps of the palette colours.
    """
    size = weights.shape[-1]
    image = torch.einsum("pc,pij->cij", palette, weights)
    image = image + 0.12 * (_noise_fields(gen, 1, size, max(8, size // 6)) - 0.5)
    strokes = _segments(gen, 4 + size // 24, size, (0.1, 0.3), (0.3, 1.2))
    patches = _segments(gen, 2 + size // 48, size, (0.0, 0.06), (0.02 * size, 0.05 * size))
    segments = torch.cat([strokes, patches])[
        torch.randperm(strokes.shape[0] + patches.shape[0], generator=gen)
    ]
    colours = palette[torch.randint(_NUM_PALETTE, (segments.shape[0],), generator=gen)]
    colours = colours + 0.04 * torch.randn(colours.shape, generator=gen)
    return _paint_segments(image, segments, colours)


def _object_table(
    gen: torch.Generator, count: int, size: int, radius: float, num_categories: int, palette: Tensor,
    palette_weights: Tensor,
) -> Tensor:  # fmt: skip
    """Random parameters of ``count`` objects; float32 (count, len(_COLS))."""
    table = torch.zeros((count, len(_COLS)))
    labels = torch.randint(1, num_categories + 1, (count,), generator=gen)
    family = (labels - 1) % len(SHAPE_FAMILIES)
    variant = (labels - 1) // len(SHAPE_FAMILIES)
    r = radius * _uniform(gen, (count,), 0.7, 1.3)
    aspect = torch.exp(_uniform(gen, (count,), -0.45, 0.45)) * (1.0 + variant.float())
    table[:, _C["rx"]] = r * aspect.sqrt()
    table[:, _C["ry"]] = r / aspect.sqrt()
    table[:, _C["cx"]], table[:, _C["cy"]] = _centres(gen, r, size)
    table[:, _C["angle"]] = _uniform(gen, (count,), 0, math.pi)
    table[:, _C["family"]] = family.float()
    table[:, _C["label"]] = labels.float()
    table[:, _C["texture"]] = torch.randint(len(_TEXTURES), (count,), generator=gen).float()
    table[:, _C["period"]] = r * _uniform(gen, (count,), 0.25, 0.6)
    table[:, _C["tex_angle"]] = _uniform(gen, (count,), 0, math.pi)
    table[:, _C["phase"]] = _uniform(gen, (count,), 0, 2 * math.pi)
    table[:, _C["noise"]] = torch.randint(2, (count,), generator=gen).float()
    table[:, _C["r1"] : _C["b2"] + 1] = _object_colours(gen, table, palette, palette_weights)
    table[:, _C["shade"]] = _uniform(gen, (count,), -0.12, 0.12)
    table[:, _C["lobes"]] = torch.randint(3, 6, (count,), generator=gen).float()
    table[:, _C["lobe_phase"]] = _uniform(gen, (count,), 0, 2 * math.pi)
    table[:, _C["lobe_amp"]] = _uniform(gen, (count,), 0.15, 0.3)
    return table


def _centres(gen: torch.Generator, radii: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Object centres; most objects sit next to an earlier one so that they overlap (crowds)."""
    count = radii.shape[0]
    free = _uniform(gen, (count, 2), 0.08 * size, 0.92 * size)
    clustered = (torch.rand((count,), generator=gen) < _CLUSTER_PROB).tolist()
    parents = (torch.rand((count,), generator=gen) * torch.arange(count)).long().tolist()
    distance = _uniform(gen, (count,), 0.5, 1.1).tolist()
    direction = _uniform(gen, (count,), 0, 2 * math.pi).tolist()
    cx, cy, rs = free[:, 0].tolist(), free[:, 1].tolist(), radii.tolist()
    for i in range(1, count):
        if clustered[i]:
            j = parents[i]
            step = distance[i] * (rs[i] + rs[j])
            cx[i] = min(max(cx[j] + step * math.cos(direction[i]), 0.0), size - 1.0)
            cy[i] = min(max(cy[j] + step * math.sin(direction[i]), 0.0), size - 1.0)
    return torch.tensor(cx), torch.tensor(cy)


def _object_colours(gen: torch.Generator, table: Tensor, palette: Tensor, palette_weights: Tensor) -> Tensor:
    """Two texture colours per object, float32 (M, 6); camouflaged objects copy the local background."""
    count = table.shape[0]
    size = palette_weights.shape[-1]
    col = table[:, _C["cx"]].long().clamp(0, size - 1)
    row = table[:, _C["cy"]].long().clamp(0, size - 1)
    local = palette_weights[:, row, col].t() @ palette  # (M, 3) background colour at the centre
    camouflaged = torch.rand((count, 1), generator=gen) < _CAMOUFLAGE_PROB
    free = torch.rand((count, 3), generator=gen)
    first = torch.where(camouflaged, local + 0.03 * torch.randn((count, 3), generator=gen), free)
    contrast = torch.where(camouflaged, 0.08, 0.2)  # camouflaged textures are faint
    second = first + contrast * torch.randn((count, 3), generator=gen)
    return torch.cat([first, second], dim=1).clamp(0, 1)


class _Raster(NamedTuple):
    """Objects drawn in square windows around their centres (W = window side).

    Attributes:
        top: int64 (M,), image row of each window's first row (may be negative).
        left: int64 (M,), image column of each window's first column (may be negative).
        inside: bool (M, W, W), window pixels inside the object's shape and inside the image.
    """

    top: Tensor
    left: Tensor
    inside: Tensor


def _rasterise(table: Tensor, size: int) -> _Raster:
    """Amodal shapes of the objects in ``table`` (one shape family per category), vectorised in windows."""
    count = table.shape[0]
    # Every shape lies within 1.2 radii of its centre (the rounded box's corner is at 1.19).
    half = math.ceil(1.2 * float(table[:, _C["rx"] : _C["ry"] + 1].max())) + 1 if count else 0
    offsets = torch.arange(-half, half + 1)
    cx, cy = table[:, _C["cx"]], table[:, _C["cy"]]
    left, top = cx.round().long() - half, cy.round().long() - half
    cols = left[:, None, None] + offsets[None, None, :] + half  # (M, 1, W)
    rows = top[:, None, None] + offsets[None, :, None] + half  # (M, W, 1)
    dx, dy = cols - cx[:, None, None], rows - cy[:, None, None]
    angle = table[:, _C["angle"], None, None]
    cos, sin = torch.cos(angle), torch.sin(angle)
    u = (dx * cos + dy * sin) / table[:, _C["rx"], None, None]
    v = (dy * cos - dx * sin) / table[:, _C["ry"], None, None]
    inside = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
    family = table[:, _C["family"]].long()
    for f, name in enumerate(SHAPE_FAMILIES):
        sel = (family == f).nonzero().flatten()
        if sel.numel():
            inside[sel] &= _shape(name, table[sel], u[sel], v[sel])
    return _Raster(top, left, inside)


def _shape(name: str, table: Tensor, u: Tensor, v: Tensor) -> Tensor:
    if name == "ellipse":
        return u * u + v * v <= 1.0
    if name == "box":  # a superellipse: a rectangle with rounded corners
        return u.pow(4) + v.pow(4) <= 1.0
    if name == "triangle":  # equilateral, circumradius 1
        edges = [(math.cos(a), math.sin(a)) for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)]
        return torch.stack([u * cx + v * sy for cx, sy in edges]).amax(dim=0) <= 0.5
    if name == "blob":  # a radius that wobbles with the angle
        lobes, phase, amp = (table[:, _C[k], None, None] for k in ("lobes", "lobe_phase", "lobe_amp"))
        angle = torch.atan2(v, u)
        return torch.hypot(u, v) <= 0.8 + amp * torch.sin(lobes * angle + phase)
    au, av = u.abs(), v.abs()  # cross: two bars of half-width 0.4
    return ((au <= 1.0) & (av <= 0.4)) | ((au <= 0.4) & (av <= 1.0))


def _owner(raster: _Raster, size: int) -> Tensor:
    """Index of the topmost object at every pixel (later objects on top), -1 for background; int64 (S, S)."""
    count, side = raster.inside.shape[0], raster.inside.shape[-1]
    canvas = torch.full((size + 2 * side, size + 2 * side), -1, dtype=torch.int64)
    if count:
        rows, cols = (raster.top + side).tolist(), (raster.left + side).tolist()
        for k, (r, c) in enumerate(zip(rows, cols)):
            window = canvas[r : r + side, c : c + side]
            window.masked_fill_(raster.inside[k], k)
    return canvas[side : side + size, side : side + size].contiguous()


def _drop_hidden(table: Tensor, raster: _Raster, size: int) -> tuple[Tensor, _Raster, Tensor]:
    """Remove objects with fewer than MIN_VISIBLE_AREA visible pixels; returns table, raster, owner.

    Removing an object can only enlarge the others' visible parts, so one pass suffices.
    """
    owner = _owner(raster, size)
    area = torch.bincount(owner.flatten() + 1, minlength=table.shape[0] + 1)[1:]
    keep = area >= MIN_VISIBLE_AREA
    if not bool(keep.all()):
        table, raster = table[keep], _Raster(raster.top[keep], raster.left[keep], raster.inside[keep])
        owner = _owner(raster, size)
    return table, raster, owner


def _stack(back: _Raster, front: _Raster) -> _Raster:
    """Concatenate two rasters (``back`` first, so behind), padding the smaller windows."""
    side = max(back.inside.shape[-1], front.inside.shape[-1])

    def pad(r: _Raster) -> Tensor:
        extra = side - r.inside.shape[-1]
        return F.pad(r.inside, (0, extra, 0, extra))

    return _Raster(torch.cat([back.top, front.top]), torch.cat([back.left, front.left]),
                   torch.cat([pad(back), pad(front)]))  # fmt: skip


def _texture(table: Tensor, owner: Tensor, grid: tuple[Tensor, Tensor], noise: Tensor) -> Tensor:
    """Paint every object pixel with its owner's texture; float32 (3, F) for the F pixels with owner >= 0."""
    ys, xs = grid
    seen = owner >= 0
    x, y = xs[seen], ys[seen]
    t = table[:, _C["tex_angle"]]
    angle = table[:, _C["angle"]]
    per_object = torch.stack([  # the columns each pixel needs, computed once per object
        torch.cos(t), torch.sin(t), 1.0 / table[:, _C["period"]], table[:, _C["phase"]],
        table[:, _C["texture"]], table[:, _C["noise"]], table[:, _C["shade"]], 1.0 / table[:, _C["rx"]],
        torch.cos(angle), torch.sin(angle), table[:, _C["cx"]], table[:, _C["cy"]],
    ])  # fmt: skip
    at_pixels = per_object[:, owner[seen]]  # (12, F)
    cos_t, sin_t, inv_period, phase, kind, which, shade, inv_rx, cos_a, sin_a, cx, cy = at_pixels
    along = (x * cos_t + y * sin_t) * inv_period
    across = (y * cos_t - x * sin_t) * inv_period
    stripes = (torch.sin(2 * math.pi * along + phase) * 3).clamp(-1, 1) * 0.5 + 0.5
    checker = torch.remainder(torch.floor(along) + torch.floor(across), 2)
    grain = torch.where(which > 0, noise[0][seen], noise[1][seen])
    mix = torch.where(kind == 1, stripes, torch.where(kind == 2, checker, torch.where(kind == 3, grain, 0.0)))
    colours = table[:, _C["r1"] : _C["b2"] + 1].t()[:, owner[seen]]  # (6, F)
    # a brightness ramp along the owner's own axis, +-shade at its ends
    ramp = 1.0 + shade * (((x - cx) * cos_a + (y - cy) * sin_a) * inv_rx).clamp(-1, 1)
    return torch.lerp(colours[:3], colours[3:], mix) * ramp


def _generate(
    gen: torch.Generator, size: int, num_categories: int, min_instances: int, max_instances: int
) -> _Scene:
    """Draw one scene from ``gen``; every random number comes from it in a fixed order."""
    grid = _pixel_grid(size)
    palette = _uniform(gen, (_NUM_PALETTE, 3), 0.05, 0.95)
    palette_weights = torch.softmax(_noise_fields(gen, _NUM_PALETTE, size, 4) * 8.0, dim=0)  # (P, S, S)
    background = _background(gen, palette, palette_weights)
    wanted = int(torch.randint(min_instances, max_instances + 1, (1,), generator=gen))
    radius = min(0.22 * size, math.sqrt(_COVERAGE * size * size / (math.pi * max(wanted, 1))))
    table = torch.zeros((0, len(_COLS)))
    empty = torch.zeros(0, dtype=torch.int64)
    raster = _Raster(empty, empty, torch.zeros((0, 1, 1), dtype=torch.bool))
    owner = torch.full((size, size), -1, dtype=torch.int64)
    for _ in range(_REFILL_ROUNDS):  # later rounds put replacements behind what is already there
        missing = wanted - table.shape[0]
        if missing <= 0:
            break
        new = _object_table(gen, missing, size, radius, num_categories, palette, palette_weights)
        table = torch.cat([new, table])
        raster = _stack(_rasterise(new, size), raster)
        table, raster, owner = _drop_hidden(table, raster, size)
    if wanted and not table.shape[0]:  # rare, in tiny images: one large object in the middle
        table = _object_table(gen, 1, size, 0.25 * size, num_categories, palette, palette_weights)
        table[:, _C["cx"] : _C["cy"] + 1] = size / 2
        raster = _rasterise(table, size)
        owner = _owner(raster, size)
    noise = _noise_fields(gen, 2, size, max(6, size // 10))
    image = background
    image[:, owner >= 0] = _texture(table, owner, grid, noise)
    image = image + 0.02 * torch.randn(image.shape, generator=gen)
    image = torch.round(image.clamp(0, 1) * 255) / 255
    amodal_area = raster.inside.flatten(1).sum(dim=1)
    return _Scene(image, owner, table[:, _C["label"]].long(), amodal_area)


def _owner_boxes(owner: Tensor, count: int) -> Tensor:
    """Boxes of the visible parts of ``count`` instances from the owner map ``owner`` (S, S).

    Returns float32 (count, 4) ``(x1, y1, x2, y2)``: first column and row, last column and row + 1.

    Examples:
        >>> owner = torch.tensor([[-1, 0, 0], [1, 1, -1]])
        >>> _owner_boxes(owner, 2).tolist()
        [[1.0, 0.0, 3.0, 1.0], [0.0, 1.0, 2.0, 2.0]]
    """
    height, width = owner.shape
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    seen = owner >= 0
    who, rows, cols = owner[seen], rows[seen], cols[seen]

    def reduce(values: Tensor, fill: int, how: str) -> Tensor:
        return torch.full((count,), fill, dtype=torch.int64).scatter_reduce(0, who, values, how)

    first_col, first_row = reduce(cols, width, "amin"), reduce(rows, height, "amin")
    last_col, last_row = reduce(cols, -1, "amax") + 1, reduce(rows, -1, "amax") + 1
    return torch.stack([first_col, first_row, last_col, last_row], dim=1).float()


def _mask_to_rle(mask: Tensor) -> dict[str, Any]:
    """Uncompressed COCO run-length encoding of one mask (column-major runs, zeros first).

    Args:
        mask: bool or 0/1 tensor (H, W).

    Returns:
        ``{"size": [H, W], "counts": [...]}``, readable by ``pycocotools.mask.frPyObjects``.

    Examples:
        >>> _mask_to_rle(torch.tensor([[0, 1], [0, 1]]))
        {'size': [2, 2], 'counts': [2, 2]}
    """
    height, width = mask.shape
    flat = mask.bool().t().reshape(-1)
    if flat.numel() == 0:
        return {"size": [int(height), int(width)], "counts": []}
    changes = (flat[1:] != flat[:-1]).nonzero().flatten() + 1
    edges = torch.cat([torch.tensor([0]), changes, torch.tensor([flat.numel()])])
    runs = (edges[1:] - edges[:-1]).tolist()
    if bool(flat[0]):
        runs = [0, *runs]
    return {"size": [int(height), int(width)], "counts": runs}


def _png_bytes(image: Tensor) -> bytes:
    """Encode a uint8 RGB tensor (3, H, W) as a PNG file (filter type 0, zlib level 6)."""
    _, height, width = image.shape
    rows = image.permute(1, 2, 0).reshape(height, width * 3)
    raw = torch.cat([torch.zeros((height, 1), dtype=torch.uint8), rows], dim=1).contiguous()
    data = ctypes.string_at(raw.data_ptr(), raw.numel())

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(data, 6))
        + chunk(b"IEND", b"")
    )


class SyntheticInstances(torch.utils.data.Dataset):
    """Images of overlapping, textured, partly camouflaged objects with torchvision-format targets.

    Item ``i`` depends only on ``(seed, split, i)`` (and the size arguments), so repeated access and
    DataLoader workers give identical items; splits with the same seed differ.

    Args:
        length: number of images.
        image_size: side S of the square images, at least 32.
        num_categories: number of categories; category ``c`` uses shape family
            ``SHAPE_FAMILIES[(c - 1) % 5]``, elongated ``(c - 1) // 5 + 1`` times beyond the fifth.
        min_instances: least number of objects placed in an image (>= 0).
        max_instances: largest number of objects placed in an image (>= min_instances). Objects whose
            visible area falls under ``MIN_VISIBLE_AREA`` pixels are replaced behind the others, up to
            three rounds, so an image usually holds the number drawn, rarely a few fewer (never 0 when
            ``min_instances >= 1``).
        seed: base seed.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Items are ``(image, target)`` with image float32 (3, S, S) in [0, 1] and target holding ``boxes``
    float32 (N, 4) xyxy (far edges exclusive), ``labels`` int64 (N,), ``masks`` uint8 (N, S, S) visible
    and disjoint, ``image_id`` int64 scalar (index + 1), ``area`` float32 (N,) and ``iscrowd`` int64 (N,).

    Examples:
        >>> ds = SyntheticInstances(4, image_size=64, seed=1)
        >>> image, target = ds[0]
        >>> image.shape, target["masks"].shape[1:], int(target["image_id"])
        (torch.Size([3, 64, 64]), torch.Size([64, 64]), 1)
    """

    def __init__(
        self,
        length: int = 64,
        *,
        image_size: int = 128,
        num_categories: int = 3,
        min_instances: int = 2,
        max_instances: int = 6,
        seed: int = 0,
        split: str = "train",
    ) -> None:
        self.length = check_int("length", length, 0)
        self.image_size = check_int("image_size", image_size, MIN_IMAGE_SIZE)
        self.num_categories = check_positive_int("num_categories", num_categories)
        self.min_instances = check_int("min_instances", min_instances, 0)
        self.max_instances = check_int("max_instances", max_instances, 0)
        if self.max_instances < self.min_instances:
            raise ValueError(
                f"max_instances must be >= min_instances; got min_instances={min_instances}, "
                f"max_instances={max_instances}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int; got {seed!r} ({type(seed).__name__})")
        self.seed = seed
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
        self.split = split
        self.categories: list[dict[str, Any]] = [
            {"id": c, "name": _category_name(c), "supercategory": "shape"}
            for c in range(1, num_categories + 1)
        ]

    def __len__(self) -> int:
        return self.length

    def _index(self, index: int) -> int:
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"index must be an int; got {index!r} ({type(index).__name__})") from None
        if not -self.length <= i < self.length:
            raise IndexError(f"index must be in [{-self.length}, {self.length}); got {i}")
        return i % self.length

    def _scene(self, index: int) -> _Scene:
        i = self._index(index)
        gen = torch.Generator().manual_seed(_item_seed(self.seed, self.split, i))
        with _one_thread():
            return _generate(
                gen, self.image_size, self.num_categories, self.min_instances, self.max_instances
            )

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Return ``(image, target)`` of image ``index`` (negative indices count from the end)."""
        with _one_thread():
            return self._item(index)

    def _item(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        scene = self._scene(index)
        count = scene.labels.shape[0]
        area = torch.bincount(scene.owner.flatten() + 1, minlength=count + 1)[1:]
        target = {
            "boxes": _owner_boxes(scene.owner, count),
            "labels": scene.labels,
            "masks": (scene.owner == torch.arange(count).view(-1, 1, 1)).view(torch.uint8),
            "image_id": torch.tensor(self._index(index) + 1, dtype=torch.int64),
            "area": area.float(),
            "iscrowd": torch.zeros(count, dtype=torch.int64),
        }
        return scene.image, target

    def coco_ground_truth(self) -> dict[str, Any]:
        """The whole split as a COCO instances dict with uncompressed-RLE segmentations.

        Image ``i`` has id ``i + 1`` and file name ``{i + 1:06d}.png``; annotation ids start at 1; ``area``
        is the visible pixel count and ``bbox`` the visible mask's ``[x, y, width, height]``.
        """
        return self._coco(None)

    def export_coco(self, root: str | os.PathLike[str]) -> pathlib.Path:
        """Write ``root/images/000001.png ...`` and ``root/annotations.json`` (``coco_ground_truth()``).

        Returns:
            ``root`` as a ``pathlib.Path``. The PNGs hold exactly the dataset's images (they are multiples
            of 1/255), so ``read / 255`` gives back ``dataset[i][0]``.
        """
        root = pathlib.Path(root)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "annotations.json").write_text(json.dumps(self._coco(root / "images")))
        return root

    def _coco(self, image_dir: pathlib.Path | None) -> dict[str, Any]:
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for i in range(self.length):
            image, target = self[i]
            image_id = int(target["image_id"])
            file_name = f"{image_id:06d}.png"
            images.append({"id": image_id, "file_name": file_name, "width": self.image_size,
                           "height": self.image_size})  # fmt: skip
            if image_dir is not None:
                (image_dir / file_name).write_bytes(_png_bytes(torch.round(image * 255).to(torch.uint8)))
            columns = (
                target["boxes"].tolist(),
                target["labels"].tolist(),
                target["masks"],
                target["area"].tolist(),
            )
            for (x1, y1, x2, y2), label, mask, area in zip(*columns):
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                     "segmentation": _mask_to_rle(mask), "area": area, "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "iscrowd": 0}
                )  # fmt: skip
        return {
            "info": {"description": f"densecontrast SyntheticInstances seed={self.seed} split={self.split}"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [dict(c) for c in self.categories],
        }


def _category_name(category: int) -> str:
    family = SHAPE_FAMILIES[(category - 1) % len(SHAPE_FAMILIES)]
    variant = (category - 1) // len(SHAPE_FAMILIES)
    return family if variant == 0 else f"{family}-{variant + 1}"


def collate_detection(
    batch: Sequence[tuple[Tensor, dict[str, Tensor]]],
) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Collate ``(image, target)`` pairs into a list of images and a list of targets.

    Use as ``DataLoader(dataset, batch_size=..., collate_fn=collate_detection)``; detection models take
    lists because images hold different numbers of instances.

    Examples:
        >>> images, targets = collate_detection([(torch.zeros(3, 2, 2), {"labels": torch.tensor([1])})])
        >>> first = targets[0]
        >>> len(images), first["labels"].tolist()
        (1, [1])
    """
    return [image for image, _ in batch], [target for _, target in batch]
