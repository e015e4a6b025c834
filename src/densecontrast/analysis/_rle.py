"""COCO run-length encodings (RLE) of binary masks: the one place that writes, reads and checks them.

Shape letters: N masks, H x W the image size.

A COCO RLE is ``{"size": [H, W], "counts": ...}``: the lengths of the alternating runs of zeros and ones
(zeros first) of the mask read column by column. ``counts`` is a list of ints (uncompressed) or
pycocotools' string coding (compressed): each count as 5-bit groups, little-endian, offset by 48 (``0x20``
set: more groups follow; ``0x10`` in the last group: negative), counts after the third stored as the
difference to the count two places before. The runs of a valid RLE sum to H * W.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .._coco import Rle as Rle
from .._coco import areas as areas
from .._coco import encode as encode

# A count of an image with fewer than 2**60 pixels takes at most 12 groups of 5 bits.
_MAX_GROUPS = 12


def empty(height: int, width: int) -> Rle:
    """The compressed RLE of an all-zero mask (H, W)."""
    return mask_utils.frPyObjects({"size": [height, width], "counts": [height * width]}, height, width)


def union(rles: Sequence[Rle], height: int, width: int) -> Rle:
    """The union of compressed RLEs of one image (an empty mask for none)."""
    if not rles:
        return empty(height, width)
    return mask_utils.merge(list(rles), intersect=False) if len(rles) > 1 else rles[0]


def _as_bytes(counts: str | bytes) -> bytes:
    # UTF-8 codes a character outside ASCII as bytes >= 0x80, which no valid coding holds
    return counts.encode("utf-8", errors="surrogatepass") if isinstance(counts, str) else bytes(counts)


def _decode(strings: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode many compressed ``counts`` strings at once, vectorised.

    Returns:
        ``(counts, owner, corrupt)``: int64 (T,) all strings' counts in order, int64 (T,) the index of the
        string each count comes from, and bool (S,) the strings that are not a valid coding (a character
        outside ``'0'..'o'``, a count longer than 12 groups, or a last count left unfinished); the counts
        of a corrupt string are meaningless.
    """
    lengths = np.fromiter((len(s) for s in strings), dtype=np.int64, count=len(strings))
    corrupt = np.zeros(len(strings), dtype=bool)
    raw = np.frombuffer(b"".join(strings), dtype=np.uint8)
    if raw.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), corrupt
    string_of = np.repeat(np.arange(len(strings)), lengths)
    v = raw.astype(np.int64) - 48
    corrupt[string_of[(v < 0) | (v > 63)]] = True
    last = (v & 0x20) == 0  # the last group of a count
    string_ends = (np.cumsum(lengths) - 1)[lengths > 0]
    corrupt[string_of[string_ends[~last[string_ends]]]] = True
    last[string_ends] = True  # no count runs on into the next string
    starts = np.flatnonzero(np.concatenate(([True], last[:-1])))
    group = np.cumsum(np.concatenate(([0], last[:-1])))
    k = np.arange(v.size) - starts[group]  # the group's place within its count
    corrupt[string_of[k >= _MAX_GROUPS]] = True
    k = np.minimum(k, _MAX_GROUPS - 1)
    x = np.add.reduceat((v & 0x1F) << (5 * k), starts)
    ends = np.flatnonzero(last)
    negative = (v[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * (k[ends[negative]] + 1))
    owner = string_of[ends]
    # Undo the differences, c[m] = x[m] + c[m - 2] for m > 2: within each string, a running sum over the
    # odd m and one over the even m >= 2. int64 overflow wraps, so subtracting each string's offset is
    # exact whenever the true sums fit.
    per_string = np.bincount(owner, minlength=len(strings))
    first = (np.cumsum(per_string) - per_string)[owner]  # the index of each count's string's first count
    m = np.arange(owner.size) - first
    counts = x.copy()
    with np.errstate(over="ignore"):
        for chain in ((m % 2 == 1), (m >= 2) & (m % 2 == 0)):
            running = np.cumsum(np.where(chain, x, 0))
            before = np.where(first > 0, running[first - 1], 0)  # the running sum before the string
            counts[chain] = (running - before)[chain]
    return counts, owner, corrupt


def counts(rle: Rle) -> np.ndarray:
    """The run lengths of a compressed RLE (the inverse of pycocotools' string coding), vectorised.

    Returns:
        int64 array of the counts: zeros first, then ones, alternating.

    Examples:
        >>> counts({"size": [2, 2], "counts": "22"}).tolist()
        [2, 2]
    """
    return _decode([_as_bytes(rle["counts"])])[0]


def complement(rle: Rle) -> Rle:
    """The complement of a compressed RLE, by shifting its run lengths by one place."""
    runs = counts(rle)
    runs = runs[1:] if runs.size and runs[0] == 0 else np.concatenate(([0], runs))
    h, w = (int(s) for s in rle["size"])
    return mask_utils.frPyObjects({"size": [h, w], "counts": runs.tolist()}, h, w)


def check_compressed(rles: Sequence[Rle], names: Sequence[str]) -> None:
    """Check that compressed RLEs are valid codings whose counts are >= 0 and sum to H * W of their size.

    Args:
        rles: RLEs with a str or bytes ``counts`` and a ``size`` [H, W] of ints.
        names: the entry of each RLE, for the error message.

    Raises:
        ValueError: naming the first invalid RLE and what is wrong with it.
    """
    if not rles:
        return
    values, owner, corrupt = _decode([_as_bytes(r["counts"]) for r in rles])
    sums = np.zeros(len(rles), dtype=np.int64)
    negative = np.zeros(len(rles), dtype=bool)
    with np.errstate(over="ignore"):
        np.add.at(sums, owner, values)
    negative[owner[values < 0]] = True
    pixels = np.asarray([math.prod(r["size"]) for r in rles], dtype=np.int64)
    bad = corrupt | negative | (sums != pixels)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        if corrupt[i]:
            raise ValueError(f"{names[i]}: the RLE 'counts' string is corrupt (not a pycocotools coding)")
        _raise_bad_counts(names[i], rles[i]["size"], values[owner == i].tolist())


def _raise_bad_counts(name: str, size: Sequence[int], runs: list[int]) -> None:
    h, w = size
    if any(c < 0 for c in runs):
        raise ValueError(
            f"{name}: the RLE counts must be >= 0, got {runs[:8]}{'...' if len(runs) > 8 else ''}"
        )
    raise ValueError(f"{name}: the RLE counts sum to {sum(runs)}, expected H * W = {h} * {w} = {h * w}")


def _check_uncompressed(runs: list[Any], size: Sequence[int], name: str) -> None:
    if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in runs):
        raise ValueError(f"{name}: uncompressed RLE counts must be integers")
    if any(c < 0 for c in runs) or sum(runs) != size[0] * size[1]:
        _raise_bad_counts(name, size, runs)


def _check_polygons(polygons: list[Any], height: int, width: int, name: str) -> None:
    """Polygon coordinates must be finite and within the image widened by its size on every side.

    pycocotools rasterises a polygon edge by edge, in steps of a fifth of a pixel: one coordinate of 1e30
    or NaN would make it run out of memory or never return.
    """
    for p, poly in enumerate(polygons):
        xy = np.asarray(poly)
        if xy.dtype.kind not in "iuf":
            raise ValueError(f"{name}: polygon {p} must hold numbers only, got {poly!r}")
        xy = xy.astype(np.float64).reshape(-1, 2)
        low, high = -np.array([width, height]), 2 * np.array([width, height])
        bad = ~np.isfinite(xy) | (xy < low) | (xy > high)
        if bad.any():
            point, axis = (int(i) for i in np.argwhere(bad)[0])
            value = float(xy[point, axis])
            raise ValueError(
                f"{name}: polygon {p} has {'xy'[axis]} = {value!r} at point {point}; coordinates must be "
                f"finite with x in [{-width}, {2 * width}] and y in [{-height}, {2 * height}] "
                f"(the image, {height} x {width}, widened by its size)"
            )


def check_segmentation(segmentation: Any, height: int, width: int, name: str, *, polygons: bool) -> None:
    """Check a COCO ``segmentation`` of an image (H, W) without rasterising anything.

    Polygons and uncompressed RLEs are checked in full; a compressed RLE for its size and type only: check
    its counts with :func:`check_compressed` (vectorised over many).

    Args:
        segmentation: polygons (a list of flat coordinate lists) when ``polygons`` is true, or an RLE
            dict with ``size`` [H, W] and ``counts`` (a compressed string/bytes or an uncompressed list).
        height: H of the image.
        width: W of the image.
        name: the entry's name, for error messages.
        polygons: whether polygons are accepted.

    Raises:
        ValueError: naming the entry and what is wrong.
    """
    if isinstance(segmentation, Mapping):
        if "size" not in segmentation or "counts" not in segmentation:
            raise ValueError(
                f"{name}: RLE segmentation needs 'size' and 'counts', got keys {sorted(segmentation)}"
            )
        size = segmentation["size"]
        if (
            not isinstance(size, (list, tuple))
            or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
        ):
            raise ValueError(f"{name}: RLE 'size' must be [height, width], got {size!r}")
        if [int(s) for s in size] != [height, width]:
            raise ValueError(
                f"{name}: mask size {list(size)} differs from the image size [height, width] = "
                f"{[height, width]}"
            )
        runs = segmentation["counts"]
        if isinstance(runs, list):
            _check_uncompressed(runs, [height, width], name)
        elif not isinstance(runs, (str, bytes)):
            raise ValueError(f"{name}: RLE 'counts' must be str, bytes or a list, got {type(runs).__name__}")
        return
    if not polygons:
        raise ValueError(f"{name}: segmentation must be an RLE dict with 'size' and 'counts'")
    if (
        not isinstance(segmentation, list)
        or not segmentation
        or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segmentation)
    ):
        raise ValueError(
            f"{name}: polygon segmentation must be a non-empty list of [x1, y1, x2, y2, ...] lists"
        )
    _check_polygons(segmentation, height, width, name)


def to_compressed(segmentation: Any, height: int, width: int) -> Rle:
    """A compressed RLE (H, W) of a segmentation that passed :func:`check_segmentation` (a fresh dict)."""
    if isinstance(segmentation, Mapping):
        runs = segmentation["counts"]
        if isinstance(runs, list):
            return mask_utils.frPyObjects({"size": [height, width], "counts": list(runs)}, height, width)
        return {"size": [height, width], "counts": runs}
    return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
