"""Where stage tasks run: in this process, in worker processes, or on a Ray cluster.

A task is a small picklable value handed to a top-level function, which writes its own output
under a name fixed by the task, never by the worker or the order tasks finish in, and sends back
only counts. So one worker, many workers and a Ray cluster write the same bytes. On a Ray cluster
of several machines the run folder must be on storage every node mounts (as Ray Data's own file
writers also require).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal, Protocol, TypeVar

from .errors import PipelineError

T = TypeVar("T")
R = TypeVar("R")
ExecutorName = Literal["local", "ray"]


class Executor(Protocol):
    workers: int

    def imap(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[tuple[int, R]]:
        """Yield ``(task index, result)`` as tasks finish, in any order."""
        ...

    def close(self) -> None: ...


def default_workers() -> int:
    return max(
        1,
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
    )


# How often a worker checks that its parent is alive where the OS cannot tell it (not Linux).
PARENT_POLL_S = 0.5
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """End this worker when ``parent`` dies, even by SIGKILL: a worker that outlived its run
    would go on writing parts from the old templates into a folder a new run is using.

    Linux delivers SIGKILL at the parent's death (PR_SET_PDEATHSIG); elsewhere a daemon thread
    watches for re-parenting. The check after prctl closes the race of a parent that died
    before the call."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="instructmix-parent-watch", daemon=True).start()


def _limit_memory(megabytes: int | None) -> None:
    if megabytes:
        import resource

        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _init_worker(parent: int, memory_mb: int | None) -> None:
    _die_with_parent(parent)
    _limit_memory(memory_mb)


class LocalExecutor:
    """Tasks in this process (``workers=1``) or in a pool of spawned worker processes.

    Workers die with this process, and may get an address-space limit (``memory_mb``,
    RLIMIT_AS) so a runaway render fails in its worker instead of exhausting the machine."""

    def __init__(self, workers: int | None = None, memory_mb: int | None = None) -> None:
        self.workers = workers if workers and workers > 0 else default_workers()
        self.memory_mb = memory_mb
        self._pool: ProcessPoolExecutor | None = None

    def imap(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[tuple[int, R]]:
        if self.workers == 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                yield i, fn(task)
            return
        if self._pool is None:
            # spawn, not fork: the parent may hold threads (Arrow, datasets) that fork would copy
            # in a locked state.
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(os.getpid(), self.memory_mb),
            )
        futures = {self._pool.submit(fn, task): i for i, task in enumerate(tasks)}
        try:
            for future in as_completed(futures):
                try:
                    result = future.result()
                except BrokenProcessPool:
                    raise PipelineError(
                        f"a worker process died while running {tasks[futures[future]]!r} "
                        "(killed by the OS, out of memory, or past limits.max_worker_memory_mb);"
                        " rerun to resume from the parts already written"
                    ) from None
                yield futures[future], result
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class RayExecutor:
    """The same tasks as Ray Data map tasks, on a local Ray or a cluster at ``address``."""

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise PipelineError(
                "--executor ray needs Ray: pip install 'instructmix[ray]'"
            ) from None
        self._ray = ray
        self._started_here = not ray.is_initialized()
        if self._started_here:
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "logging_level": logging.ERROR,
                "configure_logging": True,
            }
            if address:
                kwargs["address"] = address
            elif workers:
                kwargs["num_cpus"] = workers
            ray.init(**kwargs)
        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        self.workers = int(resources.get("CPU", 1))

    def imap(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[tuple[int, R]]:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        items = [{"index": i, "task": pickle.dumps(task)} for i, task in enumerate(tasks)]
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))

        def run_one(row: dict[str, Any]) -> dict[str, Any]:
            # Results travel pickled: Ray Data would otherwise try to turn them into columns.
            return {"index": row["index"], "result": pickle.dumps(fn(pickle.loads(row["task"])))}

        for row in ds.map(run_one, num_cpus=1).iter_rows():
            yield int(row["index"]), pickle.loads(row["result"])

    def close(self) -> None:
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(
    name: ExecutorName = "local",
    workers: int | None = None,
    address: str | None = None,
    memory_mb: int | None = None,
) -> Executor:
    if name == "ray":
        return RayExecutor(address, workers)
    if address:
        raise PipelineError("--address only applies to --executor ray")
    return LocalExecutor(workers, memory_mb)
