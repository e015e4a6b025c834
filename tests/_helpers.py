"""Helpers that several test modules share: a recording criterion, released references, threads,
examples, DataLoaders."""

from __future__ import annotations

import gc
import importlib.util
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import Tensor, nn

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class RecordingCriterion(nn.Module):
    """A stand-in for the loss given to ``attach(model, criterion=...)``: keeps the ``(feats, masks)`` of
    every call in ``seen`` (features detached) and returns ``feats.float().pow(2).mean()``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[Tensor, Tensor]] = []

    def forward(self, feats: Tensor, masks: Tensor) -> Tensor:
        self.seen.append((feats.detach(), masks))
        return feats.float().pow(2).mean()


def is_released(ref: weakref.ref[Any]) -> bool:
    """Whether the object behind ``ref`` is gone once every unreachable reference cycle is collected.

    A full ``gc.collect()`` takes up to a second in a process that holds a whole test session, so it
    runs only when the object is still alive without it: the answer is the same as collecting first.
    """
    if ref() is None:
        return True
    gc.collect()
    return ref() is None


def run_in_threads(fn: Callable[[int], None], args: Sequence[int]) -> None:
    """Run ``fn(arg)`` for every ``arg`` in a thread of its own, all started together, and wait for them.

    The threads pass a barrier before calling ``fn`` and the interpreter switches between threads every
    10 µs (restored afterwards), so the calls interleave as much as they can. An exception raised in a
    thread fails the caller with every thread's exception.
    """
    barrier = threading.Barrier(len(args))
    errors: list[BaseException] = []

    def body(arg: int) -> None:
        try:
            barrier.wait()
            fn(arg)
        except BaseException as err:
            errors.append(err)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=body, args=(arg,)) for arg in args]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (not a package) as the module ``<name>_example``."""
    spec = importlib.util.spec_from_file_location(f"{name}_example", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def record_loaders(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Make the data layer read through a worker process from 2 items on, and record the keyword
    arguments of every ``torch.utils.data.DataLoader`` created from then on (the list is returned)."""
    import densecontrast.data.iterate

    loaders: list[dict[str, Any]] = []

    class RecordingLoader(torch.utils.data.DataLoader):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            loaders.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(densecontrast.data.iterate, "WORKER_MIN_ITEMS", 2)
    monkeypatch.setattr(torch.utils.data, "DataLoader", RecordingLoader)
    return loaders
