"""Inputs and helpers shared by the benchmarks."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def roi_batch(
    num_rois: int, channels: int = 256, size: int = 28, device: torch.device | str = "cpu", seed: int = 0
):
    """Features and disc-shaped instance masks (about 40% of each RoI) for R RoIs."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(num_rois, channels, size, size, generator=g).to(device)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.randint(size // 3, 2 * size // 3, (num_rois, 2), generator=g)
    radius = size * 0.36
    masks = (yy[None] - centre[:, 0, None, None]) ** 2 + (
        xx[None] - centre[:, 1, None, None]
    ) ** 2 < radius**2
    return feats.requires_grad_(True), masks.to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def demo_threads() -> int:
    """The demo's default thread count: half the cores this process may use, at least one.

    Taken from ``densecontrast.demo`` when it provides ``default_threads``, so that a training-step
    figure runs with the threading a user of the demo gets.
    """
    try:
        from densecontrast.demo import default_threads  # type: ignore[attr-defined]

        return int(default_threads())
    except (ImportError, AttributeError):
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        return max(1, cores // 2)


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_isa() -> str:
    """The widest vector ISA ATen's CPU kernels use here (e.g. ``AVX512``, ``AVX2``)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except AttributeError:  # pragma: no cover - older torch
        return "?"


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a benchmark figure depends on: CPU model and ISA, cores, torch and its thread count, the load.

    Every benchmark writes this into its JSON result, so that figures from different machines are never
    compared unknowingly. ``load_average`` is the 1, 5 and 15 minute load when the run started.
    """
    device = torch.device(device)
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_isa": cpu_isa(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }
    for name in ("MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS"):
        if name in os.environ:
            info.setdefault("environment", {})[name] = os.environ[name]
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def projection_paths() -> dict[str, str]:
    """How the loss's projection path is chosen on the CPU in this process (``choice``: the rule by vendor
    and instruction set, a measurement, or a pinned path), the path the rule gives on this machine
    (``rule``), and each path measured so far, per key (see densecontrast.projection)."""
    from densecontrast import projection

    measured = {repr(key): path for key, path in projection._path_cache.items()}
    return {"choice": projection._CPU_CHOICE, "rule": projection._isa_path(), **measured}


def describe(info: dict[str, Any]) -> str:
    """One line for a caption: ``<cpu> (AVX512), 2 cores, torch 2.14.1, 1 thread``."""
    threads = info.get("torch_threads", "?")
    line = (
        f"{info.get('cpu', '?')} ({info.get('cpu_isa', '?')}), {info.get('cpu_count', '?')} cores, "
        f"torch {info.get('torch', '?')}, {threads} thread{'s' if threads != 1 else ''}"
    )
    if "gpu" in info:
        line += f", {info['gpu']}"
    return line
