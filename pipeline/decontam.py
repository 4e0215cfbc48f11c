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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from .dedup import fold

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
# What match_many takes: Python strings, or an Arrow string column (``conversation_texts``).
Texts: TypeAlias = "Sequence[str] | pa.Array | pa.ChunkedArray"

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
def _every_code_point() -> str:
    return "".join(map(chr, range(sys.maxunicode + 1)))


@cache
def _marks() -> npt.NDArray[np.bool_]:
    # One pass of unicodedata.category over a string of every code point: eight times faster
    # than a generator calling chr() per code point, and this runs in every mix.
    cats = map(unicodedata.category, _every_code_point())
    return np.fromiter((c[0] == "M" for c in cats), dtype=np.bool_, count=sys.maxunicode + 1)


@cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    # Combining marks (M*) belong to the word they follow: Python's \w leaves them out, which
    # would cut Hindi "हिन्दी" into ह न द and drop its vowel signs.
    marks = _ranges(np.flatnonzero(_marks()).tolist())
    word = re.compile(rf"[\w{_char_class(marks)}]+", re.UNICODE)
    spaced = re.compile(rf"([{_char_class(_CHARACTER_TOKENS)}])", re.UNICODE)
    return word, spaced


# What ``tokens`` does with each code point of a folded text, as one table: part of a word run,
# a token by itself (a word character of the scripts in _CHARACTER_TOKENS), or a separator.
_SEPARATOR, _WORD, _SINGLE = 0, 1, 2


@cache
def _classes() -> npt.NDArray[np.uint8]:
    # \w in a str pattern is str.isalnum() or "_" (CPython's _sre: SRE_UNI_IS_WORD).
    word = np.fromiter(
        map(str.isalnum, _every_code_point()), dtype=np.bool_, count=sys.maxunicode + 1
    )
    word[ord("_")] = True
    word |= _marks()
    classes = np.where(word, _WORD, _SEPARATOR).astype(np.uint8)
    for a, b in _CHARACTER_TOKENS:
        block = classes[a : b + 1]
        block[block == _WORD] = _SINGLE
    return classes


def _tokens_many(texts: Sequence[str]) -> Iterator[list[str]]:
    """``tokens`` of each text, the texts that are not ASCII cut by ``_spelled`` in batches."""
    for start in range(0, len(texts), _BATCH):
        batch = texts[start : start + _BATCH]
        other = [i for i, t in enumerate(batch) if not t.isascii()]
        spelled: list[list[str]] = [[] for _ in other]
        if other:
            words, of = _spelled([batch[i] for i in other])
            for word, k in zip(words, of.tolist(), strict=True):
                spelled[k].append(word)
        by_row = dict(zip(other, spelled, strict=True))
        for i, text in enumerate(batch):
            yield by_row[i] if i in by_row else _ASCII_WORD.findall(text.lower())


def _spelled(texts: Sequence[str]) -> tuple[list[str], I64]:
    """``tokens`` of every text at once, for texts that are not all ASCII: the words, in order,
    and the text each comes from. The folded texts are classified code point by code point in
    one numpy gather (``_classes``) and cut where the class changes, instead of a regular
    expression whose character class of every combining mark is slow to test."""
    folded = [fold(t) for t in texts]
    joined = "\n".join(folded)  # a separator, so no word runs from one text into the next
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    classes = _classes()[codes]
    word = classes == _WORD
    single = np.flatnonzero(classes == _SINGLE)
    edges = np.diff(word.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.concatenate([np.flatnonzero(edges == 1), single])
    ends = np.concatenate([np.flatnonzero(edges == -1), single + 1])
    ranked = np.argsort(starts, kind="stable")
    starts, ends = starts[ranked], ends[ranked]
    lengths = np.fromiter(map(len, folded), dtype=np.int64, count=len(folded))
    text_starts = np.zeros(len(folded), dtype=np.int64)
    np.cumsum(lengths[:-1] + 1, out=text_starts[1:])
    parents = np.searchsorted(text_starts, starts, side="right") - 1
    words = [joined[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    return words, parents.astype(np.int64)


_ASCII_WORD = re.compile(r"\w+", re.UNICODE)
# The bytes of ``\w`` in a lowered ASCII text.
_WORD_BYTE = np.zeros(256, dtype=np.bool_)
_WORD_BYTE[np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyz_", dtype=np.uint8)] = True


def _ascii_words(lowered: pa.Array) -> tuple[pa.Array, I64]:
    """Every run of ``[0-9a-z_]`` bytes of lowered ASCII texts, in order, and the text each
    is in: ``tokens`` of each text, found on the string array's own bytes (a byte table, run
    edges, one gather of the word bytes) instead of splitting on a regular expression, which
    took 3x as long (the survey tokenises every record of the mix)."""
    if isinstance(lowered, pa.ChunkedArray):
        lowered = lowered.combine_chunks()
    n = len(lowered)
    large = pa.types.is_large_string(lowered.type)
    offsets = np.frombuffer(lowered.buffers()[1], dtype=np.int64 if large else np.int32)
    offsets = offsets[lowered.offset : lowered.offset + n + 1].astype(np.int64)
    base = int(offsets[0])
    data = lowered.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    span = raw[base : int(offsets[-1])]
    word = _WORD_BYTE[span]
    starts = offsets[:-1] - base
    # A run begins at a word byte after a non-word one or at its text's first byte, and ends
    # at a word byte before a non-word one or at its text's last byte.
    begin = word.copy()
    begin[1:] &= ~word[:-1]
    firsts = starts[starts < len(word)]
    begin[firsts] = word[firsts]
    end = word.copy()
    end[:-1] &= ~word[1:]
    lasts = (offsets[1:] - base - 1)[offsets[1:] > offsets[:-1]]
    end[lasts] = word[lasts]
    run_starts = np.flatnonzero(begin)
    lengths = np.flatnonzero(end) + 1 - run_starts
    run_offsets = np.zeros(len(run_starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=run_offsets[1:])
    chars = pa.py_buffer(span[word])
    if run_offsets[-1] < 2**31:
        words = pa.StringArray.from_buffers(
            len(run_starts), pa.py_buffer(run_offsets.astype(np.int32)), chars
        )
    else:
        words = pa.LargeStringArray.from_buffers(len(run_starts), pa.py_buffer(run_offsets), chars)
    # An empty text starts where the next one does: the last text starting at or before a
    # run is the one holding it.
    parents: I64 = np.searchsorted(starts, run_starts, side="right") - 1
    return words, parents


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
    is empty text."""
    texts: list[str] = conversation_text_array(messages).to_pylist()
    return texts


def conversation_text_array(messages: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """``conversation_texts`` as an Arrow string column, all in Arrow (five times faster than
    joining ``to_pylist()`` rows), for ``match_many`` and ``contaminated`` to take as is."""
    chunks = messages.chunks if isinstance(messages, pa.ChunkedArray) else [messages]
    out: list[pa.Array] = []
    for chunk in chunks:
        lengths = pc.fill_null(pc.list_value_length(chunk), 0).to_numpy(zero_copy_only=False)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        # flatten() drops the values behind null lists, which list_value_length counts as 0.
        contents = pc.fill_null(pc.struct_field(chunk.flatten(), "content"), "")
        lists = pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), contents)
        out.append(pc.binary_join(lists, "\n"))
    return pa.chunked_array(out, type=pa.string())


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
        pairs = list(pairs)
        for (item_id, _), words in zip(pairs, _tokens_many([t for _, t in pairs]), strict=True):
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

    def match_many(self, texts: Texts) -> list[Overlap | None]:
        """``match`` for each text, in order (a list of str or an Arrow string array); texts
        are processed in batches, with Arrow and numpy."""
        out: list[Overlap | None] = []
        for batch in _batches(texts):
            found: list[Overlap | None] = [None] * len(batch)
            hits = self._first_hits(batch)
            if hits is not None:
                for t, begin, size, item in zip(*hits, strict=True):
                    words = tokens(batch[int(t)].as_py())[int(begin) : int(begin + size)]
                    found[int(t)] = Overlap(self.item_ids[int(item)], " ".join(words))
            out += found
        return out

    def contaminated(self, texts: Texts) -> npt.NDArray[np.bool_]:
        """True for each text that ``match`` finds an overlap in: the same decision, without
        building the overlaps (a mix keeps one flag per record, never the spans)."""
        out = np.zeros(len(texts), dtype=np.bool_)
        at = 0
        for batch in _batches(texts):
            hits = self._first_hits(batch, spans=False)
            if hits is not None:
                out[at + hits[0]] = True
            at += len(batch)
        return out

    def _token_ids(self, texts: pa.StringArray) -> tuple[I64, I64]:
        """The tokens of a batch of texts as vocabulary ids, -1 for a token the evaluation side
        never uses, each text followed by one -1 (so no window spans two texts); and where
        each text starts.

        ASCII texts (most) are tokenised in Arrow: ``fold`` is ``lower()`` for them and ``\\w``
        is ``[0-9a-z_]`` after it, so splitting the lowered text on runs of anything else gives
        exactly ``tokens``'s words; the other texts are cut by ``_spelled``, which gives
        ``tokens``'s words too. Each distinct word of the batch is looked up in the vocabulary
        once."""
        n = len(texts)
        given = pc.fill_null(texts, "")
        ascii_rows = pc.string_is_ascii(given)
        other = np.flatnonzero(~ascii_rows.to_numpy(zero_copy_only=False))
        plain = pc.if_else(ascii_rows, given, "") if len(other) else given
        flat, parents = _ascii_words(pc.ascii_lower(plain))
        if len(other):
            spelled, of = _spelled(given.take(pa.array(other)).to_pylist())
            flat = pa.concat_arrays([flat, pa.array(spelled, type=pa.string())])
            parents = np.concatenate([parents, other[of]])
            # Each text's words come from one side, in order: a stable sort by text suffices.
            ranked = np.argsort(parents, kind="stable")
            flat, parents = flat.take(pa.array(ranked)), parents[ranked]
        encoded = pc.dictionary_encode(flat)
        get = self._vocabulary.get
        lookup = np.fromiter(
            (get(w, -1) for w in encoded.dictionary.to_pylist()),
            dtype=np.int64,
            count=len(encoded.dictionary),
        )
        counts = np.bincount(parents, minlength=n)
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(counts[:-1] + 1, out=starts[1:])
        ids = np.full(len(parents) + n, -1, dtype=np.int64)
        ids[np.arange(len(parents)) + parents] = lookup[
            encoded.indices.to_numpy(zero_copy_only=False)
        ]
        return ids, starts

    def _first_hits(
        self, texts: pa.StringArray, spans: bool = True
    ) -> tuple[I64, I64, I64, I64] | None:
        """Each matching text's first overlap: (text, its first token, the token count, the
        item), texts in order; None when no text matches. ``spans=False`` leaves the count at
        the window's, unextended."""
        if not self._tables or not len(texts):
            return None
        token_ids, offsets = self._token_ids(texts)
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
            return None
        sizes = np.concatenate(hit_length)
        item = np.concatenate(hit_item)
        # The first match of a text: its earliest start, the longest window there.
        ranked = np.lexsort((-sizes, at))
        at, sizes, item = at[ranked], sizes[ranked], item[ranked]
        text_of = np.searchsorted(offsets, at, side="right") - 1
        _, first = np.unique(text_of, return_index=True)
        text_of, at, sizes, item = text_of[first], at[first], sizes[first], item[first]
        if spans and full_hits is not None:
            for k in np.flatnonzero(sizes == self.n):
                sizes[k] += _run_length(full_hits, int(at[k]), int(item[k]))
        return text_of, at - offsets[text_of], sizes, item


def _batches(texts: Texts) -> Iterator[pa.StringArray]:
    """``texts`` as string arrays of at most ``_BATCH`` texts (a batch's words and windows are
    what the training side holds at once)."""
    if isinstance(texts, pa.ChunkedArray):
        arrays: Iterable[pa.Array] = texts.chunks
    elif isinstance(texts, pa.Array):
        arrays = [texts]
    else:
        arrays = (
            pa.array(texts[i : i + _BATCH], type=pa.string()) for i in range(0, len(texts), _BATCH)
        )
    for array in arrays:
        for start in range(0, len(array), _BATCH):
            batch = array.slice(start, _BATCH)
            yield batch if pa.types.is_string(batch.type) else batch.cast(pa.string())


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
