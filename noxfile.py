"""Developer sessions: ``nox -s tests``, ``lint``, ``typecheck``, ``bench``, ``gpu``, ``docs``.

Every session installs the pinned torch and torchvision that CI uses.
"""

from __future__ import annotations

import shutil

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests"]

TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
LINTED = ["src", "tests", "benchmarks", "examples", "noxfile.py"]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (the same command as the README and CI)."""
    session.install(*TORCH, "-e", ".[dev]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the package."""
    session.install(*TORCH, "-e", ".[dev]")
    session.run("mypy", "src/densecontrast")


@nox.session
def bench(session: nox.Session) -> None:
    """CPU benchmarks: the loss, then a Mask R-CNN training step (JSON in benchmarks/results/)."""
    session.install(*TORCH, "-e", ".[dev]")
    session.run(
        "python",
        "-m",
        "pytest",
        "benchmarks",
        "-o",
        "python_files=bench_*.py",
        "-p",
        "no:randomly",
        "--benchmark-columns=min,median,mean,rounds",
        "--benchmark-sort=name",
        "--benchmark-json=benchmarks/results/cpu.json",
        "--baseline-max-r=128",
        "--analysis-rounds=1",
        *session.posargs,
    )
    # One measured pair keeps the session near 4 minutes; docs/performance.md uses --pairs 6.
    session.run(
        "python",
        "benchmarks/train_step.py",
        "--pairs",
        "1",
        "--out",
        "benchmarks/results/train_step_quick.json",
    )


@nox.session
def gpu(session: nox.Session) -> None:
    """The GPU figures: CUDA tests, loss benchmarks, small-R ratios, training step, table and plot.

    Fails at once, before installing anything, on a machine without an NVIDIA driver; the runner
    (``benchmarks/gpu.py``, also usable without nox) fails with status 2 when torch sees no CUDA device.
    """
    if shutil.which("nvidia-smi") is None:
        session.error("no NVIDIA driver (nvidia-smi not found): nox -s gpu needs a CUDA device")
    session.install(*TORCH, "-e", ".[dev]")
    session.run("python", "benchmarks/gpu.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with --strict."""
    session.install(*TORCH, "-e", ".[docs]")
    session.run("mkdocs", "build", "--strict")
