"""Training the demo's two models at the same time, one process each.

The Baseline and the +DCL run are independent: same configuration, same seed, nothing shared but the
data's definition. On a CPU with at least two cores they train in two ``spawn`` processes, each with one
torch thread and its own DataLoader worker, so that the comparison takes about one model's wall time
instead of two (two threads in one process oversubscribe a busy machine badly, see docs/demo.md). The
results are those of :func:`~densecontrast.demo.run_one` in one process, bit for bit: each run
reseeds everything it uses and runs single-threaded either way.

``spawn`` rather than ``fork``: the parent has already started torch's thread pool, and forking a
process that holds threads leaves locks taken in the child; a spawned child starts clean and forks its
own DataLoader worker as a single run does.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import DemoConfig

NAMES = {False: "baseline", True: "dcl"}
LABELS = {"baseline": "Baseline", "dcl": "+DCL"}


class ParallelRunError(RuntimeError):
    """A run of :func:`train_both` failed in its process; the message is one line."""


def sequential_reason(
    *, device: str, models: int, threads: int | None, sequential: bool, cores: int
) -> str | None:
    """Why the demo trains its models one after the other, or None when it trains them at once.

    Args:
        device: the run's device (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        models: how many models the run trains (1 or 2).
        threads: ``--threads`` as given, None when left out.
        sequential: ``--sequential`` was given.
        cores: the CPU cores this process may use.

    Examples:
        >>> sequential_reason(device="cpu", models=2, threads=None, sequential=False, cores=2) is None
        True
        >>> sequential_reason(device="cpu", models=2, threads=None, sequential=False, cores=1)
        'one CPU core'
    """
    if models < 2:
        return "one model"
    if sequential:
        return "--sequential"
    if not device == "cpu":
        return "on a GPU"  # two trainings would share one GPU; not measured, so not the default
    if threads is not None and threads > 1:
        return f"--threads {threads}"
    if cores < 2:
        return "one CPU core"
    return None


def _child(
    conn: Any, config: DemoConfig, dcl: bool, out: Path | None, counter: Any, start_method: str | None
) -> None:
    """One run in a spawned process: sends ``("ok", run_one's dict without the model, saved)`` or
    ``("error", one line, traceback)`` on ``conn``."""
    from .training import run_one

    # A spawned process inherits "spawn" as its default; its DataLoader worker is started the way a
    # single run's is (fork on Linux), by the parent's default.
    multiprocessing.set_start_method(start_method, force=True)
    if hasattr(os, "setpgid"):  # a group of its own, its DataLoader worker included: see _stop
        os.setpgid(0, 0)
    parent = os.getppid()

    def count(step: int, seconds: float) -> None:
        counter.value = step + 1
        if os.getppid() != parent:  # the demo was killed before it could stop this run: nobody waits
            os._exit(1)

    torch.set_num_threads(1)
    try:
        info = run_one(config, dcl=dcl, out=out, show_progress=False, on_step=count)
        info.pop("model")
        # torch.save rather than the pipe's own pickling: torch.multiprocessing would pass the tensors
        # through shared memory, which needs this process alive until the parent has read them.
        buffer = io.BytesIO()
        torch.save(info, buffer)
        conn.send(("ok", buffer.getvalue()))
    except BaseException as error:  # every failure, SystemExit included, reaches the parent as one line
        line = " ".join(f"{type(error).__name__}: {error}".split())
        conn.send(("error", line, traceback.format_exc()))
    finally:
        conn.close()


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while a run's process starts, so that it ignores it for its whole life.

    Ctrl-C in a terminal signals every process of the foreground group; a run interrupted at a random
    point (even while it imports) would print a traceback. The parent alone takes the interrupt and
    stops both runs (``train_both``'s ``finally``). Only the main thread may change signal handlers;
    elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop(process: Any) -> None:
    """End a run's process and whatever it started (its DataLoader worker), and wait for it.

    Each run makes its own process group (``_child``), so one signal to the group reaches the worker
    too, which would otherwise outlive its run by a few seconds; a run that has already ended is then
    a zombie of the group, which the signal leaves alone. Where there are no process groups, or the run
    has not made its group yet, the run alone is terminated."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except (AttributeError, ProcessLookupError, PermissionError):
        if process.is_alive():
            process.terminate()
    process.join()


@dataclass
class _Job:
    name: str
    process: Any
    conn: Any
    counter: Any
    result: dict[str, Any] | None = None


def train_both(config: DemoConfig, *, out: Path | None, show_progress: bool = True) -> list[dict[str, Any]]:
    """Train and evaluate the Baseline and the +DCL model at the same time, in two processes.

    Each process runs :func:`~densecontrast.demo.run_one` with one torch thread and writes its files
    under ``out`` as a single run does. One progress line counts both runs' steps; when a run ends, its
    summary is printed above it.

    Args:
        config: the run's configuration (both runs use it; the demo uses this path on the CPU only).
        out: the output folder, or None to write nothing.
        show_progress: show the progress line and the summaries.

    Returns:
        Baseline's then +DCL's dict of :func:`~densecontrast.demo.run_one`, without ``model``.

    Raises:
        ParallelRunError: a run raised or its process ended without a result; the other run is stopped.
            When ``out`` is given the failed run's traceback is written to ``<out>/<name>_error.txt``.
    """
    from multiprocessing.connection import wait

    from tqdm.auto import tqdm

    config = config.resolved()
    context = torch.multiprocessing.get_context("spawn")
    start_method = multiprocessing.get_start_method(allow_none=True)
    jobs: list[_Job] = []
    bar = tqdm(
        total=2 * config.steps,
        desc="training both",
        unit="step",
        disable=not show_progress,
        dynamic_ncols=True,
        file=sys.stdout,
        mininterval=0,  # the loop below redraws only when something changed
        miniters=1,
    )
    start = time.perf_counter()
    try:
        for dcl in (False, True):
            receive, send = context.Pipe(duplex=False)
            counter = context.Value("q", 0, lock=False)
            # not a daemon: a daemonic process may not start the DataLoader's worker
            process = context.Process(
                target=_child,
                args=(send, config, dcl, out, counter, start_method),
                name=f"densecontrast-demo-{NAMES[dcl]}",
            )
            with _sigint_ignored():
                process.start()
            send.close()  # the parent's copy: the pipe reads as ended once the child's end is closed
            jobs.append(_Job(NAMES[dcl], process, receive, counter))
        shown = ""
        while any(job.result is None for job in jobs):
            pending = [job for job in jobs if job.result is None]
            ready = wait(
                [job.conn for job in pending] + [job.process.sentinel for job in pending], timeout=0.5
            )
            for job in pending:
                if job.conn in ready or job.process.sentinel in ready:
                    job.result = result = _collect(job, out)
                    if show_progress:
                        bar.write(_summary(LABELS[job.name], result, time.perf_counter() - start))
            steps = [min(int(job.counter.value), config.steps) for job in jobs]
            state = ", ".join(
                f"{LABELS[job.name]} {_state(job, done, config.steps)}" for job, done in zip(jobs, steps)
            )
            if state != shown:  # redrawn on change only, so that a log file gets no repeated lines
                shown = state
                bar.set_postfix_str(state, refresh=False)
                if sum(steps) > bar.n:
                    bar.update(sum(steps) - bar.n)
                else:
                    bar.refresh()
    finally:
        bar.close()
        for job in jobs:
            _stop(job.process)
            job.conn.close()
    return [job.result for job in jobs if job.result is not None]


def _state(job: _Job, steps: int, total: int) -> str:
    """What a run is doing, for the progress line."""
    if job.result is not None:
        return "done"
    if steps >= total:
        return "evaluating"
    return f"step {steps}/{total}" if steps else "starting"


def _collect(job: _Job, out: Path | None) -> dict[str, Any]:
    """The result a child sent, or :class:`ParallelRunError` when it sent an error or nothing."""
    label = LABELS[job.name]
    try:
        message = job.conn.recv() if job.conn.poll() else None
    except EOFError:
        message = None
    if message is None:
        job.process.join(timeout=5)
        raise ParallelRunError(
            f"the {label} run's process ended without a result (exit code {job.process.exitcode})"
        )
    if message[0] == "error":
        where = ""
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{job.name}_error.txt").write_text(message[2])
            where = f" (traceback in {out / f'{job.name}_error.txt'})"
        raise ParallelRunError(f"the {label} run failed: {message[1]}{where}")
    info: dict[str, Any] = torch.load(io.BytesIO(message[1]), weights_only=False)
    return info


def _summary(label: str, result: dict[str, Any], seconds: float) -> str:
    """One line for a finished run: its training time, the time since both started, its mask AP."""
    metrics = result["metrics"]
    return (
        f"{label}: trained {metrics['config']['steps']} steps in {_clock(metrics['train_seconds'])} "
        f"and evaluated, done after {_clock(seconds)}; mask AP {100 * result['report'].ap:.1f}"
    )


def _clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m {rest:02d}s" if minutes else f"{rest}s"
