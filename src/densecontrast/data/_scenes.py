"""The scene generator behind :class:`densecontrast.data.SyntheticInstances` (private).

Shapes: S image size (S x S pixels), N instances of one image, M objects placed before occlusion is
resolved (N <= M), P palette colours, L strokes or clutter patches, W the side of an object's window.

Every image shows several textured objects of a few categories, one shape family per category, on a
cluttered background. Two properties make it hard for the mask head in the way the paper's error
analysis (section 3) describes, so that false negatives dominate:

* objects overlap in a z-order, so later objects occlude earlier ones and visible masks are fragmented
  (the "occlusion between foreground objects" of COCO-OCC and crowded street scenes);
* about half the objects take their colours from the background palette, picked at the object's own
  position, so their colour matches their surroundings (the "occlusion of foreground objects by the
  background"), and unlabelled clutter patches of the same palette sit in the background.

Everything is drawn with torch alone from one ``torch.Generator``, in a fixed order, so a scene depends
only on the generator's seed and the size arguments. It runs with whatever intra-op thread count torch
has; it never changes it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

SHAPE_FAMILIES = ("ellipse", "box", "triangle", "blob", "cross")
MIN_VISIBLE_AREA = 20
"""Instances with fewer visible pixels than this after occlusion are left out of the image."""

_NUM_PALETTE = 4
_CAMOUFLAGE_PROB = 0.5
_CLUSTER_PROB = 0.6
_COVERAGE = 0.9
_REFILL_ROUNDS = 3
_TEXTURES = ("flat", "stripes", "checker", "noise")


class Scene(NamedTuple):
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


class _Objects(NamedTuple):
    """The random parameters of M objects, one tensor (M,) per parameter unless said otherwise.

    Attributes:
        cx, cy: float32 centre (column, row) in pixels.
        rx, ry: float32 radii along the object's own axes, in pixels.
        angle: float32 rotation of the object's axes.
        family: int64 index into ``SHAPE_FAMILIES``.
        label: int64 category in 1..num_categories.
        texture: int64 index into ``_TEXTURES``.
        period: float32 stripe and checker period, in pixels.
        texture_angle: float32 direction of the stripes and checkers.
        phase: float32 phase of the stripes.
        noise_field: int64 which of the two smooth noise fields the "noise" texture reads (0 or 1).
        colour: float32 (M, 3) the first texture colour.
        second_colour: float32 (M, 3) the second texture colour.
        shade: float32 brightness ramp along the object's axis (+-shade at its ends).
        lobes: float32 number of lobes of a blob (3, 4 or 5).
        lobe_phase: float32 angle of a blob's first lobe.
        lobe_amp: float32 relative depth of a blob's lobes.
    """

    cx: Tensor
    cy: Tensor
    rx: Tensor
    ry: Tensor
    angle: Tensor
    family: Tensor
    label: Tensor
    texture: Tensor
    period: Tensor
    texture_angle: Tensor
    phase: Tensor
    noise_field: Tensor
    colour: Tensor
    second_colour: Tensor
    shade: Tensor
    lobes: Tensor
    lobe_phase: Tensor
    lobe_amp: Tensor

    @classmethod
    def none(cls) -> _Objects:
        """No objects (M = 0)."""
        integer = ("family", "label", "texture", "noise_field")
        return cls(*(
            torch.zeros(0, 3) if name in ("colour", "second_colour")
            else torch.zeros(0, dtype=torch.int64 if name in integer else torch.float32)
            for name in cls._fields
        ))  # fmt: skip

    @property
    def num_objects(self) -> int:
        """M, the number of objects."""
        return self.cx.shape[0]

    def select(self, index: Tensor) -> _Objects:
        """The objects at ``index`` (a bool mask (M,) or int64 indices)."""
        return _Objects(*(value[index] for value in self))

    def behind(self, front: _Objects) -> _Objects:
        """These objects followed by ``front`` (drawn later, so on top)."""
        return _Objects(*(torch.cat([a, b]) for a, b in zip(self, front)))


def item_seed(seed: int, split: str, index: int) -> int:
    """The generator seed of item ``index`` of a split: a hash of the three, in [0, 2**63)."""
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


def _draw_objects(
    gen: torch.Generator, count: int, size: int, radius: float, num_categories: int, palette: Tensor,
    palette_weights: Tensor,
) -> _Objects:  # fmt: skip
    """Random parameters of ``count`` objects (the order of the draws fixes every scene: keep it)."""
    labels = torch.randint(1, num_categories + 1, (count,), generator=gen)
    family = (labels - 1) % len(SHAPE_FAMILIES)
    variant = (labels - 1) // len(SHAPE_FAMILIES)
    r = radius * _uniform(gen, (count,), 0.7, 1.3)
    aspect = torch.exp(_uniform(gen, (count,), -0.45, 0.45)) * (1.0 + variant.float())
    cx, cy = _centres(gen, r, size)
    angle = _uniform(gen, (count,), 0, math.pi)
    texture = torch.randint(len(_TEXTURES), (count,), generator=gen)
    period = r * _uniform(gen, (count,), 0.25, 0.6)
    texture_angle = _uniform(gen, (count,), 0, math.pi)
    phase = _uniform(gen, (count,), 0, 2 * math.pi)
    noise_field = torch.randint(2, (count,), generator=gen)
    colour, second_colour = _object_colours(gen, cx, cy, palette, palette_weights)
    return _Objects(
        cx=cx,
        cy=cy,
        rx=r * aspect.sqrt(),
        ry=r / aspect.sqrt(),
        angle=angle,
        family=family,
        label=labels,
        texture=texture,
        period=period,
        texture_angle=texture_angle,
        phase=phase,
        noise_field=noise_field,
        colour=colour,
        second_colour=second_colour,
        shade=_uniform(gen, (count,), -0.12, 0.12),
        lobes=torch.randint(3, 6, (count,), generator=gen).float(),
        lobe_phase=_uniform(gen, (count,), 0, 2 * math.pi),
        lobe_amp=_uniform(gen, (count,), 0.15, 0.3),
    )


def _centres(gen: torch.Generator, radii: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Object centres, float32 (M,) each; most objects sit next to an earlier one so that they overlap."""
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


def _object_colours(
    gen: torch.Generator, cx: Tensor, cy: Tensor, palette: Tensor, palette_weights: Tensor
) -> tuple[Tensor, Tensor]:
    """Two texture colours per object, float32 (M, 3) each; camouflaged objects copy the local background."""
    count = cx.shape[0]
    size = palette_weights.shape[-1]
    col = cx.long().clamp(0, size - 1)
    row = cy.long().clamp(0, size - 1)
    local = palette_weights[:, row, col].t() @ palette  # (M, 3) background colour at the centre
    camouflaged = torch.rand((count, 1), generator=gen) < _CAMOUFLAGE_PROB
    free = torch.rand((count, 3), generator=gen)
    first = torch.where(camouflaged, local + 0.03 * torch.randn((count, 3), generator=gen), free)
    contrast = torch.where(camouflaged, 0.08, 0.2)  # camouflaged textures are faint
    second = first + contrast * torch.randn((count, 3), generator=gen)
    return first.clamp(0, 1), second.clamp(0, 1)


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


def _rasterise(objects: _Objects, size: int) -> _Raster:
    """Amodal shapes of ``objects`` (one shape family per category), vectorised in windows."""
    # Every shape lies within 1.2 radii of its centre (the rounded box's corner is at 1.19).
    largest = float(torch.maximum(objects.rx.max(), objects.ry.max())) if objects.num_objects else 0.0
    half = math.ceil(1.2 * largest) + 1 if objects.num_objects else 0
    offsets = torch.arange(-half, half + 1)
    cx, cy = objects.cx, objects.cy
    left, top = cx.round().long() - half, cy.round().long() - half
    cols = left[:, None, None] + offsets[None, None, :] + half  # (M, 1, W)
    rows = top[:, None, None] + offsets[None, :, None] + half  # (M, W, 1)
    dx, dy = cols - cx[:, None, None], rows - cy[:, None, None]
    angle = objects.angle[:, None, None]
    cos, sin = torch.cos(angle), torch.sin(angle)
    u = (dx * cos + dy * sin) / objects.rx[:, None, None]
    v = (dy * cos - dx * sin) / objects.ry[:, None, None]
    inside = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
    for f, name in enumerate(SHAPE_FAMILIES):
        sel = (objects.family == f).nonzero().flatten()
        if sel.numel():
            inside[sel] &= _shape(name, objects.select(sel), u[sel], v[sel])
    return _Raster(top, left, inside)


def _shape(name: str, objects: _Objects, u: Tensor, v: Tensor) -> Tensor:
    """Whether the window points ``(u, v)`` (M, W, W), in the objects' own unit axes, are inside."""
    if name == "ellipse":
        return u * u + v * v <= 1.0
    if name == "box":  # a superellipse: a rectangle with rounded corners
        return u.pow(4) + v.pow(4) <= 1.0
    if name == "triangle":  # equilateral, circumradius 1
        edges = [(math.cos(a), math.sin(a)) for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)]
        return torch.stack([u * cx + v * sy for cx, sy in edges]).amax(dim=0) <= 0.5
    if name == "blob":  # a radius that wobbles with the angle
        lobes, phase, amp = (t[:, None, None] for t in (objects.lobes, objects.lobe_phase, objects.lobe_amp))
        angle = torch.atan2(v, u)
        return torch.hypot(u, v) <= 0.8 + amp * torch.sin(lobes * angle + phase)
    au, av = u.abs(), v.abs()  # cross: two bars of half-width 0.4
    return ((au <= 1.0) & (av <= 0.4)) | ((au <= 0.4) & (av <= 1.0))


def _owner(raster: _Raster, size: int) -> Tensor:
    """Index of the topmost object at every pixel (later objects on top), -1 for background; int64 (S, S).

    One masked fill per object window, in z-order (measured 4x faster than a single scatter of every
    window pixel, which touches all M * W * W window pixels several times).
    """
    count, side = raster.inside.shape[0], raster.inside.shape[-1]
    canvas = torch.full((size + 2 * side, size + 2 * side), -1, dtype=torch.int64)
    if count:
        rows, cols = (raster.top + side).tolist(), (raster.left + side).tolist()
        for k, (r, c) in enumerate(zip(rows, cols)):
            window = canvas[r : r + side, c : c + side]
            window.masked_fill_(raster.inside[k], k)
    return canvas[side : side + size, side : side + size].contiguous()


def _drop_hidden(objects: _Objects, raster: _Raster, size: int) -> tuple[_Objects, _Raster, Tensor]:
    """Remove objects with fewer than MIN_VISIBLE_AREA visible pixels; returns objects, raster, owner.

    Removing an object can only enlarge the others' visible parts, so one pass suffices.
    """
    owner = _owner(raster, size)
    area = torch.bincount(owner.flatten() + 1, minlength=objects.num_objects + 1)[1:]
    keep = area >= MIN_VISIBLE_AREA
    if not bool(keep.all()):
        objects, raster = (
            objects.select(keep),
            _Raster(raster.top[keep], raster.left[keep], raster.inside[keep]),
        )
        owner = _owner(raster, size)
    return objects, raster, owner


def _stack(back: _Raster, front: _Raster) -> _Raster:
    """Concatenate two rasters (``back`` first, so behind), padding the smaller windows."""
    side = max(back.inside.shape[-1], front.inside.shape[-1])

    def pad(r: _Raster) -> Tensor:
        extra = side - r.inside.shape[-1]
        return F.pad(r.inside, (0, extra, 0, extra))

    return _Raster(torch.cat([back.top, front.top]), torch.cat([back.left, front.left]),
                   torch.cat([pad(back), pad(front)]))  # fmt: skip


def _texture(objects: _Objects, owner: Tensor, grid: tuple[Tensor, Tensor], noise: Tensor) -> Tensor:
    """Paint every object pixel with its owner's texture; float32 (3, F) for the F pixels with owner >= 0."""
    ys, xs = grid
    seen = owner >= 0
    x, y = xs[seen], ys[seen]
    t = objects.texture_angle
    angle = objects.angle
    per_object = torch.stack([  # the values each pixel needs, computed once per object
        torch.cos(t), torch.sin(t), 1.0 / objects.period, objects.phase, objects.texture.float(),
        objects.noise_field.float(), objects.shade, 1.0 / objects.rx, torch.cos(angle), torch.sin(angle),
        objects.cx, objects.cy,
    ])  # fmt: skip
    at_pixels = per_object[:, owner[seen]]  # (12, F)
    cos_t, sin_t, inv_period, phase, kind, which, shade, inv_rx, cos_a, sin_a, cx, cy = at_pixels
    along = (x * cos_t + y * sin_t) * inv_period
    across = (y * cos_t - x * sin_t) * inv_period
    stripes = (torch.sin(2 * math.pi * along + phase) * 3).clamp(-1, 1) * 0.5 + 0.5
    checker = torch.remainder(torch.floor(along) + torch.floor(across), 2)
    grain = torch.where(which > 0, noise[0][seen], noise[1][seen])
    mix = torch.where(kind == 1, stripes, torch.where(kind == 2, checker, torch.where(kind == 3, grain, 0.0)))
    colour = objects.colour.t()[:, owner[seen]]  # (3, F)
    second_colour = objects.second_colour.t()[:, owner[seen]]
    # a brightness ramp along the owner's own axis, +-shade at its ends
    ramp = 1.0 + shade * (((x - cx) * cos_a + (y - cy) * sin_a) * inv_rx).clamp(-1, 1)
    return torch.lerp(colour, second_colour, mix) * ramp


def generate(
    gen: torch.Generator, size: int, num_categories: int, min_instances: int, max_instances: int
) -> Scene:
    """Draw one scene from ``gen``; every random number comes from it in a fixed order."""
    grid = _pixel_grid(size)
    palette = _uniform(gen, (_NUM_PALETTE, 3), 0.05, 0.95)
    palette_weights = torch.softmax(_noise_fields(gen, _NUM_PALETTE, size, 4) * 8.0, dim=0)  # (P, S, S)
    background = _background(gen, palette, palette_weights)
    wanted = int(torch.randint(min_instances, max_instances + 1, (1,), generator=gen))
    radius = min(0.22 * size, math.sqrt(_COVERAGE * size * size / (math.pi * max(wanted, 1))))
    objects = _Objects.none()
    empty = torch.zeros(0, dtype=torch.int64)
    raster = _Raster(empty, empty, torch.zeros((0, 1, 1), dtype=torch.bool))
    owner = torch.full((size, size), -1, dtype=torch.int64)
    for _ in range(_REFILL_ROUNDS):  # later rounds put replacements behind what is already there
        missing = wanted - objects.num_objects
        if missing <= 0:
            break
        new = _draw_objects(gen, missing, size, radius, num_categories, palette, palette_weights)
        objects = new.behind(objects)
        raster = _stack(_rasterise(new, size), raster)
        objects, raster, owner = _drop_hidden(objects, raster, size)
    if wanted and not objects.num_objects:  # rare, in tiny images: one large object in the middle
        objects = _draw_objects(gen, 1, size, 0.25 * size, num_categories, palette, palette_weights)
        middle = torch.full((1,), size / 2)
        objects = objects._replace(cx=middle, cy=middle)
        raster = _rasterise(objects, size)
        owner = _owner(raster, size)
    noise = _noise_fields(gen, 2, size, max(6, size // 10))
    image = background
    image[:, owner >= 0] = _texture(objects, owner, grid, noise)
    image = image + 0.02 * torch.randn(image.shape, generator=gen)
    image = torch.round(image.clamp(0, 1) * 255) / 255
    amodal_area = raster.inside.flatten(1).sum(dim=1)
    return Scene(image, owner, objects.label, amodal_area)
