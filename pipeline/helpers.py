"""Jinja helpers available to every template, registered in one place.

Randomness in a template comes from a generator private to one record, seeded from the recipe
seed, the source, the example id and the template id; the process-wide ``random`` is never used,
so a template that shuffles renders the same text on every run, worker and machine. That holds
for Jinja's own ``random`` filter too: it is replaced by one that draws from the same generator.

The helpers that build text size it first (``sandbox.build_text``), like every built-in filter.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any

import jinja2
from jinja2.runtime import Context
from jinja2.utils import pass_context

from .options import letter_marker
from .sandbox import MAX_TEXT, build_text, materialize, text_len

SEEDED_NAMES = frozenset({"choice", "shuffle", "sample", "randint"})
# Where a record's generator sits in the render context: not a Jinja name, so no template can
# read, print or shadow it.
RNG_KEY = "instructmix rng"
_WORD = re.compile(r"\S+")


def draws_randomness(names: Iterable[str], texts: Iterable[str]) -> bool:
    """Whether texts need their record's generator: they name a seeded helper, or may use the
    ``random`` filter (found by name, so also ``map('random')``)."""
    return bool(SEEDED_NAMES & set(names)) or any("random" in t for t in texts)


def seeded_helpers(rng: random.Random) -> dict[str, Any]:
    """Globals bound to one record's generator: choice, shuffle, sample, randint (and the
    generator itself, for the ``random`` filter)."""

    def choice(items: Sequence[Any]) -> Any:
        if not items:
            raise ValueError("choice() of an empty sequence")
        return items[rng.randrange(len(items))]

    def shuffle(items: Sequence[Any]) -> list[Any]:
        out = materialize(items, "shuffle()")
        rng.shuffle(out)
        return out

    def sample(items: Sequence[Any], k: int) -> list[Any]:
        return rng.sample(materialize(items, "sample()"), k)

    def randint(a: int, b: int) -> int:
        return rng.randint(a, b)

    return {
        "choice": choice,
        "shuffle": shuffle,
        "sample": sample,
        "randint": randint,
        RNG_KEY: rng,
    }


@pass_context
def seeded_random(context: Context, seq: Any) -> Any:
    """Jinja's ``random`` filter on the record's generator instead of the process-wide one."""
    rng = context.parent.get(RNG_KEY)
    if not isinstance(rng, random.Random):
        raise RuntimeError("the random filter draws from a record's generator; there is none here")
    items = seq if isinstance(seq, Sequence) else materialize(seq, "random")
    if not items:
        return context.environment.undefined("No random item, sequence was empty.")
    return items[rng.randrange(len(items))]


def _as_text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    n, wide = text_len(value, what)
    build_text(n, wide, what)
    return str(value)


def truncate_chars(text: str, limit: int, end: str = "...") -> str:
    """Cut ``text`` to at most ``limit`` characters, at a word boundary when there is one."""
    text = _as_text(text, "truncate_chars")
    if len(text) <= limit:
        return text
    build_text(max(0, limit) + len(end), not (text.isascii() and end.isascii()), "truncate_chars")
    cut = text[: max(0, limit - len(end))]
    if " " in cut:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip() + end


def truncate_words(text: str, limit: int, end: str = "...") -> str:
    """The first ``limit`` words of ``text``, joined by single spaces, then ``end``.

    Only the first ``limit + 1`` words are ever read, so a long text costs no list of all its
    words."""
    source = _as_text(text, "truncate_words")
    if limit < 0:
        words = source.split()
    else:
        words = [m.group() for m in islice(_WORD.finditer(source), limit + 1)]
    if len(words) <= limit:
        return text
    kept = words[:limit]
    chars = sum(map(len, kept)) + len(kept) + len(end)
    build_text(chars, not (source.isascii() and end.isascii()), "truncate_words")
    return " ".join(kept) + end


def _items_text(items: Iterable[Any], per_item: int, what: str) -> list[Any]:
    """``items`` as a list, after sizing the text a list filter writes for them."""
    listed = materialize(items, what)
    chars, wide = per_item * len(listed), False
    for item in listed:
        n, w = text_len(item, what)
        chars, wide = chars + n, wide or w
        if chars > MAX_TEXT:
            break
    build_text(chars, wide, what)
    return listed


def bullet_list(items: Sequence[Any], marker: str = "- ") -> str:
    listed = _items_text(items, len(str(marker)) + 1, "bullet_list")
    return "\n".join(f"{marker}{item}" for item in listed)


def numbered_list(items: Sequence[Any], start: int = 1) -> str:
    # Numbers up to start + a million items: the digits of start, and at most 7 more.
    digits = start.bit_length() // 3 + 8 if isinstance(start, int) else 24
    listed = _items_text(items, digits + 3, "numbered_list")
    return "\n".join(f"{i}. {item}" for i, item in enumerate(listed, start))


def lettered_list(items: Sequence[Any]) -> str:
    listed = _items_text(items, 5, "lettered_list")
    return "\n".join(f"({letter(i)}) {item}" for i, item in enumerate(listed))


def or_list(items: Sequence[Any], conjunction: str = "or") -> str:
    """``a, b or c``: choices written into a sentence."""
    listed = _items_text(items, 2, "or_list")
    build_text(len(str(conjunction)) + 2, False, "or_list")
    texts = [str(i) for i in listed]
    if len(texts) <= 1:
        return "".join(texts)
    return f"{', '.join(texts[:-1])} {conjunction} {texts[-1]}"


def letter(index: int) -> str:
    # The same markers as the options block, past Z too: (AA), (AB)...
    return letter_marker(index)


FILTERS: dict[str, Callable[..., Any]] = {
    "truncate_chars": truncate_chars,
    "truncate_words": truncate_words,
    "bullet_list": bullet_list,
    "numbered_list": numbered_list,
    "lettered_list": lettered_list,
    "or_list": or_list,
    "random": seeded_random,
}

GLOBALS: dict[str, Callable[..., Any]] = {"letter": letter, "zip": zip}


def install(env: jinja2.Environment) -> None:
    """Register the filters and globals that do not depend on a record."""
    env.filters.update(FILTERS)
    env.globals.update(GLOBALS)
