"""Shared test configuration: importable helpers, hypothesis profiles, device fixtures, shared data.

The session fixtures hold data that several modules read (build once, never change: copy before altering).
"""

from __future__ import annotations

import os
import sys
from typing import Any

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


@pytest.fixture(scope="session")
def coco_scene() -> tuple[dict, list[dict]]:
    """The analysis tests' scene: COCO ground truth of 25 synthetic 24 x 40 images and 12 scored results
    an image (``tests/_synthetic_coco.py``), as ``(gt, results)``."""
    from _synthetic_coco import synthetic_coco

    return synthetic_coco(25, dets_per_image=12, size=(24, 40), seed=3)


@pytest.fixture(scope="session")
def coco_scene_reports(coco_scene: tuple[dict, list[dict]]) -> dict:
    """``analyze`` of :func:`coco_scene` with each backend, by backend name."""
    from _coco_cases import BACKENDS

    from densecontrast.analysis import analyze

    gt, results = coco_scene
    return {b: analyze(gt, results, backend=b) for b in BACKENDS}


@pytest.fixture(scope="session")
def small_dataset() -> Any:
    """``SyntheticInstances(6, image_size=64, num_categories=4, seed=7)``: six small training images."""
    from densecontrast.data import SyntheticInstances

    return SyntheticInstances(6, image_size=64, num_categories=4, seed=7)


@pytest.fixture(scope="session")
def small_items(small_dataset: Any) -> list:
    """The ``(image, target)`` items of :func:`small_dataset`, in order."""
    return [small_dataset[i] for i in range(len(small_dataset))]
