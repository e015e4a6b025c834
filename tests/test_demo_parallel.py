"""Tests of densecontrast.demo.parallel: when the demo trains its two models at once, and that doing so
changes nothing in the results."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")
pytest.importorskip("matplotlib")

from densecontrast.demo import DemoConfig, add_arguments, datasets, run, run_one
from densecontrast.demo import cli as demo_cli
from densecontrast.demo.parallel import ParallelRunError, _collect, _Job, sequential_reason, train_both

TINY = DemoConfig(steps=2, train_images=4, val_images=2, image_size=64)
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.parametrize(
    ("device", "models", "threads", "sequential", "cores", "expected"),
    [
        ("cpu", 2, None, False, 2, None),
        ("cpu", 2, 1, False, 2, None),  # --threads 1 is what each process uses anyway
        ("cpu", 2, None, False, 16, None),
        ("cpu", 2, None, False, 1, "one CPU core"),
        ("cpu", 2, 2, False, 8, "--threads 2"),
        ("cpu", 2, None, True, 8, "--sequential"),
        ("cpu", 1, None, False, 8, "one model"),
        ("cuda", 2, None, False, 8, "on a GPU"),
        ("cuda:1", 2, None, False, 8, "on a GPU"),
    ],
)
def test_sequential_reason(
    device: str, models: int, threads: int | None, sequential: bool, cores: int, expected: str | None
) -> None:
    reason = sequential_reason(
        device=device, models=models, threads=threads, sequential=sequential, cores=cores
    )
    assert reason == expected


class _Taken(Exception):
    """Raised by the stand-ins below to tell which path ``run`` took."""


@pytest.mark.parametrize(
    ("argv", "cores", "path"),
    [
        ([], 2, "parallel"),
        (["--threads", "1"], 2, "parallel"),
        ([], 1, "sequential"),
        (["--threads", "2"], 2, "sequential"),
        (["--sequential"], 2, "sequential"),
        (["--no-compare"], 2, "sequential"),
        (["--baseline"], 2, "sequential"),
    ],
)
def test_run_chooses_the_path(
    argv: list[str],
    cores: int,
    path: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def parallel(*args: object, **kwargs: object) -> None:
        raise _Taken("parallel")

    def sequential(*args: object, **kwargs: object) -> None:
        raise _Taken("sequential")

    monkeypatch.setattr(demo_cli, "train_both", parallel)
    monkeypatch.setattr(demo_cli, "run_one", sequential)
    monkeypatch.setattr(demo_cli, "available_cores", lambda: cores)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the suite's thread count
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--device", "cpu", "--steps", "1", "--image-size", "64", "--train-images", "4", *argv]
    )
    with pytest.raises(_Taken, match=f"^{path}$"):
        run(args)
    header = capsys.readouterr().out
    if path == "parallel":
        assert "two processes at once, 1 thread each" in header
    else:
        assert "two processes" not in header


def test_a_process_that_ends_without_a_result_is_an_error() -> None:
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=os._exit, args=(3,))
    process.start()
    send.close()
    process.join(timeout=60)
    job = _Job("dcl", process, receive, counter=None)
    with pytest.raises(
        ParallelRunError, match=r"^the \+DCL run's process ended without a result \(exit code 3\)$"
    ):
        _collect(job, None)
    receive.close()


@pytest.mark.slow
def test_parallel_results_equal_sequential_ones_bit_for_bit(tmp_path: Path) -> None:
    """The two runs in two processes give exactly what they give one after the other in this process
    (one thread each way): losses of every step, evaluation outputs, AP and error analysis, features."""
    data = datasets(TINY)
    sequential = [
        run_one(TINY, dcl=dcl, out=tmp_path / "seq", show_progress=False, datasets_=data)
        for dcl in (False, True)
    ]
    parallel = train_both(TINY, out=tmp_path / "par", show_progress=False)
    assert [r["name"] for r in parallel] == ["baseline", "dcl"]
    assert not multiprocessing.active_children()
    for one, other in zip(sequential, parallel):
        assert "model" not in other
        assert other["history"] == one["history"]
        assert ("loss_dcl" in other["history"][-1]) == (other["name"] == "dcl")
        assert other["report"].ap == one["report"].ap
        assert other["report"].to_dict() == one["report"].to_dict()
        assert len(other["outputs"]) == len(one["outputs"]) == TINY.val_images
        for a, b in zip(one["outputs"], other["outputs"]):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert all(torch.equal(a, b) for a, b in zip(one["features"], other["features"]))
        assert other["compactness"].to_dict() == one["compactness"].to_dict()
        assert other["metrics"]["threads"] == 1
        name = other["name"]
        losses = f"{name}_losses.json"
        assert (tmp_path / "par" / losses).read_bytes() == (tmp_path / "seq" / losses).read_bytes()
        saved = torch.load(tmp_path / "par" / f"{name}.pt", weights_only=True)
        expected = torch.load(tmp_path / "seq" / f"{name}.pt", weights_only=True)
        assert saved.keys() == expected.keys() and all(torch.equal(saved[k], expected[k]) for k in saved)


@pytest.mark.slow
def test_a_failing_run_exits_with_one_line_and_status_1(tmp_path: Path) -> None:
    """A run that raises in its process: the command prints one line naming the run and the error, the
    traceback goes to a file, the other process is stopped, the exit status is 1 (no hang)."""
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    tiny = ["--steps", "1", "--train-images", "4", "--val-images", "1", "--image-size", "64"]
    command = [sys.executable, "-m", "densecontrast", "demo", "--device", "cpu", *tiny]
    command += ["--backbone", "no_such_net", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("densecontrast demo: the ")
    assert "run failed: ValueError: backbone must be a torchvision ResNet name; got 'no_such_net'" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    failed = list(out.glob("*_error.txt"))
    assert len(failed) == 1 and "Traceback" in failed[0].read_text() and str(failed[0]) in lines[0]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups, SIGINT and /proc")
def test_ctrl_c_stops_both_runs_with_one_line_and_status_130(tmp_path: Path) -> None:
    """Ctrl-C in a terminal sends SIGINT to the whole foreground group: the demo's parent and both
    training processes. The command ends with one line (no traceback), the shell's status for SIGINT,
    and no process of its group left behind."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    tiny = ["--steps", "400", "--train-images", "8", "--val-images", "1", "--image-size", "64"]
    command = [sys.executable, "-m", "densecontrast", "demo", "--device", "cpu", "--no-progress", *tiny]
    process = subprocess.Popen(
        [*command, "--out", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own group, as a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not ignored, as in a shell
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # both training processes running: the parent's children
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        if not children.exists() or len(children.read_text().split()) >= 2:
            break
        time.sleep(0.2)
    time.sleep(3.0)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr
    assert stderr.strip().splitlines()[-1] == "densecontrast demo: interrupted"
    deadline = time.monotonic() + 10  # nothing of the session is left running (zombies wait for init)
    while _live_processes_of_session(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _live_processes_of_session(process.pid)


def _live_processes_of_session(session: int) -> list[int]:
    """The processes of a session that are not zombies, from /proc (Linux)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended while listed
            continue
        state, sid = fields[0], int(fields[3])
        if sid == session and state != "Z":
            live.append(int(stat.parent.name))
    return live
