"""How a stage's loop uses the process's memory: fewer garbage collections, and Arrow buffers
from the C library's allocator.

Python's cyclic collector runs a young collection every 700 new container objects and, as the
objects that survive them pile up, full collections that walk every tracked object of the
process: the imported modules, the catalog, the compiled templates, and the part's records
built so far. Within ``stage_heap()`` the objects that exist when it starts are frozen (left out
of every collection until it ends) and a young collection waits for 10,000 new objects; cyclic
garbage made inside is still collected. Render+validate of 240,000 e-SNLI records took 0.89
of its time so (median of eight alternating runs on the 2-core VM).

Arrow's default allocator (mimalloc in pyarrow's wheels) hands the pages of each freed part
back to the system, and the next part touches new ones; on a VM whose host reclaims free guest
pages that costs about 10 ms per MB. The C library's allocator keeps and reuses them: the same
render+validate took 0.82 of its time with it (eight alternating runs, every one faster), and
load 0.76. Buffers remember the allocator they came from, so they are freed correctly after
the block.

Both settings are the process's own, so they are restored on the way out, and only the
outermost of nested blocks (a part inside a stage) changes them. The mix and the export, which
read many tables one after another with the default allocator, hand its free pages back every
100,000 rows (``FreedMemory``) so its retained memory does not grow with the run.
"""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

YOUNG_THRESHOLD = 10_000

# glibc's mallopt parameters, and what a worker process sets them to (see keep_freed_memory).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 512 * 2**20
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks up to it come from the heap

_kept: list[bool] = []

_state = threading.local()


@contextmanager
def stage_heap() -> Iterator[None]:
    depth = getattr(_state, "depth", 0)
    _state.depth = depth + 1
    if depth:
        try:
            yield
        finally:
            _state.depth = depth
        return
    threshold = gc.get_threshold()
    pool = pa.default_memory_pool()
    gc.freeze()
    gc.set_threshold(max(YOUNG_THRESHOLD, threshold[0]), *threshold[1:])
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(pool)
        gc.set_threshold(*threshold)
        gc.unfreeze()
        _state.depth = depth


class FreedMemory:
    """Hands the memory Arrow's allocator holds free back to the system every ``rows`` rows
    passed. The default pool (mimalloc) keeps the pages of freed buffers, and what it keeps
    grows with how many tables were read and built, not with what is alive: reading the
    10,000-row groups of a mixture one at a time peaked at 157 MB for 100,000 records and
    192 MB for a million, and at 107 and 111 MB with a release after each. A release costs
    about a millisecond."""

    def __init__(self, rows: int = 100_000) -> None:
        self.rows = rows
        self._since = 0

    def passed(self, rows: int) -> None:
        self._since += rows
        if self._since >= self.rows:
            pa.default_memory_pool().release_unused()
            self._since = 0


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep the memory a worker frees for its next part: by default it
    hands back the free top of its heap past 128 KiB and maps big blocks on their own, so each
    part touched thousands of new pages again. Ten e-SNLI parts of 24,000 records in one
    process: 20-21k page faults instead of 34-49k (three alternating runs; the time, 2.60-2.72
    s against 2.58-2.74 s, did not move then, but a fault has cost up to 40 us on this VM when
    its host reclaims free pages, see above). For worker processes only, which hold no
    more than a part: a process that goes on to mix keeps glibc's defaults. Returns whether
    glibc took both settings (False elsewhere)."""
    ok = False
    if sys.platform.startswith("linux"):
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc
            mallopt = None
        if mallopt is not None:
            ok = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(
                mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            )
    _kept[:] = [ok]
    return ok


def keeps_freed_memory() -> bool:
    """Whether ``keep_freed_memory`` has run in this process and glibc took its settings."""
    return bool(_kept and _kept[0])
