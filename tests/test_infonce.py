from __future__ import annotations

import math

import pytest
import torch
from _reference import reference_roi_loss

from densecontrast import dense_info_nce


def reference(
    anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, tau: float
) -> torch.Tensor:
    return torch.tensor(
        [
            reference_roi_loss(list(a), list(p), list(n), tau)
            for a, p, n in zip(anchors, positives, negatives)
        ],
        dtype=torch.float64,
    )


@pytest.mark.parametrize("tau", [0.07, 0.5, 2.0])
@pytest.mark.parametrize(("a", "p", "q"), [(3, 3, 3), (2, 4, 5), (1, 1, 1)])
def test_matches_float64_reference(tau: float, a: int, p: int, q: int) -> None:
    g = torch.Generator().manual_seed(a * 100 + p * 10 + q)
    x = [torch.randn(4, n, 6, generator=g, dtype=torch.float64) for n in (a, p, q)]
    out = dense_info_nce(*x, tau=tau)
    assert out.dtype == torch.float64 and out.shape == (4,)
    torch.testing.assert_close(out, reference(*x, tau), rtol=1e-12, atol=1e-12)


def test_closed_form_single_pair() -> None:
    # s_uv = 1 and s_uw = 0: the loss is log(1 + e^{-1/τ}).
    a = torch.tensor([[[3.0, 0.0]]])
    p = torch.tensor([[[0.5, 0.0]]])
    n = torch.tensor([[[0.0, -2.0]]])
    for tau in (0.1, 1.0):
        torch.testing.assert_close(
            dense_info_nce(a, p, n, tau=tau), torch.tensor([math.log1p(math.exp(-1 / tau))])
        )


def test_reductions() -> None:
    x = [torch.randn(5, 4, 8, dtype=torch.float64) for _ in range(3)]
    per_roi = dense_info_nce(*x, tau=0.2)
    torch.testing.assert_close(dense_info_nce(*x, tau=0.2, reduction="sum"), per_roi.sum())
    torch.testing.assert_close(dense_info_nce(*x, tau=0.2, reduction="mean"), per_roi.mean())


def test_scale_invariance() -> None:
    x = [torch.randn(2, 3, 5, dtype=torch.float64) for _ in range(3)]
    scaled = [t * s for t, s in zip(x, (10.0, 0.01, 7.0))]
    torch.testing.assert_close(dense_info_nce(*x, tau=0.1), dense_info_nce(*scaled, tau=0.1))


def test_float32_norms_of_1e19_give_the_loss_of_unit_features() -> None:
    """Cosines are formed before 1/tau is applied: features of norm 1e19 (where the raw products scaled
    by 1/tau would pass float32's 3.4e38) give the loss of their directions, and finite gradients."""
    x = [torch.nn.functional.normalize(torch.randn(4, 32, 64), dim=-1) for _ in range(3)]
    large = [(t * 1e19).requires_grad_() for t in x]
    out = dense_info_nce(*large, tau=0.07, reduction="mean")
    torch.testing.assert_close(out, dense_info_nce(*x, tau=0.07, reduction="mean"))
    out.backward()
    assert all(bool(torch.isfinite(t.grad).all()) for t in large)


def test_no_negatives_gives_zero_in_graph() -> None:
    a = torch.randn(2, 3, 4, requires_grad=True)
    out = dense_info_nce(a, torch.randn(2, 3, 4), torch.randn(2, 0, 4), tau=0.1, reduction="sum")
    assert out.item() == 0.0
    out.backward()
    assert a.grad is not None


def test_zero_rois_mean_is_zero() -> None:
    a = torch.randn(0, 3, 4, requires_grad=True)
    out = dense_info_nce(a, torch.randn(0, 3, 4), torch.randn(0, 3, 4), tau=0.1, reduction="mean")
    assert out.item() == 0.0
    out.backward()
    assert a.grad is not None


def test_gradcheck() -> None:
    x = [torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(lambda a, p, n: dense_info_nce(a, p, n, tau=0.3), x)


def _normalize_then_info_nce(
    anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, tau: float
):
    """The per-RoI loss with plain autograd ops, the features normalised by ``F.normalize``."""
    a, p, n = (torch.nn.functional.normalize(t, dim=-1) for t in (anchors, positives, negatives))
    s_pos, s_neg = a @ p.transpose(1, 2) / tau, a @ n.transpose(1, 2) / tau
    return torch.nn.functional.softplus(torch.logsumexp(s_neg, -1, keepdim=True) - s_pos).mean(dim=(1, 2))


def test_features_below_eps_get_the_gradients_of_f_normalize() -> None:
    """F.normalize divides by max(|z|, 1e-12): a feature of smaller norm is only scaled, and its gradient
    has no radial part. The first and second derivatives agree with autograd through F.normalize where
    some features of each kind (anchor, positive, negative) have norms of 1e-13 to 5e-13."""
    g = torch.Generator().manual_seed(7)
    x = [torch.randn(3, n, 5, generator=g, dtype=torch.float64) for n in (3, 4, 5)]
    for t in x:
        t[:, 0] *= 1e-13 / t[:, 0].norm(dim=-1, keepdim=True)
        t[0, 1] *= 5e-13 / t[0, 1].norm()
    x = [t.requires_grad_() for t in x]
    v = torch.randn(3, generator=g, dtype=torch.float64)
    ours, theirs = dense_info_nce(*x, tau=0.2), _normalize_then_info_nce(*x, tau=0.2)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad((ours * v).sum(), x, create_graph=True)
    expected = torch.autograd.grad((theirs * v).sum(), x, create_graph=True)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=0.0)
    w = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in x]
    second = torch.autograd.grad(sum((d * u).sum() for d, u in zip(grads, w)), x)
    want_second = torch.autograd.grad(sum((d * u).sum() for d, u in zip(expected, w)), x)
    for got, want in zip(second, want_second):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=0.0)
    # The first-order gradient outside a graph takes the hand-written backward.
    ours_first = torch.autograd.grad((dense_info_nce(*x, tau=0.2) * v).sum(), x)
    for got, want in zip(ours_first, expected):
        torch.testing.assert_close(got, want.detach(), rtol=1e-10, atol=0.0)


def test_float32_under_bf16_autocast_with_small_tau_and_large_norms() -> None:
    x = [(1e4 * torch.randn(8, 32, 64)).bfloat16().requires_grad_() for _ in range(3)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dense_info_nce(*x, tau=0.01, reduction="mean")
    assert out.dtype == torch.float32 and torch.isfinite(out)
    out.backward()
    assert all(bool(torch.isfinite(t.grad).all()) for t in x)


def test_float16_inputs_computed_in_float32() -> None:
    x = [torch.randn(2, 4, 8) for _ in range(3)]
    half = dense_info_nce(*[t.half() for t in x], tau=0.1)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, dense_info_nce(*[t.half().float() for t in x], tau=0.1))


@pytest.mark.parametrize(
    ("shapes", "kwargs", "error", "match"),
    [
        (
            ((2, 3, 4), (2, 3, 4), (2, 3)),
            {"tau": 0.1},
            ValueError,
            r"negatives must have 3 dimensions \(R, Q, D\)",
        ),
        (((2, 3, 4), (3, 3, 4), (2, 3, 4)), {"tau": 0.1}, ValueError, "must agree in R and D"),
        (((2, 3, 4), (2, 3, 5), (2, 3, 4)), {"tau": 0.1}, ValueError, r"positives \(2, 3, 5\)"),
        (((2, 0, 4), (2, 3, 4), (2, 3, 4)), {"tau": 0.1}, ValueError, "at least one sample"),
        (((2, 3, 4),) * 3, {"tau": 0.0}, ValueError, "tau must be a finite positive number"),
        (((2, 3, 4),) * 3, {"tau": float("inf")}, ValueError, "tau must be a finite positive number"),
        (((2, 3, 4),) * 3, {"tau": "0.1"}, TypeError, "tau must be a finite positive number"),
        (((2, 3, 4),) * 3, {"tau": 0.1, "reduction": "avg"}, ValueError, "reduction must be one of"),
    ],
)
def test_bad_inputs(shapes: tuple, kwargs: dict, error: type[Exception], match: str) -> None:
    tensors = [torch.randn(*s) for s in shapes]
    with pytest.raises(error, match=match):
        dense_info_nce(*tensors, **kwargs)


def test_integer_inputs_rejected() -> None:
    with pytest.raises(TypeError, match="anchors must be a floating-point tensor"):
        dense_info_nce(
            torch.ones(1, 1, 2, dtype=torch.int64), torch.randn(1, 1, 2), torch.randn(1, 1, 2), tau=0.1
        )
