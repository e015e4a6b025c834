"""Options and inputs shared by the benchmarks.

Run with ``pytest benchmarks -o python_files='bench_*.py'`` (``nox -s bench`` does this and writes JSON to
``benchmarks/results/``). The released-code baseline is quadratic in R; by default it runs only up to
R = 256 with one round; ``--baseline-max-r 512`` adds the largest size (about two minutes on 2 cores).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--analysis-rounds", type=int, default=3, help="rounds of each analysis benchmark")
    parser.addoption(
        "--baseline-max-r", type=int, default=256, help="largest R for the released-code baseline"
    )
    parser.addoption(
        "--bench-device", default="cpu", help="device for the loss microbenchmarks (cpu or cuda)"
    )
    parser.addoption(
        "--bench-sizes", default="32,128,256,512", help="comma-separated numbers of RoIs for the loss"
    )
    parser.addoption(
        "--bench-threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the benchmarks (default: torch's own; recorded in machine_info)",
    )
    parser.addoption(
        "--bench-compile",
        action="store_true",
        help="also time torch.compile(loss, dynamic=True) (inductor; slow to compile on a CPU)",
    )


def pytest_configure(config: pytest.Config) -> None:
    threads = config.getoption("--bench-threads", default=None)
    if threads:
        torch.set_num_threads(threads)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "num_rois" in metafunc.fixturenames:
        sizes = [int(s) for s in metafunc.config.getoption("--bench-sizes").split(",")]
        metafunc.parametrize("num_rois", sizes)


@pytest.fixture
def bench_device(request: pytest.FixtureRequest) -> torch.device:
    device = torch.device(request.config.getoption("--bench-device"))
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return device


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Record the machine beside pytest-benchmark's own fields: CPU model and ISA, cores, torch, threads."""
    from _common import machine_info as densecontrast_machine_info
    from _common import projection_paths

    machine_info["densecontrast"] = densecontrast_machine_info(config.getoption("--bench-device"))
    machine_info["densecontrast"]["projection_paths"] = projection_paths()
