"""Duplicates of the rendered conversation, exact and normalised, found with column arithmetic.

Every record gets four 64-bit hashes (``record_hashes``): the conversation as is, the
conversation after ``normalize``, the normalised prompt (every turn but the final assistant
turn) and the normalised answer (that final turn). Dedup and conflict reports are then sorts
over those uint64 columns (``first_by_order``, ``keeper_index``, ``conflicting_prompts``), so
the memory a mixture needs is a few arrays of 8 bytes per record, never a Python dict of texts.

The hashes are stable: blake2b digests of UTF-8 text combined with fixed integer arithmetic, so
the same records give the same values in any process, on any machine, in any run. They depend
on the Unicode tables of the running Python only through ``normalize`` (NFKC, case folding and
the punctuation set), which changes only for characters a new Unicode version assigns.
"""

from __future__ import annotations

import hashlib
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

# Stands for a null string: UTF-8 text never holds the byte 0xFF, so no string digests the same.
_NULL_BYTES = b"\xff"
# The ``answer`` of a record that does not end on an assistant turn.
NO_ANSWER = np.uint64(0)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_LENGTH_SALT = np.uint64(0x2545F4914F6CDD1D)


# --------------------------------------------------------------------------- normalisation


def _removed(cp: int) -> bool:
    cat = unicodedata.category(chr(cp))
    # P*: punctuation. Cf: invisible format characters (zero-width space and joiners, soft
    # hyphen, BOM, bidi marks), which make two texts that look the same differ.
    return cat[0] == "P" or cat == "Cf"


# Symbols (S*: + < = > $ € ° © emoji ...) are kept: in maths, code, prices and sentiment they
# are the content ("2+2" is not "22", "x<y" is not "x>y"), and a false merge drops a record,
# while a missed formatting variant only keeps a near-copy.
_ASCII_DELETE = bytes(cp for cp in range(128) if _removed(cp))
# ASCII case folding is lower(); \x1c-\x1f become spaces because str.split() (the non-ASCII
# path) counts them as whitespace and bytes.split() does not.
_ASCII_TABLE = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ\x1c\x1d\x1e\x1f", b"abcdefghijklmnopqrstuvwxyz    "
)


@cache
def _keep_table() -> npt.NDArray[np.bool_]:
    # Built on first use (a tenth of a second): one flag per code point, so removing characters
    # from a non-ASCII text is one numpy gather instead of a dict lookup per character.
    keep = np.ones(sys.maxunicode + 1, dtype=np.bool_)
    keep[[cp for cp in range(sys.maxunicode + 1) if _removed(cp)]] = False
    return keep


def fold(text: str) -> str:
    """NFKC and full case folding: the caseless form both dedup and decontamination compare.

    NFKC makes compatibility forms one (full-width ``Ｆｏｏ`` is ``Foo``, the ligature ``ﬁ``
    is ``fi``, a non-breaking space is a space); case folding is the Unicode caseless match
    (``Straße`` and ``STRASSE`` fold alike, which ``lower()`` does not do)."""
    if text.isascii():
        return text.lower()  # ASCII is already NFKC, and lower() is its case fold
    folded = unicodedata.normalize("NFKC", text).casefold()
    # Folding can undo NFKC (e.g. it expands some precomposed Greek letters); compose again.
    if not unicodedata.is_normalized("NFKC", folded):
        folded = unicodedata.normalize("NFKC", folded)
    return folded


def normalize(text: str) -> str:
    """The form in which two renderings of one conversation compare equal.

    Unicode NFKC, case folded, punctuation (categories P*) and invisible format characters (Cf)
    removed, runs of whitespace collapsed to one space, stripped. Punctuation is removed, not
    turned into a space, so ``don't`` equals ``dont`` and ``Hello, world!`` equals
    ``hello world``. Symbols (S*) are kept; see ``_ASCII_DELETE``. Idempotent:
    ``normalize(normalize(t)) == normalize(t)``.
    """
    return _normalized_utf8(text).decode("utf-8")


def _normalized_utf8(text: str) -> bytes:
    # Hashing wants bytes: the ASCII path (most text) never leaves them, which is twice as fast
    # as the same steps on str.
    if text.isascii():
        return b" ".join(text.encode("ascii").translate(_ASCII_TABLE, _ASCII_DELETE).split())
    folded = unicodedata.normalize("NFKC", text).casefold()
    codes = np.frombuffer(folded.encode("utf-32-le"), dtype=np.uint32)
    kept = codes[_keep_table()[codes]].tobytes().decode("utf-32-le")
    # After removal (a mark may now follow its base letter) and after folding, NFKC again.
    if not unicodedata.is_normalized("NFKC", kept):
        kept = unicodedata.normalize("NFKC", kept)
    return " ".join(kept.split()).encode("utf-8")


# --------------------------------------------------------------------------- hashing


def _digests(chunks: Iterable[bytes | None]) -> U64:
    """One 64-bit blake2b digest per byte string (big-endian, as ``seeding.stable_key`` reads)."""
    blake = hashlib.blake2b
    raw = b"".join(blake(_NULL_BYTES if b is None else b, digest_size=8).digest() for b in chunks)
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


def text_hash(text: str) -> int:
    """The 64-bit digest ``record_hashes`` gives a text (an answer's hash is that of its
    normalised text): for the one-off look-ups of tests and reports."""
    return int(_digests([text.encode("utf-8")])[0])


def _fmix(x: U64) -> U64:
    # MurmurHash3's finaliser: a bijection on uint64 that spreads every input bit; the
    # multiplications wrap modulo 2**64 by design.
    x = x ^ (x >> np.uint64(33))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(33))
    x = x * _MIX2
    mixed: U64 = x ^ (x >> np.uint64(33))
    return mixed


def _segment_hash(terms: U64, offsets: I64, lengths: I64) -> U64:
    """Combine each record's message terms into one value.

    Every term already depends on its message's position, role and text, so their sum (mod
    2**64) is an order-aware, unambiguous combination that numpy computes for all records at
    once from one cumulative sum; the count of messages is mixed in last."""
    sums = np.zeros(len(terms) + 1, dtype=np.uint64)
    np.cumsum(terms, dtype=np.uint64, out=sums[1:])
    total = sums[offsets[1:]] - sums[offsets[:-1]]
    return _fmix(total + _fmix(lengths.astype(np.uint64) + _LENGTH_SALT))


@dataclass(frozen=True)
class RecordHashes:
    """Four uint64 columns, one value per record, in record order.

    ``exact``: roles and contents as they are. ``normalized``: roles and normalised contents.
    ``prompt``: normalised, every turn except a final assistant turn (the whole conversation
    when there is none). ``answer``: the normalised final assistant turn (``NO_ANSWER`` when the
    conversation does not end on one); it ignores position, so a zero-shot and a few-shot
    record with one answer text share it.
    """

    exact: U64
    normalized: U64
    prompt: U64
    answer: U64

    def __len__(self) -> int:
        return len(self.exact)

    @classmethod
    def concat(cls, parts: Iterable[RecordHashes]) -> RecordHashes:
        """Join the hashes of consecutive parts (e.g. one per parquet part, read in turn)."""
        parts = list(parts)
        if not parts:
            empty = np.zeros(0, dtype=np.uint64)
            return cls(empty, empty, empty, empty)
        return cls(
            np.concatenate([p.exact for p in parts]),
            np.concatenate([p.normalized for p in parts]),
            np.concatenate([p.prompt for p in parts]),
            np.concatenate([p.answer for p in parts]),
        )


def record_hashes(messages: pa.Array | pa.ChunkedArray) -> RecordHashes:
    """The hashes of every record of a ``messages`` column (list<struct<role, content>>).

    A null list is an empty conversation; a null role or content hashes apart from every
    string, the empty one included."""
    if isinstance(messages, pa.ChunkedArray):
        return RecordHashes.concat(_chunk_hashes(chunk) for chunk in messages.chunks)
    return _chunk_hashes(messages)


def _distinct(strings: pa.Array) -> tuple[list[str], I64]:
    """The distinct strings and, per element, the index of its string (``len(distinct)`` for a
    null): each distinct text is normalised and hashed once, and answers and system prompts
    repeat a lot."""
    encoded = pc.dictionary_encode(strings)
    distinct: list[str] = encoded.dictionary.to_pylist()
    indices = pc.fill_null(encoded.indices, len(distinct)).to_numpy(zero_copy_only=False)
    return distinct, indices.astype(np.int64)


def _gather(texts: Iterable[bytes], indices: I64) -> U64:
    # The last slot serves null elements.
    return np.append(_digests(texts), _digests([None]))[indices]


def _chunk_hashes(messages: pa.Array) -> RecordHashes:
    kind = messages.type
    item = kind.value_type if pa.types.is_list(kind) or pa.types.is_large_list(kind) else None
    if not (
        item is not None
        and pa.types.is_struct(item)
        and item.get_field_index("role") >= 0
        and item.get_field_index("content") >= 0
    ):
        raise TypeError(f"messages must be list<struct<role, content>>, not {kind}")
    lengths = (
        pc.fill_null(pc.list_value_length(messages), 0)
        .to_numpy(zero_copy_only=False)
        .astype(np.int64)
    )
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # flatten() drops the values behind null lists, which list_value_length counts as 0.
    flat = messages.flatten()
    roles = pc.struct_field(flat, "role")
    contents = pc.struct_field(flat, "content")

    role_names, role_index = _distinct(roles)
    role_digest = _gather((r.encode("utf-8") for r in role_names), role_index)
    texts, text_index = _distinct(contents)
    raw_digest = _gather((t.encode("utf-8") for t in texts), text_index)
    norm_digest = _gather(map(_normalized_utf8, texts), text_index)

    total = int(offsets[-1])
    position = np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    slot = _fmix(role_digest + (position.astype(np.uint64) + np.uint64(1)) * _GOLDEN)
    raw_terms = _fmix(raw_digest ^ slot)
    norm_terms = _fmix(norm_digest ^ slot)

    last = offsets[1:] - 1
    answered = np.zeros(len(lengths), dtype=np.bool_)
    if "assistant" in role_names:
        has_last = lengths > 0
        answered[has_last] = role_index[last[has_last]] == role_names.index("assistant")
    answer = np.full(len(lengths), NO_ANSWER, dtype=np.uint64)
    answer[answered] = norm_digest[last[answered]]
    prompt_terms = norm_terms.copy()
    prompt_terms[last[answered]] = 0
    return RecordHashes(
        exact=_segment_hash(raw_terms, offsets, lengths),
        normalized=_segment_hash(norm_terms, offsets, lengths),
        prompt=_segment_hash(prompt_terms, offsets, lengths - answered),
        answer=answer,
    )


# --------------------------------------------------------------------------- selection


def _check_pair(keys: npt.NDArray[np.generic], other: npt.NDArray[np.generic], what: str) -> None:
    if keys.ndim != 1 or keys.shape != other.shape:
        raise ValueError(
            f"keys and {what} must be 1-D arrays of one length: {keys.shape}, {other.shape}"
        )


def keeper_index(keys: U64, order: npt.NDArray[np.generic]) -> I64:
    """For each record, the index of the record kept among those with its key: the one with the
    smallest ``order``, ties broken by position. A record is kept where ``result[i] == i``;
    elsewhere ``result[i]`` is the record it duplicates (for the reject's message)."""
    _check_pair(keys, order, "order")
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # lexsort's last key is the primary one: group by key, then order, then position.
    ranked = np.lexsort((np.arange(n), order, keys))
    sorted_keys = keys[ranked]
    starts = np.ones(n, dtype=np.bool_)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    group = np.cumsum(starts) - 1
    keeper = np.empty(n, dtype=np.int64)
    keeper[ranked] = ranked[starts][group]
    return keeper


def first_by_order(keys: U64, order: npt.NDArray[np.generic]) -> Mask:
    """True for the record to keep in each group of equal keys: the smallest ``order``, ties
    broken by position."""
    kept: Mask = keeper_index(keys, order) == np.arange(len(keys))
    return kept


@dataclass(frozen=True)
class Duplicates:
    """What dedup decides for each record.

    ``keep``: the record stays. ``duplicate_of``: for a dropped record, the index of the kept
    record with the same normalised conversation (-1 where kept). ``exact``: the dropped record
    is identical, as is, to the record it duplicates (else it differs only in case, whitespace,
    punctuation or Unicode form)."""

    keep: Mask
    duplicate_of: I64
    exact: Mask

    @property
    def dropped(self) -> int:
        return int(len(self.keep) - np.count_nonzero(self.keep))


def find_duplicates(hashes: RecordHashes, order: npt.NDArray[np.generic]) -> Duplicates:
    """Exact and normalised duplicates in one pass: an exact duplicate is also a normalised
    one, so grouping by the normalised hash finds both; ``exact`` tells them apart."""
    keeper = keeper_index(hashes.normalized, order)
    keep = keeper == np.arange(len(keeper))
    exact = ~keep & (hashes.exact == hashes.exact[keeper])
    return Duplicates(keep=keep, duplicate_of=np.where(keep, -1, keeper), exact=exact)


def conflicting_prompts(prompt: U64, answer: U64) -> Mask:
    """True for every record whose normalised prompt is shared by a record with a different
    answer: near-duplicate prompts that disagree are reported, not dropped.

    To name one record of each conflict in a report, take ``keeper_index(prompt[m], order[m])``
    over the flagged records ``m``."""
    _check_pair(prompt, answer, "answer")
    n = len(prompt)
    if n == 0:
        return np.zeros(0, dtype=np.bool_)
    ranked = np.lexsort((answer, prompt))
    sorted_prompt = prompt[ranked]
    sorted_answer = answer[ranked]
    starts = np.ones(n, dtype=np.bool_)
    starts[1:] = sorted_prompt[1:] != sorted_prompt[:-1]
    first = np.flatnonzero(starts)
    last = np.append(first[1:], n) - 1
    # Answers are sorted within a prompt group, so the group disagrees iff its ends differ.
    disagrees = sorted_answer[first] != sorted_answer[last]
    flagged = np.empty(n, dtype=np.bool_)
    flagged[ranked] = disagrees[np.cumsum(starts) - 1]
    return flagged
