from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import densecontrast.gather as gather_module
from densecontrast import DenseContrastiveLoss, gather_pixels, sample_pixels
from densecontrast.gather import gather_pixels_passthrough


def naive_gather(feats: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    r, c, _, w = feats.shape
    out = torch.empty(r, index.shape[1], c, dtype=feats.dtype)
    for i in range(r):
        for j, flat in enumerate(index[i].tolist()):
            out[i, j] = feats[i, :, flat // w, flat % w]
    return out


def _layout(feats: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return feats.to(memory_format=torch.channels_last) if channels_last else feats


@given(
    st.integers(0, 3),
    st.integers(1, 4),
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(0, 6),
    st.booleans(),
)
def test_matches_naive_gather(r: int, c: int, h: int, w: int, n: int, channels_last: bool) -> None:
    g = torch.Generator().manual_seed(r * 1000 + c * 100 + h * 10 + w)
    feats = _layout(torch.randn(r, c, h, w, generator=g, dtype=torch.float64), channels_last)
    index = torch.randint(h * w, (r, n), generator=g)
    assert torch.equal(gather_pixels(feats, index), naive_gather(feats, index))


@pytest.mark.parametrize("channels_last", [False, True])
def test_backward_sums_repeated_indices(channels_last: bool) -> None:
    feats = _layout(torch.randn(2, 3, 4, 4, dtype=torch.float64), channels_last).requires_grad_(True)
    index = torch.tensor([[5, 5, 5, 0], [15, 1, 15, 2]])
    gather_pixels(feats, index).sum().backward()
    expected = torch.zeros(2, 3, 16, dtype=torch.float64)
    for r in range(2):
        for flat in index[r].tolist():
            expected[r, :, flat] += 1.0
    assert torch.equal(feats.grad.reshape(2, 3, 16), expected)
    if channels_last:
        assert feats.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck(channels_last: bool) -> None:
    feats = _layout(torch.randn(3, 4, 3, 5, dtype=torch.float64), channels_last).requires_grad_(True)
    index = torch.tensor([[0, 14, 14, 3, 7], [2, 2, 2, 2, 2], [13, 1, 0, 1, 9]])
    assert torch.autograd.gradcheck(lambda f: gather_pixels(f, index), (feats,))
    assert torch.autograd.gradgradcheck(lambda f: gather_pixels(f, index), (feats,))


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_cpus_sorted_walk_gives_the_same_bits_as_the_index_order(
    channels_last: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the CPU the gather walks a sorted copy of the index (docs/performance.md); rows and gradient,
    with repeated indices summed in float32, are bit for bit those of walking the index as given."""
    g = torch.Generator().manual_seed(0)
    feats = _layout(torch.randn(6, 5, 7, 7, generator=g), channels_last)
    index = torch.randint(49, (6, 40), generator=g)  # unsorted, with repeats
    weights = torch.randn(6, 40, 5, generator=g)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        leaf = feats.detach().requires_grad_(True)
        rows = gather_pixels(leaf, index)
        (rows * weights).sum().backward()
        return rows.detach(), leaf.grad

    sorted_walk = run()
    monkeypatch.setattr(gather_module, "_host_checks", lambda t: False)  # as on an accelerator
    given_walk = run()
    assert torch.equal(sorted_walk[0], given_walk[0]) and torch.equal(sorted_walk[1], given_walk[1])
    assert torch.equal(sorted_walk[0], naive_gather(feats, index))


def test_an_increasing_index_is_walked_as_given() -> None:
    index = torch.tensor([[0, 3, 3, 8], [1, 2, 5, 7]])
    order = gather_module._order(index)
    assert order.walk is index and order.to_caller is None and order.from_caller is None
    shuffled = index.flip(1)
    order = gather_module._order(shuffled)
    assert torch.equal(order.walk, index)
    assert torch.equal(order.walk.gather(1, order.to_caller), shuffled)
    assert torch.equal(shuffled.gather(1, order.from_caller), order.walk)


def test_empty_index_gives_zero_gradient() -> None:
    feats = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = gather_pixels(feats, torch.zeros(2, 0, dtype=torch.int64))
    assert out.shape == (2, 0, 3)
    out.sum().backward()
    assert feats.grad is not None and not bool(feats.grad.any())


def test_zero_rois() -> None:
    feats = torch.randn(0, 3, 4, 4, requires_grad=True)
    out = gather_pixels(feats, torch.zeros(0, 5, dtype=torch.int64))
    assert out.shape == (0, 5, 3)
    out.sum().backward()
    assert feats.grad.shape == (0, 3, 4, 4)


def test_no_grad_input_needs_no_backward() -> None:
    feats = torch.randn(2, 3, 4, 4)
    out = gather_pixels(feats, torch.tensor([[1, 2], [3, 4]]))
    assert not out.requires_grad


def test_runs_on_device(device: str) -> None:
    feats = torch.randn(4, 8, 28, 28, device=device, requires_grad=True)
    index = torch.randint(784, (4, 96), device=device)
    out = gather_pixels(feats, index)
    out.square().sum().backward()
    ref = feats.detach().flatten(2).gather(2, index[:, None].expand(-1, 8, -1)).transpose(1, 2)
    torch.testing.assert_close(out, ref)
    assert feats.grad.device.type == device


@pytest.mark.parametrize(
    ("feats", "index", "error", "match"),
    [
        (
            torch.randn(2, 3, 4),
            torch.zeros(2, 1, dtype=torch.int64),
            ValueError,
            r"feats must have 4 dimensions",
        ),
        (
            torch.randn(2, 3, 4, 4),
            torch.zeros(2, dtype=torch.int64),
            ValueError,
            r"index must have 2 dimensions",
        ),
        (
            torch.randn(2, 3, 4, 4),
            torch.zeros(3, 1, dtype=torch.int64),
            ValueError,
            r"got index \(3, 1\) for feats \(2, 3, 4, 4\)",
        ),
        (torch.randn(2, 3, 4, 4), torch.zeros(2, 1, dtype=torch.int32), TypeError, "index must be an int64"),
        (
            torch.zeros(2, 3, 4, 4, dtype=torch.int64),
            torch.zeros(2, 1, dtype=torch.int64),
            TypeError,
            "floating-point",
        ),
        (
            torch.randn(2, 3, 4, 4).numpy(),
            torch.zeros(2, 1, dtype=torch.int64),
            TypeError,
            "feats must be a torch.Tensor",
        ),
    ],
)
def test_bad_inputs(feats: object, index: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        gather_pixels(feats, index)  # type: ignore[arg-type]


# --- The passthrough: private behind the loss's forward_passthrough ----------------------------------------


def _residual_gradients(gather) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """feats' gradient of a residual block whose skip branch was computed before the gather."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([[0, 5, 5, 15], [3, 3, 8, 9]])
    skip = feats * 3.0  # computed before: its backward runs after the gather's
    out, rows = gather(feats, index)
    total = (out + skip).square().sum() + rows.pow(3).sum()
    (grad,) = torch.autograd.grad(total, feats)
    return grad


def test_deprecated_passthrough_warns_and_gives_autograd_gradients_in_a_residual() -> None:
    """The residual case that once returned a corrupted gradient now equals plain autograd."""
    with pytest.warns(FutureWarning, match="gather_pixels_passthrough is deprecated"):
        got = _residual_gradients(gather_pixels_passthrough)
    expected = _residual_gradients(lambda f, i: (f, naive_gather(f, i)))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_deprecated_passthrough_returns_feats_and_the_gathered_rows() -> None:
    feats = torch.randn(2, 3, 4, 4)
    index = torch.tensor([[1, 2], [3, 15]])
    with pytest.warns(FutureWarning):
        out, rows = gather_pixels_passthrough(feats, index)
    assert out is feats
    assert torch.equal(rows, gather_pixels(feats, index))


def test_passthrough_is_not_public() -> None:
    import densecontrast

    assert "gather_pixels_passthrough" not in densecontrast.__all__


def _passthrough_vs_plain(consume, channels_last: bool = False, create_graph: bool = False):  # type: ignore[no-untyped-def]
    """Gradients of consume(feats_out, skip) + loss through forward_passthrough, and with feats used twice.

    ``skip = 3 * feats`` is computed before the loss, so its backward runs after the passthrough's.
    """
    g = torch.Generator().manual_seed(0)
    base = _layout(torch.randn(3, 4, 6, 6, generator=g, dtype=torch.float64), channels_last)
    masks = torch.zeros(3, 6, 6, dtype=torch.bool)
    masks[:, 1:4, 1:5] = True
    masks[1] = False  # an invalid RoI
    samples = sample_pixels(masks, 3, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    crit = DenseContrastiveLoss(k=3, tau=0.3, in_channels=4, proj_channels=3).double()
    grads = []
    for passthrough in (True, False):
        feats = base.clone().requires_grad_(True)
        skip = feats * 3.0
        if passthrough:
            out, loss = crit.forward_passthrough(feats, masks, samples=samples)
        else:
            out, loss = feats, crit(feats, masks, samples=samples)
        total = consume(out, skip) + loss
        (grad,) = torch.autograd.grad(total, feats, create_graph=create_graph)
        grads.append(grad)
    return grads


CONV = nn.Conv2d(4, 2, 3, padding=1).double()


def _retained(out: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    out.retain_grad()  # out.grad keeps a reference to the gradient the passthrough receives
    return CONV(out).square().sum()


def _hooked(out: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    kept: list[torch.Tensor] = []
    out.register_hook(kept.append)
    return CONV(out).square().sum() + 0.0 * len(kept)


CONSUMERS = {
    "conv": lambda x, s: CONV(x).square().sum(),
    "expanded_gradient": lambda x, s: x.sum(),
    "passthrough_unused": lambda x, s: 0.0 * x.detach().sum(),
    # Misuses of the contract: the gradient is shared, so the backward must copy instead of adding in place.
    "residual": lambda x, s: (x + s).square().sum(),
    "residual_of_views": lambda x, s: (x.reshape(-1) + s.reshape(-1)).square().sum(),
    "cat_with_skip": lambda x, s: torch.cat([x, s]).square().sum(),
    "retain_grad": _retained,
    "tensor_hook": _hooked,
}


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("consumer", list(CONSUMERS))
def test_forward_passthrough_gives_autograd_gradients_for_any_consumer(
    consumer: str, channels_last: bool
) -> None:
    fast, plain = _passthrough_vs_plain(CONSUMERS[consumer], channels_last)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)


def test_forward_passthrough_with_create_graph() -> None:
    fast, plain = _passthrough_vs_plain(CONSUMERS["conv"], create_graph=True)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)


class _DenseCopies(TorchDispatchMode):
    """Counts the copies (clone) of tensors of a given shape."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func.overloadpacket.__name__ == "clone" and tuple(args[0].shape) == self.shape:
            self.copies += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("consumer", "copies"), [("conv", 0), ("residual", 1), ("retain_grad", 1)])
def test_forward_passthrough_adds_in_place_only_into_an_unshared_gradient(consumer: str, copies: int) -> None:
    """No copy of the dense gradient with a convolution; one where the gradient is shared."""
    feats = torch.randn(3, 4, 6, 6, requires_grad=True)
    masks = torch.zeros(3, 6, 6, dtype=torch.bool)
    masks[:, 1:4, 1:5] = True
    crit = DenseContrastiveLoss(k=3, in_channels=4, proj_channels=3)
    conv = nn.Conv2d(4, 2, 3, padding=1)
    skip = feats * 3.0
    out, loss = crit.forward_passthrough(feats, masks)
    if consumer == "retain_grad":
        out.retain_grad()
    total = (out + skip).square().sum() if consumer == "residual" else conv(out).square().sum()
    with _DenseCopies(tuple(feats.shape)) as counter:
        (total + loss).backward()
    if torch.__version__ >= (2, 11):  # older autograd holds the incoming gradient longer: a copy more
        assert counter.copies == copies
    else:
        assert counter.copies <= copies + 1
