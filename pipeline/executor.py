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
import importlib
import logging
import multiprocessing
import os
import pickle
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Generic, Literal, Protocol, TypeVar

from .errors import PipelineError

T = TypeVar("T")
R = TypeVar("R")
ExecutorName = Literal["local", "ray"]


class Executor(Protocol):
    workers: int

    def imap(
        self, fn: Callable[[T], R], tasks: Sequence[T], *, assist: bool = False
    ) -> Iterator[tuple[int, R]]:
        """Yield ``(task index, result)`` as tasks finish, in any order. ``assist``: this
        process may run some of the tasks itself while the workers are still starting (for
        tasks that run no user template, so need no worker's memory limit)."""
        ...

    def start(self) -> None:
        """Start the workers now rather than with the first task (a no-op where they run in
        this process or are already up)."""
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


def _die_with_parent(driver: int) -> None:
    """End this worker when the driver dies, even by SIGKILL: a worker that outlived its run
    would go on writing parts from the old templates into a folder a new run is using.

    A spawned worker's parent is the driver: Linux delivers SIGKILL at its death
    (PR_SET_PDEATHSIG), and elsewhere a daemon thread watches for re-parenting; the check
    after prctl closes the race of a parent that died before the call. A forked worker's
    parent is the fork server, which outlives the driver for as long as its workers hold the
    pipe it watches: a daemon thread waits on the driver itself."""
    parent = os.getppid()
    if parent != driver:
        threading.Thread(
            target=_exit_with, args=(driver,), name="instructmix-driver-watch", daemon=True
        ).start()
        return
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


def _exit_with(pid: int) -> None:
    """Return never; end this process as soon as process ``pid`` has ended."""
    try:
        # A pidfd becomes readable when the process exits (Linux 5.3 and later).
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):
        while _alive(pid):
            time.sleep(PARENT_POLL_S)
        os._exit(1)
    waiting = select.poll()
    waiting.register(fd, select.POLLIN)
    waiting.poll()
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    return True


def _limit_memory(megabytes: int | None) -> None:
    if megabytes:
        import resource

        limit = megabytes * 1024 * 1024
        if resource.getrlimit(resource.RLIMIT_AS) != (limit, limit):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


# What workers need imported before their first task: the stage tasks' module, half a second
# of imports. The fork server imports it once and forks every worker from there.
PRELOAD = ("pipeline.stages",)


def _init_worker(driver: int, environ: dict[str, str]) -> None:
    from .heap import keep_freed_memory

    _die_with_parent(driver)
    keep_freed_memory()
    # A forked worker has the fork server's environment, from when the server started: give it
    # the driver's, as a spawned process would have (cache folders, offline flags).
    if os.environ != environ:
        os.environ.clear()
        os.environ.update(environ)
    for name in PRELOAD:
        importlib.import_module(name)


def _call(fn: Callable[[T], R], task: T, memory_mb: int | None) -> R:
    # The limit travels with each task, not in the initializer: a pool started before the
    # recipe (which sets the limit) is read still gets it before any task runs.
    _limit_memory(memory_mb)
    return fn(task)


def _ready() -> None:
    """The task ``start`` hands each new spawned worker: nothing, once it has started."""


def _context() -> multiprocessing.context.BaseContext:
    """Fork server where the platform has one, else spawn; never a plain fork, since this
    process may hold threads (Arrow, datasets, progress bars) that fork would copy in a
    locked state. The fork server is a fresh interpreter with no threads of ours: it imports
    ``PRELOAD`` once, and each worker forked from it starts in milliseconds with those imports
    done and their pages shared, where a spawned one is a new interpreter that imports them
    again (about 0.6 s of a core each). It lives until this process exits."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))  # no effect once the server runs: it is the same list
    return ctx


# How long the driver waits for its workers before it reads load's shards itself, when the fork
# server was running before the pool started (the console script starts it ahead: see
# ``launch.py``): forking two workers from a server that has done its imports took 50-60 ms.
WARM_SERVER_GRACE_S = 0.1


def fork_server_running() -> bool:
    """Whether this process's fork server is running (multiprocessing keeps no public flag:
    where its internals differ, False, and the driver never waits for its workers)."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    return getattr(server, "_forkserver_pid", None) is not None


def start_fork_server() -> bool:
    """Start the fork server the workers are forked from, without waiting for its imports
    (``PRELOAD``); False where the platform has none (workers are then spawned). Idempotent:
    the server lives until this process exits, and a pool started later uses the same one."""
    if _context().get_start_method() != "forkserver":
        return False
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return True


class LocalExecutor:
    """Tasks in this process (``workers=1``) or in a pool of worker processes (forked from a
    fork server, or spawned where there is none).

    Workers die with this process, and may get an address-space limit (``memory_mb``,
    RLIMIT_AS) so a runaway render fails in its worker instead of exhausting the machine.
    ``memory_mb`` may be set after ``start``: every task applies it before it runs."""

    def __init__(self, workers: int | None = None, memory_mb: int | None = None) -> None:
        self.workers = workers if workers and workers > 0 else default_workers()
        self.memory_mb = memory_mb
        self._pool: ProcessPoolExecutor | None = None
        self._up = False  # whether the workers have run a task (then nothing waits to start)
        # Whether the fork server had started before this pool: then its workers are forked
        # in milliseconds, and the driver leaves load's shards to them (``WARM_SERVER_GRACE_S``).
        self._server_was_running = False

    def start(self) -> None:
        """Start the workers' imports now, so they overlap the driver's own work (preparing
        the recipe) instead of delaying the first tasks: the fork server starts and imports,
        without waiting for it; where there is none, the workers are spawned."""
        if self.workers == 1 or self._pool is not None:
            return
        self._server_was_running = fork_server_running()
        if start_fork_server():
            return  # forking a worker waits for the server: the first tasks do it
        pool = self._started()
        # The pool spawns a process for each task submitted while none is idle: one no-op per
        # worker brings them all up without waiting for them.
        for _ in range(self.workers):
            pool.submit(_ready)

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_context(),
                initializer=_init_worker,
                initargs=(os.getpid(), dict(os.environ)),
            )
        return self._pool

    def imap(
        self, fn: Callable[[T], R], tasks: Sequence[T], *, assist: bool = False
    ) -> Iterator[tuple[int, R]]:
        if self.workers == 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                yield i, fn(task)
            return
        futures: dict[Future[R], int] = {}
        try:
            pool = self._started()
            first = 0
            if assist and not self._up and self.memory_mb is None:
                # Forking the first workers waits for the fork server's imports (half a second
                # of a core): this process runs tasks meanwhile, and a thread hands the rest to
                # the workers the moment they are up.
                claims: _Claims[R] = _Claims(len(tasks))
                feeder = threading.Thread(
                    target=self._feed,
                    args=(pool, fn, tasks, claims),
                    name="instructmix-pool-feeder",
                    daemon=True,
                )
                feeder.start()
                futures = claims.futures
                if self._server_was_running:
                    # Workers of a server that has done its imports are up before the driver
                    # would finish a shard: with one shard in the driver and seven left for
                    # two workers, the last one ran alone (load on two workers, eleven
                    # alternating runs: 0.87 against 0.91 s).
                    claims.up.wait(WARM_SERVER_GRACE_S)
                try:
                    while (taken := claims.take(driver=True)) is not None:
                        yield taken, fn(tasks[taken])
                except BaseException:
                    claims.stop()
                    raise
                if not claims.up.is_set():
                    return  # every task ran here; the thread goes on bringing the workers up
                feeder.join()
                if claims.error is not None:
                    raise claims.error
                first = len(tasks)  # each task is done here or submitted by the thread
            for i in range(first, len(tasks)):
                futures[pool.submit(_call, fn, tasks[i], self.memory_mb)] = i
            for future in as_completed(futures):
                try:
                    result = future.result()
                except BrokenProcessPool:
                    raise _died(f"while running {tasks[futures[future]]!r}") from None
                yield futures[future], result
        except BrokenProcessPool:  # from submit: a worker died before this map (at its start)
            for future in futures:
                future.cancel()
            raise _died(f"while running {tasks[len(futures)]!r}") from None
        except BaseException:
            for future in list(futures):
                future.cancel()
            raise

    def _feed(
        self,
        pool: ProcessPoolExecutor,
        fn: Callable[[T], R],
        tasks: Sequence[T],
        claims: _Claims[R],
    ) -> None:
        """Bring every worker up (one no-op each), then submit the tasks nobody has taken."""
        try:
            for probe in [pool.submit(_ready) for _ in range(self.workers)]:
                probe.result()
            self._up = True
            with claims.lock:  # from here on this thread takes every task left
                claims.up.set()
            while (i := claims.take()) is not None:
                claims.futures[pool.submit(_call, fn, tasks[i], self.memory_mb)] = i
        except BrokenProcessPool:
            claims.error = _died("while starting")
        except BaseException as exc:  # a pool shut down under it: the run has ended
            claims.error = exc
        finally:
            claims.up.set()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
            self._up = False


class _Claims(Generic[R]):
    """Task indices handed out once each, to the driver or the feeder thread."""

    def __init__(self, n: int) -> None:
        self._next = 0
        self._n = n
        self.lock = threading.Lock()
        self.up = threading.Event()  # set once the workers run (or could not start)
        self.futures: dict[Future[R], int] = {}
        self.error: BaseException | None = None

    def take(self, driver: bool = False) -> int | None:
        """The next task's index; None once all are taken (for the driver: or the workers are
        up, which then take the rest)."""
        with self.lock:
            if self._next >= self._n or (driver and self.up.is_set()):
                return None
            self._next += 1
            return self._next - 1

    def stop(self) -> None:
        with self.lock:
            self._n = self._next


def _died(doing: str) -> PipelineError:
    return PipelineError(
        f"a worker process died {doing} "
        "(killed by the OS, out of memory, or past limits.max_worker_memory_mb);"
        " rerun to resume from the parts already written"
    )


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

    def start(self) -> None:
        pass  # ray.init, in the constructor, has started the cluster's workers

    def imap(
        self, fn: Callable[[T], R], tasks: Sequence[T], *, assist: bool = False
    ) -> Iterator[tuple[int, R]]:
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
