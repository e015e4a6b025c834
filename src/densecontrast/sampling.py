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


def _without_replacement(excluded: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    # Independent uniform keys, excluded pixels pushed past every member: the K smallest keys of a row
    # are a uniformly random K-subset of its members, in uniformly random order. One draw and one top-k
    # serve all three sets (excluded is (3, R, H*W)).
    keys = torch.rand(excluded.shape, generator=generator, device=excluded.device)
    keys.masked_fill_(excluded, 2.0)
    return keys.topk(k, dim=-1, largest=False, sorted=False).indices


def _with_replacement(member: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    # The j-th member of a row (j uniform in [0, count)) is the first position where the running count
    # of members reaches j + 1. member is (3, R, H*W); rows are flattened for searchsorted.
    sets, rois, pixels = member.shape
    running = member.reshape(sets * rois, pixels).cumsum(dim=1, dtype=torch.int64)
    count = running[:, -1:]
    u = torch.rand((sets * rois, k), generator=generator, device=member.device, dtype=torch.float64)
    j = torch.minimum((u * count).to(torch.int64), (count - 1).clamp(min=0))
    pos = torch.searchsorted(running, j + 1).clamp_(max=pixels - 1)
    return pos.reshape(sets, rois, k)


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
        indices into H*W (row-major) and a bool (R,) validity flag.

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

    num_rois = masks.shape[0]
    num_pixels = masks.shape[1] * masks.shape[2]
    flat = masks.reshape(num_rois, num_pixels)
    if num_pixels == 0 or num_rois == 0 or (k > num_pixels and not replacement):
        # No RoI can be valid; keep the documented shapes with in-range filler indices.
        filler = torch.zeros((num_rois, k), dtype=torch.int64, device=masks.device)
        valid = torch.zeros(num_rois, dtype=torch.bool, device=masks.device)
        return PixelSamples(filler, filler.clone(), filler.clone(), valid)

    if flat.dtype == torch.bool:
        inside, outside = flat, ~flat
    else:
        inside, outside = flat == 1, flat == 0
    n_in = inside.sum(dim=1)
    n_out = outside.sum(dim=1)
    if replacement:
        valid = (n_in > k) & (n_out > k)
        drawn = _with_replacement(torch.stack([inside, inside, outside]), k, generator)
    else:
        valid = (n_in >= k) & (n_out >= k)
        if flat.dtype == torch.bool:
            excluded = torch.stack([outside, outside, inside])
        else:
            excluded = torch.stack([~inside, ~inside, ~outside])
        drawn = _without_replacement(excluded, k, generator)
    return PixelSamples(drawn[0], drawn[1], drawn[2], valid)
