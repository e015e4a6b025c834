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


def test_forward_and_backward_never_synchronise_with_the_host() -> None:
    """No device-to-host read and no host-to-device copy in a step (bool masks, generator on the device)."""
    feats, masks = _batch()
    crit = DenseContrastiveLoss(k=32, tau=0.07, in_channels=64).cuda()
    feats, masks = feats.cuda().requires_grad_(True), masks.cuda()
    generator = torch.Generator("cuda").manual_seed(0)
    crit(feats, masks, generator=generator).backward()  # warm-up: lazy initialisation may synchronise
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for reduction in ("mean", "sum", "none"):
            crit.reduction = reduction
            feats.grad = None
            crit(feats, masks, generator=generator).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
        crit.reduction = "mean"


def test_capturable_in_a_cuda_graph() -> None:
    """Forward and backward captured once, replayed on new feature values, equal to eager."""
    feats, masks = _batch(r=16)
    crit = DenseContrastiveLoss(k=16, in_channels=64).cuda()
    masks = masks.cuda()
    samples = sample_pixels(masks, 16, generator=torch.Generator("cuda").manual_seed(0))
    static_feats = feats.cuda().requires_grad_(True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            static_feats.grad = None
            crit(static_feats, masks, samples=samples).backward()
    torch.cuda.current_stream().wait_stream(side)
    static_feats.grad = None
    for p in crit.parameters():
        p.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = crit(static_feats, masks, samples=samples)
        static_loss.backward()
    new = torch.randn_like(static_feats)
    with torch.no_grad():
        static_feats.copy_(new)
    graph.replay()
    eager_feats = new.clone().requires_grad_(True)
    eager_loss = crit(eager_feats, masks, samples=samples)
    eager_loss.backward()
    torch.testing.assert_close(static_loss, eager_loss)
    torch.testing.assert_close(static_feats.grad, eager_feats.grad)
