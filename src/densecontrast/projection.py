"""Projection head of the learnable similarity.

Shapes: R RoIs, N pixels per RoI, C input channels, D projected channels, H x W RoI grid.

The paper's φ is two fully connected layers; the released code applies the same thing as two 1x1
convolutions over the whole map. Because φ acts on each pixel alone, projecting only the sampled pixels
gives the same loss for a fraction of the work.

The loss projects its gathered rows, channels-first (R, C, N), in one of three ways that give the same
numbers up to float rounding: two 1x1 convolutions on the channels-first rows (``"conv"``; oneDNN on the
CPU, which reorders each call's tensors to and from its blocked layout), the same convolutions on a
channels-last copy of the rows (``"conv_cl"``; row-major rows, which oneDNN reads without reorders), or
two GEMMs on a row-major copy (``"gemm"``; MKL on the CPU). Which is faster depends on the processor.
Measured (docs/performance.md): on an Intel Xeon with AVX-512 the GEMMs were faster than ``"conv"`` by 4
to 10% (``"conv_cl"`` was not measured there); on an AMD EPYC with AVX2, ``"conv"`` was the fastest of
``"conv"`` and ``"gemm"``; on an AMD EPYC with AVX-512 (Zen 5), ``"conv_cl"`` was the fastest, ``"conv"``
next and the GEMMs last. So on the CPU the GEMMs run on Intel processors with AVX-512 kernels in ATen,
``"conv_cl"`` on AMD processors with them, and ``"conv"`` everywhere else; the rule is fixed per machine,
so a run repeats bit for bit. ``DENSECONTRAST_PROJECTION=measure`` instead times all three once per
process and keeps the fastest for each (dtype, channel sizes, thread count, autocast state), at the price
of results that can differ in the last bits between processes; ``=conv``, ``=conv_cl`` or ``=gemm`` pins
one.
"""

from __future__ import annotations

import functools
import os
import platform
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _module
from torch.nn.utils import parametrize

from ._validation import check_ndim, check_positive_int, check_tensor


def _has_hooks(module: nn.Module) -> bool:
    """Whether ``module(...)`` would run any hook: the condition ``nn.Module.__call__`` itself tests."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        or _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
    )


def _is_plain(module: nn.Module, cls: type[nn.Module]) -> bool:
    """Whether calling ``module`` runs ``cls.forward`` on its own parameters and nothing else.

    Not when the type is a subclass, ``forward`` is patched on the instance, a hook is registered (this
    covers ``torch.nn.utils.prune`` and the hook-based ``weight_norm`` / ``spectral_norm``), or a tensor
    is reparametrised (``torch.nn.utils.parametrize``; pruning's and the hook-based norms' ``*_orig``
    parameters also count).
    """
    return (
        type(module) is cls
        and "forward" not in module.__dict__
        and not _has_hooks(module)
        and not parametrize.is_parametrized(module)
        and not any(name.endswith("_orig") for name in module._parameters)
    )


def _is_plain_head(projector: nn.Module) -> bool:
    """Whether ``projector`` is a :class:`ProjectionHead` whose call the loss may replace by
    :meth:`ProjectionHead._forward_channels_first` without changing anything the user could observe."""
    return (
        _is_plain(projector, ProjectionHead)
        and _is_plain(projector.fc1, nn.Linear)  # type: ignore[arg-type]
        and _is_plain(projector.fc2, nn.Linear)  # type: ignore[arg-type]
    )


class ProjectionHead(nn.Module):
    """Two fully connected layers with a ReLU between, acting on the last dimension.

    Args:
        in_channels: C, the channels of the features.
        hidden_channels: width of the hidden layer; defaults to ``in_channels``.
        out_channels: D, the projected dimension.

    Shape:
        - Input: (..., C)
        - Output: (..., D)

    Examples:
        >>> import torch
        >>> head = ProjectionHead(16, out_channels=8)
        >>> head(torch.randn(4, 96, 16)).shape
        torch.Size([4, 96, 8])
    """

    def __init__(self, in_channels: int, hidden_channels: int | None = None, out_channels: int = 256) -> None:
        super().__init__()
        in_channels = check_positive_int("in_channels", in_channels)
        hidden = (
            in_channels if hidden_channels is None else check_positive_int("hidden_channels", hidden_channels)
        )
        out_channels = check_positive_int("out_channels", out_channels)
        self.in_channels = in_channels
        self.hidden_channels = hidden
        self.out_channels = out_channels
        self.fc1 = nn.Linear(in_channels, hidden)
        self.fc2 = nn.Linear(hidden, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_channels:
            raise ValueError(
                f"x must have shape (..., {self.in_channels}) for in_channels={self.in_channels}; "
                f"got {tuple(x.shape)}"
            )
        # In place: fc1's backward does not need its output, and it saves a buffer of the size of x.
        return self.fc2(F.relu(self.fc1(x), inplace=True))

    def _forward_channels_first(self, x: Tensor) -> Tensor:
        """The head on channels-first rows (R, C, N) -> (R, D, N), by the path :func:`_projection_path`
        picks (two 1x1 convolutions or two GEMMs: the same numbers up to float rounding).

        The same numbers as :meth:`forward` on ``x.transpose(1, 2)``. It bypasses
        ``nn.Module.__call__``, so the loss uses it only where :func:`_is_plain_head` holds.
        """
        path = _PATH_FUNCTIONS[_projection_path(self, x)]
        return path(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)

    def project_map(self, feats: Tensor) -> Tensor:
        """Apply the head to every pixel of a map, as the released code's two 1x1 convolutions do.

        A head with hooks, a patched ``forward`` or reparametrised layers is called as a module on the
        channels-last view instead, so that all of them apply here too.

        Args:
            feats: float tensor (R, C, H, W).

        Returns:
            float tensor (R, D, H, W).
        """
        feats = check_tensor("feats", feats)
        check_ndim("feats", feats, 4, "(R, C, H, W)")
        if not _is_plain_head(self):
            out: Tensor = self(feats.movedim(1, -1))
            return out.movedim(-1, 1)
        w1 = self.fc1.weight[:, :, None, None]
        w2 = self.fc2.weight[:, :, None, None]
        return F.conv2d(F.relu(F.conv2d(feats, w1, self.fc1.bias)), w2, self.fc2.bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.hidden_channels} -> {self.out_channels}"


# --- Which path projects the loss's channels-first rows -----------------------------------------------------


def _conv_path(x: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None) -> Tensor:
    """(R, C, N) -> (R, D, N) as two 1x1 convolutions: one ATen op per layer and one per layer's
    backward (input, weight and bias gradients at once), so the fewest kernels on a GPU. On the CPU
    oneDNN reorders the input and output of each call to and from its blocked layout."""
    hidden = F.conv1d(x, w1[:, :, None], b1)
    return F.conv1d(F.relu(hidden, inplace=True), w2[:, :, None], b2)


def _conv_cl_path(x: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None) -> Tensor:
    """(R, C, N) -> (R, D, N) as two 1x1 convolutions on the rows copied once into channels-last memory,
    (R, C, N, 1) stored as (R, N, C): oneDNN runs them on that layout without reordering.

    The output is a channels-first view of channels-last (R, D, N, 1) memory; the backward returns the
    rows' gradient in the same transposed layout.
    """
    # Contiguous first: a transposed x with a unit last dimension would be ambiguous, and conv2d would
    # take it as channels-first.
    rows = x.contiguous().unsqueeze(-1).contiguous(memory_format=torch.channels_last)
    hidden = F.conv2d(rows, w1[:, :, None, None], b1)
    return F.conv2d(F.relu(hidden, inplace=True), w2[:, :, None, None], b2).squeeze(-1)


def _gemm_path(x: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None) -> Tensor:
    """(R, C, N) -> (R, D, N) as two GEMMs on the rows copied once into (R * N, C), row-major.

    The output is a transposed view of an (R, N, D) buffer; the backward copies the incoming gradient
    once into rows, then runs four GEMMs and two bias sums, as the head's :meth:`ProjectionHead.forward`.
    """
    r, c, n = x.shape
    rows = x.transpose(1, 2).reshape(r * n, c)
    hidden = F.relu(F.linear(rows, w1, b1), inplace=True)
    return F.linear(hidden, w2, b2).view(r, n, w2.shape[0]).transpose(1, 2)


_PATH_FUNCTIONS = {"conv": _conv_path, "conv_cl": _conv_cl_path, "gemm": _gemm_path}
_PATHS = tuple(_PATH_FUNCTIONS)
_MEASURE_ROWS = 4096  # rows of the one-time measurement: R = 42 RoIs at K = 32, 4 MB at C = 256
_path_cache: dict[tuple[object, ...], str] = {}
_forced_path: str | None = None
_CPU_CHOICE = os.environ.get("DENSECONTRAST_PROJECTION", "isa")
"""How the CPU path is chosen: ``"isa"`` (default, by vendor and vector instruction set), ``"measure"``,
``"conv"``, ``"conv_cl"`` or ``"gemm"`` (from the environment variable ``DENSECONTRAST_PROJECTION``)."""


@functools.cache
def _cpu_vendor() -> str:
    """The processor's vendor string (``"GenuineIntel"``, ``"AuthenticAMD"``, ...), ``""`` if unknown.

    Read from ``/proc/cpuinfo`` on Linux; elsewhere from :func:`platform.processor`, which names the
    vendor on Windows and on Intel Macs.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    name = platform.processor()
    if "Intel" in name:
        return "GenuineIntel"
    if "AMD" in name:
        return "AuthenticAMD"
    return ""


def _isa_path() -> str:
    """Where ATen runs AVX-512 kernels: the GEMMs on an Intel processor, the channels-last convolutions on
    an AMD one. The channels-first convolutions elsewhere."""
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return "conv"
    return {"GenuineIntel": "gemm", "AuthenticAMD": "conv_cl"}.get(_cpu_vendor(), "conv")


def _path_key(head: ProjectionHead, x: Tensor) -> tuple[object, ...]:
    """What the faster path may depend on: device, dtype, channel sizes, threads, autocast state."""
    device = x.device.type
    autocast = torch.is_autocast_enabled(device)
    return (
        device,
        x.dtype,
        head.in_channels,
        head.hidden_channels,
        head.out_channels,
        torch.get_num_threads() if device == "cpu" else None,
        torch.get_autocast_dtype(device) if autocast else None,
    )


def _projection_path(head: ProjectionHead, x: Tensor) -> str:
    """``"conv"``, ``"conv_cl"`` or ``"gemm"`` for projecting the channels-first rows ``x`` with ``head``.

    Fixed where nothing needs measuring: float64 takes the GEMMs (no fast float64 convolution on the
    CPU) and other devices take the channels-first convolutions (fewest kernels; a CUDA step is never
    timed, so capture in a CUDA graph and the absence of host synchronisation hold). On the CPU, by default
    :func:`_isa_path`; with ``DENSECONTRAST_PROJECTION=measure``, measured once per process for each
    :func:`_path_key` and cached (the measurement runs inline in the first such call, so a profiler or
    dispatch mode active then sees its ops). Every path gives the same numbers up to float rounding,
    so the choice changes speed only.
    """
    if _forced_path is not None:
        return _forced_path
    if x.dtype == torch.float64:
        return "gemm"
    if x.device.type != "cpu":
        return "conv"
    if _CPU_CHOICE in _PATH_FUNCTIONS:
        return _CPU_CHOICE
    if _CPU_CHOICE != "measure":
        return _isa_path()
    key = _path_key(head, x)
    path = _path_cache.get(key)
    if path is None:
        path = _path_cache[key] = _measure_paths(head, x.dtype)
    return path


def _measure_paths(head: ProjectionHead, dtype: torch.dtype, repeats: int = 2) -> str:
    """Time forward + backward of every path on ``_MEASURE_ROWS`` synthetic rows; the fastest one.

    Runs on detached views of the head's parameters (nothing the user holds gets a gradient), draws no
    random numbers, alternates the order of the paths and keeps each one's fastest run.
    """
    c = head.in_channels
    n = 96
    r = max(1, _MEASURE_ROWS // n)
    with torch.inference_mode(False), torch.enable_grad():
        params = [
            p.detach().requires_grad_(True)
            for p in (head.fc1.weight, head.fc1.bias, head.fc2.weight, head.fc2.bias)
        ]
        x = torch.linspace(-1.0, 1.0, r * c * n, dtype=dtype).view(r, c, n).requires_grad_(True)
        best = dict.fromkeys(_PATHS, float("inf"))
        for i in range(repeats + 1):  # the first round warms both up
            for name in _PATHS if i % 2 == 0 else _PATHS[::-1]:
                start = time.perf_counter()
                out = _PATH_FUNCTIONS[name](x, *params)
                torch.autograd.grad(out, [x, *params], torch.ones_like(out))
                elapsed = time.perf_counter() - start
                if i > 0:
                    best[name] = min(best[name], elapsed)
    return min(_PATHS, key=lambda name: best[name])
