"""Mask-conditioned pixel sampling.

Shapes: R RoIs, H x W RoI grid, K samples per set.

For every RoI the sampler draws K anchors and K positives from the instance pixels M and K negatives from
the rest of the RoI M̄, all RoIs at once (no Python loop over RoIs) and on the masks' device.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ._validation import check_mask_values, check_ndim, check_positive_int, check_tensor


class PixelSamples(NamedTuple):
    """Sampled pixel positions of every RoI.

    Attributes:
        anchors: int64 tensor (R, K), flat indices ``row * W + col`` into the H x W grid.
        positives: int64 tensor (R, K), likewise, drawn independently of the anchors.
        negatives: int64 tensor (R, K), likewise, drawn from the rest of the RoI.
        valid: bool tensor (R,), whether the RoI had enough pixels to be sampled. Rows of invalid RoIs
            hold in-range indices of no meaning.
    """

    anchors: Tensor
    positives: Tensor
    negatives: Tensor
    valid: Tensor


def _no_rois_can_be_valid(num_pixels: int, k: int, replacement: bool) -> bool:
    """Whether the grid is too small for any RoI to hold k members in both sets (decided from shapes)."""
    # Without replacement a valid RoI needs |M| >= k and |M̄| >= k, with it |M| > k and |M̄| > k.
    return num_pixels < (2 * k + 2 if replacement else 2 * k)


_DRAW_RANGE = 2**31
"""Integer draws for sampling with replacement are uniform on [0, 2**31): a range every backend draws in
int32 arithmetic, and j = draw mod count is uniform on [0, count) up to a relative bias below
count / 2**31 (under 4e-7 for a 28 x 28 grid), far below what any test of the distribution can see."""


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """float32 uniforms in [0, 1) on like's device."""
    # generator=None is left out rather than passed: the generator overload of rand does not accept the
    # symbolic sizes of torch.compile(dynamic=True).
    if generator is None:
        return torch.rand(shape, device=like.device, dtype=torch.float32)
    return torch.rand(shape, generator=generator, device=like.device, dtype=torch.float32)


def _randint(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """int64 draws uniform on [0, _DRAW_RANGE) on like's device."""
    if generator is None:
        return torch.randint(_DRAW_RANGE, shape, device=like.device, dtype=torch.int64)
    return torch.randint(_DRAW_RANGE, shape, generator=generator, device=like.device, dtype=torch.int64)


def _filler(num_rois: int, k: int, masks: Tensor) -> tuple[Tensor, Tensor]:
    """In-range indices (R, 3, K) of no meaning and an all-False validity, without allocating R x 3 x K."""
    index = torch.zeros((), dtype=torch.int64, device=masks.device).expand(num_rois, 3, k)
    return index, torch.zeros(num_rois, dtype=torch.bool, device=masks.device)


def _sample(
    masks: Tensor, k: int, replacement: bool, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """The sampler's kernel (arguments already checked): indices (R, 3, K) and validity (R,).

    ``index[:, 0]`` holds the anchors, ``index[:, 1]`` the positives, ``index[:, 2]`` the negatives.
    """
    num_rois = masks.shape[0]
    num_pixels = masks.shape[1] * masks.shape[2]
    if _no_rois_can_be_valid(num_pixels, k, replacement):
        return _filler(num_rois, k, masks)
    flat = masks.reshape(num_rois, num_pixels)
    lo, hi = (k + 1, num_pixels - k - 1) if replacement else (k, num_pixels - k)
    if flat.dtype == torch.bool:
        inside, not_outside = flat, flat
        n_in = flat.sum(dim=1)
        valid = n_in.clamp(lo, hi) == n_in  # lo <= |M| and |M̄| = H*W - |M| >= lo
    else:
        inside, not_outside = flat == 1, flat != 0
        n_in = inside.sum(dim=1)
        n_out = num_pixels - not_outside.sum(dim=1)
        valid = (n_in >= lo) & (n_out >= lo)
    draw = _with_replacement if replacement else _without_replacement
    # Each set in pixel order: the loss is the same for any order within a set (every anchor meets
    # every positive and every negative), and on the CPU the gather and its backward's scatter run
    # two to three times as fast over increasing indices (docs/performance.md).
    return draw(inside, not_outside, k, generator).sort(dim=2).values, valid


def _without_replacement(
    inside: Tensor, not_outside: Tensor, k: int, generator: torch.Generator | None
) -> Tensor:
    # Independent uniform keys in [0, 1) for the three sets; the members of a set are lifted above every
    # other pixel (instance pixels +1 for anchors and positives, the rest of the RoI kept while the others
    # drop by 1 for negatives). The K largest keys of a row are then a uniformly random K-subset of its
    # members whenever it has K of them: one draw and one top-k serve all three sets.
    keys = _rand((inside.shape[0], 3, inside.shape[1]), generator, inside)
    keys[:, :2].add_(inside.unsqueeze(1))
    keys[:, 2].add_(not_outside, alpha=-1)
    return keys.topk(k, dim=-1, sorted=False).indices


def _with_replacement(
    inside: Tensor, not_outside: Tensor, k: int, generator: torch.Generator | None
) -> Tensor:
    # The j-th member of a row (j uniform in [0, count)) is the first position where the running count
    # of members reaches j + 1. Rows are (RoI, set) pairs, flattened for searchsorted. j comes from
    # integer draws (no float64, which some backends lack or run slowly); an empty row takes j = 0.
    rois, pixels = inside.shape
    member = torch.stack([inside, inside, ~not_outside], dim=1).reshape(rois * 3, pixels)
    running = member.cumsum(dim=1, dtype=torch.int64)
    count = running[:, -1:]
    j = _randint((rois * 3, k), generator, inside).remainder_(count.clamp(min=1))
    pos = torch.searchsorted(running, j + 1).clamp_(max=pixels - 1)
    return pos.reshape(rois, 3, k)


def sample_pixels(
    masks: Tensor,
    k: int,
    *,
    replacement: bool = False,
    generator: torch.Generator | None = None,
) -> PixelSamples:
    """Draw anchor, positive and negative pixels for every RoI.

    Anchors and positives are drawn independently, each uniformly from the RoI's instance pixels M;
    negatives uniformly from the rest of the RoI M̄. Pixels marked -1 belong to neither.

    Without replacement (the paper), an RoI is valid iff ``|M| >= k`` and ``|M̄| >= k``. With
    ``replacement=True`` (the released code), indices are drawn uniformly with replacement and an RoI is
    valid iff ``|M| > k`` and ``|M̄| > k`` (for masks without ignore pixels: ``k < |M| < H*W - k``).

    Args:
        masks: tensor (R, H, W), bool, or integer / floating holding 1 (instance), 0 (rest of the RoI)
            and -1 (ignore). Boolean masks are fastest: other dtypes are value-checked, which
            synchronises with an accelerator.
        k: samples per set, a positive int.
        replacement: sample with replacement, as the released code does.
        generator: a ``torch.Generator`` on the masks' device, for reproducible draws.

    Returns:
        PixelSamples ``(anchors, positives, negatives, valid)``: three int64 (R, K) tensors of flat
        indices into H*W (row-major), each row in increasing order (a set's order does not change the
        loss, and increasing indices make the gather faster), and a bool (R,) validity flag.

    Raises:
        TypeError: masks is not a tensor, or k not an int.
        ValueError: masks is not 3-D, holds values other than -1/0/1, or k < 1.

    Examples:
        >>> masks = torch.zeros(2, 8, 8, dtype=torch.bool)
        >>> masks[0, 2:6, 2:6] = True            # 16 instance pixels, 48 others
        >>> s = sample_pixels(masks, 4, generator=torch.Generator().manual_seed(0))
        >>> s.anchors.shape, s.valid.tolist()    # the second RoI has no instance pixels
        (torch.Size([2, 4]), [True, False])
        >>> bool(masks[0].flatten()[s.positives[0]].all())
        True
    """
    masks = check_tensor("masks", masks)
    check_ndim("masks", masks, 3, "(R, H, W)")
    k = check_positive_int("k", k)
    check_mask_values(masks)
    index, valid = _sample(masks, k, bool(replacement), generator)
    return PixelSamples(index[:, 0], index[:, 1], index[:, 2], valid)
