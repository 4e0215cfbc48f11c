"""Jinja helpers available to every template, registered in one place.

Randomness in a template comes from a generator private to one record, seeded from the recipe
seed, the source, the example id and the template id; the process-wide ``random`` is never used,
so a template that shuffles renders the same text on every run, worker and machine.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import jinja2

SEEDED_NAMES = frozenset({"choice", "shuffle", "sample", "randint"})


def seeded_helpers(rng: random.Random) -> dict[str, Callable[..., Any]]:
    """Globals bound to one record's generator: choice, shuffle, sample, randint."""

    def choice(items: Sequence[Any]) -> Any:
        if not items:
            raise ValueError("choice() of an empty sequence")
        return items[rng.randrange(len(items))]

    def shuffle(items: Sequence[Any]) -> list[Any]:
        out = list(items)
        rng.shuffle(out)
        return out

    def sample(items: Sequence[Any], k: int) -> list[Any]:
        return rng.sample(list(items), k)

    def randint(a: int, b: int) -> int:
        return rng.randint(a, b)

    return {"choice": choice, "shuffle": shuffle, "sample": sample, "randint": randint}


def truncate_chars(text: str, limit: int, end: str = "...") -> str:
    """Cut ``text`` to at most ``limit`` characters, at a word boundary when there is one."""
    text = str(text)
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - len(end))]
    if " " in cut:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip() + end


def truncate_words(text: str, limit: int, end: str = "...") -> str:
    words = str(text).split()
    return text if len(words) <= limit else " ".join(words[:limit]) + end


def bullet_list(items: Sequence[Any], marker: str = "- ") -> str:
    return "\n".join(f"{marker}{item}" for item in items)


def numbered_list(items: Sequence[Any], start: int = 1) -> str:
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, start))


def lettered_list(items: Sequence[Any]) -> str:
    return "\n".join(f"({letter(i)}) {item}" for i, item in enumerate(items))


def or_list(items: Sequence[Any], conjunction: str = "or") -> str:
    """``a, b or c``: choices written into a sentence."""
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def letter(index: int) -> str:
    if not 0 <= index < 26:
        raise ValueError(f"no letter for option {index}")
    return chr(ord("A") + index)


FILTERS: dict[str, Callable[..., Any]] = {
    "truncate_chars": truncate_chars,
    "truncate_words": truncate_words,
    "bullet_list": bullet_list,
    "numbered_list": numbered_list,
    "lettered_list": lettered_list,
    "or_list": or_list,
}

GLOBALS: dict[str, Callable[..., Any]] = {"letter": letter, "zip": zip}


def install(env: jinja2.Environment) -> None:
    """Register the filters and globals that do not depend on a record."""
    env.filters.update(FILTERS)
    env.globals.update(GLOBALS)
