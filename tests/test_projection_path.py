"""The three ways the loss projects its channels-first rows (1x1 convolutions on channels-first or
channels-last memory, GEMMs) and the choice among them.

They must give the same numbers (float64 to 1e-12), the choice is measured at most once per key and
process on the CPU, never on other devices, and never changes what the loss computes. No timings are
asserted: which path is faster is the machine's business.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from densecontrast import DenseContrastiveLoss, ProjectionHead, projection, sample_pixels


def _head_and_rows(
    dtype: torch.dtype, r: int = 3, c: int = 6, n: int = 9
) -> tuple[ProjectionHead, torch.Tensor]:
    torch.manual_seed(0)
    head = ProjectionHead(c, hidden_channels=5, out_channels=4).to(dtype)
    rows = torch.randn(r, c, n, dtype=dtype, requires_grad=True)
    return head, rows


def _value_and_grads(path: str, head: ProjectionHead, rows: torch.Tensor) -> list[torch.Tensor]:
    params = [head.fc1.weight, head.fc1.bias, head.fc2.weight, head.fc2.bias]
    out = projection._PATH_FUNCTIONS[path](rows, *params)
    weight = torch.linspace(-1.0, 2.0, out.numel(), dtype=out.dtype).view(out.shape)
    grads = torch.autograd.grad((out * weight).sum(), [rows, *params])
    return [out, *grads]


@pytest.mark.parametrize("path", ["conv_cl", "gemm"])
def test_every_path_gives_the_head_s_numbers_in_float64(path: str) -> None:
    head, rows = _head_and_rows(torch.float64)
    conv = _value_and_grads("conv", head, rows)
    other = _value_and_grads(path, head, rows)
    assert conv[0].shape == other[0].shape == (3, 4, 9)
    torch.testing.assert_close(conv[0], head(rows.transpose(1, 2)).transpose(1, 2), rtol=1e-12, atol=1e-12)
    for a, b in zip(conv, other, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_the_channels_last_path_runs_on_row_major_memory() -> None:
    """The convolutions of ``"conv_cl"`` run on channels-last memory, also for rows that arrive as a
    transposed view of (R, N, C) memory (a unit last dimension makes such a view look channels-first to
    conv2d unless it is copied first): the output is a channels-first view of row-major (R, N, D)
    memory, with the head's numbers."""
    head, rows = _head_and_rows(torch.float64)
    params = [head.fc1.weight, head.fc1.bias, head.fc2.weight, head.fc2.bias]
    expected = head(rows.detach().transpose(1, 2)).transpose(1, 2)
    for x in (rows.detach(), rows.detach().transpose(1, 2).contiguous().transpose(1, 2)):
        out = projection._conv_cl_path(x, *params)
        assert out.shape == (3, 4, 9) and out.stride() == (9 * 4, 1, 4)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_the_loss_is_the_same_whichever_path(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loss and every gradient (features and the head's parameters) agree between the three paths."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(5, 6, 8, 8, generator=g, dtype=dtype)
    masks = torch.zeros(5, 8, 8, dtype=torch.bool)
    masks[:, 2:6, 1:5] = True
    masks[3] = False  # an invalid RoI too
    samples = sample_pixels(masks, 4, generator=torch.Generator().manual_seed(1))
    results = []
    for path in projection._PATHS:
        monkeypatch.setattr(projection, "_forced_path", path)
        torch.manual_seed(0)
        crit = DenseContrastiveLoss(k=4, in_channels=6).to(dtype)
        x = feats.clone().requires_grad_(True)
        loss = crit(x, masks, samples=samples)
        loss.backward()
        results.append([loss, x.grad, *(p.grad for p in crit.parameters())])
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, **tol)


@pytest.fixture
def empty_cache(monkeypatch: pytest.MonkeyPatch) -> dict:
    cache: dict = {}
    monkeypatch.setattr(projection, "_path_cache", cache)
    monkeypatch.setattr(projection, "_forced_path", None)
    monkeypatch.setattr(projection, "_CPU_CHOICE", "measure")
    return cache


def test_the_default_cpu_choice_follows_vendor_and_instruction_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default never measures, so two processes on one machine take the same path: with AVX-512
    kernels, the GEMMs on an Intel processor and the channels-last convolutions on an AMD one; the
    channels-first convolutions on every other processor."""

    def refuse(head: ProjectionHead, dtype: torch.dtype) -> str:
        raise AssertionError("measured")

    monkeypatch.setattr(projection, "_measure_paths", refuse)
    monkeypatch.setattr(projection, "_forced_path", None)
    monkeypatch.setattr(projection, "_CPU_CHOICE", "isa")
    head, rows = _head_and_rows(torch.float32)
    cases = [
        ("GenuineIntel", "AVX512", "gemm"),
        ("GenuineIntel", "AVX512_BF16", "gemm"),
        ("GenuineIntel", "AVX2", "conv"),
        ("AuthenticAMD", "AVX512", "conv_cl"),
        ("AuthenticAMD", "AVX512_BF16", "conv_cl"),
        ("AuthenticAMD", "AVX2", "conv"),
        ("", "AVX512", "conv"),
        ("GenuineIntel", "DEFAULT", "conv"),
    ]
    for vendor, isa, path in cases:
        monkeypatch.setattr(projection, "_cpu_vendor", lambda vendor=vendor: vendor)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda isa=isa: isa)
        assert projection._projection_path(head, rows) == path, (vendor, isa)
    for pinned in projection._PATHS:
        monkeypatch.setattr(projection, "_CPU_CHOICE", pinned)
        assert projection._projection_path(head, rows) == pinned


def test_the_choice_is_measured_once_per_key(empty_cache: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, torch.dtype]] = []

    def fake_measure(head: ProjectionHead, dtype: torch.dtype) -> str:
        calls.append((head.in_channels, dtype))
        return "gemm" if len(calls) % 2 else "conv"

    monkeypatch.setattr(projection, "_measure_paths", fake_measure)
    head, rows = _head_and_rows(torch.float32)
    assert projection._projection_path(head, rows) == "gemm"
    assert projection._projection_path(ProjectionHead(6, hidden_channels=5, out_channels=4), rows) == "gemm"
    assert projection._projection_path(head, rows[:1, :, :2]) == "gemm"  # any R and N: one key
    assert len(calls) == 1
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        assert projection._projection_path(head, rows) == "conv"  # another thread count: measured anew
    finally:
        torch.set_num_threads(threads)
    assert projection._projection_path(head, rows) == "gemm"
    other, other_rows = _head_and_rows(torch.float32, c=7)
    projection._projection_path(other, other_rows)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        projection._projection_path(head, rows)
    assert calls == [(6, torch.float32), (6, torch.float32), (7, torch.float32), (6, torch.float32)]
    assert len(empty_cache) == 4


def test_nothing_is_measured_for_float64_or_off_the_cpu(
    empty_cache: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(head: ProjectionHead, dtype: torch.dtype) -> str:
        raise AssertionError("measured")

    monkeypatch.setattr(projection, "_measure_paths", refuse)
    head, rows = _head_and_rows(torch.float64)
    assert projection._projection_path(head, rows) == "gemm"  # no fast float64 convolution on the CPU
    assert projection._projection_path(head, rows.to("meta")) == "gemm"  # float64 anywhere
    on_meta = torch.empty(3, 6, 9, device="meta")
    assert projection._projection_path(head.float(), on_meta) == "conv"  # CUDA and others: never timed
    assert empty_cache == {}


def test_the_measurement_leaves_no_trace(empty_cache: dict) -> None:
    """The real measurement: a path name; the head's parameters, gradients and the RNG untouched."""
    head, rows = _head_and_rows(torch.float32)
    before = [p.detach().clone() for p in head.parameters()]
    rng = torch.get_rng_state()
    with torch.inference_mode():  # also from inside no_grad or inference mode (an evaluation loop)
        path = projection._projection_path(head, rows.detach())
    assert path in projection._PATHS
    assert list(empty_cache.values()) == [path]
    assert all(p.grad is None for p in head.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, head.parameters(), strict=True))
    assert torch.equal(rng, torch.get_rng_state())


def test_a_head_called_as_a_module_never_asks_for_a_path(
    empty_cache: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A head with a hook (or wrapped, or any other module) goes through nn.Module.__call__."""

    def refuse(head: ProjectionHead, x: torch.Tensor) -> str:
        raise AssertionError("fast path taken")

    monkeypatch.setattr(projection, "_projection_path", refuse)
    head = ProjectionHead(6, hidden_channels=5, out_channels=4)
    calls: list[int] = []
    head.register_forward_hook(lambda module, args, out: calls.append(1))
    feats = torch.randn(2, 6, 8, 8)
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True
    DenseContrastiveLoss(k=4, projector=head)(feats, masks)
    DenseContrastiveLoss(k=4, projector=nn.Sequential(ProjectionHead(6)))(feats, masks)
    assert calls == [1]


@pytest.mark.parametrize(
    ("cpuinfo", "processor", "vendor"),
    [
        ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\n", "", "AuthenticAMD"),
        ("processor\t: 0\nvendor_id\t: GenuineIntel\n", "", "GenuineIntel"),
        (None, "Intel64 Family 6 Model 85 Stepping 7, GenuineIntel", "GenuineIntel"),
        (None, "AMD64 Family 25 Model 1 Stepping 1, AuthenticAMD", "AuthenticAMD"),
        (None, "arm", ""),
        ("processor\t: 0\nBogoMIPS\t: 50.00\n", "arm", ""),
    ],
)
def test_cpu_vendor_from_cpuinfo_or_the_platform(
    monkeypatch: pytest.MonkeyPatch, cpuinfo: str | None, processor: str, vendor: str
) -> None:
    def fake_open(path: str, *args: object, **kwargs: object) -> io.StringIO:
        assert path == "/proc/cpuinfo"
        if cpuinfo is None:
            raise FileNotFoundError(path)
        return io.StringIO(cpuinfo)

    monkeypatch.setattr(projection, "open", fake_open, raising=False)
    monkeypatch.setattr(projection.platform, "processor", lambda: processor)
    projection._cpu_vendor.cache_clear()
    try:
        assert projection._cpu_vendor() == vendor
    finally:
        projection._cpu_vendor.cache_clear()
