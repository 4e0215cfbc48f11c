"""A stage's loop runs with fewer garbage collections and Arrow buffers from the C library's
allocator, and leaves both as it found them."""

from __future__ import annotations

import gc
import weakref

import pyarrow as pa

from pipeline.heap import YOUNG_THRESHOLD, stage_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_objects_from_before_are_frozen_and_young_collections_wait_inside() -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with stage_heap():
        assert gc.get_freeze_count() > 0  # the modules, the catalog...: left out of collections
        assert gc.get_threshold()[0] == max(YOUNG_THRESHOLD, before[0])
        with stage_heap():  # a part inside a stage: the outer block's settings hold
            assert gc.get_threshold()[0] == max(YOUNG_THRESHOLD, before[0])
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_cycles_made_inside_are_still_collected() -> None:
    with stage_heap():
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None


def test_the_collector_is_restored_when_the_block_fails() -> None:
    before = gc.get_threshold()
    try:
        with stage_heap():
            raise RuntimeError("a part failed")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_arrow_allocates_from_the_system_allocator_inside_and_frees_after() -> None:
    before = pa.default_memory_pool().backend_name
    with stage_heap():
        assert pa.default_memory_pool().backend_name == "system"
        column = pa.array(["a part's text"] * 10_000)
        with stage_heap():
            assert pa.default_memory_pool().backend_name == "system"
    assert pa.default_memory_pool().backend_name == before
    assert column.to_pylist()[:1] == ["a part's text"]  # still readable after the block
    del column  # freed by the allocator it came from
