"""One way to run per-image work on a bounded thread pool (numpy and OpenCV free the GIL)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def worker_count(workers: int | None, limit: int = 8) -> int:
    """The threads to use: as asked, else one per core up to `limit`."""
    return workers if workers is not None else min(limit, os.cpu_count() or 1)


def in_order(work: Callable[[Item], Result], items: Iterable[Item], workers: int,
             name: str = "depthprior") -> Iterator[Result]:
    """work(item) for each item, results in the items' order; no pool for one worker or item."""
    items = list(items)
    pool = ThreadPoolExecutor(workers, thread_name_prefix=name) \
        if workers > 1 and len(items) > 1 else None
    try:
        yield from (pool.map(work, items) if pool else map(work, items))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
