"""A stage's loop runs with fewer garbage collections, and leaves the collector as it found it."""

from __future__ import annotations

import gc
import weakref

from pipeline.heap import YOUNG_THRESHOLD, fewer_collections


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_objects_from_before_are_frozen_and_young_collections_wait_inside() -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with fewer_collections():
        assert gc.get_freeze_count() > 0  # the modules, the catalog...: left out of collections
        assert gc.get_threshold()[0] == max(YOUNG_THRESHOLD, before[0])
        with fewer_collections():  # a part inside a stage: the outer block's settings hold
            assert gc.get_threshold()[0] == max(YOUNG_THRESHOLD, before[0])
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_cycles_made_inside_are_still_collected() -> None:
    with fewer_collections():
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None


def test_the_collector_is_restored_when_the_block_fails() -> None:
    before = gc.get_threshold()
    try:
        with fewer_collections():
            raise RuntimeError("a part failed")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
