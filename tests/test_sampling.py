from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from _reference import reference_validity
from hypothesis import given
from torch.utils._python_dispatch import TorchDispatchMode

from densecontrast import DenseContrastiveLoss, PixelSamples, sample_pixels


@st.composite
def mask_batches(draw: st.DrawFn, allow_ignore: bool = True) -> torch.Tensor:
    r = draw(st.integers(0, 4))
    h = draw(st.integers(1, 7))
    w = draw(st.integers(1, 7))
    values = [-1, 0, 1] if allow_ignore else [0, 1]
    flat = draw(st.lists(st.sampled_from(values), min_size=r * h * w, max_size=r * h * w))
    return torch.tensor(flat, dtype=torch.int64).reshape(r, h, w)


def members(masks: torch.Tensor, value: int) -> list[set[int]]:
    return [set(torch.nonzero(m.flatten() == value).flatten().tolist()) for m in masks]


@given(mask_batches(), st.integers(1, 6), st.booleans(), st.integers(0, 2**31 - 1))
def test_samples_are_members_of_their_sets(masks: torch.Tensor, k: int, replacement: bool, seed: int) -> None:
    s = sample_pixels(masks, k, replacement=replacement, generator=torch.Generator().manual_seed(seed))
    r, h, w = masks.shape
    for t in (s.anchors, s.positives, s.negatives):
        assert t.shape == (r, k) and t.dtype == torch.int64
        if t.numel():
            assert int(t.min()) >= 0 and int(t.max()) < max(h * w, 1)
    assert s.valid.shape == (r,) and s.valid.dtype == torch.bool
    assert s.valid.tolist() == reference_validity(masks, k, replacement)
    inside, outside = members(masks, 1), members(masks, 0)
    for i in range(r):
        if not s.valid[i]:
            continue
        assert set(s.anchors[i].tolist()) <= inside[i]
        assert set(s.positives[i].tolist()) <= inside[i]
        assert set(s.negatives[i].tolist()) <= outside[i]  # ignore pixels (-1) are in neither set


@given(mask_batches(), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_no_repeats_without_replacement(masks: torch.Tensor, k: int, seed: int) -> None:
    s = sample_pixels(masks, k, generator=torch.Generator().manual_seed(seed))
    for i in torch.nonzero(s.valid).flatten().tolist():
        for t in (s.anchors, s.positives, s.negatives):
            assert len(set(t[i].tolist())) == k


@given(mask_batches(allow_ignore=False), st.integers(1, 4))
def test_bool_and_int_masks_agree(masks: torch.Tensor, k: int) -> None:
    a = sample_pixels(masks, k, generator=torch.Generator().manual_seed(3))
    b = sample_pixels(masks.bool(), k, generator=torch.Generator().manual_seed(3))
    c = sample_pixels(masks.float(), k, generator=torch.Generator().manual_seed(3))
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y) and torch.equal(x, z)


def test_validity_boundary_both_rules() -> None:
    # 4 x 4 grid, k = 4: |M| = 4 and |M̄| = 12 is valid without replacement (>=) but not with it (>).
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, 0] = True  # |M| = 4
    masks[1, :2] = True  # |M| = 8
    masks[2, :3] = True  # |M| = 12, |M̄| = 4
    assert sample_pixels(masks, 4).valid.tolist() == [True, True, True]
    assert sample_pixels(masks, 4, replacement=True).valid.tolist() == [False, True, False]


def test_deterministic_for_a_generator() -> None:
    masks = torch.rand(6, 12, 12, generator=torch.Generator().manual_seed(0)) > 0.4
    for replacement in (False, True):
        a = sample_pixels(masks, 5, replacement=replacement, generator=torch.Generator().manual_seed(7))
        b = sample_pixels(masks, 5, replacement=replacement, generator=torch.Generator().manual_seed(7))
        c = sample_pixels(masks, 5, replacement=replacement, generator=torch.Generator().manual_seed(8))
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        assert not torch.equal(a.anchors, c.anchors)


@pytest.mark.parametrize("replacement", [False, True])
def test_anchors_and_positives_are_independent_draws(replacement: bool) -> None:
    """With k = 1 the (anchor, positive) pair is uniform on M x M: a chi-square test of the 144 cells.

    Fixed seed; the test rejects at the 0.1% level, so a correct sampler fails it with probability 0.001
    over seeds (and never for this seed). Positives that copy, shift or depend on the anchors fail it.
    """
    chi2 = pytest.importorskip("scipy.stats").chi2
    masks = torch.zeros(1, 6, 6, dtype=torch.bool)
    masks[0, 1:5, 1:4] = True  # 12 instance pixels
    inside = torch.nonzero(masks[0].flatten()).flatten()
    rank = torch.full((36,), -1, dtype=torch.int64)
    rank[inside] = torch.arange(12)  # pixel -> 0..11
    trials = 14400  # 100 expected per cell
    s = sample_pixels(
        masks.expand(trials, 6, 6), 1, replacement=replacement, generator=torch.Generator().manual_seed(11)
    )
    cells = rank[s.anchors[:, 0]] * 12 + rank[s.positives[:, 0]]
    counts = torch.bincount(cells, minlength=144).double()
    expected = trials / 144
    stat = float(((counts - expected) ** 2 / expected).sum())
    assert stat < chi2.ppf(0.999, 143), stat


def test_anchor_and_positive_sets_overlap_as_independent_subsets() -> None:
    """Without replacement, |A ∩ P| of two independent uniform 3-subsets of 12 pixels is hypergeometric.

    A chi-square goodness-of-fit test at the 0.1% level (false-alarm rate 0.001 over seeds), seed fixed.
    """
    stats = pytest.importorskip("scipy.stats")
    masks = torch.zeros(1, 6, 6, dtype=torch.bool)
    masks[0, 1:5, 1:4] = True  # 12 instance pixels, 24 others
    trials, k = 8000, 3
    s = sample_pixels(masks.expand(trials, 6, 6), k, generator=torch.Generator().manual_seed(12))
    overlap = (s.anchors.unsqueeze(2) == s.positives.unsqueeze(1)).any(dim=2).sum(dim=1)
    counts = torch.bincount(overlap, minlength=k + 1).double()
    expected = torch.tensor([stats.hypergeom.pmf(i, 12, k, k) for i in range(k + 1)]) * trials
    stat = float(((counts - expected) ** 2 / expected).sum())
    assert stat < stats.chi2.ppf(0.999, k), stat


@pytest.mark.parametrize("replacement", [False, True])
def test_uniform_over_instance_pixels_chi_square(replacement: bool) -> None:
    """Each instance pixel is drawn equally often; fixed seed, chi-square at the 0.1% level."""
    chi2 = pytest.importorskip("scipy.stats").chi2
    h = w = 6
    masks = torch.zeros(1, h, w, dtype=torch.bool)
    masks[0, 1:5, 1:4] = True  # 12 instance pixels, 24 others
    inside = torch.nonzero(masks[0].flatten()).flatten()
    trials, k = 4000, 3
    rois = masks.expand(trials, h, w)
    s = sample_pixels(rois, k, replacement=replacement, generator=torch.Generator().manual_seed(1234))
    for drawn, support in ((s.anchors, inside), (s.negatives, torch.nonzero(~masks[0].flatten()).flatten())):
        counts = torch.bincount(drawn.flatten(), minlength=h * w)[support].double()
        expected = trials * k / support.numel()
        stat = float(((counts - expected) ** 2 / expected).sum())
        assert stat < chi2.ppf(0.999, support.numel() - 1), stat
        assert int(counts.sum()) == trials * k  # nothing drawn outside the support


def test_ignore_pixels_are_never_drawn() -> None:
    masks = torch.full((64, 5, 5), -1, dtype=torch.int8)
    masks[:, 0, :] = 1
    masks[:, 4, :] = 0
    s = sample_pixels(masks, 3, generator=torch.Generator().manual_seed(0))
    assert bool(s.valid.all())
    assert set(s.anchors.flatten().tolist()) <= set(range(5))
    assert set(s.negatives.flatten().tolist()) <= set(range(20, 25))


def test_empty_inputs() -> None:
    s = sample_pixels(torch.zeros(0, 28, 28, dtype=torch.bool), 32)
    assert isinstance(s, PixelSamples)
    assert s.anchors.shape == (0, 32) and s.valid.shape == (0,)
    s = sample_pixels(torch.zeros(3, 0, 5, dtype=torch.bool), 2)
    assert s.anchors.shape == (3, 2) and not bool(s.valid.any())


def test_k_larger_than_grid_gives_no_valid_roi() -> None:
    masks = torch.ones(2, 3, 3, dtype=torch.bool)
    s = sample_pixels(masks, 10)
    assert s.anchors.shape == (2, 10) and not bool(s.valid.any())
    assert int(s.anchors.max()) < 9


def test_channels_of_a_wider_integer_type() -> None:
    masks = torch.zeros(2, 6, 6, dtype=torch.uint8)
    masks[:, :3] = 1
    assert sample_pixels(masks, 4).valid.tolist() == [True, True]


@pytest.mark.parametrize(
    ("masks", "k", "error", "match"),
    [
        (torch.zeros(4, 4, dtype=torch.bool), 2, ValueError, r"masks must have 3 dimensions \(R, H, W\)"),
        (torch.zeros(1, 4, 4, dtype=torch.bool), 0, ValueError, "k must be a positive int; got 0"),
        (torch.zeros(1, 4, 4, dtype=torch.bool), 2.0, TypeError, "k must be a positive int"),
        (torch.zeros(1, 4, 4, dtype=torch.bool), True, TypeError, "k must be a positive int"),
        (torch.full((1, 4, 4), 0.5), 2, ValueError, "threshold soft masks"),
        (torch.full((1, 4, 4), 255, dtype=torch.uint8), 2, ValueError, "value 255"),
        ([[0, 1]], 2, TypeError, "masks must be a torch.Tensor"),
    ],
)
def test_bad_inputs(masks: object, k: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        sample_pixels(masks, k)  # type: ignore[arg-type]


def test_runs_on_device(device: str) -> None:
    masks = torch.rand(8, 28, 28, device=device) > 0.5
    g = torch.Generator(device=device).manual_seed(0)
    s = sample_pixels(masks, 32, generator=g)
    assert s.anchors.device.type == device
    rows = torch.arange(8, device=device)[:, None]
    assert bool(masks.flatten(1)[rows, s.anchors][s.valid].all())


class _RecordDtypes(TorchDispatchMode):
    """The dtype of every tensor that an ATen operation returns while active."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.dtypes.add(t.dtype)
        return out


@pytest.mark.parametrize("replacement", [False, True])
def test_no_float64_is_ever_created(replacement: bool) -> None:
    """float64 is missing on some backends (MPS) and slow on others: neither sampler nor loss makes any."""
    masks = torch.rand(6, 12, 12, generator=torch.Generator().manual_seed(0)) > 0.4
    feats = torch.randn(6, 8, 12, 12, requires_grad=True)
    crit = DenseContrastiveLoss(k=4, in_channels=8, proj_channels=4, replacement=replacement)
    with _RecordDtypes() as recorder:
        sample_pixels(masks, 4, replacement=replacement, generator=torch.Generator().manual_seed(1))
        crit(feats, masks, generator=torch.Generator().manual_seed(1)).backward()
    assert torch.float64 not in recorder.dtypes, recorder.dtypes
    assert torch.float32 in recorder.dtypes  # the recorder saw the computation


def test_with_replacement_draws_every_member_of_large_rows_uniformly() -> None:
    """Rows with many members (1000 and 600 pixels): chi-square at the 0.1% level, seed fixed."""
    chi2 = pytest.importorskip("scipy.stats").chi2
    masks = torch.zeros(1, 40, 40, dtype=torch.bool)
    masks[0, :25] = True  # 1000 instance pixels, 600 others
    trials, k = 300, 100
    s = sample_pixels(
        masks.expand(trials, 40, 40), k, replacement=True, generator=torch.Generator().manual_seed(9)
    )
    for drawn, support in ((s.positives, torch.arange(1000)), (s.negatives, torch.arange(1000, 1600))):
        counts = torch.bincount(drawn.flatten(), minlength=1600)[support].double()
        assert int(counts.sum()) == trials * k
        expected = trials * k / support.numel()
        stat = float(((counts - expected) ** 2 / expected).sum())
        assert stat < chi2.ppf(0.999, support.numel() - 1), stat


@pytest.mark.parametrize("replacement", [False, True])
def test_each_set_comes_in_increasing_pixel_order(replacement: bool) -> None:
    """The loss gathers faster over increasing indices; the sets themselves are the same draws."""
    masks = torch.zeros(5, 12, 12, dtype=torch.bool)
    masks[:, 3:9, 2:10] = True
    s = sample_pixels(masks, 8, replacement=replacement, generator=torch.Generator().manual_seed(3))
    for indices in (s.anchors, s.positives, s.negatives):
        assert bool((indices[:, 1:] >= indices[:, :-1]).all())
        if not replacement:  # without replacement a set has no repeats, so the order is strict
            assert bool((indices[:, 1:] > indices[:, :-1]).all())
