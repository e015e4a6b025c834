"""Forward + backward of the loss against the released algorithm and against the physical floor.

Shapes follow the paper's Mask R-CNN setting: C = 256 channels, a 28 x 28 RoI grid, K = 32 samples.
The floor is the work no implementation can skip: the projection's two GEMMs (forward and backward) on
the R x 3K sampled rows, plus writing one dense gradient of the size of ``feats``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from _common import roi_batch, synchronize

from densecontrast import DenseContrastiveLoss

# The released algorithm is test-only code (it does not ship in the wheel): it lives in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _released import ReleasedDenseContrastiveLoss

K = 32
C = 256


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_densecontrast(
    benchmark,
    request: pytest.FixtureRequest,
    bench_device: torch.device,
    num_rois: int,
    autocast: bool,
    compiled: bool,
) -> None:
    benchmark.group = f"loss R={num_rois}"
    benchmark.extra_info.update(
        num_rois=num_rois,
        impl="densecontrast",
        autocast=autocast,
        compiled=compiled,
        device=str(bench_device),
        threads=torch.get_num_threads(),
    )
    if autocast and bench_device.type == "cpu":
        pytest.skip("bf16 autocast on CPUs without native bf16 matmuls is emulated (15-24x slower here)")
    if compiled and not request.config.getoption("--bench-compile"):
        pytest.skip("compiled variants need --bench-compile")
    feats, masks = roi_batch(num_rois, C, device=bench_device)
    crit = DenseContrastiveLoss(k=K, tau=0.07, in_channels=C).to(bench_device)
    if compiled:
        crit = torch.compile(crit, dynamic=True)
    dtype = torch.bfloat16 if autocast else torch.float32

    def step() -> None:
        feats.grad = None
        with torch.autocast(bench_device.type, dtype=dtype, enabled=autocast):
            loss = crit(feats, masks)
        loss.backward()
        synchronize(bench_device)

    benchmark.pedantic(step, rounds=20, warmup_rounds=3 if compiled else 2)


def test_floor(benchmark, bench_device: torch.device, num_rois: int) -> None:
    benchmark.group = f"loss R={num_rois}"
    benchmark.extra_info.update(
        num_rois=num_rois,
        impl="floor",
        autocast=False,
        device=str(bench_device),
        threads=torch.get_num_threads(),
    )
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(num_rois * 3 * K, C, generator=g).to(bench_device).requires_grad_(True)
    w1 = (torch.randn(C, C, generator=g) / C**0.5).to(bench_device).requires_grad_(True)
    w2 = (torch.randn(C, C, generator=g) / C**0.5).to(bench_device).requires_grad_(True)
    feats_shape = (num_rois, C, 28, 28)

    def step() -> None:
        rows.grad = w1.grad = w2.grad = None
        (torch.relu(rows @ w1) @ w2).sum().backward()
        torch.zeros(feats_shape, device=bench_device)
        synchronize(bench_device)

    benchmark.pedantic(step, rounds=20, warmup_rounds=2)


def test_released_baseline(
    benchmark, request: pytest.FixtureRequest, bench_device: torch.device, num_rois: int
) -> None:
    if num_rois > request.config.getoption("--baseline-max-r"):
        pytest.skip("released baseline above --baseline-max-r")
    benchmark.group = f"loss R={num_rois}"
    benchmark.extra_info.update(num_rois=num_rois, impl="released", autocast=False, device=str(bench_device))
    feats, masks = roi_batch(num_rois, C, device=bench_device)
    crit = ReleasedDenseContrastiveLoss(C, k=K, tau=0.07, max_rois=None).to(bench_device)

    def step() -> None:
        feats.grad = None
        crit(feats, masks).backward()
        synchronize(bench_device)

    rounds = 3 if num_rois <= 32 else 1
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=0)
