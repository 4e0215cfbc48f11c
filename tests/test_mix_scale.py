"""The mix and the export at scale, shown on small inputs: the columnar paths give the scalar
definitions' answers, the mix's memory per record is a fixed few bytes, and cutting the work
into many small buckets and batches (what a large run does) writes the same bytes as a few
large ones."""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import Manifest, decontam, mix, run_recipe
from pipeline.catalog import recipe_context
from pipeline.decontam import EvalIndex, Overlap, tokens
from pipeline.export.formats import FORMATS, _turns, arrow_type, conversation
from pipeline.mix import bucket_of, order_key, record_key, stable_keys_of
from pipeline.runfolder import MESSAGE_TYPE, RunFolder, reject_lines

from .conftest import write

IDS = ["0f3a", "rec-1", "é-ünïcode-ид", "", "a\x1fb", "x" * 300]


def test_keys_of_an_id_column_are_the_scalar_keys() -> None:
    ids = pa.chunked_array([pa.array(IDS[:3]), pa.array(IDS[3:])])
    for seed in (0, 7, -3, 2**40):
        assert stable_keys_of(seed, "records", ids).tolist() == [record_key(seed, i) for i in IDS]
        assert stable_keys_of(seed, "order", ids).tolist() == [order_key(seed, i) for i in IDS]


def test_bucket_of_is_the_top_of_the_128_bit_product() -> None:
    rng = np.random.default_rng(5)
    orders = np.concatenate(
        [
            rng.integers(0, 2**64 - 1, size=2000, dtype=np.uint64, endpoint=True),
            np.array([0, 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1], dtype=np.uint64),
        ]
    )
    for n in (1, 2, 3, 400, 4095, 4096, 2**31 - 1):
        expected = [(int(o) * n) >> 64 for o in orders.tolist()]
        assert bucket_of(orders, n).tolist() == expected
    with pytest.raises(ValueError, match="bucket count"):
        bucket_of(orders, 0)


def _texts(n: int, seed: int) -> list[str]:
    """Texts mixing what tokenisation must agree on: case, digits, underscores, punctuation,
    control characters, accents, full-width forms, combining marks and ideographs."""
    pieces = [
        "The",
        "river",
        "FLOWS",
        "through",
        "Vienna",
        "x_1",
        "42",
        "don't",
        "—",
        "\x1f",
        "\t",
        "\n",
        "Ｆｏｏ",
        "Straße",
        "हिन्दी",
        "東京都",
        "café",
        "e\u0301",
        ",",
        "!!",
        "",
    ]
    rng = random.Random(seed)
    return [
        "".join(rng.choice([" ", "", "."]) + rng.choice(pieces) for _ in range(30))
        for _ in range(n)
    ]


def test_batch_tokenisation_is_tokens_of_each_text() -> None:
    """The Arrow path (ASCII texts) and the Python path (the rest) give, per text, its
    ``tokens`` as vocabulary ids, one -1 after each text, and each text's start."""
    texts = [*_texts(200, 1), "", "plain ascii only, with punctuation; and_underscores 99"]
    index = EvalIndex([("eval/0", " ".join(texts[:40]))], n=4, min_tokens=4)
    ids, starts = index._token_ids(pa.array(texts))
    vocabulary = index._vocabulary
    expected: list[int] = []
    expected_starts = []
    for text in texts:
        expected_starts.append(len(expected))
        expected += [vocabulary.get(w, -1) for w in tokens(text)] + [-1]
    assert ids.tolist() == expected
    assert starts.tolist() == expected_starts


def test_the_batch_cut_of_non_ascii_text_is_tokens_on_every_code_point() -> None:
    """``_spelled`` (a table per code point instead of the regular expression) cuts texts that
    hold every Unicode code point, and the scripts with a token per character, exactly as
    ``tokens`` does."""
    texts = []
    for start in range(0, sys.maxunicode + 1, 997):
        points = [c for c in range(start, min(start + 997, sys.maxunicode + 1))]
        texts.append(
            "".join(chr(c) + " " * (c % 7 == 0) for c in points if not 0xD800 <= c < 0xE000)
        )
    texts += ["東京都に行く", "Straße CAFÉ", "e\u0301x", "हिन्दी", "", "_x_", "ア\u30fbイ", "ｆｏｏ"]
    words, of = decontam._spelled(texts)
    got: list[list[str]] = [[] for _ in texts]
    for word, i in zip(words, of.tolist(), strict=True):
        got[i].append(word)
    assert got == [tokens(t) for t in texts]
    assert list(decontam._tokens_many([*texts, "Plain ASCII, too."])) == [
        *got,
        ["plain", "ascii", "too"],
    ]


def test_contaminated_is_match_many_without_the_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    held = _texts(30, 2)
    index = EvalIndex([(f"eval/{i}", t) for i, t in enumerate(held)], n=5, min_tokens=3)
    train = [*_texts(300, 3), held[4], f"prefix words {held[7]} suffix"]
    found = index.match_many(train)
    assert found[-2] is not None and found[-1] is not None
    assert sum(f is not None for f in found) < len(train)
    assert index.contaminated(train).tolist() == [f is not None for f in found]
    # Small batches (a large run's batches are many, not larger) decide the same.
    monkeypatch.setattr(decontam, "_BATCH", 7)
    assert index.match_many(pa.chunked_array([pa.array(train[:50]), pa.array(train[50:])])) == found
    assert index.contaminated(pa.array(train)).tolist() == [f is not None for f in found]


def test_a_span_is_quoted_from_the_text_it_was_found_in() -> None:
    index = EvalIndex([("quiz/eval/q1", "which river flows through the city of vienna")], n=13)
    found = index.match_many(
        ["Q: Which river flows through the city of Vienna? A: the Danube", "unrelated text"]
    )
    assert found == [
        Overlap("quiz/eval/q1", "which river flows through the city of vienna"),
        None,
    ]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for top in ("mixed", "rejects/mix")
        for p in sorted((root / top).rglob("*"))
        if p.is_file()
    }


WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]


def _question(i: int) -> str:
    # 15 tokens or more, distinct per i: enough for a 13-gram of its own.
    word = WORDS[i % len(WORDS)]
    return f"In the old story told about {word} {i}, which town did the travellers reach?"


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    """A run whose mix does everything: exact and normalised duplicates, train records that
    repeat held-out text (validation_fraction), and prompts with two answers."""
    root = tmp_path_factory.mktemp("mix-scale")
    rows = [{"id": i, "q": _question(i), "a": f"Town {i}"} for i in range(60)]
    rows += [{"id": 100 + i, "q": _question(i), "a": f"Town {i}"} for i in range(10)]
    rows += [{"id": 200 + i, "q": _question(i).upper(), "a": f"town {i}"} for i in range(10, 20)]
    rows += [{"id": 300 + i, "q": _question(i), "a": f"Village {i}"} for i in range(20, 30)]
    write(root / "sources" / "facts.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write(
        root / "sources" / "facts.yaml",
        """
        name: facts
        task: story questions
        cluster: closed_book_qa
        license: CC0-1.0
        hub: {id: local/facts}
        features: {question: string, answer: string}
        sample: {file: facts.jsonl, split: train, id_field: id,
                 fields: {question: q, answer: a}}
        """,
    )
    write(
        root / "templates" / "facts.yaml",
        """
        source: facts
        templates:
          - id: ask
            instruction: "Answer in a few words. {{ question }}"
            output: "{{ answer }}"
          - id: ask-short
            instruction: "{{ question }}"
            output: "{{ answer }}"
        """,
    )
    recipe = write(
        root / "recipes" / "r.yaml",
        """
        name: r
        seed: 3
        sources: [facts]
        validation_fraction: 0.3
        mixing: {strategy: proportional, cap: null}
        catalog: {sources: [../sources], templates: [../templates]}
        """,
    )
    out = root / "out"
    return out, run_recipe(recipe, out)


@pytest.mark.parametrize(
    ("bucket_rows", "max_buckets"),
    [(3, 4096), (3, 2)],
    ids=["a-bucket-per-3-records", "2-open-buckets-cut-again-when-sorted"],
)
def test_many_small_buckets_and_batches_write_the_same_bytes(
    mixed_run: tuple[Path, Manifest],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bucket_rows: int,
    max_buckets: int,
) -> None:
    """The run mixed again with buckets of 3 records and a sort buffer of 5 (a bucket per few
    records, as a run of millions has hundreds), or with only 2 bucket files open at once, so
    that every bucket is cut again (twice over) before it is sorted, as past 6.4 million
    records; decisions made in partitions of a few records; and decontamination batches of 2
    texts: the same files, byte for byte, the same counts, and no scratch file left behind."""
    out, manifest = mixed_run
    counts = manifest.sources["facts"]
    assert counts.records_decontaminated and counts.records_deduplicated
    assert counts.records_conflicting and "validation" in manifest.splits
    rules = {r["rule"] for r in reject_lines(RunFolder(out), "mix", "facts")}
    assert rules == {"contaminated", "duplicate_record"}
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    monkeypatch.setattr(mix, "MIX_BUCKET_ROWS", bucket_rows)
    monkeypatch.setattr(mix, "MAX_BUCKETS", max_buckets)
    monkeypatch.setattr(mix._Buckets, "BUFFER_ROWS", 5)
    monkeypatch.setattr(decontam, "_BATCH", 2)
    # Partitions of 4 records (at most 3, so they hold more) and histogram bins of 2 too.
    monkeypatch.setattr(mix, "PARTITION_ROWS", 4)
    monkeypatch.setattr(mix, "MAX_PARTITIONS", 3)
    monkeypatch.setattr(mix, "SHARE_BIN_ROWS", 2)
    cut: list[int] = []
    scratch = mix._Scratch.buckets

    def counting(
        self: mix._Scratch, n: int, schema: pa.Schema = mix.MIX_SCHEMA, compression: str = "zstd"
    ) -> mix._Buckets:
        if schema == mix.MIX_SCHEMA:  # the sort buckets, not the decisions' partitions
            cut.append(n)
        return scratch(self, n, schema, compression)

    monkeypatch.setattr(mix._Scratch, "buckets", counting)
    again = mix.mix_stage(copy)
    assert _files(copy) == _files(out)
    assert again.splits == manifest.splits
    assert again.sources == manifest.sources
    assert not (copy / "mixed" / ".buckets").exists()
    # One set of buckets, or buckets cut again: 2 of them, then 2 of each, and so on.
    assert (len(cut) > 3) == (max_buckets == 2)


def test_reject_messages_name_the_kept_record_and_quote_the_overlap(
    mixed_run: tuple[Path, Manifest],
) -> None:
    """Ids and spans are not kept for every record: they are read again for the rejects, and
    say the same as a record-by-record mix would."""
    out, _ = mixed_run
    folder = RunFolder(out)
    ids = {r["id"] for p in folder.parts("valid", "facts") for r in pq.read_table(p).to_pylist()}
    rejects = reject_lines(folder, "mix", "facts")
    for reject in rejects:
        if reject["rule"] == "duplicate_record":
            kept = reject["message"].split(" record ")[1].split(" ")[0]
            assert kept in ids and kept != reject["locator"].removeprefix("record ")
        else:
            assert "held-out facts/validation/" in reject["message"]
            assert "which town did the travellers reach" in reject["message"]


def test_the_survey_is_fixed_width_columns_in_partitions_on_disk(
    mixed_run: tuple[Path, Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the mix keeps of every record is on disk, not in memory: the survey writes each
    record that decontamination keeps, once, to the partition of its group (conversation and
    split), in global order, with its id where the valid part has it; a contaminated record
    is an event of its own. So a duplicate group is decided within one partition."""
    out, manifest = mixed_run
    monkeypatch.setattr(mix, "PARTITION_ROWS", 10)
    folder = RunFolder(out)
    recipe, catalog = recipe_context(manifest)
    index, _ = mix._eval_index(folder, manifest, recipe, catalog)
    layout = mix._Layout.of(folder, manifest)
    assert layout.partitions > 1
    scratch = mix._Scratch(tmp_path)
    events = scratch.buckets(len(layout.chunk_starts), mix.EVENT_SCHEMA)
    partitions, contaminated = mix._survey(layout, recipe, index, scratch, events, lambda n: None)
    events.close()
    assert contaminated == manifest.decontamination["records_dropped"] > 0
    tables = [mix._read_scratch(p) for p in partitions.paths]
    assert all(t.schema == mix.SURVEY_SCHEMA for t in tables)
    rows = np.concatenate([t.column("row").to_numpy() for t in tables])
    flagged = np.concatenate([mix._read_scratch(p).column("row").to_numpy() for p in events.paths])
    assert sorted([*rows.tolist(), *flagged.tolist()]) == list(range(layout.n))
    for t in tables:
        assert (np.diff(t.column("row").to_numpy()) > 0).all()
    groups = [set(t.column("group").to_pylist()) for t in tables]
    assert sum(len(g) for g in groups) == len(set().union(*groups))
    ids = [i for p in folder.parts("valid", "facts") for i in pq.read_table(p)["id"].to_pylist()]
    for t in tables:
        assert t.column("id").to_pylist() == [ids[r] for r in t.column("row").to_pylist()]


def _conversations() -> list[list[dict[str, str | None]]]:
    def turn(role: str, content: str | None) -> dict[str, str | None]:
        return {"role": role, "content": content}

    return [
        [turn("user", "2+2?"), turn("assistant", "4")],
        [
            turn("system", "Be brief."),
            turn("user", "Capital of France?"),
            turn("assistant", "Paris"),
        ],
        [turn("system", ""), turn("user", "q"), turn("assistant", "a")],
        [turn("system", "S"), turn("user", None), turn("assistant", "")],
        [
            turn("system", "Answer with a number."),
            *[turn(r, f"{r} {i}") for i in range(3) for r in ("user", "assistant")],
            turn("user", "Ünïcode — query"),
            turn("assistant", "ответ"),
        ],
        [*[turn(r, f"{r}{i}") for i in range(2) for r in ("user", "assistant")]],
    ]


@pytest.mark.parametrize("name", ["prompt_completion", "alpaca", "sharegpt", "flan"])
def test_columnar_layouts_are_the_python_layouts(name: str) -> None:
    """Each layout computed on Arrow columns (the export's path) equals its definition, the
    Python converter, value for value and in type: no system turn or an empty one, a null turn,
    exemplar turns, non-ASCII text; over a sliced, chunked column and an empty one."""
    fmt = FORMATS[name]
    assert fmt.convert is not None
    rows = _conversations()
    if name == "flan":
        # A null turn has no text to join: the definition cannot build flan's input for it.
        rows = [r for r in rows if all(t["content"] is not None for t in r)]
    records = pa.table(
        {"messages": pa.chunked_array([pa.array(rows[:2] + rows, type=pa.list_(MESSAGE_TYPE))])}
    ).slice(2)
    table = pa.Table.from_arrays(
        [pa.array([f"r{i}" for i in range(len(rows))]), records.column("messages")],
        names=["id", "messages"],
    )
    expected = fmt.convert(rows)
    columns = fmt.columnar(_turns(table.column("messages").combine_chunks()))  # type: ignore[misc]
    for (column, feature), got in zip(fmt.columns.items(), columns, strict=True):
        assert got.cast(arrow_type(feature)).to_pylist() == expected[column], column
        assert got.cast(arrow_type(feature)).type == arrow_type(feature)
    empty = pa.array([], type=pa.list_(MESSAGE_TYPE))
    assert [len(c) for c in fmt.columnar(_turns(empty))] == [0] * len(fmt.columns)  # type: ignore[misc]


def test_a_broken_record_is_refused_in_the_converters_words() -> None:
    good = _conversations()[0]
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    column = pa.array([good, good, bad], type=pa.list_(MESSAGE_TYPE))
    with pytest.raises(ValueError) as columnar:
        _turns(column)
    with pytest.raises(ValueError) as python:
        conversation(bad)  # type: ignore[arg-type]
    assert str(columnar.value) == str(python.value)
    for rows in (
        [{"role": "system", "content": "s"}],
        [],
        [*good, {"role": "user", "content": "x"}],
    ):
        with pytest.raises(ValueError, match="roles are"):
            _turns(pa.array([good, rows], type=pa.list_(MESSAGE_TYPE)))
