"""Executors: worker processes and Ray give the bytes a single process gives."""

from __future__ import annotations

import multiprocessing
import os
import platform
import sys
import threading
from pathlib import Path

import pytest

import pipeline.executor as executor
from pipeline import Manifest, PipelineError, run_recipe
from pipeline.executor import LocalExecutor, make_executor
from pipeline.runfolder import RunFolder


def _square(x: int) -> int:
    return x * x


def _address_space_limit(_: int) -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_AS)[0]


def _crash(_: int) -> int:
    import os

    os._exit(9)  # a worker the OS kills (out of memory) looks like this to the pool


def _all_files(root: Path) -> dict[str, bytes]:
    keep = ("examples", "rendered", "valid", "mixed", "rejects", "dataset")
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] in keep
    }


def test_local_executor_returns_every_result_with_its_index() -> None:
    pool = LocalExecutor(2)
    try:
        assert sorted(pool.imap(_square, list(range(10)))) == [(i, i * i) for i in range(10)]
    finally:
        pool.close()


@pytest.mark.parametrize("assist", [False, True])
def test_workers_get_the_memory_limit_the_recipe_asks_for(assist: bool) -> None:
    # With assist the driver may run tasks while its workers start, but never under a limit:
    # the limit is what keeps a runaway task off the driver.
    pool = LocalExecutor(2, memory_mb=4096)
    try:
        tasks = [0, 1, 2]
        limits = {limit for _, limit in pool.imap(_address_space_limit, tasks, assist=assist)}
    finally:
        pool.close()
    assert limits == {4096 * 1024 * 1024}


def test_a_pool_started_early_gets_the_memory_limit_known_later() -> None:
    # `run` starts its workers before the recipe (which sets the limit) is read.
    pool = LocalExecutor(2)
    try:
        pool.start()
        pool.memory_mb = 4096
        limits = {limit for _, limit in pool.imap(_address_space_limit, [0, 1, 2])}
    finally:
        pool.close()
    assert limits == {4096 * 1024 * 1024}


def _worker_state(_: int) -> tuple[str | None, bool, int]:
    import os
    import sys

    return os.environ.get("INSTRUCTMIX_TEST_VALUE"), "pipeline.stages" in sys.modules, os.getppid()


def test_workers_start_with_the_stages_imported_and_the_drivers_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = LocalExecutor(2)
    try:
        list(first.imap(_worker_state, [0, 1]))  # the fork server is up from here on
    finally:
        first.close()
    # Set after the server started: a worker forked from it still sees the driver's value.
    monkeypatch.setenv("INSTRUCTMIX_TEST_VALUE", "set-later")
    pool = LocalExecutor(2)
    try:
        states = [state for _, state in pool.imap(_worker_state, [0, 1, 2, 3])]
    finally:
        pool.close()
    assert {(value, imported) for value, imported, _ in states} == {("set-later", True)}
    if "forkserver" in multiprocessing.get_all_start_methods():
        # Forked from the fork server, not spawned by this process.
        assert all(parent != os.getpid() for _, _, parent in states)


def _slow_pid(x: int) -> tuple[int, int]:
    import os
    import time

    time.sleep(0.3)
    return x, os.getpid()


def _fail_on_zero(x: int) -> int:
    if x == 0:
        raise ValueError("task 0 is bad")
    return x


def test_the_driver_runs_tasks_while_its_workers_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # Load's shards may run in the driver until the workers are up (forking them waits for the
    # fork server's imports): held back here until the driver has run two tasks itself.
    held = threading.Event()
    feed = LocalExecutor._feed

    def late_feed(self: LocalExecutor, *args: object) -> None:
        held.wait(timeout=30)
        feed(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalExecutor, "_feed", late_feed)
    pool = LocalExecutor(2)
    results = []
    try:
        for i, result in pool.imap(_slow_pid, list(range(8)), assist=True):
            results.append((i, result))
            if len(results) == 2:
                held.set()
    finally:
        pool.close()
    assert sorted(i for i, _ in results) == list(range(8))
    assert all(i == x for i, (x, _) in results)
    pids = [pid for _, (_, pid) in results]
    assert pids[:2] == [os.getpid()] * 2
    assert set(pids) - {os.getpid()}, "once up, the workers take the rest"


def test_with_the_fork_server_already_running_the_driver_leaves_the_tasks_to_its_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As under the console script, which starts the server before anything else: its workers
    # come up within the grace (made long here, so a slow machine cannot fail the test; the
    # driver waits only until they are up).
    monkeypatch.setattr(executor, "WARM_SERVER_GRACE_S", 60.0)
    assert executor.start_fork_server()
    pool = LocalExecutor(2)
    pool.start()
    try:
        results = list(pool.imap(_slow_pid, list(range(8)), assist=True))
    finally:
        pool.close()
    assert sorted(i for i, _ in results) == list(range(8))
    assert os.getpid() not in {pid for _, (_, pid) in results}


def test_a_task_failing_in_the_driver_raises_its_own_error() -> None:
    pool = LocalExecutor(2)
    try:
        with pytest.raises(ValueError, match="task 0 is bad"):
            list(pool.imap(_fail_on_zero, [0, 1, 2], assist=True))
        # The pool is still usable after the error.
        assert sorted(pool.imap(_square, [1, 2, 3])) == [(0, 1), (1, 4), (2, 9)]
    finally:
        pool.close()


def _keeps_freed_memory(_: int) -> bool:
    from pipeline.heap import keeps_freed_memory

    return keeps_freed_memory()


def test_workers_keep_the_memory_they_free_and_the_driver_does_not() -> None:
    from pipeline.heap import keeps_freed_memory

    pool = LocalExecutor(2, memory_mb=4096)  # a limit: every task runs in a worker
    try:
        kept = {flag for _, flag in pool.imap(_keeps_freed_memory, [0, 1, 2, 3])}
    finally:
        pool.close()
    expected = sys.platform.startswith("linux") and "glibc" in " ".join(platform.libc_ver())
    assert kept == {expected}
    assert not keeps_freed_memory()  # the driver's allocator is left as the user's process has it


def test_a_dead_worker_is_one_clear_error() -> None:
    pool = LocalExecutor(2)
    try:
        with pytest.raises(PipelineError, match=r"a worker process died .* rerun to resume"):
            list(pool.imap(_crash, [0, 1]))
    finally:
        pool.close()


def test_address_needs_ray() -> None:
    with pytest.raises(PipelineError, match="only applies to --executor ray"):
        make_executor("local", 2, "ray://somewhere:10001")


def test_ray_executor_matches_local_byte_for_byte(
    default_run: tuple[Path, Manifest], tmp_path: Path
) -> None:
    out, manifest = default_run
    ray_run = run_recipe(None, tmp_path / "ray", executor="ray", workers=2)
    assert ray_run.sources == manifest.sources
    # Every part, reject and export file, names included.
    assert _all_files(tmp_path / "ray") == _all_files(out)
    assert RunFolder(tmp_path / "ray").parts("rendered", "esnli")
