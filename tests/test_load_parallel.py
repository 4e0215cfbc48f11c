"""Parallel load: a source read in shards, on one process, worker processes or Ray, writes the
bytes one whole read writes; what needs the whole source (duplicate ids, the cap, groups that
join rows of different shards) is decided over the whole source; a load that dies leaves
nothing the next one keeps; transforms are built once per read, not once per row."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import load as load_module
from pipeline import stages
from pipeline.executor import Executor, LocalExecutor, RayExecutor
from pipeline.mix import example_key
from pipeline.models import Manifest
from pipeline.runfolder import RunFolder, reject_lines
from pipeline.stages import load_stage
from pipeline.transforms import compile_transforms

from .conftest import write

# Small shards, so a few hundred rows make several of them per split.
SHARD = 64
ROWS = 300
LABELS = ["entailment", "neutral", "contradiction"]


def _pair(i: int) -> dict[str, Any]:
    # Rows 60-70 form one chain (each shares a sentence with the next) across the first shard
    # boundary; every other row has sentences of its own.
    first = f"Chain sentence {i}." if 60 <= i <= 70 else f"Left sentence {i}."
    second = f"Chain sentence {i + 1}." if 60 <= i <= 70 else f"Right sentence {i}."
    return {"id": i, "s1": first, "s2": f"  {second}  ", "gold": LABELS[i % 3]}


def _catalog(root: Path) -> Path:
    """Three sources, one of each reader: JSON Lines (several group keys per row, duplicate
    ids, bad rows, blank lines), CSV (one row with too many cells) and parquet (datasets)."""
    (root / "data").mkdir(parents=True)
    with open(root / "data" / "pairs.jsonl", "w", encoding="utf-8") as fh:
        for i in range(ROWS):
            row = _pair(i)
            if i == 200:
                row["id"] = 10  # a duplicate of row 10's id, four shards later
            if i % 97 == 5:
                row["gold"] = "maybe"  # not a label: a reject
            fh.write(json.dumps(row) + "\n")
            if i % 63 == 0:
                fh.write("\n")  # blank lines do not count as rows
    with open(root / "data" / "plain.csv", "w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["text", "stars"])
        for i in range(ROWS):
            out.writerow([f"Review {i}:\nquoted, over two lines", str(i % 5)])
        out.writerow(["one cell too many", "1", "2"])
    texts = [f"Parquet row {i}" for i in range(ROWS)]
    stars = [i % 5 for i in range(ROWS)]
    pq.write_table(pa.table({"text": texts, "stars": stars}), root / "data" / "table.parquet")
    write(
        root / "sources" / "pairs.yaml",
        """
        name: pairs
        task: toy inference
        cluster: nli
        license: CC0-1.0
        split_group: [premise, hypothesis]
        features:
          premise: string
          hypothesis: string
          label: {names: [entailment, neutral, contradiction]}
        transforms:
          - {op: collapse_whitespace, field: hypothesis}
        sample:
          file: pairs.jsonl
          split: train
          id_field: id
          fields: {premise: s1, hypothesis: s2, label: gold}
        """,
    )
    for name, fmt in (("plain", "csv"), ("table", "parquet")):
        write(
            root / "sources" / f"{name}.yaml",
            f"""
            name: {name}
            task: toy sentiment
            cluster: sentiment
            license: CC0-1.0
            features:
              text: string
              stars: int
            sample:
              file: {name}.{fmt}
              split: train
            """,
        )
    texts_of = {"pairs": "{{ premise }} / {{ hypothesis }}", "plain": "{{ text }}"}
    for name in ("pairs", "plain", "table"):
        text = texts_of.get(name, "{{ text }}")
        write(
            root / "templates" / f"{name}.yaml",
            f"""
            source: {name}
            templates:
              - id: echo
                instruction: "Say it: {text}"
                output: "ok"
            """,
        )
    return write(
        root / "recipes" / "toy.yaml",
        """
        name: toy
        seed: 3
        sources: [pairs, plain, table]
        validation_fraction: 0.3
        templates_per_example: 1
        mixing: {strategy: proportional, cap: 150}
        catalog:
          sources: [../sources]
          templates: [../templates]
        """,
    )


def _load_bytes(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.relative_to(out).parts[0] in ("examples", "rejects")
    }


def _examples(out: Path, source: str) -> list[dict[str, Any]]:
    folder = RunFolder(out)
    return [row for p in folder.parts("examples", source) for row in pq.read_table(p).to_pylist()]


def _load(
    recipe: Path,
    out: Path,
    monkeypatch: pytest.MonkeyPatch,
    shard_rows: int,
    executor: Executor | None = None,
) -> Manifest:
    # Where shards end (stages) and where open() notes the JSON Lines offsets to seek to (load).
    for module in (stages, load_module):
        monkeypatch.setattr(module, "SHARD_ROWS", shard_rows)
        monkeypatch.setattr(module, "MIN_SHARD_ROWS", min(shard_rows, 5_000))
    return load_stage(recipe, out, executor=executor)


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    return _catalog(tmp_path / "cat")


@pytest.fixture
def whole(recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Manifest]:
    """The load with one shard per split: every source read whole, in this process."""
    out = tmp_path / "whole"
    return out, _load(recipe, out, monkeypatch, 10**9)


def test_shards_on_one_or_two_workers_write_the_bytes_of_one_whole_read(
    recipe: Path, whole: tuple[Path, Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, manifest = whole
    expected = _load_bytes(out)
    assert {p.split("/")[1] for p in expected if p.startswith("examples/")} == {
        "pairs",
        "plain",
        "table",
    }
    pool = LocalExecutor(2)
    try:
        for label, executor in (("one", None), ("two", pool)):
            again = _load(recipe, tmp_path / label, monkeypatch, SHARD, executor)
            assert _load_bytes(tmp_path / label) == expected, label
            assert again.sources == manifest.sources
            # No shard file is left beside the parts.
            assert not list((tmp_path / label / "examples").glob(".*"))
    finally:
        pool.close()


def test_ray_writes_the_bytes_of_one_whole_read(
    recipe: Path, whole: tuple[Path, Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, manifest = whole
    ray = RayExecutor(workers=2)
    try:
        again = _load(recipe, tmp_path / "ray", monkeypatch, SHARD, ray)
    finally:
        ray.close()
    assert _load_bytes(tmp_path / "ray") == _load_bytes(out)
    assert again.sources == manifest.sources


def test_a_group_joined_across_shards_is_one_group_in_one_split(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    manifest = _load(recipe, out, monkeypatch, SHARD)
    assert manifest.sources["pairs"].examples_capped > 0
    rows = {int(r["example_id"]): r for r in _examples(out, "pairs")}
    chain = [rows[i] for i in range(60, 71) if i in rows]
    # The chain crosses the boundary between the first two shards, and stays one group.
    assert any(int(r["locator"].rsplit(" row ", 1)[1]) <= SHARD for r in chain)
    assert any(int(r["locator"].rsplit(" row ", 1)[1]) > SHARD for r in chain)
    assert len({r["group"] for r in chain}) == 1
    assert len({r["out_split"] for r in chain}) == 1
    # Rows outside the chain are groups of their own, split one by one.
    others = [r for i, r in rows.items() if not 60 <= i <= 70]
    assert len({r["group"] for r in others}) == len(others)
    assert {r["out_split"] for r in others} == {"train", "validation"}


def test_whole_source_decisions_see_every_shard(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    manifest = _load(recipe, out, monkeypatch, SHARD)
    rejects = reject_lines(RunFolder(out), "load", "pairs")
    bad = [r for r in rejects if r["rule"] == "bad_label"]
    assert [r["example_id"] for r in bad] == ["5", "102", "199", "296"]
    where = bad[0]["locator"].removesuffix(" row 6")  # rows count from 1, blank lines not
    duplicate = [r for r in rejects if r["rule"] == "duplicate_example_id"]
    # Row 200 repeats row 10's id, three shards earlier; it comes after the shards' rejects.
    assert duplicate == [rejects[-1]]
    assert [(r["example_id"], r["locator"]) for r in duplicate] == [("10", f"{where} row 201")]
    assert duplicate[0]["message"] == f"example id '10' already used at {where} row 11"
    # The cap keeps the examples with the smallest seeded keys of the whole source.
    counts = manifest.sources["pairs"]
    good = {str(i) for i in range(ROWS) if i % 97 != 5 and i != 200}
    kept = sorted(good, key=lambda e: example_key(3, "pairs", e))[: len(_examples(out, "pairs"))]
    assert {r["example_id"] for r in _examples(out, "pairs")} == set(kept)
    assert counts.examples_in == ROWS
    assert counts.examples_capped == len(good) - len(kept)
    # Every row of the CSV, quoted line breaks and all, is read once.
    assert manifest.sources["plain"].examples_in == ROWS + 1
    assert manifest.sources["plain"].rejected_by_rule == {"bad_row": 1}


def test_a_load_that_died_leaves_shard_files_the_next_load_removes(
    recipe: Path, whole: tuple[Path, Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = whole
    expected = _load_bytes(out)
    died = tmp_path / "died"
    _load(recipe, died, monkeypatch, SHARD)
    # What a load killed in its first pass leaves: shard files, whole and half-written (as
    # mkstemp names them beside their final name).
    part = RunFolder(died).part("examples", "pairs", 0)
    for name in (".pairs.shard-00001.all.parquet", ".pairs.shard-00002.rejects.all.parquet",
                 "..pairs.shard-00003.all.parquet.abcd1234.tmp"):  # fmt: skip
        (died / "examples" / name).write_bytes(part.read_bytes())
    _load(recipe, died, monkeypatch, SHARD)
    assert _load_bytes(died) == expected


def test_transforms_are_built_once_per_read_not_per_row(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[int] = []
    real = compile_transforms

    def counting(steps: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
        built.append(len(steps))
        return real(steps)

    monkeypatch.setattr(load_module, "compile_transforms", counting)
    _load(recipe, tmp_path / "run", monkeypatch, SHARD)
    shards = -(-ROWS // SHARD)  # pairs' one split, in shards of SHARD rows
    assert built.count(1) == shards  # pairs has one step; the others none
    rows = {int(r["example_id"]): r for r in _examples(tmp_path / "run", "pairs")}
    assert all(not json.loads(r["fields"])["hypothesis"].startswith(" ") for r in rows.values())


def test_shards_shrink_so_every_worker_has_four_to_read() -> None:
    from pipeline.load import MIN_SHARD_ROWS, SHARD_ROWS
    from pipeline.stages import shard_rows

    assert shard_rows(40_000, 1) == SHARD_ROWS  # one process: nothing to share
    assert shard_rows(40_000, 2) == 5_000  # eight shards for two workers, not one
    assert shard_rows(80_000, 2) == 10_000
    assert shard_rows(10_000_000, 2) == SHARD_ROWS  # big sources: as many full shards as ever
    assert shard_rows(3_000, 8) == MIN_SHARD_ROWS  # never so small a task costs more than it reads
    assert shard_rows(0, 2) == MIN_SHARD_ROWS


def test_parts_written_in_the_background_are_the_rows_in_order(tmp_path: Path) -> None:
    from pipeline.errors import RunFolderError
    from pipeline.runfolder import PartSink

    schema = pa.schema([("n", pa.int64())])
    folder = RunFolder(tmp_path / "run")
    with PartSink(folder, "examples", "numbers", schema, 7, "run-1") as sink:
        for start in range(0, 100, 9):  # batches that never line up with the parts
            sink.write_table(pa.table({"n": list(range(start, min(start + 9, 100)))}))
    assert sink.parts == 15 and sink.rows == 100
    parts = folder.parts("examples", "numbers")
    assert [pq.read_table(p).column("n").to_pylist() for p in parts] == [
        list(range(i, min(i + 7, 100))) for i in range(0, 100, 7)
    ]
    # A write that fails on its thread fails the sink, naming the file.
    (tmp_path / "run" / "examples" / "blocked").write_text("a file where a folder goes")
    blocked = PartSink(folder, "examples", "blocked", schema, 7, "run-1")
    with pytest.raises(RunFolderError, match=r"examples/blocked/part-00000\.parquet"), blocked:
        blocked.write_table(pa.table({"n": list(range(20))}))
