"""Reading every item of a dataset in order, for the exporters (COCO ground truth, YOLO).

Generating items in the main process runs torch with its default number of threads, which on a loaded
machine is far slower than one thread per item (oversubscription). DataLoader workers run
single-threaded, so from :data:`WORKER_MIN_ITEMS` items on the items come from one worker process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["WORKER_MIN_ITEMS", "iterate_items"]

WORKER_MIN_ITEMS = 16
"""From this many items on, :func:`iterate_items` generates them in a DataLoader worker."""


def iterate_items(dataset: Any, *, min_items_for_worker: int | None = None) -> Iterator[Any]:
    """The items ``dataset[0], dataset[1], ...`` in order, generated in a worker process when many.

    From ``min_items_for_worker`` items on the items come from
    ``DataLoader(dataset, batch_size=None, num_workers=1)``; torch's thread count in this process is left
    as it is. Fewer items are read in place (starting a worker would cost more than it saves). The items
    are the same either way, in the same order.

    Args:
        dataset: a map-style dataset (``len`` and integer indexing).
        min_items_for_worker: the size from which a worker is used; None (default) reads
            :data:`WORKER_MIN_ITEMS`.

    Examples:
        >>> [int(x) for x in iterate_items(torch.arange(3))]
        [0, 1, 2]
    """
    threshold = WORKER_MIN_ITEMS if min_items_for_worker is None else min_items_for_worker
    if len(dataset) >= threshold:
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=1)
        yield from loader
    else:
        for index in range(len(dataset)):
            yield dataset[index]
