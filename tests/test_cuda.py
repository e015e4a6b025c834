"""CUDA-only checks: they skip on machines without a GPU and run unchanged on one."""

from __future__ import annotations

import pytest
import torch

from densecontrast import DenseContrastiveLoss, gather_pixels, sample_pixels

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _batch(r: int = 64, c: int = 64, size: int = 28, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(r, c, size, size, generator=g)
    masks = torch.rand(r, size, size, generator=g) > 0.5
    return feats, masks


def test_cuda_matches_cpu_with_the_same_samples() -> None:
    feats, masks = _batch()
    samples = sample_pixels(masks, 16, generator=torch.Generator().manual_seed(1))
    crit = DenseContrastiveLoss(k=16, in_channels=64, proj_channels=32)
    cpu_feats = feats.clone().requires_grad_(True)
    cpu_loss = crit(cpu_feats, masks, samples=samples)
    cpu_loss.backward()
    gpu_feats = feats.cuda().requires_grad_(True)
    gpu_loss = crit.cuda()(gpu_feats, masks.cuda(), samples=type(samples)(*(t.cuda() for t in samples)))
    gpu_loss.backward()
    torch.testing.assert_close(gpu_loss.cpu(), cpu_loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gpu_feats.grad.cpu(), cpu_feats.grad, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_small_tau_large_norms_finite(dtype: torch.dtype) -> None:
    feats, masks = _batch()
    feats = (feats * 1e3).cuda().requires_grad_(True)
    crit = DenseContrastiveLoss(k=32, tau=0.01, in_channels=64).cuda()
    with torch.autocast("cuda", dtype=dtype):
        loss = crit(feats, masks.cuda())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert bool(torch.isfinite(feats.grad).all())
    assert all(bool(torch.isfinite(p.grad).all()) for p in crit.parameters())


def test_sampler_deterministic_for_a_cuda_generator() -> None:
    _, masks = _batch()
    masks = masks.cuda()
    a = sample_pixels(masks, 32, generator=torch.Generator("cuda").manual_seed(3))
    b = sample_pixels(masks, 32, generator=torch.Generator("cuda").manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    rows = torch.arange(masks.shape[0], device="cuda")[:, None]
    assert bool(masks.flatten(1)[rows, a.anchors][a.valid].all())


def test_gradients_bitwise_deterministic_in_deterministic_mode() -> None:
    feats, masks = _batch()
    crit = DenseContrastiveLoss(k=32, in_channels=64).cuda()
    grads = []
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for _ in range(2):
            f = feats.cuda().requires_grad_(True)
            crit(f, masks.cuda(), generator=torch.Generator("cuda").manual_seed(0)).backward()
            grads.append(f.grad)
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(grads[0], grads[1])


def test_gather_channels_last_on_cuda() -> None:
    feats = torch.randn(8, 16, 28, 28, device="cuda")
    index = torch.randint(784, (8, 96), device="cuda")
    plain = gather_pixels(feats, index)
    channels_last = gather_pixels(feats.to(memory_format=torch.channels_last), index)
    assert torch.equal(plain, channels_last)
