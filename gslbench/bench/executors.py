"""Where bench's cells run: this process, local worker processes, or Ray tasks on a cluster.

Every executor is a `concurrent.futures.Executor` with a `capacity` (how many cells it runs at
once), so one dispatch loop (`gslbench.bench`) serves them all.

Local worker processes die with the bench process, however it ends: killed, the OS kills them
(Linux's parent-death signal, and a watchdog thread that sees the parent gone on any system);
interrupted or terminated, the bench kills them before it exits. They share the bench's open lock
file, so its lock stays held until the last of them has exited.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import reduction
from typing import IO, Any

from tqdm.std import tqdm

from gslbench.devices import resolve_device
from gslbench.errors import GslbenchError
from gslbench.threads import cpu_count

EXECUTORS = ("local", "ray")


def check_executor_options(name: str, jobs: int | None, cpus_per_cell: int | None,
                           address: str | None) -> None:
    """An executor's name, counts and address (not its device, whose check loads torch): a
    one-line user error for a bad one; bench --dry-run checks these alone."""
    if name not in EXECUTORS:
        raise GslbenchError(f"unknown executor {name!r}; known: {', '.join(EXECUTORS)}")
    for option, value in (("-j/--jobs", jobs), ("--cpus-per-cell", cpus_per_cell)):
        if value is not None and value < 1:
            raise GslbenchError(f"{option} must be at least 1, got {value}")
    if address and name != "ray":
        raise GslbenchError("--address needs --executor ray")


@dataclass(frozen=True)
class ExecutorConfig:
    """How bench runs its cells.

    local: `jobs` worker processes (jobs 1: in this process), each cell with `cpus_per_cell`
    torch/faiss threads (default: this machine's CPUs // jobs).
    ray: each cell a Ray task that asks for `cpus_per_cell` CPUs (default 1) and uses that many
    threads, on the cluster at `address`, or on a local Ray instance with jobs x cpus_per_cell
    CPUs (all of this machine's when `jobs` is None).
    device: where each cell's torch steps run (`gslbench.devices`: auto, cpu, cuda, mps).
    """

    name: str = "local"
    jobs: int | None = None
    cpus_per_cell: int | None = None
    address: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        check_executor_options(self.name, self.jobs, self.cpus_per_cell, self.address)
        resolve_device(self.device)  # a device torch does not see fails here, before any cell

    @property
    def threads(self) -> int:
        """The torch/faiss threads of one cell."""
        if self.cpus_per_cell is not None:
            return self.cpus_per_cell
        return 1 if self.name == "ray" else max(1, cpu_count() // (self.jobs or 1))

    def make(self, lock: IO | None = None) -> Executor:
        """A started executor; use it as a context manager so that it shuts down. `lock`: the
        bench's open lock file, which local worker processes hold too."""
        if self.name == "ray":
            return RayExecutor(self.threads, self.address, self.jobs)
        jobs = self.jobs or 1
        return InlineExecutor() if jobs == 1 else LocalExecutor(jobs, lock)


class InlineExecutor(Executor):
    """Runs each cell in this process when it is submitted (`-j 1`): no worker start-up cost."""

    capacity = 1

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # the dispatch loop reports it as the cell's failure
            future.set_exception(exc)
        return future


class LocalExecutor(ProcessPoolExecutor):
    """`jobs` worker processes, started by spawn (forking a process that holds torch is unsafe).

    Each worker dies with this process and holds `lock` (an open file) while it lives. Leaving the
    `with` block on an exception (Ctrl-C, SIGTERM, an error) kills the workers instead of waiting
    for their cells."""

    def __init__(self, jobs: int, lock: IO | None = None) -> None:
        inherited = None if lock is None else InheritedFd(lock.fileno())
        super().__init__(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                         initializer=_init_worker, initargs=(os.getpid(), inherited))
        self.capacity = jobs

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> Any:
        if exc_type is not None:
            for process in list(self._processes.values()):
                process.kill()
        return super().__exit__(exc_type, exc, traceback)


class InheritedFd:
    """A file descriptor passed to a spawned worker: the worker gets the same open file (so it
    shares an flock held on it); `fd` is the descriptor's number in the process that holds it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple:
        # DupFd asks the process being spawned to inherit the descriptor
        return _inherit_fd, (reduction.DupFd(self.fd),)


def _inherit_fd(duplicate: Any) -> InheritedFd:
    return InheritedFd(duplicate.detach())


PR_SET_PDEATHSIG = 1
PARENT_POLL_SECONDS = 0.5


def _init_worker(parent: int, lock: InheritedFd | None) -> None:
    """Set up a worker to die with the bench process `parent`. `lock`, the bench's lock file,
    arrives open (inheriting it is the point) and stays open until the worker exits.

    The worker's progress bars (training's) take a thread lock: tqdm's default adds a
    multiprocessing lock, a named semaphore that a killed worker leaves to the resource tracker,
    which then warns as the bench exits; a spawned worker shares no lock with others anyway."""
    if sys.platform.startswith("linux"):  # the kernel sends SIGKILL when the parent dies
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    tqdm.set_lock(threading.RLock())


def _exit_with_parent(parent: int) -> None:
    """Kill this process as soon as its parent `parent` is gone (it is then re-parented)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGKILL)


class RayExecutor(Executor):
    """Cells as Ray tasks of `cpus_per_cell` CPUs, on the cluster at `address` or a local instance.

    The workers must import gslbench and see the data and results folders at the same paths
    (on a cluster: the same install on every node and a shared filesystem).
    """

    def __init__(self, cpus_per_cell: int, address: str | None, jobs: int | None) -> None:
        try:
            import ray
        except ImportError:
            raise GslbenchError("--executor ray needs Ray: pip install 'gslbench[ray]'") from None
        self._ray = ray
        self._cpus_per_cell = cpus_per_cell
        self._remote: dict[Callable, Any] = {}
        self._started = not ray.is_initialized()
        if self._started:
            try:
                if address:
                    _check_reachable(address)
                    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
                else:
                    ray.init(num_cpus=jobs * cpus_per_cell if jobs else None,
                             include_dashboard=False, log_to_driver=False,
                             logging_level=logging.WARNING)  # no INFO lines of Ray's own
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise GslbenchError(f"cannot start Ray{f' at {address}' if address else ''}: "
                                    f"{str(exc).splitlines()[0]}") from None
        cpus = int(ray.cluster_resources().get("CPU", 0))
        self.capacity = cpus // cpus_per_cell
        if self.capacity < 1:
            self.shutdown()
            raise GslbenchError(f"the Ray cluster has {cpus} CPUs, fewer than --cpus-per-cell "
                                f"{cpus_per_cell}")

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(num_cpus=self._cpus_per_cell)(fn)
        future: Future = Future()
        task = self._remote[fn].remote(*args, **kwargs).future()
        task.add_done_callback(lambda done: _relay(done, future, self._ray.exceptions.RayTaskError))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()


def _check_reachable(address: str) -> None:
    """Fail fast on a HOST:PORT that does not answer (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # "auto", "ray://...": Ray resolves them
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise GslbenchError(f"cannot reach a Ray cluster at {address} ({exc})") from None


def _relay(done: Future, future: Future, task_error: type[Exception]) -> None:
    """Copy a Ray task's outcome into `future`; an error raised in the task arrives as itself."""
    try:
        future.set_result(done.result())
    except task_error as exc:
        future.set_exception(exc.cause or exc)
    except Exception as exc:  # a worker crash and the like: the cell failed
        future.set_exception(exc)
