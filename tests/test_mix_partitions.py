"""The mix decides from partitions on disk, one at a time: duplicates by the conversation
hash's partition, each source's share by a histogram of record keys, prompt conflicts by the
prompt hash's partition. Here a build with every kind of decision planted is mixed with
partitions of a few records (and histogram bins of two), and its decisions are held to a direct
computation over every record at once, the definitions written plainly."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import Manifest, mix, run_recipe, stages
from pipeline.catalog import recipe_context
from pipeline.decontam import conversation_text_array
from pipeline.dedup import record_hashes
from pipeline.mix import record_key
from pipeline.runfolder import RunFolder, reject_lines

from .conftest import write

WORDS = ["amber", "birch", "cedar", "dune", "ember", "fjord", "grove", "heath", "inlet"]


def _question(i: int) -> str:
    # 15 tokens or more, distinct per i: a 13-gram of its own for decontamination to find.
    return (
        f"Long ago the caravan that set out from {WORDS[i % len(WORDS)]} {i} reached which oasis?"
    )


def _caravans() -> list[dict[str, object]]:
    """Questions with planted repeats: a row again next to it (a duplicate in its part) and
    later (in a later part), and in capitals without its question mark (equal once
    normalised). Ids differ, so splits and keys differ too. Few: this source's share is cut,
    and the plan loads only about 10% more examples than the share needs."""
    rows = [{"id": i, "q": _question(i), "a": f"Oasis {i}"} for i in range(70)]
    for i in (40, 30, 20, 10):
        rows.insert(i + 1, {"id": 400 + i, "q": _question(i), "a": f"Oasis {i}"})
    rows += [{"id": 100 + i, "q": _question(i), "a": f"Oasis {i}"} for i in range(50, 58)]
    return rows + [
        {"id": 200 + i, "q": _question(i).upper().rstrip("?"), "a": f"oasis {i}"}
        for i in range(12, 15)
    ]


def _oases() -> list[dict[str, object]]:
    """The first questions again (duplicates across sources, exact and normalised) and other
    answers to them (conflicts, within this source and with the first)."""
    rows = [{"id": 1000 + i, "q": _question(i), "a": f"Oasis {i}"} for i in range(30)]
    rows += [
        {"id": 1100 + i, "q": _question(i).upper().rstrip("?"), "a": f"oasis {i}"}
        for i in range(30, 40)
    ]
    return rows + [{"id": 1500 + i, "q": _question(i), "a": f"Well {i}"} for i in range(36)]


def _source(root: Path, name: str, rows: list[dict[str, object]]) -> None:
    write(root / "sources" / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write(
        root / "sources" / f"{name}.yaml",
        f"""
        name: {name}
        task: caravan questions
        cluster: closed_book_qa
        license: CC0-1.0
        hub: {{id: local/{name}}}
        features: {{question: string, answer: string}}
        sample: {{file: {name}.jsonl, split: train, id_field: id,
                 fields: {{question: q, answer: a}}}}
        """,
    )
    # Both sources render the same conversations: a record of one duplicates the other's.
    write(
        root / "templates" / f"{name}.yaml",
        f"""
        source: {name}
        templates:
          - id: ask
            instruction: "Answer briefly. {{{{ question }}}}"
            output: "{{{{ answer }}}}"
          - id: bare
            instruction: "{{{{ question }}}}"
            output: "{{{{ answer }}}}"
        """,
    )


SCRATCH = {mix.SURVEY_SCHEMA: "survey", mix.SHARE_SCHEMA: "share", mix.EVENT_SCHEMA: "event"}


@pytest.fixture(scope="module")
def made() -> dict[str, list[int]]:
    """How many files of each kind of scratch the planted build's mix made (by schema)."""
    return {}


@pytest.fixture(scope="module")
def planted(
    tmp_path_factory: pytest.TempPathFactory, made: dict[str, list[int]]
) -> tuple[Path, Manifest]:
    """Two sources in parts of 9 examples, a validation split (whose texts train records
    repeat: decontamination), and weights that cut one source's share; mixed with
    partitions of 5 records, at most 3 of them (so they hold more), and key bins of 2."""
    root = tmp_path_factory.mktemp("mix-partitions")
    _source(root, "caravans", _caravans())
    _source(root, "oases", _oases())
    recipe = write(
        root / "recipes" / "r.yaml",
        """
        name: r
        seed: 11
        sources: [caravans, oases]
        validation_fraction: 0.25
        mixing: {strategy: weights, weights: {caravans: 1, oases: 3}, cap: null, size: 160}
        catalog: {sources: [../sources], templates: [../templates]}
        """,
    )
    out = root / "out"
    scratch = mix._Scratch.buckets

    def counted(
        self: mix._Scratch, n: int, schema: pa.Schema = mix.MIX_SCHEMA, **kw: str
    ) -> mix._Buckets:
        if schema in SCRATCH:
            made.setdefault(SCRATCH[schema], []).append(n)
        return scratch(self, n, schema, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mix._Scratch, "buckets", counted)
        patch.setattr(stages, "EXAMPLES_PER_PART", 9)
        patch.setattr(mix, "PARTITION_ROWS", 5)
        patch.setattr(mix, "MAX_PARTITIONS", 3)
        patch.setattr(mix, "SHARE_BIN_ROWS", 2)
        manifest = run_recipe(recipe, out, workers=1)
    return out, manifest


@dataclass(frozen=True)
class Rec:
    """One accepted record, as the definitions of the mix's decisions see it."""

    id: str
    source: str
    split: str
    order: int  # (source, part, row) order
    key: int
    conversation: int  # normalised
    exact: int
    prompt: int
    answer: int
    contaminated: bool


@dataclass
class Decisions:
    records: list[Rec]
    contaminated: set[str]
    duplicates: dict[str, tuple[Rec, bool]]  # id -> (the kept record, identical to it)
    selected: set[str]
    conflicts: list[str]  # in (source, part, row) order


def _direct(out: Path, manifest: Manifest) -> Decisions:
    """The mix's decisions computed over every record at once, as the definitions say:
    contaminated train records out; within a split, records with one normalised conversation
    keep the one with the smallest (record key, global order); each source keeps its target
    of the rest with the smallest (key, order); selected records of a split that share a
    normalised prompt with different answers are conflicts."""
    folder = RunFolder(out)
    recipe, catalog = recipe_context(manifest)
    index, _ = mix._eval_index(folder, manifest, recipe, catalog)
    assert index is not None
    records: list[Rec] = []
    for name in manifest.sources:
        for path in folder.parts("valid", name):
            table = pq.read_table(path)
            hashes = record_hashes(table.column("messages"))
            overlaps = index.contaminated(conversation_text_array(table.column("messages")))
            for i, (rid, split) in enumerate(
                zip(table["id"].to_pylist(), table["out_split"].to_pylist(), strict=True)
            ):
                records.append(
                    Rec(
                        rid,
                        name,
                        split,
                        len(records),
                        record_key(recipe.seed, rid),
                        int(hashes.normalized[i]),
                        int(hashes.exact[i]),
                        int(hashes.prompt[i]),
                        int(hashes.answer[i]),
                        bool(overlaps[i]) and split == "train",
                    )
                )
    groups: dict[tuple[str, int], list[Rec]] = defaultdict(list)
    for r in records:
        if not r.contaminated:
            groups[(r.split, r.conversation)].append(r)
    duplicates: dict[str, tuple[Rec, bool]] = {}
    for members in groups.values():
        kept = min(members, key=lambda r: (r.key, r.order))
        for r in members:
            if r is not kept:
                duplicates[r.id] = (kept, r.exact == kept.exact)
    selected: list[Rec] = []
    for name, counts in manifest.sources.items():
        rest = [
            r for r in records if r.source == name and not r.contaminated and r.id not in duplicates
        ]
        selected += sorted(rest, key=lambda r: (r.key, r.order))[: counts.records_target]
    answers: dict[tuple[str, int], set[int]] = defaultdict(set)
    for r in selected:
        answers[(r.split, r.prompt)].add(r.answer)
    return Decisions(
        records=records,
        contaminated={r.id for r in records if r.contaminated},
        duplicates=duplicates,
        selected={r.id for r in selected},
        conflicts=[
            r.id
            for r in sorted(selected, key=lambda r: r.order)
            if len(answers[(r.split, r.prompt)]) > 1
        ],
    )


def test_partitioned_decisions_are_the_direct_ones(planted: tuple[Path, Manifest]) -> None:
    out, manifest = planted
    folder = RunFolder(out)
    direct = _direct(out, manifest)
    rejects = [r for name in manifest.sources for r in reject_lines(folder, "mix", name)]
    dropped = {r["locator"].removeprefix("record "): r for r in rejects}
    assert {i for i, r in dropped.items() if r["rule"] == "contaminated"} == direct.contaminated
    assert {i for i, r in dropped.items() if r["rule"] == "duplicate_record"} == set(
        direct.duplicates
    )
    for rid, (kept, exact) in direct.duplicates.items():
        how = "identical to" if exact else "the same, once normalised, as"
        assert dropped[rid]["message"] == f"{how} record {kept.id} ({kept.source}), which is kept"
    mixed = {
        rid
        for split in manifest.splits
        for rid in pq.read_table(folder.mixed(split), columns=["id"]).column("id").to_pylist()
    }
    assert mixed == direct.selected
    conflicts = out / "mixed" / "conflicts.jsonl"
    lines = conflicts.read_text().splitlines() if conflicts.exists() else []
    assert [json.loads(line)["record"] for line in lines] == direct.conflicts
    for counts in manifest.sources.values():
        assert counts.records_selected == min(
            counts.records_target,
            counts.records_accepted - counts.records_deduplicated - counts.records_decontaminated,
        )
    assert manifest.decontamination["records_dropped"] == len(direct.contaminated)


def test_the_build_plants_every_kind_of_decision(
    planted: tuple[Path, Manifest], made: dict[str, list[int]]
) -> None:
    """What the comparison above covers: duplicates within a part, across parts, across
    sources, exact and normalised; equal conversations in two splits kept apart; contamination;
    conflicts; a share cut by its target; several partitions of each kind."""
    out, manifest = planted
    direct = _direct(out, manifest)
    folder = RunFolder(out)
    part_of = {
        rid: (name, p)
        for name in manifest.sources
        for p, path in enumerate(folder.parts("valid", name))
        for rid in pq.read_table(path, columns=["id"]).column("id").to_pylist()
    }
    pairs = [(part_of[rid], part_of[kept.id]) for rid, (kept, _) in direct.duplicates.items()]
    assert any(a == b for a, b in pairs), "a duplicate in its kept record's part"
    assert any(a[0] == b[0] and a[1] != b[1] for a, b in pairs), "across parts of a source"
    assert any(a[0] != b[0] for a, b in pairs), "across sources"
    assert {exact for _, exact in direct.duplicates.values()} == {True, False}
    assert direct.contaminated and direct.conflicts
    counts = manifest.sources["caravans"]
    left = counts.records_accepted - counts.records_deduplicated - counts.records_decontaminated
    assert counts.records_target < left, "the share is cut"
    assert len(folder.parts("valid", "caravans")) > 3
    # Three partitions of each kind (more records than 3 x 5: each holds more than 5), and an
    # event file per run of parts.
    assert made == {"survey": [3], "share": [3], "event": [3]}
    # A conversation in train and validation: the held-out record is kept (no record of
    # another split is its duplicate), the train one is dropped as contaminated.
    held_out = {r.conversation for r in direct.records if r.split == "validation"}
    assert any(r.conversation in held_out and r.contaminated for r in direct.records)
    assert not any(
        r.split == "validation" and kept.split != "validation"
        for r in direct.records
        for kept, _ in [direct.duplicates.get(r.id, (r, True))]
    )
