"""Decontamination: which training texts share an n-gram with evaluation data.

As in GPT-3 and open-instruct, texts are compared as sequences of word tokens, and a training
text is contaminated when it contains any n consecutive tokens (13 by default) of an evaluation
text. An evaluation text shorter than n tokens (a banking77 query has a dozen words, so no
13-gram) is matched as a whole contiguous sequence when it has at least ``min_tokens`` tokens;
a shorter one would match common phrases, so it is not indexed and is counted instead.

The index holds only the evaluation side: a 64-bit hash per n-gram in sorted numpy arrays, and
the evaluation vocabulary. Training texts stream past it in batches and leave nothing behind,
so memory grows with the evaluation data, never with the training data. A window whose hash is
in the index is a match: two different token sequences hash alike with a chance of about
2**-58 or less (token hashes are random 64-bit values; the base's powers are odd), which is
well under one false drop in a billion training windows against a million evaluation n-grams,
so matches are not re-checked token by token.
"""

from __future__ import annotations

import hashlib
import re
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import repeat

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from .dedup import fold

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

# Odd, so multiplication by it is invertible modulo 2**64 and a window's hash keeps every
# token's contribution.
_BASE = np.uint64(0x9E3779B97F4A7C15)
# Train texts per batch in match_many: bounds the memory the training side holds at once.
_BATCH = 4096

# Scripts written without spaces between words: each character is a token (as BERT does for
# Han), or a whole sentence would be one token and never reach n.
_CHARACTER_TOKENS = (
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x20000, 0x323AF),  # CJK Extensions B-H, Compatibility Supplement
)


def _char_class(ranges: Iterable[tuple[int, int]]) -> str:
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )


def _ranges(code_points: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for cp in code_points:
        if out and out[-1][1] == cp - 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return out


@cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    # Combining marks (M*) belong to the word they follow: Python's \w leaves them out, which
    # would cut Hindi "हिन्दी" into ह न द and drop its vowel signs.
    marks = _ranges(
        cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] == "M"
    )
    word = re.compile(rf"[\w{_char_class(marks)}]+", re.UNICODE)
    spaced = re.compile(rf"([{_char_class(_CHARACTER_TOKENS)}])", re.UNICODE)
    return word, spaced


_ASCII_WORD = re.compile(r"\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    """The word tokens decontamination compares, in order.

    The text is folded (NFKC and case folding, as dedup does: ``Ｆｏｏ``, ``FOO`` and ``foo``
    are one token), then cut into runs of word characters: letters, digits and underscore
    (``\\w`` with re.UNICODE) together with the combining marks that follow them. Everything
    else separates tokens and is dropped, so punctuation, spacing and case never matter:
    ``"Don't stop!"`` is ``["don", "t", "stop"]``. Han ideographs, Hiragana and Katakana are
    one token per character.
    """
    folded = fold(text)
    if folded.isascii():
        return _ASCII_WORD.findall(folded)
    word, spaced = _patterns()
    return word.findall(spaced.sub(r" \1 ", folded))


def conversation_texts(messages: pa.Array | pa.ChunkedArray) -> list[str]:
    """Each record's contents joined by newlines, the text ``match_many`` is given for it.

    Every turn counts, so an evaluation example quoted in a prompt together with its answer is
    found even where the overlap runs across the turn boundary. A null content or conversation
    is empty text. Five times faster than joining ``to_pylist()`` rows, all in Arrow."""
    chunks = messages.chunks if isinstance(messages, pa.ChunkedArray) else [messages]
    out: list[str] = []
    for chunk in chunks:
        lengths = pc.fill_null(pc.list_value_length(chunk), 0).to_numpy(zero_copy_only=False)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        # flatten() drops the values behind null lists, which list_value_length counts as 0.
        contents = pc.fill_null(pc.struct_field(chunk.flatten(), "content"), "")
        lists = pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), contents)
        out += pc.binary_join(lists, "\n").to_pylist()
    return out


def _token_hashes(words: Iterable[str]) -> U64:
    raw = b"".join(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest() for w in words)
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


@dataclass(frozen=True)
class Overlap:
    """Where a training text meets the evaluation data.

    ``item_id``: the evaluation item matched (the first one indexed, if several share the
    span). ``span``: the shared tokens, joined by spaces: the first n-gram found (or the whole
    short item), extended over the following tokens while the windows that end on them match
    the same item."""

    item_id: str
    span: str


class EvalIndex:
    """The n-grams of evaluation texts, to find them in training texts.

    Built from ``(item_id, text)`` pairs; an item id names the evaluation example (e.g.
    ``"esnli/validation/abc123"``) and may repeat, one pair per field of an example. A text
    of ``n`` tokens or more is indexed by its n-grams; one of ``min_tokens`` to ``n - 1`` tokens
    as its whole sequence; a shorter one is skipped, and counted in ``skipped`` (with its item
    id in ``skipped_ids``) so the caller can report it.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]], n: int = 13, min_tokens: int = 8) -> None:
        if n < 1:
            raise ValueError(f"the n-gram size must be at least 1, not {n}")
        if not 1 <= min_tokens <= n:
            raise ValueError(f"min_tokens must be 1 to n ({n}), not {min_tokens}")
        self.n = n
        self.min_tokens = min_tokens
        self.item_ids: list[str] = []
        self.skipped_ids: list[str] = []
        self._vocabulary: dict[str, int] = {}
        sequences: list[list[int]] = []
        for item_id, text in pairs:
            words = tokens(text)
            if len(words) < min_tokens:
                self.skipped_ids.append(item_id)
                continue
            vocabulary = self._vocabulary
            sequences.append([vocabulary.setdefault(w, len(vocabulary)) for w in words])
            self.item_ids.append(item_id)
        self._token_hash = _token_hashes(self._vocabulary)
        self._tables: dict[int, tuple[U64, I64]] = {}
        self._build(sequences)

    @property
    def skipped(self) -> int:
        """Evaluation texts with fewer than ``min_tokens`` tokens: not matched at all."""
        return len(self.skipped_ids)

    def __len__(self) -> int:
        """Evaluation texts indexed."""
        return len(self.item_ids)

    def _build(self, sequences: list[list[int]]) -> None:
        keys: dict[int, list[U64]] = {}
        items: dict[int, list[I64]] = {}
        for item, sequence in enumerate(sequences):
            # A short text has one window of its own length: its whole sequence.
            length = min(len(sequence), self.n)
            hashes = _window_hashes(self._token_hash[np.asarray(sequence, dtype=np.int64)], length)
            keys.setdefault(length, []).append(hashes)
            items.setdefault(length, []).append(np.full(len(hashes), item, dtype=np.int64))
        total = sum(len(h) for hs in keys.values() for h in hs)
        # A bit table over the top bits of every key, ~1/16 full: most windows of a training
        # text are in no evaluation text, and one gather rules them out before the binary
        # search (which cost a third of the time without it).
        self._shift = np.uint64(64 - min(max(int(total * 16).bit_length(), 10), 24))
        self._filter = np.zeros(1 << (64 - int(self._shift)), dtype=np.bool_)
        for length in sorted(keys):
            k = np.concatenate(keys[length])
            self._filter[k >> self._shift] = True
            v = np.concatenate(items[length])
            ranked = np.lexsort((v, k))
            k, v = k[ranked], v[ranked]
            # One entry per hash, for the first item indexed: the one a match reports.
            first = np.ones(len(k), dtype=np.bool_)
            first[1:] = k[1:] != k[:-1]
            self._tables[length] = (k[first], v[first])

    def match(self, text: str) -> Overlap | None:
        """The first overlap of ``text`` with the evaluation data, or None."""
        return self.match_many([text])[0]

    def match_many(self, texts: Sequence[str]) -> list[Overlap | None]:
        """``match`` for each text, in order; texts are processed in batches, with numpy."""
        out: list[Overlap | None] = []
        for start in range(0, len(texts), _BATCH):
            out += self._match_batch(texts[start : start + _BATCH])
        return out

    def _match_batch(self, texts: Sequence[str]) -> list[Overlap | None]:
        found: list[Overlap | None] = [None] * len(texts)
        if not self._tables or not texts:
            return found
        get = self._vocabulary.get
        ids: list[int] = []
        starts: list[int] = []
        for text in texts:
            starts.append(len(ids))
            # A token the evaluation side never uses cannot be in a matching window; -1 marks
            # it, and one -1 after each text keeps windows from spanning two texts.
            ids.extend(map(get, tokens(text), repeat(-1)))
            ids.append(-1)
        token_ids = np.asarray(ids, dtype=np.int64)
        unknown = token_ids < 0
        hashes = np.where(unknown, np.uint64(0), self._token_hash[token_ids]).astype(np.uint64)
        unknown_before = np.zeros(len(token_ids) + 1, dtype=np.int64)
        np.cumsum(unknown, out=unknown_before[1:])

        hit_start: list[I64] = []
        hit_length: list[I64] = []
        hit_item: list[I64] = []
        full_hits: tuple[I64, I64] | None = None
        window = hashes
        for length in range(1, max(self._tables) + 1):
            if length > 1:
                # Horner's rule on every window at once: windows of `length` tokens from those
                # of `length - 1`; uint64 arithmetic wraps modulo 2**64 by design.
                window = window[:-1] * _BASE + hashes[length - 1 :]
            table = self._tables.get(length)
            if table is None:
                continue
            clean = unknown_before[length:] == unknown_before[:-length]
            candidates = np.flatnonzero(clean & self._filter[window >> self._shift])
            at, item = _look_up(table, window[candidates])
            at = candidates[at]
            hit_start.append(at)
            hit_length.append(np.full(len(at), length, dtype=np.int64))
            hit_item.append(item)
            if length == self.n:
                full_hits = (at, item)

        at = np.concatenate(hit_start)
        if not len(at):
            return found
        sizes = np.concatenate(hit_length)
        item = np.concatenate(hit_item)
        # The first match of a text: its earliest start, the longest window there.
        ranked = np.lexsort((-sizes, at))
        at, sizes, item = at[ranked], sizes[ranked], item[ranked]
        offsets = np.asarray(starts, dtype=np.int64)
        text_of = np.searchsorted(offsets, at, side="right") - 1
        _, first = np.unique(text_of, return_index=True)
        for k in first:
            t, begin, size, hit = int(text_of[k]), int(at[k]), int(sizes[k]), int(item[k])
            if size == self.n and full_hits is not None:
                size += _run_length(full_hits, begin, hit)
            local = begin - int(offsets[t])
            words = tokens(texts[t])[local : local + size]
            found[t] = Overlap(self.item_ids[hit], " ".join(words))
        return found


def _window_hashes(token_hashes: U64, length: int) -> U64:
    """The hash of every window of ``length`` consecutive tokens, as ``_match_batch`` makes."""
    window = token_hashes
    for step in range(1, length):
        window = window[:-1] * _BASE + token_hashes[step:]
    return window


def _look_up(table: tuple[U64, I64], queries: U64) -> tuple[I64, I64]:
    """Positions in ``queries`` of the hashes in ``table``, and the item of each."""
    keys, items = table
    slot = np.searchsorted(keys, queries)
    slot[slot == len(keys)] = 0
    hit = np.flatnonzero(keys[slot] == queries)
    return hit.astype(np.int64), items[slot[hit]]


def _run_length(full_hits: tuple[I64, I64], begin: int, item: int) -> int:
    """How many windows after the one at ``begin`` also match ``item``, back to back."""
    starts, items = full_hits
    k = int(np.searchsorted(starts, begin))
    extra = 0
    while (
        k + extra + 1 < len(starts)
        and starts[k + extra + 1] == begin + extra + 1
        and items[k + extra + 1] == item
    ):
        extra += 1
    return extra
