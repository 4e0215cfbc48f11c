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
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .catalog import Catalog, recipe_context
from .decontam import EvalIndex, Overlap, conversation_text_array
from .dedup import conflicting_prompts, keeper_index, record_hashes
from .errors import CatalogError, RunFolderError
from .heap import FreedMemory
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
    about three times faster than the scalar functions in a loop; the hash of the shared
    prefix is computed once and copied (a third faster again than hashing it per id)."""
    started = hashlib.blake2b(f"{seed}\x1f{what}\x1f".encode(), digest_size=16)

    def key(rest: bytes, copy: Any = started.copy) -> bytes:
        h = copy()
        h.update(rest)
        return h.digest()[:8]  # type: ignore[no-any-return]

    raw = b"".join([key(i) for i in ids.cast(pa.binary()).to_pylist()])
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


# --------------------------------------------------------------------------- the mix stage


# Records per sorting bucket: the mix holds one bucket in memory, never the whole mixture.
MIX_BUCKET_ROWS = 25_000
# Bucket files open at once (a system's default limit is often 1024 open files). A run of more
# than MAX_BUCKETS x MIX_BUCKET_ROWS records (6.4 million) has larger buckets, each cut again
# by the next bits of its order keys when its turn to be sorted comes (``_sorted``).
MAX_BUCKETS = 256
# Records per decision partition: duplicates, shares and prompt conflicts are decided one
# partition at a time, from its fixed-width columns on disk, so what the decisions hold in
# memory is about PARTITION_ROWS records' columns and their sorts, whatever the size of the run.
PARTITION_ROWS = 100_000
# Partitions at most: the survey writes to every partition and event file at once (two open
# files each). Past MAX_PARTITIONS x PARTITION_ROWS records (12.8 million) partitions grow.
MAX_PARTITIONS = 128
# Records per bin, about, of the histogram of record keys that finds where a share ends: the
# share's last bin is gathered and sorted, the bins below it are taken whole.
SHARE_BIN_ROWS = 1024


def mix_stage(out: Path, *, progress: Progress | None = None) -> Manifest:
    """Stage 4: drop train records that overlap held-out text (decontamination) and duplicate
    conversations (dedup), take each source's share (smallest seeded keys), and shuffle across
    sources by a seeded order key into train, validation and eval.

    Streams, with memory that does not grow with the run: the survey writes a few fixed-width
    columns per record (keys, hashes, split) into partition files by the top bits of the
    conversation hash, so that every duplicate group lies in one partition; duplicates, then
    each source's share (a threshold on the record keys found from a histogram, not a sort of
    them all), then prompt conflicts (by the top bits of the prompt hash) are decided one
    partition at a time; what is decided is written as events per range of records, read
    back part by part. The order is a global sort done as a bucket sort on the top bits of the
    order key. Memory holds one part, one partition and one bucket at a time.
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
        bucket_dir = folder.root / "mixed" / ".buckets"
        scratch = _Scratch(bucket_dir)
        layout = _Layout.of(folder, manifest)
        events = scratch.buckets(len(layout.chunk_starts), EVENT_SCHEMA)
        with progress.task("mix: survey", layout.n) as advance:
            surveyed, contaminated = _survey(layout, recipe, index, scratch, events, advance)
        with progress.task("mix: decide", 2 * layout.partitions) as advance:
            shares = _Shares(layout, manifest)
            remaining = _deduplicate(surveyed, layout, recipe, shares, scratch, events, advance)
            _choose(remaining, layout, shares, events, advance)
        events.close()
        total = int(sum(shares.selected))
        n_buckets = min(MAX_BUCKETS, max(1, -(-total // MIX_BUCKET_ROWS)))
        buckets = scratch.buckets(n_buckets)
        with progress.task("mix", layout.n) as advance:
            _scatter_parts(folder, manifest, recipe, layout, index, events, buckets, advance)
        buckets.close()
        manifest.splits = _write_splits(folder, recipe, buckets, scratch)
        with suppress(OSError):
            bucket_dir.rmdir()  # its scratch files are gone; anything else keeps it
        report["records_dropped"] = contaminated
        manifest.decontamination = report
        manifest.warnings = split_warnings(manifest)
        manifest.stages_done = ["load", "render", "validate", "mix"]
        manifest.timings_s["mix"] = round(time.perf_counter() - started, 3)
        folder.write_manifest(manifest)
        return manifest


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

# What the survey writes of every record that decontamination keeps, partitioned by its group
# (conversation hash mixed with its split): 53 bytes a record of fixed-width columns and its id,
# which a duplicate's reject message names (read only for the kept records that have one).
SURVEY_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),  # global index: (source, part, row) order
        ("key", pa.uint64()),
        ("group", pa.uint64()),
        ("exact", pa.uint64()),
        ("prompt", pa.uint64()),
        ("answer", pa.uint64()),
        ("source", pa.int32()),
        ("split", pa.int8()),
        ("id", pa.string()),
    ]
)
# What dedup passes on of each record it keeps, partitioned by its prompt mixed with its split.
SHARE_SCHEMA = pa.schema(
    [SURVEY_SCHEMA.field(c) for c in ("row", "key", "prompt", "answer", "source", "split")]
)
# One row per record that is not simply selected, in files by range of global index (a run
# of whole parts each): what the second pass over the parts needs to write them.
EVENT_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("event", pa.int8()),
        ("other", pa.uint64()),  # duplicate: the kept record's row; conflict: the prompt hash
        ("exact", pa.bool_()),  # duplicate: identical to the kept record
        ("kept_id", pa.string()),  # duplicate: the kept record's id
    ]
)
CONTAMINATED, DUPLICATE, NOT_CHOSEN, CONFLICTING = 1, 2, 3, 4


@dataclass
class _Layout:
    """Where every accepted record lies: its global index is its place in (source, part, row)
    order. Event files cover runs of whole parts (``chunk_starts``), so the second pass reads
    one at a time, in order."""

    sources: list[str]
    parts: list[tuple[int, int, Path, int, int]]  # (source, part, path, first row, rows)
    starts: I64  # each part's first row
    part_source: npt.NDArray[np.int32]
    chunk_starts: I64
    partitions: int
    n: int

    @classmethod
    def of(cls, folder: RunFolder, manifest: Manifest) -> _Layout:
        sources = list(manifest.sources)
        parts = []
        at = 0
        for s_index, name in enumerate(sources):
            for p_index, path in enumerate(folder.parts("valid", name)):
                rows = num_rows(path)
                parts.append((s_index, p_index, path, at, rows))
                at += rows
        n = at
        partitions = min(MAX_PARTITIONS, max(1, -(-n // PARTITION_ROWS)))
        # A new event file where a part's first row crosses the next n / partitions.
        chunk_starts, last = [0], 0
        for _, _, _, first, rows in parts:
            chunk = first * partitions // max(n, 1)
            if rows and chunk != last:
                chunk_starts.append(first)
                last = chunk
        return cls(
            sources,
            parts,
            np.array([p[3] for p in parts], dtype=np.int64),
            np.array([p[0] for p in parts], dtype=np.int32),
            np.array(chunk_starts, dtype=np.int64),
            partitions,
            n,
        )

    def chunk_of(self, rows: I64) -> I64:
        chunk: I64 = np.searchsorted(self.chunk_starts, rows, side="right") - 1
        return chunk

    def source_of(self, row: int) -> str:
        # The last part that starts at or before ``row`` holds it (an empty part starts where
        # the next one does, so it is never the last).
        part = int(np.searchsorted(self.starts, row, side="right")) - 1
        return self.sources[int(self.part_source[part])]


def _split_codes(splits: pa.ChunkedArray) -> npt.NDArray[np.int8]:
    codes = pc.index_in(splits, value_set=_OUT_SPLITS)
    if codes.null_count:
        bad = splits.filter(pc.is_null(codes)).to_pylist()[0]
        raise RunFolderError(f"a record's out_split is {bad!r}, not one of {list(OUT_SPLITS)}")
    return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int8)


def _salted(values: U64, splits: npt.NDArray[np.int8]) -> U64:
    """``values`` mixed with each record's split, so equal values of different splits fall in
    different groups."""
    salt = splits.astype(np.uint64)
    salt *= _SPLIT_SALT
    salt ^= values
    return salt


def _events(
    rows: I64,
    event: int,
    other: U64 | None = None,
    exact: npt.NDArray[np.bool_] | None = None,
    kept_id: pa.Array | None = None,
) -> pa.Table:
    n = len(rows)
    return pa.Table.from_arrays(
        [
            pa.array(rows, type=pa.int64()),
            pa.array(np.full(n, event, dtype=np.int8)),
            pa.array(np.zeros(n, dtype=np.uint64) if other is None else other, type=pa.uint64()),
            pa.array(np.zeros(n, dtype=np.bool_) if exact is None else exact, type=pa.bool_()),
            pa.nulls(n, pa.string()) if kept_id is None else kept_id,
        ],
        schema=EVENT_SCHEMA,
    )


def _survey(
    layout: _Layout,
    recipe: Recipe,
    index: EvalIndex | None,
    scratch: _Scratch,
    events: _Buckets,
    advance: Any,
) -> tuple[_Buckets, int]:
    """First pass over the parts: each record's key and hashes to its dedup partition, and a
    contaminated train record's event (it takes part in nothing else). Returns the closed
    partitions and how many records were contaminated."""
    dedup = recipe.dedup.exact or recipe.dedup.normalized
    partitions = scratch.buckets(layout.partitions, SURVEY_SCHEMA, compression="none")
    contaminated_total = 0
    freed = FreedMemory()
    for s_index, _, path, at, rows in layout.parts:
        table = pq.read_table(path, columns=["id", "messages", "out_split"])
        if table.num_rows != rows:
            raise RunFolderError(f"{path}: changed while the mix read it; rerun the mix")
        codes = _split_codes(table.column("out_split"))
        messages = table.column("messages")
        contaminated = np.zeros(rows, dtype=np.bool_)
        if index is not None:
            train = np.flatnonzero(codes == SPLIT_CODES["train"])
            if len(train):
                texts = conversation_text_array(messages.take(pa.array(train)))
                contaminated[train] = index.contaminated(texts)
        flagged = np.flatnonzero(contaminated)
        if len(flagged):
            contaminated_total += len(flagged)
            rows_of = at + flagged
            _add_by_bucket(events, _events(rows_of, CONTAMINATED), layout.chunk_of(rows_of))
        hashes = record_hashes(messages)
        conversation = hashes.normalized if recipe.dedup.normalized else hashes.exact
        live = np.flatnonzero(~contaminated)
        codes = codes[live]
        ids = table.column("id").combine_chunks()
        if len(flagged):
            ids = ids.take(pa.array(live))
        group = _salted(conversation[live], codes) if dedup else np.zeros(len(live), np.uint64)
        survey = pa.Table.from_arrays(
            [
                pa.array(at + live, type=pa.int64()),
                pa.array(stable_keys_of(recipe.seed, "records", ids)),
                pa.array(group),
                pa.array(hashes.exact[live]),
                pa.array(hashes.prompt[live]),
                pa.array(hashes.answer[live]),
                pa.array(np.full(len(live), s_index, dtype=np.int32)),
                pa.array(codes),
                ids,
            ],
            schema=SURVEY_SCHEMA,
        )
        # Without dedup no group is ever read: spread the records by their keys instead.
        spread = group if dedup else survey.column("key").to_numpy()
        _add_by_bucket(partitions, survey, bucket_of(spread, layout.partitions))
        advance(rows)
        freed.passed(rows)
    partitions.close()
    return partitions, contaminated_total


def _repeated(values: U64) -> I64:
    """The positions, ascending, of the values that occur more than once: what a grouping
    needs to look at. Most records are unique, so the grouping's own sorts then run on few."""
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


def _deduplicate(
    partitions: _Buckets,
    layout: _Layout,
    recipe: Recipe,
    shares: _Shares,
    scratch: _Scratch,
    events: _Buckets,
    advance: Any,
) -> _Buckets:
    """Within each (split, conversation) group the record with the smallest record key is kept
    (ties: the first in global order; a partition's rows are in that order); the others are
    duplicates. A group lies in one partition, so each partition is decided alone. What is kept
    goes on, by prompt, to the partitions ``_choose`` reads, and is counted for the shares."""
    dedup = recipe.dedup.exact or recipe.dedup.normalized
    remaining = scratch.buckets(layout.partitions, SHARE_SCHEMA, compression="none")
    freed = FreedMemory()
    for path in partitions.paths:
        table = _read_scratch(path)
        row = table.column("row").to_numpy()
        keep = np.ones(len(row), dtype=np.bool_)
        if dedup:
            group = table.column("group").to_numpy()
            repeated = _repeated(group)
            keeper = keeper_index(group[repeated], table.column("key").to_numpy()[repeated])
            dropped = np.flatnonzero(keeper != np.arange(len(repeated)))
            if len(dropped):
                duplicate, kept = repeated[dropped], repeated[keeper[dropped]]
                exact = table.column("exact").to_numpy()
                ids = table.column("id").take(pa.array(kept))
                found = _events(
                    row[duplicate],
                    DUPLICATE,
                    row[kept].astype(np.uint64),
                    exact[duplicate] == exact[kept],
                    ids.combine_chunks(),
                )
                _add_by_bucket(events, found, layout.chunk_of(row[duplicate]))
                keep[duplicate] = False
        left = table.select(SHARE_SCHEMA.names)
        if not keep.all():
            left = left.filter(pa.array(keep))
        source = left.column("source").to_numpy()
        shares.count(source, left.column("key").to_numpy())
        prompt = _salted(left.column("prompt").to_numpy(), left.column("split").to_numpy())
        _add_by_bucket(remaining, left, bucket_of(prompt, layout.partitions))
        path.unlink()
        advance(1)
        freed.passed(len(row))
    remaining.close()
    return remaining


class _Shares:
    """Each source's share: its ``records_target`` records with the smallest (record key, global
    index) among those decontamination and dedup keep, found without sorting them all. Keys
    are uniform 64-bit hashes, so a histogram of their top bits (SHARE_BIN_ROWS records a bin)
    says which bin the share ends in; only that bin's records are gathered and sorted, and the
    share is every record at or below the pair found there (``cutoff``)."""

    def __init__(self, layout: _Layout, manifest: Manifest) -> None:
        self.targets = [manifest.sources[name].records_target for name in layout.sources]
        records = np.bincount(
            layout.part_source,
            weights=[p[4] for p in layout.parts],
            minlength=len(layout.sources),
        )
        self.remaining = np.zeros(len(layout.sources), dtype=np.int64)
        self.bits: list[int] = []
        self.histograms: list[I64 | None] = []
        for target, count in zip(self.targets, records.astype(np.int64).tolist(), strict=True):
            # A source with no more records than its target keeps them all: no histogram.
            bits = max(1, min(24, (count // SHARE_BIN_ROWS).bit_length())) if count > target else 0
            self.bits.append(bits)
            self.histograms.append(np.zeros(1 << bits, dtype=np.int64) if bits else None)
        # (key, row) of the last record of each share; every record is in a share of all.
        self.cutoff_key = np.full(len(layout.sources), np.iinfo(np.uint64).max, dtype=np.uint64)
        self.cutoff_row = np.full(len(layout.sources), np.iinfo(np.int64).max, dtype=np.int64)
        self.selected = [0] * len(layout.sources)

    def count(self, source: npt.NDArray[np.int32], keys: U64) -> None:
        """Records that dedup keeps, of any sources."""
        self.remaining += np.bincount(source, minlength=len(self.remaining))
        for s_index, histogram in enumerate(self.histograms):
            if histogram is not None:
                top = keys[source == s_index] >> np.uint64(64 - self.bits[s_index])
                histogram += np.bincount(top.astype(np.int64), minlength=len(histogram))

    def boundaries(self) -> dict[int, tuple[int, int]]:
        """For each source to cut: the bin its share ends in, and how many of that bin's
        records it takes (at least one). A share of none is settled here."""
        out: dict[int, tuple[int, int]] = {}
        for s_index, target in enumerate(self.targets):
            histogram = self.histograms[s_index]
            remaining = int(self.remaining[s_index])
            self.selected[s_index] = min(target, remaining)
            if histogram is None or remaining <= target:
                continue
            if target == 0:
                self.cutoff_key[s_index], self.cutoff_row[s_index] = 0, -1
                continue
            below = np.cumsum(histogram)
            last = int(np.searchsorted(below, target, side="left"))
            out[s_index] = (last, target - (int(below[last - 1]) if last else 0))
        return out

    def settle(self, s_index: int, keys: U64, rows: I64, take: int) -> None:
        """The cutoff of a source from its boundary bin's records."""
        ranked = np.lexsort((rows, keys))[take - 1]
        self.cutoff_key[s_index], self.cutoff_row[s_index] = keys[ranked], rows[ranked]

    def chosen(self, source: npt.NDArray[np.int32], keys: U64, rows: I64) -> npt.NDArray[np.bool_]:
        limit = self.cutoff_key[source]
        at: npt.NDArray[np.bool_] = (keys < limit) | (
            (keys == limit) & (rows <= self.cutoff_row[source])
        )
        return at


def _choose(
    remaining: _Buckets,
    layout: _Layout,
    shares: _Shares,
    events: _Buckets,
    advance: Any,
) -> None:
    """Each source's share, then the prompts that selected records of one split share with
    different answers (reported, not dropped; a prompt group lies in one partition)."""
    boundaries = shares.boundaries()
    if boundaries:
        found: dict[int, list[tuple[U64, I64]]] = {s: [] for s in boundaries}
        for path in remaining.paths:
            table = _read_scratch(path)
            source = table.column("source").to_numpy()
            keys = table.column("key").to_numpy()
            rows = table.column("row").to_numpy()
            for s_index, (last, _) in boundaries.items():
                shift = np.uint64(64 - shares.bits[s_index])
                at = np.flatnonzero((source == s_index) & ((keys >> shift) == last))
                found[s_index].append((keys[at], rows[at]))
        for s_index, (_, take) in boundaries.items():
            keys = np.concatenate([k for k, _ in found[s_index]])
            rows = np.concatenate([r for _, r in found[s_index]])
            shares.settle(s_index, keys, rows, take)
    freed = FreedMemory()
    for path in remaining.paths:
        table = _read_scratch(path)
        rows = table.column("row").to_numpy()
        chosen = shares.chosen(
            table.column("source").to_numpy(), table.column("key").to_numpy(), rows
        )
        left = np.flatnonzero(~chosen)
        if len(left):
            _add_by_bucket(events, _events(rows[left], NOT_CHOSEN), layout.chunk_of(rows[left]))
        picked = np.flatnonzero(chosen)
        raw = table.column("prompt").to_numpy()[picked]
        prompt = _salted(raw, table.column("split").to_numpy()[picked])
        # Only a prompt that two selected records share can have two answers.
        shared = _repeated(prompt)
        if len(shared):
            answer = table.column("answer").to_numpy()[picked[shared]]
            flagged = shared[conflicting_prompts(prompt[shared], answer)]
            if len(flagged):
                at = rows[picked[flagged]]
                _add_by_bucket(events, _events(at, CONFLICTING, raw[flagged]), layout.chunk_of(at))
        path.unlink()
        advance(1)
        freed.passed(len(rows))


class _Events:
    """The events of the parts, read back one event file (a run of whole parts) at a time, in
    order, each file removed once read."""

    def __init__(self, layout: _Layout, events: _Buckets) -> None:
        self.layout, self.paths = layout, events.paths
        self._loaded = -1
        self._table = EVENT_SCHEMA.empty_table()
        self._rows = np.zeros(0, dtype=np.int64)

    def of_part(self, at: int, rows: int) -> _PartEvents:
        if rows:
            chunk = int(self.layout.chunk_of(np.array([at]))[0])
            while self._loaded < chunk:
                self._loaded += 1
                path = self.paths[self._loaded]
                self._table = _read_scratch(path).sort_by("row")
                self._rows = self._table.column("row").to_numpy()
                path.unlink()
        lo, hi = np.searchsorted(self._rows, [at, at + rows])
        return _PartEvents(self._table.slice(int(lo), int(hi - lo)), at, rows)

    def close(self) -> None:
        for path in self.paths[self._loaded + 1 :]:
            path.unlink(missing_ok=True)


class _PartEvents:
    """What was decided for one part's records, by row within the part."""

    def __init__(self, table: pa.Table, at: int, rows: int) -> None:
        local = table.column("row").to_numpy() - at
        event = table.column("event").to_numpy()
        self.table, self.local, self.event = table, local, event

        def flag(kind: int) -> npt.NDArray[np.bool_]:
            mask = np.zeros(rows, dtype=np.bool_)
            mask[local[event == kind]] = True
            return mask

        self.contaminated = flag(CONTAMINATED)
        self.duplicate = flag(DUPLICATE)
        self.conflicting = flag(CONFLICTING)
        self.selected = ~(self.contaminated | self.duplicate | flag(NOT_CHOSEN))

    def duplicates(self) -> tuple[I64, I64, npt.NDArray[np.bool_], list[str]]:
        """Each duplicate's row in the part, the kept record's global row, whether it is
        identical to it, and its id; in row order."""
        at = np.flatnonzero(self.event == DUPLICATE)
        events = self.table.take(pa.array(at))
        kept = events.column("other").to_numpy().astype(np.int64)
        exact = events.column("exact").to_numpy(zero_copy_only=False)
        return self.local[at], kept, exact, events.column("kept_id").to_pylist()

    def conflicts(self) -> tuple[I64, U64]:
        """Each conflicting record's row in the part and its prompt hash, in row order."""
        at = np.flatnonzero(self.event == CONFLICTING)
        prompts = self.table.column("other").to_numpy()[at]
        return self.local[at], prompts


def _scatter_parts(
    folder: RunFolder,
    manifest: Manifest,
    recipe: Recipe,
    layout: _Layout,
    index: EvalIndex | None,
    events: _Buckets,
    buckets: _Buckets,
    advance: Any,
) -> None:
    """Second pass: the selected records to their buckets, every dropped one to
    ``rejects/mix`` with its reason, conflicts to ``mixed/conflicts.jsonl``, and the counts per
    source."""
    decided = _Events(layout, events)
    freed = FreedMemory()
    with _ConflictLog(folder.root / "mixed" / "conflicts.jsonl") as conflicts:
        by_source: dict[int, list[tuple[int, int, Path, int, int]]] = {}
        for entry in layout.parts:
            by_source.setdefault(entry[0], []).append(entry)
        for s_index, name in enumerate(layout.sources):
            counts = manifest.sources[name]
            counts.records_selected = counts.records_deduplicated = 0
            counts.records_decontaminated = counts.records_conflicting = 0
            original: dict[str, dict[str, int]] = {}
            for _, p_index, path, at, rows in by_source.get(s_index, []):
                table = pq.read_table(path, schema=PART_SCHEMA)
                if table.num_rows != rows:
                    raise RunFolderError(f"{path}: changed while the mix read it; rerun the mix")
                part = decided.of_part(at, rows)
                write_rejects(
                    folder.rejects("mix", name, p_index), _mix_rejects(table, part, layout, index)
                )
                counts.records_decontaminated += int(np.count_nonzero(part.contaminated))
                counts.records_deduplicated += int(np.count_nonzero(part.duplicate))
                counts.records_conflicting += int(np.count_nonzero(part.conflicting))
                conflicts.write(table, name, part)
                chosen = table.filter(pa.array(part.selected, type=pa.bool_()))
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
                freed.passed(table.num_rows)
            counts.records_dropped_by_mix = (
                counts.records_accepted
                - counts.records_selected
                - counts.records_deduplicated
                - counts.records_decontaminated
            )
            counts.original_splits = {
                s: dict(sorted(v.items())) for s, v in sorted(original.items())
            }
            counts.rejected_by_rule = _with_mix_rules(counts)
    decided.close()


class _ConflictLog:
    """``mixed/conflicts.jsonl``: selected records whose prompt another selected record of the
    split shares with a different answer, in global order, for a person to read (label noise,
    or a template that drops the input that tells them apart); never dropped. Written as the
    parts pass, atomically; no file when there are none."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stack = ExitStack()
        self._fh: IO[str] | None = None

    def __enter__(self) -> _ConflictLog:
        self.path.unlink(missing_ok=True)
        return self

    def write(self, table: pa.Table, source: str, part: _PartEvents) -> None:
        local, prompts = part.conflicts()
        if not len(local):
            return
        if self._fh is None:
            self._fh = self._stack.enter_context(atomic_text(self.path))
        ids = table.column("id").take(pa.array(local)).to_pylist()
        splits = table.column("out_split").take(pa.array(local)).to_pylist()
        for record, split, prompt in zip(ids, splits, prompts.tolist(), strict=True):
            row = {
                "record": record,
                "source": source,
                "split": split,
                "prompt_hash": f"{prompt:016x}",
            }
            self._fh.write(json.dumps(row) + "\n")

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)  # type: ignore[arg-type]


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
    table: pa.Table, part: _PartEvents, layout: _Layout, index: EvalIndex | None
) -> list[Reject]:
    """The part's dropped records, in row order, with their reasons. A contaminated record's
    overlap is found again here, for the message: the survey kept only its event."""
    contaminated = part.contaminated
    dropped = np.flatnonzero(contaminated | part.duplicate)
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
        assert index is not None  # only a run with an index flags records
        texts = conversation_text_array(rows.column("messages").take(pa.array(quoted)))
        overlaps = dict(zip(quoted.tolist(), index.match_many(texts), strict=True))
    local, kept, exact, kept_ids = part.duplicates()
    duplicate_at = {int(i): k for k, i in enumerate(local.tolist())}
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
            k = duplicate_at[i]
            how = "identical to" if exact[k] else "the same, once normalised, as"
            rule = "duplicate_record"
            where = layout.source_of(int(kept[k]))
            message = f"{how} record {kept_ids[k]} ({where}), which is kept"
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


def _write_splits(
    folder: RunFolder, recipe: Recipe, buckets: _Buckets, scratch: _Scratch
) -> dict[str, int]:
    """Each bucket, sorted by order key, into the split files; returns rows per split (train is
    always written; validation and eval only when they have rows)."""
    splits: dict[str, int] = {}
    sinks = {
        split: ParquetSink(folder.mixed(split), RECORD_SCHEMA, recipe.export.row_group_rows)
        for split in OUT_SPLITS
    }
    groups = {split: RowGroups(sinks[split], recipe.export.row_group_rows) for split in sinks}
    freed = FreedMemory()
    for table in _sorted(buckets, scratch):
        for split in sinks:
            part = table.filter(pc.equal(table["out_split"], split))
            groups[split].add(part.select(RECORD_SCHEMA.names))
            splits[split] = splits.get(split, 0) + part.num_rows
        freed.passed(table.num_rows)
    for split in OUT_SPLITS:
        groups[split].close()
        sinks[split].close()
        if split != "train" and splits.get(split, 0) == 0:
            folder.mixed(split).unlink()
            splits.pop(split, None)
    return splits


def _sorted(buckets: _Buckets, scratch: _Scratch) -> Iterator[pa.Table]:
    """The buckets' records in (order key, id) order, a bucket's table at a time; each bucket
    file is removed once read. A bucket of more than twice MIX_BUCKET_ROWS records is first
    cut, streaming, into sub-buckets by the next bits of its order keys (bucket ``i`` of ``n``
    holds the keys of buckets ``i*k`` to ``i*k + k - 1`` of ``n*k``), so what is sorted in
    memory stays about MIX_BUCKET_ROWS records however large the run."""
    todo = [
        (path, i, len(buckets), rows)
        for i, (path, rows) in enumerate(zip(buckets.paths, buckets.rows, strict=True))
    ][::-1]
    while todo:
        path, index, of, rows = todo.pop()
        if rows <= 2 * MIX_BUCKET_ROWS:
            table = _read_scratch(path).sort_by([("order", "ascending"), ("id", "ascending")])
            path.unlink()
            yield table
            continue
        k = min(MAX_BUCKETS, -(-rows // MIX_BUCKET_ROWS))
        sub = scratch.buckets(k)
        # Batch by batch (each one flush, at most BUFFER_ROWS records).
        with pa.OSFile(str(path)) as raw:
            reader = pa.ipc.open_file(raw)
            for i in range(reader.num_record_batches):
                table = pa.Table.from_batches([reader.get_batch(i)])
                orders = table.column("order").to_numpy().astype(np.uint64)
                _add_by_bucket(sub, table, bucket_of(orders, of * k) - index * k)
        sub.close()
        path.unlink()
        todo += [
            (p, index * k + j, of * k, n)
            for j, (p, n) in enumerate(zip(sub.paths, sub.rows, strict=True))
        ][::-1]


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
    """The mix's scratch files (partitions, event files, sort buckets): records are buffered
    per bucket up to a fixed total, so memory stays bounded, and appended to the bucket's file
    a batch at a time.

    They are Arrow IPC files, read back once by this mix and removed: a parquet writer keeps
    every row group's metadata in memory until it closes (about 14 KB a row group of the
    mixture's columns, even without statistics), and a 10-million-record mix writes 256
    buckets of some 150 flushes each (0.55 GB held by its writers by the end, measured); an IPC
    writer keeps 24 bytes a batch. Each file is written under a temporary name (as
    ``runfolder.atomic_path`` names them) and renamed when it is whole, so no file with a
    final name is ever half-written; ``folder.clear`` and ``remove_temporaries`` remove what a
    killed mix leaves."""

    BUFFER_ROWS = 50_000  # across all buckets

    def __init__(
        self,
        directory: Path,
        n: int,
        first: int = 0,
        schema: pa.Schema = MIX_SCHEMA,
        compression: str = "zstd",
    ) -> None:
        self.paths = [directory / f"b-{first + i:05d}.arrow" for i in range(n)]
        self.schema = schema
        self.rows = [0] * n  # records written to each bucket
        self._options = pa.ipc.IpcWriteOptions(
            compression=None if compression == "none" else compression
        )
        self._files: list[pa.NativeFile | None] = [None] * n
        self._writers: list[pa.ipc.RecordBatchFileWriter | None] = [None] * n
        self._temporaries: list[Path | None] = [None] * n
        self._limit = max(256, self.BUFFER_ROWS // n)
        self._pending: list[list[pa.Table]] = [[] for _ in range(n)]
        self._buffered = [0] * n

    def __len__(self) -> int:
        return len(self.paths)

    def add(self, bucket: int, table: pa.Table) -> None:
        self._pending[bucket].append(table)
        self._buffered[bucket] += table.num_rows
        if self._buffered[bucket] >= self._limit:
            self._flush(bucket)

    def _writer(self, bucket: int) -> pa.ipc.RecordBatchFileWriter:
        writer = self._writers[bucket]
        if writer is None:
            path = self.paths[bucket]
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                os.close(fd)
                sink = self._files[bucket] = pa.OSFile(tmp, "wb")
                writer = pa.ipc.new_file(sink, self.schema, options=self._options)
            except OSError as exc:
                raise _write_error(path, exc) from None
            self._writers[bucket] = writer
            self._temporaries[bucket] = Path(tmp)
        return writer

    def _flush(self, bucket: int) -> None:
        if self._pending[bucket]:
            # One batch per flush: its slices joined, so a file has few, full batches.
            batch = pa.concat_tables(self._pending[bucket]).combine_chunks()
            try:
                self._writer(bucket).write_table(batch)
            except OSError as exc:
                raise _write_error(self.paths[bucket], exc) from None
            self.rows[bucket] += batch.num_rows
        self._pending[bucket], self._buffered[bucket] = [], 0

    def close(self) -> None:
        """Flush and close every bucket; a bucket that got no rows is an empty file."""
        for bucket, path in enumerate(self.paths):
            self._flush(bucket)
            try:
                self._writer(bucket).close()
                sink = self._files[bucket]
                assert sink is not None
                sink.close()
                tmp = self._temporaries[bucket]
                assert tmp is not None
                os.replace(tmp, path)
            except OSError as exc:
                raise _write_error(path, exc) from None


def _read_scratch(path: Path) -> pa.Table:
    """A scratch file of ``_Buckets``, whole."""
    with pa.OSFile(str(path)) as raw:
        return pa.ipc.open_file(raw).read_all()


class _Scratch:
    """Numbers the mix's scratch files in ``mixed/.buckets`` (``b-NNNNN.arrow``, names
    ``RunFolder.clear`` knows): partitions, event files and sort buckets, none sharing a name."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._next = 0

    def buckets(
        self, n: int, schema: pa.Schema = MIX_SCHEMA, compression: str = "zstd"
    ) -> _Buckets:
        made = _Buckets(self.directory, n, self._next, schema, compression)
        self._next += n
        return made


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
    if not table.num_rows:
        return
    ranked = np.argsort(which, kind="stable")
    grouped = table.take(pa.array(ranked))
    sorted_which = which[ranked]
    starts = np.flatnonzero(np.diff(sorted_which, prepend=-1))
    ends = np.append(starts[1:], len(ranked))
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        buckets.add(int(sorted_which[lo]), grouped.slice(lo, hi - lo))
