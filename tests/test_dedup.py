"""Dedup: exact and normalised duplicates of the conversation, kept first by a stable order."""

from __future__ import annotations

import random
import unicodedata

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.dedup import (
    NO_ANSWER,
    RecordHashes,
    conflicting_prompts,
    find_duplicates,
    first_by_order,
    keeper_index,
    normalize,
    record_hashes,
    text_hash,
)
from pipeline.runfolder import MESSAGE_TYPE

MESSAGES = pa.list_(MESSAGE_TYPE)


def chat(*turns: str, system: str | None = None) -> list[dict[str, str]]:
    """A conversation of alternating user/assistant turns, as render writes it."""
    head = [{"role": "system", "content": system}] if system is not None else []
    return head + [
        {"role": ("user", "assistant")[i % 2], "content": c} for i, c in enumerate(turns)
    ]


def hashes_of(*conversations: list[dict[str, str]]) -> RecordHashes:
    return record_hashes(pa.array(list(conversations), type=MESSAGES))


# --------------------------------------------------------------------------- normalize


def test_normalize_folds_case_whitespace_punctuation_and_unicode_forms() -> None:
    assert normalize("  Hello,   WORLD!\n") == "hello world"
    assert normalize("Ｆｕｌｌ－ｗｉｄｔｈ") == "fullwidth"  # NFKC, then the hyphen goes
    assert normalize("the ﬁsh") == "the fish"  # the ligature is two letters
    assert normalize("STRASSE") == normalize("Straße")  # case folding, not lower()
    assert normalize("«quoted» — “text”") == "quoted text"
    assert normalize("don't") == "dont"  # punctuation is removed, not made a space
    # Invisible format characters (zero-width space, soft hyphen, BOM) go too.
    assert normalize("zero\u200bwidth soft\u00adhyphen\ufeff") == "zerowidth softhyphen"
    assert normalize("café") == normalize("cafe\u0301")  # composed and decomposed accents


def test_normalize_keeps_symbols_because_they_carry_meaning() -> None:
    assert normalize("2+2=4") == "2+2=4"
    assert normalize("x < y") != normalize("x > y")
    assert normalize("$5") != normalize("5")
    assert normalize("I ❤ it") != normalize("I it")


def reference_normalize(text: str) -> str:
    """The definition, written plainly: what the fast paths in ``normalize`` must equal."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(
        c for c in text if unicodedata.category(c)[0] != "P" and unicodedata.category(c) != "Cf"
    )
    return " ".join(unicodedata.normalize("NFKC", text).split())


@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_normalize_equals_its_definition_and_is_idempotent(text: str) -> None:
    assert normalize(text) == reference_normalize(text)
    assert normalize(normalize(text)) == normalize(text)


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_the_ascii_fast_path_agrees_with_the_unicode_path(text: str) -> None:
    # A trailing "é" sends the same text down the non-ASCII path.
    assert normalize(text + " é") == (normalize(text) + " é").strip()


# --------------------------------------------------------------------------- hashes


def test_hashes_are_stable_golden_values() -> None:
    # Dedup decisions and reject messages depend on these; a change must be deliberate.
    h = hashes_of(chat("Is the sky blue?", "Yes.", system="You are helpful."))
    assert hex(int(h.exact[0])) == "0xbc3e161da24cdd28"
    assert hex(int(h.normalized[0])) == "0x32a09873e5ef0ab3"
    assert hex(int(h.prompt[0])) == "0xbe43b7c07c8bbd75"
    assert hex(int(h.answer[0])) == "0xd1b1805c6d187a92"
    assert int(h.answer[0]) == text_hash("yes")
    assert h.exact.dtype == np.uint64


def test_roles_turn_boundaries_and_order_are_part_of_the_exact_hash() -> None:
    base = chat("ab", "c")
    other_roles = [{"role": "system", "content": "ab"}, {"role": "assistant", "content": "c"}]
    moved_boundary = chat("a", "bc")
    swapped = [base[1], base[0]]
    joined = [{"role": "user", "content": "abc"}]
    h = hashes_of(base, other_roles, moved_boundary, swapped, joined)
    assert len(set(h.exact.tolist())) == 5
    assert len(set(h.normalized.tolist())) == 5


def test_chunked_sliced_and_single_arrays_hash_alike() -> None:
    rng = random.Random(7)
    words = ["Yes", "no", "The cat", "sat.", "ÉTÉ", "ﬁne", "  spaced  out "]
    rows = [
        chat(*[" ".join(rng.choices(words, k=3)) for _ in range(rng.choice([2, 4]))])
        for _ in range(50)
    ]
    whole = pa.array(rows, type=MESSAGES)
    single = record_hashes(whole)
    chunked = record_hashes(pa.chunked_array([whole.slice(0, 17), whole.slice(17)]))
    sliced = record_hashes(whole.slice(10, 25))
    for field in ("exact", "normalized", "prompt", "answer"):
        assert np.array_equal(getattr(single, field), getattr(chunked, field))
        assert np.array_equal(getattr(single, field)[10:35], getattr(sliced, field))


def test_nulls_and_empty_conversations_hash_apart_from_text() -> None:
    rows = [
        [{"role": "user", "content": None}, {"role": "assistant", "content": "x"}],
        [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}],
        None,
        [],
    ]
    h = record_hashes(pa.array(rows, type=MESSAGES))
    assert h.exact[0] != h.exact[1]
    assert h.exact[2] == h.exact[3]  # a null list is an empty conversation
    assert h.answer[2] == NO_ANSWER
    only_empty = record_hashes(pa.array([[], None], type=MESSAGES))
    assert only_empty.exact.tolist() == [h.exact[3]] * 2


def test_prompt_and_answer_split_off_the_final_assistant_turn() -> None:
    zero_shot = chat("What is 2+2?", "Four.")
    few_shot = chat("What is 1+1?", "Two.", "What is 2+2?", "four")
    no_answer = chat("What is 2+2?")  # ends on a user turn
    h = hashes_of(zero_shot, few_shot, no_answer)
    assert h.answer[0] == h.answer[1] == text_hash("four")  # wherever the final turn sits
    assert h.prompt[0] == h.prompt[2] != h.prompt[1]
    assert h.answer[2] == NO_ANSWER
    assert h.prompt[2] == h.normalized[2]


def test_messages_of_another_type_are_refused() -> None:
    with pytest.raises(TypeError, match="list<struct<role, content>>"):
        record_hashes(pa.array(["not a conversation"]))
    with pytest.raises(TypeError, match="list<struct<role, content>>"):
        record_hashes(pa.array([[{"speaker": "user", "text": "hi"}]]))


# --------------------------------------------------------------------------- dedup


def test_exact_duplicate_keeps_the_first_by_order_not_by_position() -> None:
    conv = chat("Premise: a dog runs. Hypothesis: an animal moves.", "entailment")
    h = hashes_of(conv, chat("Something else", "no"), conv)
    order = np.array([9, 5, 1], dtype=np.uint64)  # the third record comes first in the order
    dups = find_duplicates(h, order)
    assert dups.keep.tolist() == [False, True, True]
    assert dups.duplicate_of.tolist() == [2, -1, -1]
    assert dups.exact.tolist() == [True, False, False]
    assert dups.dropped == 1


def test_equal_order_keeps_the_earlier_position() -> None:
    keys = np.array([7, 7, 3, 7], dtype=np.uint64)
    order = np.zeros(4, dtype=np.int64)
    assert first_by_order(keys, order).tolist() == [True, False, True, False]
    assert keeper_index(keys, order).tolist() == [0, 0, 2, 0]


def test_normalised_duplicates_differ_only_in_case_whitespace_punctuation_or_unicode() -> None:
    original = chat("Is the fish fine?", "Yes, it is.")
    variants = [
        chat("IS THE FISH FINE", "yes it is"),  # case, punctuation
        chat("  Is   the\tfish\nfine? ", "Yes,  it is."),  # whitespace
        chat("Ｉｓ ｔｈｅ ﬁsh ﬁne?", "Yes, it is…"),  # full-width letters, ligatures
        chat("Is the\u200b fish fine?", "“Yes”, it is!"),  # zero-width space, quotes
    ]
    h = hashes_of(original, *variants)
    assert len(set(h.exact.tolist())) == 5
    assert len(set(h.normalized.tolist())) == 1
    dups = find_duplicates(h, np.arange(5))
    assert dups.keep.tolist() == [True, False, False, False, False]
    assert dups.duplicate_of.tolist() == [-1, 0, 0, 0, 0]
    assert not dups.exact.any()  # dropped as normalised, not exact, duplicates


def test_different_answers_to_one_prompt_are_reported_not_dropped() -> None:
    h = hashes_of(
        chat("Is a tomato a fruit?", "Yes."),
        chat("is a tomato a fruit", "No."),  # same normalised prompt, other answer
        chat("Is a tomato a fruit?", "yes"),  # a normalised duplicate of the first
        chat("Is a cucumber a fruit?", "Yes."),  # same answer, other prompt
    )
    dups = find_duplicates(h, np.arange(4))
    assert dups.keep.tolist() == [True, True, False, True]
    conflicts = conflicting_prompts(h.prompt, h.answer)
    assert conflicts.tolist() == [True, True, True, False]
    kept = dups.keep
    assert conflicting_prompts(h.prompt[kept], h.answer[kept]).tolist() == [True, True, False]


def test_keeper_and_conflicts_agree_with_a_plain_python_reference() -> None:
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 50, 2000).astype(np.uint64)
    answers = rng.integers(0, 3, 2000).astype(np.uint64)
    order = rng.integers(0, 100, 2000)
    best: dict[int, int] = {}
    for i, (k, o) in enumerate(zip(keys.tolist(), order.tolist(), strict=True)):
        if k not in best or o < order[best[k]]:
            best[k] = i
    assert keeper_index(keys, order).tolist() == [best[k] for k in keys.tolist()]
    seen: dict[int, set[int]] = {}
    for k, a in zip(keys.tolist(), answers.tolist(), strict=True):
        seen.setdefault(k, set()).add(a)
    expected = [len(seen[k]) > 1 for k in keys.tolist()]
    assert conflicting_prompts(keys, answers).tolist() == expected


def test_empty_inputs_and_mismatched_lengths() -> None:
    empty = np.zeros(0, dtype=np.uint64)
    assert first_by_order(empty, empty).tolist() == []
    assert conflicting_prompts(empty, empty).tolist() == []
    assert len(record_hashes(pa.chunked_array([], type=MESSAGES))) == 0
    with pytest.raises(ValueError, match="one length"):
        first_by_order(np.zeros(3, dtype=np.uint64), np.zeros(2))
