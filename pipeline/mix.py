"""The mix stage: which accepted records make the mixture, in which order and split.

How many each source contributes is planned before rendering (``plan.py``); here train records
that overlap held-out text are dropped (decontamination), then duplicate conversations (dedup),
then each source's share is taken by a seeded hash of stable ids, so nothing depends on arrival
order. Every record dropped here is in ``rejects/mix`` with its reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .catalog import Catalog, recipe_context
from .decontam import EvalIndex, Overlap, conversation_text_array
from .dedup import RecordHashes, conflicting_prompts, keeper_index, record_hashes
from .errors import CatalogError, RunFolderError
from .load import diagnose_file
from .models import EvalData, Manifest, Recipe, Reject, SourceCounts
from .progress import NullProgress, Progress
from .runfolder import (
    OUT_SPLITS,
    PART_SCHEMA,
    RECORD_SCHEMA,
    ParquetSink,
    RowGroups,
    RunFolder,
    _write_error,
    atomic_text,
    num_rows,
    write_rejects,
)
from .seeding import stable_key

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]


def example_key(seed: int, source: str, example_id: str) -> int:
    """Which examples load keeps when a cap binds: the smallest keys."""
    return stable_key(seed, "examples", source, example_id)


def record_key(seed: int, record_id: str) -> int:
    """Which records the mix keeps when it has more than its target: the smallest keys."""
    return stable_key(seed, "records", record_id)


def order_key(seed: int, record_id: str) -> int:
    """Position of a record in the exported mixture: a seeded shuffle across sources."""
    return stable_key(seed, "order", record_id)


def stable_keys_of(seed: int, what: str, ids: pa.Array | pa.ChunkedArray) -> U64:
    """``stable_key(seed, what, id)`` for every id of an Arrow string column, as uint64:
    ``record_key`` is ``what="records"``, ``order_key`` is ``what="order"``. One blake2b call
    per id over bytes straight from Arrow (the digest's input is the same joined UTF-8 text),
    about three times faster than the scalar functions in a loop."""
    prefix = f"{seed}\x1f{what}\x1f".encode()
    blake = hashlib.blake2b
    raw = b"".join(
        [blake(prefix + i, digest_size=16).digest()[:8] for i in ids.cast(pa.binary()).to_pylist()]
    )
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


# --------------------------------------------------------------------------- the mix stage


# Records per sorting bucket: the mix holds one bucket in memory, never the whole mixture.
MIX_BUCKET_ROWS = 25_000
# Bucket files open at once (a system's default limit is often 1024 open files). A run of more
# than MAX_BUCKETS x MIX_BUCKET_ROWS records (6.4 million) has larger buckets, each cut again
# by the next bits of its order keys when its turn to be sorted comes (``_sorted``).
MAX_BUCKETS = 256


def mix_stage(out: Path, *, progress: Progress | None = None) -> Manifest:
    """Stage 4: drop train records that overlap held-out text (decontamination) and duplicate
    conversations (dedup), take each source's share (smallest seeded keys), and shuffle across
    sources by a seeded order key into train, validation and eval.

    Streams: the decisions need only a few fixed-width columns per record (46 bytes: keys,
    hashes, flags); the order is a global sort done as a bucket sort on the top bits of the
    order key, so memory holds one part and one bucket of about MIX_BUCKET_ROWS records at a
    time, whatever the size of the run.
    """
    progress = progress or NullProgress()
    folder = RunFolder(out)
    with folder.lock():
        started = time.perf_counter()
        manifest = folder.read_manifest(needs="validate")
        folder.clear("mixed", "rejects/mix")
        folder.remove_temporaries()
        recipe, catalog = recipe_context(manifest)
        for name in manifest.sources:
            stale = folder.stale_parts("valid", name, manifest.run_fingerprint)
            if stale:
                raise RunFolderError(
                    f"{stale[0]}: written by another run (or truncated); rerun with --fresh"
                )
        index, report = _eval_index(folder, manifest, recipe, catalog)
        with progress.task("mix: survey", _accepted(manifest)) as advance:
            survey = _survey(folder, manifest, recipe, index, advance)
        decisions = _decide(survey, manifest, recipe)
        total = int(np.count_nonzero(decisions.selected))
        n_buckets = min(MAX_BUCKETS, max(1, -(-total // MIX_BUCKET_ROWS)))
        bucket_dir = folder.root / "mixed" / ".buckets"
        buckets = _Buckets(bucket_dir, n_buckets)
        with progress.task("mix", _accepted(manifest)) as advance:
            _scatter_parts(folder, manifest, recipe, survey, decisions, buckets, advance)
        buckets.close()
        manifest.splits = _write_splits(folder, recipe, buckets)
        with suppress(OSError):
            bucket_dir.rmdir()  # its bucket files are gone; anything else keeps it
        report["records_dropped"] = int(np.count_nonzero(decisions.contaminated))
        manifest.decontamination = report
        _write_conflicts(folder, survey, decisions)
        manifest.warnings = split_warnings(manifest)
        manifest.stages_done = ["load", "render", "validate", "mix"]
        manifest.timings_s["mix"] = round(time.perf_counter() - started, 3)
        folder.write_manifest(manifest)
        return manifest


def _accepted(manifest: Manifest) -> int:
    return sum(c.records_accepted for c in manifest.sources.values())


# --------------------------------------------------------------------------- held-out text


def _eval_index(
    folder: RunFolder, manifest: Manifest, recipe: Recipe, catalog: Catalog
) -> tuple[EvalIndex | None, dict[str, Any]]:
    """An n-gram index of every held-out text: the text fields of this run's validation and
    eval examples, and the recipe's own evaluation data."""
    cfg = recipe.decontamination
    if not cfg.enabled:
        return None, {"enabled": False}
    items: list[tuple[str, str]] = []
    for name in manifest.sources:
        only = catalog.source(name).spec.decontaminate_on
        for path in folder.parts("examples", name):
            table = pq.read_table(path, columns=["example_id", "fields", "out_split"])
            # Only held-out rows reach Python: train rows are most rows, and all are read.
            table = table.filter(pc.is_in(table["out_split"], _HELD_OUT))
            for eid, fields, split in zip(
                table.column("example_id").to_pylist(),
                table.column("fields").to_pylist(),
                table.column("out_split").to_pylist(),
                strict=True,
            ):
                if split in ("validation", "eval"):
                    values = json.loads(fields)
                    if only is not None:
                        values = {k: v for k, v in values.items() if k in only}
                    item = f"{name}/{split}/{eid}"
                    items += [(item, text) for text in _texts(values)]
    external: dict[str, int] = {}
    base = Path(manifest.recipe_path).parent if manifest.recipe_path else Path.cwd()
    for data in cfg.against:
        texts = read_eval_data(data, base)
        external[data.name] = len(texts)
        items += texts
    index = EvalIndex(items, n=cfg.n, min_tokens=cfg.min_tokens)
    report: dict[str, Any] = {
        "enabled": True,
        "n": cfg.n,
        "min_tokens": cfg.min_tokens,
        "texts_indexed": len(index),
        "texts_too_short": index.skipped,
        "external_texts": external,
    }
    return index, report


_HELD_OUT = pa.array(["validation", "eval"])


def _texts(value: Any) -> list[str]:
    """Every string inside an example's fields (labels are ints and are left out)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    if isinstance(value, dict):
        return [t for k in sorted(value) for t in _texts(value[k])]
    return []


def read_eval_data(data: EvalData, base: Path) -> list[tuple[str, str]]:
    """``(item id, text)`` for every text field of every row of a recipe's evaluation data: a
    local file or a Hub dataset, both through ``datasets.load_dataset``."""
    import datasets

    path = (base / data.path).resolve() if data.path is not None else None
    builder = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
    kind = builder.get(path.suffix) if path is not None else None
    try:
        if path is not None:
            if kind is None:
                raise CatalogError(
                    f"decontamination.against {data.name!r}: {path}: use a .jsonl, .json, "
                    ".csv or .parquet file"
                )
            if not path.is_file():
                raise CatalogError(f"decontamination.against {data.name!r}: {path}: not found")
            ds = datasets.load_dataset(kind, data_files=str(path), split="train")
        else:
            ds = datasets.load_dataset(
                data.hub, data.config, split=data.split, revision=data.revision
            )
    except CatalogError:
        raise
    except Exception as exc:
        what = f"decontamination.against {data.name!r}"
        if path is not None:
            raise CatalogError(diagnose_file(path, kind or "json", what, exc)) from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CatalogError(f"{what}: {first}") from None
    missing = [f for f in data.fields if f not in ds.column_names]
    if missing:
        raise CatalogError(
            f"decontamination.against {data.name!r}: no field {missing[0]!r} "
            f"(it has {', '.join(ds.column_names)})"
        )
    out = []
    for i, row in enumerate(ds.select_columns(data.fields)):
        out += [(f"{data.name}/{i}", text) for f in data.fields for text in _texts(row[f])]
    return out


# --------------------------------------------------------------------------- the decisions


SPLIT_CODES = {name: i for i, name in enumerate(OUT_SPLITS)}
_OUT_SPLITS = pa.array(list(OUT_SPLITS))
# Mixed into a hash so equal conversations in different splits fall in different groups.
_SPLIT_SALT = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class _Survey:
    """What the mix needs of every accepted record, in (source, part, row) order: fixed-width
    numpy columns, 46 bytes a record (an 8-byte key, four 8-byte hashes, a source, a split, a
    contamination flag), and nothing else that grows with the records: the ids that reject
    messages name and the overlaps they quote are read again for the few records that need
    them (``_ids_at``, ``_scatter_parts``)."""

    sources: list[str]
    offsets: dict[tuple[str, int], int]  # (source, part) -> its first row's global index
    source_of: npt.NDArray[np.int32]
    split_of: npt.NDArray[np.int8]
    keys: U64
    hashes: RecordHashes
    contaminated: npt.NDArray[np.bool_]
    index: EvalIndex | None  # to quote the overlap of a contaminated record


def _split_codes(splits: pa.ChunkedArray) -> npt.NDArray[np.int8]:
    codes = pc.index_in(splits, value_set=_OUT_SPLITS)
    if codes.null_count:
        bad = splits.filter(pc.is_null(codes)).to_pylist()[0]
        raise RunFolderError(f"a record's out_split is {bad!r}, not one of {list(OUT_SPLITS)}")
    return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int8)


def _survey(
    folder: RunFolder,
    manifest: Manifest,
    recipe: Recipe,
    index: EvalIndex | None,
    advance: Any,
) -> _Survey:
    sources = list(manifest.sources)
    offsets: dict[tuple[str, int], int] = {}
    lengths: dict[tuple[str, int], int] = {}
    at = 0
    for name in sources:
        for p_index, path in enumerate(folder.parts("valid", name)):
            offsets[(name, p_index)] = at
            lengths[(name, p_index)] = num_rows(path)
            at += lengths[(name, p_index)]
    # Filled in place, part by part: collecting per-part arrays and concatenating them would
    # hold every column twice at the end (twice the survey's memory, at its peak).
    n = at
    source_of = np.zeros(n, dtype=np.int32)
    split_of = np.zeros(n, dtype=np.int8)
    keys = np.zeros(n, dtype=np.uint64)
    hashes = RecordHashes(*(np.zeros(n, dtype=np.uint64) for _ in range(4)))
    contaminated = np.zeros(n, dtype=np.bool_)
    for s_index, name in enumerate(sources):
        for p_index, path in enumerate(folder.parts("valid", name)):
            table = pq.read_table(path, columns=["id", "messages", "out_split"])
            at = offsets[(name, p_index)]
            rows = slice(at, at + table.num_rows)
            if table.num_rows != lengths[(name, p_index)]:
                raise RunFolderError(f"{path}: changed while the mix read it; rerun the mix")
            codes = _split_codes(table.column("out_split"))
            source_of[rows] = s_index
            split_of[rows] = codes
            keys[rows] = stable_keys_of(recipe.seed, "records", table.column("id"))
            messages = table.column("messages")
            part = record_hashes(messages)
            hashes.exact[rows], hashes.normalized[rows] = part.exact, part.normalized
            hashes.prompt[rows], hashes.answer[rows] = part.prompt, part.answer
            if index is not None:
                train = np.flatnonzero(codes == SPLIT_CODES["train"])
                if len(train):
                    texts = conversation_text_array(messages.take(pa.array(train)))
                    contaminated[at + train] = index.contaminated(texts)
            advance(table.num_rows)
    return _Survey(sources, offsets, source_of, split_of, keys, hashes, contaminated, index)


def _ids_at(folder: RunFolder, survey: _Survey, wanted: I64) -> dict[int, str]:
    """The record ids at these global indices, read back from the valid parts that hold them
    (only the ``id`` column of those parts)."""
    wanted = np.unique(wanted)
    out: dict[int, str] = {}
    if not len(wanted):
        return out
    for (name, p_index), at in survey.offsets.items():
        path = folder.part("valid", name, p_index)
        lo = int(np.searchsorted(wanted, at))
        hi = int(np.searchsorted(wanted, at + num_rows(path)))
        if lo == hi:
            continue
        rows = wanted[lo:hi]
        ids = pq.read_table(path, columns=["id"]).column("id").take(pa.array(rows - at))
        out.update(zip(rows.tolist(), ids.to_pylist(), strict=True))
    return out


@dataclass
class _Decisions:
    """Per record: a flag for each decision (1 byte a record); and, for the few duplicates
    only, which record each duplicates and whether it is identical to it."""

    contaminated: npt.NDArray[np.bool_]
    duplicate: npt.NDArray[np.bool_]
    duplicate_rows: I64  # the duplicates' global indices, ascending
    kept_for: I64  # for each of duplicate_rows: the record kept in its stead
    exact: npt.NDArray[np.bool_]  # for each of duplicate_rows: identical to that record
    selected: npt.NDArray[np.bool_]
    conflicting: npt.NDArray[np.bool_]


def _repeated(values: U64) -> I64:
    """The positions, ascending, of the values that occur more than once: what a grouping
    needs to look at. Most records are unique, so the grouping's own sorts (several arrays of
    8 bytes a record) then run on few records, and the mix's peak memory is the sort here."""
    if len(values) < 2:
        return np.zeros(0, dtype=np.int64)
    ranked = np.argsort(values, kind="stable")
    ordered = values[ranked]
    same = ordered[1:] == ordered[:-1]
    del ordered
    repeated = np.zeros(len(values), dtype=np.bool_)
    repeated[1:] = same
    repeated[:-1] |= same
    return np.sort(ranked[repeated])


def _split_grouped(values: U64, split_of: npt.NDArray[np.int8], rows: I64) -> U64:
    """``values[rows]`` mixed with each row's split, so equal values of different splits fall
    in different groups; in place, so that only two arrays of ``rows`` are held at once."""
    grouped = values[rows]
    salt = split_of[rows].astype(np.uint64)
    salt *= _SPLIT_SALT
    grouped ^= salt
    return grouped


def _decide(survey: _Survey, manifest: Manifest, recipe: Recipe) -> _Decisions:
    """Decontaminate, then dedup what is left within each split (the first by record key is
    kept), then take each source's share by the smallest record keys."""
    n = len(survey.keys)
    contaminated = survey.contaminated
    duplicate = np.zeros(n, dtype=np.bool_)
    duplicate_rows = kept_for = np.zeros(0, dtype=np.int64)
    exact = np.zeros(0, dtype=np.bool_)
    if recipe.dedup.exact or recipe.dedup.normalized:
        conversation = survey.hashes.normalized if recipe.dedup.normalized else survey.hashes.exact
        live = np.flatnonzero(~contaminated)
        # One group per (split, conversation): a record is never deduplicated against a record
        # of another split (across splits, decontamination decides).
        grouped = _split_grouped(conversation, survey.split_of, live)
        # A record whose group value is unique keeps itself: only repeated values are grouped.
        live = live[_repeated(grouped)]
        grouped = _split_grouped(conversation, survey.split_of, live)
        keeper = keeper_index(grouped, survey.keys[live])
        dropped = np.flatnonzero(keeper != np.arange(len(live)))
        duplicate_rows, kept_for = live[dropped], live[keeper[dropped]]
        duplicate[duplicate_rows] = True
        exact = survey.hashes.exact[duplicate_rows] == survey.hashes.exact[kept_for]
    remaining = ~contaminated & ~duplicate
    selected = np.zeros(n, dtype=np.bool_)
    for s_index, name in enumerate(survey.sources):
        target = manifest.sources[name].records_target
        rows = np.flatnonzero(remaining & (survey.source_of == s_index))
        if len(rows) > target:
            rows = rows[np.lexsort((rows, survey.keys[rows]))[:target]]
        selected[rows] = True
    conflicting = np.zeros(n, dtype=np.bool_)
    chosen = np.flatnonzero(selected)
    if len(chosen):
        prompt = _split_grouped(survey.hashes.prompt, survey.split_of, chosen)
        # Only a prompt that two selected records share can have two answers.
        shared = _repeated(prompt)
        chosen, prompt = chosen[shared], prompt[shared]
        conflicting[chosen] = conflicting_prompts(prompt, survey.hashes.answer[chosen])
    return _Decisions(
        contaminated, duplicate, duplicate_rows, kept_for, exact, selected, conflicting
    )


def _scatter_parts(
    folder: RunFolder,
    manifest: Manifest,
    recipe: Recipe,
    survey: _Survey,
    decisions: _Decisions,
    buckets: _Buckets,
    advance: Any,
) -> None:
    """Second pass: the selected records to their buckets, every dropped one to
    ``rejects/mix`` with its reason, and the counts per source."""
    # The kept records a duplicate's message names: one id per kept record with duplicates.
    kept_ids = _ids_at(folder, survey, decisions.kept_for)
    for name, counts in manifest.sources.items():
        counts.records_selected = counts.records_deduplicated = 0
        counts.records_decontaminated = counts.records_conflicting = 0
        original: dict[str, dict[str, int]] = {}
        for p_index, path in enumerate(folder.parts("valid", name)):
            table = pq.read_table(path, schema=PART_SCHEMA)
            at = survey.offsets[(name, p_index)]
            rows = slice(at, at + table.num_rows)
            write_rejects(
                folder.rejects("mix", name, p_index),
                _mix_rejects(table, at, survey, decisions, kept_ids),
            )
            counts.records_decontaminated += int(np.count_nonzero(decisions.contaminated[rows]))
            counts.records_deduplicated += int(np.count_nonzero(decisions.duplicate[rows]))
            counts.records_conflicting += int(np.count_nonzero(decisions.conflicting[rows]))
            chosen = table.filter(pa.array(decisions.selected[rows], type=pa.bool_()))
            counts.records_selected += chosen.num_rows
            if chosen.num_rows:
                tally = chosen.group_by(["out_split", "split"]).aggregate([([], "count_all")])
                for split, origin, n in zip(
                    tally.column("out_split").to_pylist(),
                    tally.column("split").to_pylist(),
                    tally.column("count_all").to_pylist(),
                    strict=True,
                ):
                    per = original.setdefault(split, {})
                    per[origin] = per.get(origin, 0) + n
            _scatter(chosen, recipe.seed, buckets)
            advance(table.num_rows)
        counts.records_dropped_by_mix = (
            counts.records_accepted
            - counts.records_selected
            - counts.records_deduplicated
            - counts.records_decontaminated
        )
        counts.original_splits = {s: dict(sorted(v.items())) for s, v in sorted(original.items())}
        counts.rejected_by_rule = _with_mix_rules(counts)


def _with_mix_rules(counts: SourceCounts) -> dict[str, int]:
    rules = {
        k: v
        for k, v in counts.rejected_by_rule.items()
        if k not in ("duplicate_record", "contaminated")
    }
    if counts.records_deduplicated:
        rules["duplicate_record"] = counts.records_deduplicated
    if counts.records_decontaminated:
        rules["contaminated"] = counts.records_decontaminated
    return dict(sorted(rules.items()))


def _mix_rejects(
    table: pa.Table,
    at: int,
    survey: _Survey,
    decisions: _Decisions,
    kept_ids: dict[int, str],
) -> list[Reject]:
    """The part's dropped records, in row order, with their reasons. A contaminated record's
    overlap is found again here, for the message: the survey kept only its flag."""
    part = slice(at, at + table.num_rows)
    contaminated = decisions.contaminated[part]
    dropped = np.flatnonzero(contaminated | decisions.duplicate[part])
    if not len(dropped):
        return []
    rows = table.take(pa.array(dropped))
    cols = {
        c: rows.column(c).to_pylist()
        for c in ("source", "split", "example_id", "template_id", "id")
    }
    quoted = np.flatnonzero(contaminated[dropped])
    overlaps: dict[int, Overlap | None] = {}
    if len(quoted):
        assert survey.index is not None  # only a run with an index flags records
        texts = conversation_text_array(rows.column("messages").take(pa.array(quoted)))
        overlaps = dict(zip(quoted.tolist(), survey.index.match_many(texts), strict=True))
    out = []
    for j, i in enumerate(dropped.tolist()):
        if contaminated[i]:
            overlap = overlaps[j]
            assert overlap is not None, "a flagged record matches when it is matched again"
            rule = "contaminated"
            message = (
                f"shares {len(overlap.span.split())} tokens with held-out {overlap.item_id}: "
                f"{overlap.span!r}"
            )
        else:
            k = int(np.searchsorted(decisions.duplicate_rows, at + i))
            kept = int(decisions.kept_for[k])
            how = "identical to" if decisions.exact[k] else "the same, once normalised, as"
            rule = "duplicate_record"
            where = survey.sources[int(survey.source_of[kept])]
            message = f"{how} record {kept_ids[kept]} ({where}), which is kept"
        out.append(
            Reject(
                stage="mix",
                source=cols["source"][j],
                split=cols["split"][j],
                example_id=cols["example_id"][j],
                template_id=cols["template_id"][j],
                rule=rule,
                message=message,
                locator=f"record {cols['id'][j]}",
            )
        )
    return out


def _write_splits(folder: RunFolder, recipe: Recipe, buckets: _Buckets) -> dict[str, int]:
    """Each bucket, sorted by order key, into the split files; returns rows per split (train is
    always written; validation and eval only when they have rows)."""
    splits: dict[str, int] = {}
    sinks = {
        split: ParquetSink(folder.mixed(split), RECORD_SCHEMA, recipe.export.row_group_rows)
        for split in OUT_SPLITS
    }
    groups = {split: RowGroups(sinks[split], recipe.export.row_group_rows) for split in sinks}
    for table in _sorted(buckets):
        for split in sinks:
            part = table.filter(pc.equal(table["out_split"], split))
            groups[split].add(part.select(RECORD_SCHEMA.names))
            splits[split] = splits.get(split, 0) + part.num_rows
    for split in OUT_SPLITS:
        groups[split].close()
        sinks[split].close()
        if split != "train" and splits.get(split, 0) == 0:
            folder.mixed(split).unlink()
            splits.pop(split, None)
    return splits


def _sorted(buckets: _Buckets) -> Iterator[pa.Table]:
    """The buckets' records in (order key, id) order, a bucket's table at a time; each bucket
    file is removed once read. A bucket of more than twice MIX_BUCKET_ROWS records is first
    cut, streaming, into sub-buckets by the next bits of its order keys (bucket ``i`` of ``n``
    holds the keys of buckets ``i*k`` to ``i*k + k - 1`` of ``n*k``), so what is sorted in
    memory stays about MIX_BUCKET_ROWS records however large the run."""
    next_file = len(buckets)
    todo = [(path, i, len(buckets)) for i, path in enumerate(buckets.paths)][::-1]
    while todo:
        path, index, of = todo.pop()
        rows = num_rows(path)
        if rows <= 2 * MIX_BUCKET_ROWS:
            table = pq.read_table(path).sort_by([("order", "ascending"), ("id", "ascending")])
            path.unlink()
            yield table
            continue
        k = min(MAX_BUCKETS, -(-rows // MIX_BUCKET_ROWS))
        sub = _Buckets(path.parent, k, first=next_file)
        next_file += k
        with pq.ParquetFile(path) as reader:
            for batch in reader.iter_batches(batch_size=_Buckets.BUFFER_ROWS):
                table = pa.Table.from_batches([batch])
                orders = table.column("order").to_numpy().astype(np.uint64)
                _add_by_bucket(sub, table, bucket_of(orders, of * k) - index * k)
        sub.close()
        path.unlink()
        todo += [(p, index * k + j, of * k) for j, p in enumerate(sub.paths)][::-1]


def _write_conflicts(folder: RunFolder, survey: _Survey, decisions: _Decisions) -> None:
    """Selected records whose prompt another selected record of the split shares with a
    different answer: reported for a person to read (label noise, or a template that drops the
    input that tells them apart), never dropped."""
    flagged = np.flatnonzero(decisions.conflicting)
    path = folder.root / "mixed" / "conflicts.jsonl"
    if not len(flagged):
        path.unlink(missing_ok=True)
        return
    ids = _ids_at(folder, survey, flagged)
    with atomic_text(path) as fh:
        for i in flagged.tolist():
            row = {
                "record": ids[i],
                "source": survey.sources[int(survey.source_of[i])],
                "split": OUT_SPLITS[int(survey.split_of[i])],
                "prompt_hash": f"{int(survey.hashes.prompt[i]):016x}",
            }
            fh.write(json.dumps(row) + "\n")


def split_warnings(manifest: Manifest) -> list[str]:
    """Plain words for train rows that come from a dataset's test or dev split: a model
    trained on them can no longer be evaluated on that benchmark split."""
    out = []
    for name, counts in sorted(manifest.sources.items()):
        borrowed = {
            s: n for s, n in counts.original_splits.get("train", {}).items() if s != "train"
        }
        if borrowed:
            where = ", ".join(f"{n} from its {s!r} split" for s, n in sorted(borrowed.items()))
            out.append(
                f"{name}: train records come from the dataset's evaluation splits ({where}); "
                "do not report results on those splits for a model trained on this mixture"
            )
    return out


MIX_SCHEMA = RECORD_SCHEMA.append(pa.field("order", pa.uint64())).append(
    pa.field("out_split", pa.string())
)


class _Buckets:
    """The mix's sort buckets: records are buffered per bucket up to a fixed total, so memory
    stays bounded and each bucket file gets few, large row groups.

    Bucket files are scratch, read back once by this mix and removed. Each is written under a
    temporary name (as ``runfolder.atomic_path`` names them) and renamed when it is whole, so
    no file with a final name is ever half-written; ``folder.clear`` and
    ``remove_temporaries`` remove what a killed mix leaves. They have no column statistics:
    a parquet writer keeps every row group's metadata in memory until it closes,
    and statistics are most of it (a min and a max of up to 4 KB for every text column): with
    them, a 10-million-record mix held about 0.7 GB of metadata by the end."""

    BUFFER_ROWS = 50_000  # across all buckets

    def __init__(self, directory: Path, n: int, first: int = 0) -> None:
        self.paths = [directory / f"b-{first + i:05d}.parquet" for i in range(n)]
        self._writers: list[pq.ParquetWriter | None] = [None] * n
        self._temporaries: list[Path | None] = [None] * n
        self._limit = max(256, self.BUFFER_ROWS // n)
        self._pending: list[list[pa.Table]] = [[] for _ in range(n)]
        self._rows = [0] * n

    def __len__(self) -> int:
        return len(self.paths)

    def add(self, bucket: int, table: pa.Table) -> None:
        self._pending[bucket].append(table)
        self._rows[bucket] += table.num_rows
        if self._rows[bucket] >= self._limit:
            self._flush(bucket)

    def _writer(self, bucket: int) -> pq.ParquetWriter:
        writer = self._writers[bucket]
        if writer is None:
            path = self.paths[bucket]
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(
                    prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
                )
                os.close(fd)
                writer = pq.ParquetWriter(
                    tmp, MIX_SCHEMA, compression="zstd", write_statistics=False
                )
            except OSError as exc:
                raise _write_error(path, exc) from None
            self._writers[bucket] = writer
            self._temporaries[bucket] = Path(tmp)
        return writer

    def _flush(self, bucket: int) -> None:
        if self._pending[bucket]:
            try:
                self._writer(bucket).write_table(pa.concat_tables(self._pending[bucket]))
            except OSError as exc:
                raise _write_error(self.paths[bucket], exc) from None
        self._pending[bucket], self._rows[bucket] = [], 0

    def close(self) -> None:
        """Flush and close every bucket; a bucket that got no rows is an empty file."""
        for bucket, path in enumerate(self.paths):
            self._flush(bucket)
            try:
                self._writer(bucket).close()
                tmp = self._temporaries[bucket]
                assert tmp is not None
                os.replace(tmp, path)
            except OSError as exc:
                raise _write_error(path, exc) from None


def bucket_of(orders: U64, n: int) -> I64:
    """The bucket of each order key among ``n``: ``(order * n) >> 64``, the top of the
    128-bit product, from 32-bit halves so that nothing overflows uint64 (n < 2**31)."""
    if not 1 <= n < 2**31:
        raise ValueError(f"bucket count out of range: {n}")
    big = np.uint64(n)
    high = (orders >> np.uint64(32)) * big
    low = ((orders & np.uint64(0xFFFFFFFF)) * big) >> np.uint64(32)
    which: I64 = ((high + low) >> np.uint64(32)).astype(np.int64)
    return which


def _scatter(table: pa.Table, seed: int, buckets: _Buckets) -> None:
    """Append records to the bucket their order key falls in, with their order and split: one
    stable sort by bucket, then a slice per bucket."""
    if not table.num_rows:
        return
    orders = stable_keys_of(seed, "order", table.column("id"))
    which = bucket_of(orders, len(buckets))
    full = (
        table.select(RECORD_SCHEMA.names)
        .append_column("order", pa.array(orders, type=pa.uint64()))
        .append_column("out_split", table.column("out_split"))
    )
    _add_by_bucket(buckets, full, which)


def _add_by_bucket(buckets: _Buckets, table: pa.Table, which: I64) -> None:
    """Each row to bucket ``which[row]``, in row order within a bucket: one stable sort by
    bucket, then a slice per bucket."""
    ranked = np.argsort(which, kind="stable")
    grouped = table.take(pa.array(ranked))
    sorted_which = which[ranked]
    starts = np.flatnonzero(np.diff(sorted_which, prepend=-1))
    ends = np.append(starts[1:], len(ranked))
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        buckets.add(int(sorted_which[lo]), grouped.slice(lo, hi - lo))
