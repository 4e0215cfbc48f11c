"""Every random choice in the pipeline comes from here.

A choice is a pure function of the recipe seed and stable ids (source, example id, template id),
never of the order rows arrive in, the number of workers, or the clock; so any subset of the work
can be redone anywhere and give the same answer.
"""

from __future__ import annotations

import functools
import hashlib
import random
import struct
from collections.abc import Iterable
from typing import Any


def _digest(*parts: object) -> bytes:
    # Unit separators keep ("ab", "c") and ("a", "bc") apart.
    joined = "\x1f".join(str(p) for p in parts)
    return hashlib.blake2b(joined.encode("utf-8"), digest_size=16).digest()


def stable_id(*parts: object) -> str:
    """A 32-hex-digit id for a tuple of stable parts."""
    return _digest(*parts).hex()


def stable_key(*parts: object) -> int:
    """A 64-bit sort key: ordering by it is a seeded shuffle that ignores arrival order."""
    return int.from_bytes(_digest(*parts)[:8], "big")


def stable_keys(n: int, *parts: object) -> list[int]:
    """``n`` independent 64-bit keys from one hash: for a group of decisions about one item."""
    joined = "\x1f".join(str(p) for p in parts)
    digest = hashlib.blake2b(joined.encode("utf-8"), digest_size=8 * n).digest()
    return [int.from_bytes(digest[8 * i : 8 * i + 8], "big") for i in range(n)]


def stable_unit(*parts: object) -> float:
    """A number in [0, 1) for threshold decisions (e.g. which examples go to validation)."""
    return stable_key(*parts) / 2**64


def stable_rng(*parts: object) -> random.Random:
    """A private generator for one decision; never the process-wide ``random``."""
    return random.Random(stable_key(*parts))


class Prefix:
    """The hashes above for parts that share their first ones, without joining those again.

    ``Prefix(seed, "draw", source).keys(5, example_id, template_id)`` equals
    ``stable_keys(5, seed, "draw", source, example_id, template_id)``: the hot path draws for
    every record with a few fixed parts, and joining and encoding them each time was a third of
    the cost of a draw.
    """

    __slots__ = ("_head", "_started")

    def __init__(self, *parts: object) -> None:
        self._head = ("\x1f".join(str(p) for p in parts) + "\x1f").encode("utf-8")
        # The hash with the head already fed in, per digest size: copying it is half the cost
        # of starting afresh.
        self._started: dict[int, Any] = {}

    def _start(self, size: int) -> Any:
        started = self._started.get(size)
        if started is None:
            started = self._started[size] = hashlib.blake2b(self._head, digest_size=size)
        return started

    def head(self, size: int) -> Any:
        """The hash with the fixed parts and their separator fed in: ``head(8 * n).copy()``,
        updated with the rest joined by ``"\x1f"``, digests to what ``keys(n, *rest)`` unpacks
        (``words(n)``), for a loop that draws for many records without a call each."""
        return self._start(size)

    def _digest(self, rest: tuple[object, ...], size: int) -> bytes:
        h = self._start(size).copy()
        h.update("\x1f".join(map(str, rest)).encode("utf-8"))
        return h.digest()  # type: ignore[no-any-return]

    def id(self, *rest: object) -> str:
        return self._digest(rest, 16).hex()

    def ids(self, rows: Iterable[tuple[str, ...]]) -> list[str]:
        """``id(*row)`` for every row of strings, in one loop (a part's record ids)."""
        started = self._start(16)
        out: list[str] = []
        for row in rows:
            h = started.copy()
            h.update("\x1f".join(row).encode("utf-8"))
            out.append(h.hexdigest())
        return out

    def key(self, *rest: object) -> int:
        return int.from_bytes(self._digest(rest, 16)[:8], "big")

    def keys(self, n: int, *rest: object) -> tuple[int, ...]:
        return words(n).unpack(self._digest(rest, 8 * n))

    def rng(self, *rest: object) -> random.Random:
        return random.Random(self.key(*rest))


@functools.cache
def words(n: int) -> struct.Struct:
    # n big-endian 64-bit words: the same numbers as int.from_bytes on each 8-byte slice.
    return struct.Struct(f">{n}Q")
