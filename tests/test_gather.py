from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given
from torch import nn

from densecontrast import gather_pixels
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


def _passthrough_vs_plain(consume, channels_last: bool = False, create_graph: bool = False):
    """Gradients of consume(feats_out) + sum(rows^2), via the passthrough and via two plain consumers."""
    g = torch.Generator().manual_seed(0)
    base = _layout(torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64), channels_last)
    index = torch.tensor([[0, 24, 24, 3], [7, 7, 7, 7], [1, 2, 3, 4]])
    grads = []
    for passthrough in (True, False):
        feats = base.clone().requires_grad_(True)
        if passthrough:
            out, rows = gather_pixels_passthrough(feats, index)
        else:
            out, rows = feats, gather_pixels(feats, index)
        total = consume(out) + rows.square().sum()
        (grad,) = torch.autograd.grad(total, feats, create_graph=create_graph)
        grads.append(grad)
    return grads


@pytest.mark.parametrize("channels_last", [False, True])
def test_passthrough_adds_into_the_layer_gradient(channels_last: bool) -> None:
    conv = nn.Conv2d(4, 2, 3, padding=1).double()
    fast, plain = _passthrough_vs_plain(lambda x: conv(x).square().sum(), channels_last)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "consume",
    [lambda x: x.sum(), lambda x: 0.0 * x.detach().sum()],
    ids=["expanded_gradient", "passthrough_unused"],
)
def test_passthrough_special_gradients(consume) -> None:
    fast, plain = _passthrough_vs_plain(consume)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)


def test_passthrough_with_create_graph() -> None:
    conv = nn.Conv2d(4, 2, 1).double()
    fast, plain = _passthrough_vs_plain(lambda x: conv(x).square().sum(), create_graph=True)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)


def test_passthrough_returns_the_same_values() -> None:
    feats = torch.randn(2, 3, 4, 4)
    out, rows = gather_pixels_passthrough(feats, torch.tensor([[1, 2], [3, 15]]))
    assert torch.equal(out, feats)
    assert torch.equal(rows, gather_pixels(feats, torch.tensor([[1, 2], [3, 15]])))
