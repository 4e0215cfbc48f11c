"""Decontamination: 13-gram overlap between training texts and evaluation data."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import pipeline.decontam
from pipeline.decontam import EvalIndex, Overlap, conversation_texts, tokens
from pipeline.runfolder import MESSAGE_TYPE

# An evaluation premise of 20 tokens.
PREMISE = (
    "A man in a red jacket plays an old guitar on the corner of a busy street while children dance"
)
WORDS = tokens(PREMISE)


def words(start: int, stop: int) -> str:
    return " ".join(WORDS[start:stop])


def test_tokens_fold_case_and_unicode_and_drop_punctuation() -> None:
    assert tokens("Don't STOP, now!") == ["don", "t", "stop", "now"]
    assert tokens("Ｆｕｌｌ ﬁne Straße") == ["full", "fine", "strasse"]
    assert tokens("snake_case 3.14") == ["snake_case", "3", "14"]
    # Combining marks stay in their word (\w alone would cut it and drop its vowel signs).
    assert tokens("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    # Scripts without spaces: one token per Han or kana character.
    assert tokens("日本語のテキスト。") == ["日", "本", "語", "の", "テ", "キ", "ス", "ト"]


def test_a_13_gram_inside_longer_texts_is_found_with_its_span_and_item() -> None:
    assert len(WORDS) == 20
    index = EvalIndex([("esnli/validation/abc123", PREMISE), ("other/test/1", "x " * 30)])
    train = f"Premise: someone wrote {words(3, 16)} and then left. Answer: yes"
    assert index.match(train) == Overlap("esnli/validation/abc123", words(3, 16))


def test_12_shared_tokens_do_not_match() -> None:
    index = EvalIndex([("esnli/validation/abc123", PREMISE)])
    assert index.match(f"Premise: someone wrote {words(3, 15)} and then left.") is None
    # Nor do two 12-token pieces with a gap between them.
    assert index.match(f"{words(0, 12)} NOT {words(13, 20)}") is None


def test_a_longer_shared_run_is_reported_whole() -> None:
    index = EvalIndex([("esnli/validation/abc123", PREMISE)])
    found = index.match(f"Intro. {PREMISE.upper()}. Outro.")
    assert found == Overlap("esnli/validation/abc123", " ".join(WORDS))


def test_case_punctuation_and_unicode_form_do_not_hide_an_overlap() -> None:
    index = EvalIndex([("esnli/validation/abc123", PREMISE)])
    shouted = "A MAN, IN A RED JACKET — PLAYS AN OLD GUITAR; ON THE “CORNER” OF A BUSY STREET!"
    assert index.match(shouted) == Overlap("esnli/validation/abc123", words(0, 17))
    full_width = (
        "Ａ ｍａｎ ｉｎ ａ ｒｅｄ ｊａｃｋｅｔ ｐｌａｙｓ "
        "ａｎ ｏｌｄ ｇｕｉｔａｒ ｏｎ ｔｈｅ ｃｏｒｎｅｒ"
    )
    assert index.match(full_width) == Overlap("esnli/validation/abc123", words(0, 13))


def test_a_short_eval_item_matches_only_as_a_whole_sequence() -> None:
    query = "How do I top up my card with a cheque?"  # 10 tokens: no 13-gram
    index = EvalIndex([("banking77/test/7", query)])
    assert len(index) == 1 and index.skipped == 0
    found = index.match(f"Classify the intent. Query: {query} Intent:")
    assert found == Overlap("banking77/test/7", "how do i top up my card with a cheque")
    assert index.match("Query: How do I top up my card with a") is None  # 9 of its 10 tokens
    assert index.match("How do I top up my card with cash?") is None


def test_an_eval_text_under_min_tokens_is_not_indexed_and_is_counted() -> None:
    index = EvalIndex([("banking77/test/1", "Where is my card?"), ("esnli/validation/2", PREMISE)])
    assert index.skipped == 1
    assert index.skipped_ids == ["banking77/test/1"]
    assert len(index) == 1
    assert index.match("Query: Where is my card? Intent: card_arrival") is None
    # min_tokens lowers the bar for callers that want short items matched.
    assert EvalIndex([("b/1", "Where is my card?")], min_tokens=4).match("where is my card") == (
        Overlap("b/1", "where is my card")
    )


def test_the_first_overlap_is_reported_and_a_shared_span_names_the_first_item() -> None:
    later = "the quick brown fox jumps over the lazy dog and runs far away into the woods"
    index = EvalIndex([("a/1", PREMISE), ("a/2", later), ("a/3", PREMISE)])
    train = f"{later}. Then: {PREMISE}"
    assert index.match(train) == Overlap("a/2", " ".join(tokens(later)))
    assert index.match(PREMISE) == Overlap("a/1", " ".join(WORDS))  # a/3 has it too


def test_match_many_keeps_order_and_never_joins_two_texts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline.decontam, "_BATCH", 2)  # cross batch boundaries too
    index = EvalIndex([("esnli/validation/abc123", PREMISE)])
    texts = [
        "nothing to see",
        f"ends with {words(0, 7)}",  # with the next text's start this would make a 13-gram
        f"{words(7, 13)} starts this one",
        "",
        f"in the middle: {words(5, 18)}.",
    ]
    found = index.match_many(texts)
    assert found == [None, None, None, None, Overlap("esnli/validation/abc123", words(5, 18))]
    assert found == [index.match(t) for t in texts]


def test_n_is_configurable() -> None:
    index = EvalIndex([("e/1", PREMISE)], n=5, min_tokens=5)
    assert index.match("he plays an old guitar on Sundays") == Overlap("e/1", words(6, 11))
    assert index.match("he plays an old guitar") is None


def test_an_empty_index_matches_nothing_and_bad_sizes_are_refused() -> None:
    assert EvalIndex([]).match_many(["anything at all"]) == [None]
    with pytest.raises(ValueError, match="at least 1"):
        EvalIndex([], n=0)
    with pytest.raises(ValueError, match="min_tokens"):
        EvalIndex([], n=13, min_tokens=14)


def test_records_are_matched_on_all_their_turns_joined() -> None:
    rows = [
        [
            {"role": "user", "content": f"Premise: {words(0, 8)}"},
            {"role": "assistant", "content": f"{words(8, 14)}."},  # the overlap spans both
        ],
        None,
        [{"role": "user", "content": None}, {"role": "assistant", "content": "no"}],
    ]
    chunked = pa.chunked_array(
        [
            pa.array(rows[:1], type=pa.list_(MESSAGE_TYPE)),
            pa.array(rows[1:], type=pa.list_(MESSAGE_TYPE)),
        ]
    )
    texts = conversation_texts(chunked)
    assert texts == [f"Premise: {words(0, 8)}\n{words(8, 14)}.", "", "\nno"]
    index = EvalIndex([("esnli/validation/abc123", PREMISE)])
    assert index.match_many(texts) == [Overlap("esnli/validation/abc123", words(0, 14)), None, None]


def test_ascii_texts_are_cut_in_arrow_exactly_as_tokens_cuts_them() -> None:
    """The survey cuts lowered ASCII texts on the string array's bytes; it gives ``tokens``'s
    words of each text, empty texts, texts of separators only, and a sliced array included."""
    rng = random.Random(20261202)
    alphabet = "aZ_9 .,-'\n\t"
    texts = ["", "a", " ", " a", "a ", "..", "ab cd", "__", "x-y", "Don't STOP, now!"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(5000)]
    lowered = pc.ascii_lower(pa.array(texts))
    for start, length in ((0, len(texts)), (7, 3000), (1, 0), (4000, 1001)):
        part = lowered.slice(start, length)
        words, parents = pipeline.decontam._ascii_words(part)
        expected = [
            (i, w) for i, t in enumerate(texts[start : start + length]) for w in tokens(t)
        ]
        assert list(zip(parents.tolist(), words.to_pylist(), strict=True)) == expected
