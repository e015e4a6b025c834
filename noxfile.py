"""Developer sessions: ``nox -s tests``, ``lint``, ``typecheck``, ``bench``, ``gpu``, ``docs``, ``adapters``.

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


# The oldest and newest versions each adapter supports (pyproject's ranges) that install here; the
# adapters session tests one framework at one bound, everything else at CI's pins.
ADAPTER_BOUNDS = {
    "torchvision": {"oldest": ["torch==2.4.1", "torchvision==0.19.1"], "newest": TORCH},
    "ultralytics": {"oldest": ["ultralytics==8.4.0"], "newest": ["ultralytics==8.4.190"]},
    "transformers": {"oldest": ["transformers==5.20.0"], "newest": ["transformers==5.24.0"]},
}
ADAPTER_TESTS = {
    "torchvision": [
        "tests/test_adapters_base.py",
        "tests/test_adapters_torchvision.py",
        "tests/test_rois.py",
    ],
    "ultralytics": ["tests/test_adapters_ultralytics.py", "tests/test_adapters_checkpoint.py"],
    "transformers": ["tests/test_adapters_transformers.py"],
}


@nox.session
@nox.parametrize("bound", ["oldest", "newest"])
@nox.parametrize("framework", list(ADAPTER_BOUNDS))
def adapters(session: nox.Session, framework: str, bound: str) -> None:
    """One adapter's tests at the oldest or newest supported version of its framework.

    ``nox -s "adapters(framework='ultralytics', bound='oldest')"``; extra arguments go to pytest (the
    slow end-to-end runs are included unless you pass ``-m "not slow"``).
    """
    pins = ADAPTER_BOUNDS[framework][bound]
    if framework == "torchvision":  # without the other frameworks, which need a newer torch
        session.install(*pins, "-e", ".[torchvision]", "pytest>=8", "hypothesis>=6.100")
    else:
        session.install(*TORCH, "-e", f".[{framework}]", "pytest>=8", "hypothesis>=6.100")
        session.install(*pins)  # after the extra, so the bound wins over the range's newest
    session.run(
        "python", "-m", "pytest", *ADAPTER_TESTS[framework], "-p", "no:cacheprovider", *session.posargs
    )


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
