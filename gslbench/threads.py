"""The CPU threads torch and faiss use: set per bench cell, recorded in every result file.

Some results depend on the thread count (on digits, a GSL run with RQ gives other codes at 1 and 2
threads, and mAPs can differ in their last digits), so a result is reproducible at a fixed thread
count, and config.json / metrics.json record it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from gslbench.lazy import lazy_import

faiss = lazy_import("faiss")
torch = lazy_import("torch")


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def thread_counts() -> dict[str, int]:
    """The threads torch and faiss (OpenMP) use now: {"torch": n, "faiss": m}."""
    return {"torch": torch.get_num_threads(), "faiss": faiss.omp_get_max_threads()}


@contextlib.contextmanager
def limit_threads(threads: int) -> Iterator[None]:
    """Run the block with `threads` torch and faiss threads, then restore the previous counts."""
    before = thread_counts()
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before["torch"])
        faiss.omp_set_num_threads(before["faiss"])
