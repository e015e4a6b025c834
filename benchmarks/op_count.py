"""Count what one forward + backward of the loss dispatches: ATen ops (eager) and kernels (compiled).

Usage::

    python benchmarks/op_count.py            # R = 64, C = 256, K = 32, 28 x 28 (the issue's setting)
    python benchmarks/op_count.py --path gemm --no-compile   # the GEMM projection some CPUs pick (or conv_cl)

Eager: every non-view ATen operation seen by a ``TorchDispatchMode`` over forward and backward, with
the gradients set to None before the step (what ``tests/test_loss.py`` bounds). Compiled (inductor, CPU,
``dynamic=True``, or ``--static``): the kernel calls in the generated forward and backward code,
counting each fused kernel, each extern kernel (GEMMs, topk, ...) and each ATen fallback once.
"""

from __future__ import annotations

import argparse
import collections
import copy
import re

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from densecontrast import DenseContrastiveLoss, projection


class CountOps(TorchDispatchMode):
    """Records the name of every non-view ATen operation dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if not func.is_view:
            self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def batch(num_rois: int, channels: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(num_rois, channels, size, size, generator=g)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.randint(size // 3, 2 * size // 3, (num_rois, 2), generator=g)
    masks = (yy[None] - centre[:, 0, None, None]) ** 2 + (xx[None] - centre[:, 1, None, None]) ** 2 < (
        0.36 * size
    ) ** 2
    return feats.requires_grad_(True), masks


def eager_ops(crit: torch.nn.Module, feats: torch.Tensor, masks: torch.Tensor) -> list[str]:
    """The non-view ATen ops of one forward + backward, gradients set to None first."""
    feats.grad = None
    for p in crit.parameters():
        p.grad = None
    with CountOps() as counter:
        crit(feats, masks).backward()
    return counter.ops


def compiled_kernels(
    crit: torch.nn.Module, feats: torch.Tensor, masks: torch.Tensor, dynamic: bool = True
) -> dict[str, int]:
    """Kernel calls in inductor's generated forward and backward code (CPU)."""
    from torch._inductor.utils import run_and_get_code

    compiled = torch.compile(copy.deepcopy(crit), backend="inductor", dynamic=dynamic)

    def step() -> None:
        feats.grad = None
        compiled(feats, masks).backward()

    _, sources = run_and_get_code(step)
    counts: collections.Counter[str] = collections.Counter()
    for source in sources:
        body = source[source.index("def call(") :] if "def call(" in source else source
        counts["fused kernels"] += len(re.findall(r"^\s+cpp_fused_\w+\(", body, flags=re.M))
        counts["extern kernels"] += len(re.findall(r"extern_kernels\.\w+\(", body))
        counts["aten fallbacks"] += len(re.findall(r"torch\.ops\.aten\.\w+\.\w+\(", body))
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rois", type=int, default=64)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--no-compile", action="store_true", help="eager count only")
    parser.add_argument("--static", action="store_true", help="compile for this R only (dynamic=False)")
    parser.add_argument(
        "--path",
        choices=projection._PATHS,
        default="conv",
        help="the eager projection path to count (default conv, the one GPUs take; CPUs: by their rule)",
    )
    args = parser.parse_args()
    projection._forced_path = args.path
    torch.manual_seed(0)
    crit = DenseContrastiveLoss(k=32, tau=0.07, in_channels=args.channels)
    feats, masks = batch(args.rois, args.channels, args.size)
    eager_ops(crit, feats, masks)  # warm-up
    ops = eager_ops(crit, feats, masks)
    print(
        f"eager: {len(ops)} non-view ATen ops (forward + backward, R = {args.rois}, {args.path} projection)"
    )
    print("  " + ", ".join(ops))
    if not args.no_compile:
        kernels = compiled_kernels(crit, feats, masks, dynamic=not args.static)
        total = sum(kernels.values())
        detail = ", ".join(f"{v} {k}" for k, v in kernels.items())
        print(f"compiled (inductor, CPU, dynamic={not args.static}): {total} kernel calls ({detail})")


if __name__ == "__main__":
    main()
