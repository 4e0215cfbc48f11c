"""Every random choice in the pipeline comes from here.

A choice is a pure function of the recipe seed and stable ids (source, example id, template id),
never of the order rows arrive in, the number of workers, or the clock; so any subset of the work
can be redone anywhere and give the same answer.
"""

from __future__ import annotations

import hashlib
import random


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
