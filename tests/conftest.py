"""Shared test configuration: importable helpers, hypothesis profiles, device fixtures."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile(
    "default", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

# Nothing in the suite may reach the network (Ultralytics' online checks, the Hugging Face hub).
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# One intra-op thread: the suite's ops are small, and on a loaded 2-core machine (a shared CI runner,
# parallel jobs) a second thread makes every op wait at its barrier, which made the adapter tests about 10x
# slower. DENSECONTRAST_TEST_THREADS=N sets another count.
torch.set_num_threads(int(os.environ.get("DENSECONTRAST_TEST_THREADS", "1")))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return str(request.param)
