"""The mix stage: which accepted records make the mixture, in which order and split.

How many each source contributes is planned before rendering (``plan.py``); here train records
that overlap held-out text are dropped (decontamination), then duplicate conversations (dedup),
then each source's share is taken by a seeded hash of stable ids, so nothing depends on arrival
order. Every record dropped here is in ``rejects/mix`` with its reason.
"""

from __future__ import annotations

import json
import time
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
from .decontam import EvalIndex, Overlap, conversation_texts
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
    atomic_text,
    write_rejects,
)
from .seeding import stable_key


def example_key(seed: int, source: str, example_id: str) -> int:
    """Which examples load keeps when a cap binds: the smallest keys."""
    return stable_key(seed, "examples", source, example_id)


def record_key(seed: int, record_id: str) -> int:
    """Which records the mix keeps when it has more than its target: the smallest keys."""
    return stable_key(seed, "records", record_id)


def order_key(seed: int, record_id: str) -> int:
    """Position of a record in the exported mixture: a seeded shuffle across sources."""
    return stable_key(seed, "order", record_id)


# --------------------------------------------------------------------------- the mix stage


# Records per sorting bucket: the mix holds one bucket in memory, never the whole mixture.
MIX_BUCKET_ROWS = 25_000
MAX_BUCKETS = 4096  # open files; past this, buckets grow instead


def mix_stage(out: Path, *, progress: Progress | None = None) -> Manifest:
    """Stage 4: drop train records that overlap held-out text (decontamination) and duplicate
    conversations (dedup), take each source's share (smallest seeded keys), and shuffle across
    sources by a seeded order key into train, validation and eval.

    Streams: the decisions need only a few 8-byte columns per record (keys and hashes); the
    order is a global sort done as a bucket sort on the top bits of the order key, so memory
    holds one part and one bucket at a time.
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
# Mixed into a hash so equal conversations in different splits fall in different groups.
_SPLIT_SALT = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class _Survey:
    """What the mix needs of every accepted record, in (source, part, row) order: 8-byte
    columns, plus the few contaminated records' overlaps."""

    sources: list[str]
    offsets: dict[tuple[str, int], int]  # (source, part) -> its first row's global index
    source_of: npt.NDArray[np.int32]
    split_of: npt.NDArray[np.int8]
    keys: npt.NDArray[np.uint64]
    hashes: RecordHashes
    overlaps: dict[int, Overlap]
    ids: pa.Array  # record ids, for the messages that name a kept record


def _survey(
    folder: RunFolder,
    manifest: Manifest,
    recipe: Recipe,
    index: EvalIndex | None,
    advance: Any,
) -> _Survey:
    sources = list(manifest.sources)
    offsets: dict[tuple[str, int], int] = {}
    source_of, split_of, keys, hashes, ids = [], [], [], [], []
    overlaps: dict[int, Overlap] = {}
    at = 0
    for s_index, name in enumerate(sources):
        for p_index, path in enumerate(folder.parts("valid", name)):
            table = pq.read_table(path, columns=["id", "messages", "out_split"])
            offsets[(name, p_index)] = at
            n = table.num_rows
            part_ids = table.column("id").combine_chunks()
            splits = table.column("out_split").to_pylist()
            ids.append(part_ids)
            source_of.append(np.full(n, s_index, dtype=np.int32))
            split_of.append(np.array([SPLIT_CODES[s] for s in splits], dtype=np.int8))
            keys.append(
                np.fromiter(
                    (record_key(recipe.seed, i) for i in part_ids.to_pylist()),
                    dtype=np.uint64,
                    count=n,
                )
            )
            hashes.append(record_hashes(table.column("messages")))
            if index is not None:
                train = [i for i, s in enumerate(splits) if s == "train"]
                joined = conversation_texts(table.column("messages"))
                texts = [joined[i] for i in train]
                for i, overlap in zip(train, index.match_many(texts), strict=True):
                    if overlap is not None:
                        overlaps[at + i] = overlap
            at += n
            advance(n)
    return _Survey(
        sources,
        offsets,
        np.concatenate(source_of) if source_of else np.zeros(0, dtype=np.int32),
        np.concatenate(split_of) if split_of else np.zeros(0, dtype=np.int8),
        np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64),
        RecordHashes.concat(hashes),
        overlaps,
        pa.concat_arrays(ids) if ids else pa.array([], pa.string()),
    )


@dataclass
class _Decisions:
    contaminated: npt.NDArray[np.bool_]
    duplicate_of: npt.NDArray[np.int64]  # -1: not a duplicate
    exact: npt.NDArray[np.bool_]
    selected: npt.NDArray[np.bool_]
    conflicting: npt.NDArray[np.bool_]


def _decide(survey: _Survey, manifest: Manifest, recipe: Recipe) -> _Decisions:
    """Decontaminate, then dedup what is left within each split (the first by record key is
    kept), then take each source's share by the smallest record keys."""
    n = len(survey.keys)
    contaminated = np.zeros(n, dtype=np.bool_)
    if survey.overlaps:
        contaminated[np.fromiter(survey.overlaps, dtype=np.int64)] = True
    duplicate_of = np.full(n, -1, dtype=np.int64)
    exact = np.zeros(n, dtype=np.bool_)
    if recipe.dedup.exact or recipe.dedup.normalized:
        conversation = survey.hashes.normalized if recipe.dedup.normalized else survey.hashes.exact
        live = np.flatnonzero(~contaminated)
        # One group per (split, conversation): a record is never deduplicated against a record
        # of another split (across splits, decontamination decides).
        grouped = conversation[live] ^ (survey.split_of[live].astype(np.uint64) * _SPLIT_SALT)
        keeper = keeper_index(grouped, survey.keys[live])
        dropped = np.flatnonzero(keeper != np.arange(len(live)))
        kept_for = live[keeper[dropped]]
        duplicate_of[live[dropped]] = kept_for
        exact[live[dropped]] = survey.hashes.exact[live[dropped]] == survey.hashes.exact[kept_for]
    remaining = ~contaminated & (duplicate_of < 0)
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
        prompt = survey.hashes.prompt[chosen] ^ (
            survey.split_of[chosen].astype(np.uint64) * _SPLIT_SALT
        )
        conflicting[chosen] = conflicting_prompts(prompt, survey.hashes.answer[chosen])
    return _Decisions(contaminated, duplicate_of, exact, selected, conflicting)


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
    for name, counts in manifest.sources.items():
        counts.records_selected = counts.records_deduplicated = 0
        counts.records_decontaminated = counts.records_conflicting = 0
        original: dict[str, dict[str, int]] = {}
        for p_index, path in enumerate(folder.parts("valid", name)):
            table = pq.read_table(path, schema=PART_SCHEMA)
            at = survey.offsets[(name, p_index)]
            rows = slice(at, at + table.num_rows)
            write_rejects(
                folder.rejects("mix", name, p_index), _mix_rejects(table, at, survey, decisions)
            )
            counts.records_decontaminated += int(np.count_nonzero(decisions.contaminated[rows]))
            counts.records_deduplicated += int(np.count_nonzero(decisions.duplicate_of[rows] >= 0))
            counts.records_conflicting += int(np.count_nonzero(decisions.conflicting[rows]))
            chosen = table.filter(pa.array(decisions.selected[rows], type=pa.bool_()))
            counts.records_selected += chosen.num_rows
            for split, origin in zip(
                chosen.column("out_split").to_pylist(),
                chosen.column("split").to_pylist(),
                strict=True,
            ):
                per = original.setdefault(split, {})
                per[origin] = per.get(origin, 0) + 1
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


def _mix_rejects(table: pa.Table, at: int, survey: _Survey, decisions: _Decisions) -> list[Reject]:
    dropped = [
        i
        for i in range(at, at + table.num_rows)
        if decisions.contaminated[i] or decisions.duplicate_of[i] >= 0
    ]
    cols = {c: table.column(c) for c in ("source", "split", "example_id", "template_id", "id")}
    out = []
    for i in dropped:
        j = i - at
        if decisions.contaminated[i]:
            overlap = survey.overlaps[i]
            rule = "contaminated"
            message = (
                f"shares {len(overlap.span.split())} tokens with held-out {overlap.item_id}: "
                f"{overlap.span!r}"
            )
        else:
            kept = int(decisions.duplicate_of[i])
            how = "identical to" if decisions.exact[i] else "the same, once normalised, as"
            rule = "duplicate_record"
            where = survey.sources[int(survey.source_of[kept])]
            message = f"{how} record {survey.ids[kept].as_py()} ({where}), which is kept"
        out.append(
            Reject(
                stage="mix",
                source=cols["source"][j].as_py(),
                split=cols["split"][j].as_py(),
                example_id=cols["example_id"][j].as_py(),
                template_id=cols["template_id"][j].as_py(),
                rule=rule,
                message=message,
                locator=f"record {cols['id'][j].as_py()}",
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
    for path in buckets.paths:
        table = pq.read_table(path).sort_by([("order", "ascending"), ("id", "ascending")])
        for split in sinks:
            part = table.filter(pc.equal(table["out_split"], split))
            groups[split].add(part.select(RECORD_SCHEMA.names))
            splits[split] = splits.get(split, 0) + part.num_rows
        path.unlink()
    for split in OUT_SPLITS:
        groups[split].close()
        sinks[split].close()
        if split != "train" and splits.get(split, 0) == 0:
            folder.mixed(split).unlink()
            splits.pop(split, None)
    return splits


def _write_conflicts(folder: RunFolder, survey: _Survey, decisions: _Decisions) -> None:
    """Selected records whose prompt another selected record of the split shares with a
    different answer: reported for a person to read (label noise, or a template that drops the
    input that tells them apart), never dropped."""
    flagged = np.flatnonzero(decisions.conflicting)
    path = folder.root / "mixed" / "conflicts.jsonl"
    if not len(flagged):
        path.unlink(missing_ok=True)
        return
    with atomic_text(path) as fh:
        for i in flagged.tolist():
            row = {
                "record": survey.ids[i].as_py(),
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
    stays bounded and each bucket file gets few, large row groups (a parquet writer keeps
    every row group's metadata in memory until it closes)."""

    BUFFER_ROWS = 50_000  # across all buckets

    def __init__(self, directory: Path, n: int) -> None:
        self.paths = [directory / f"b-{i:05d}.parquet" for i in range(n)]
        self._sinks = [ParquetSink(p, MIX_SCHEMA) for p in self.paths]
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

    def _flush(self, bucket: int) -> None:
        if self._pending[bucket]:
            self._sinks[bucket].write_table(pa.concat_tables(self._pending[bucket]))
        self._pending[bucket], self._rows[bucket] = [], 0

    def close(self) -> None:
        for bucket, sink in enumerate(self._sinks):
            self._flush(bucket)
            sink.close()


def _scatter(table: pa.Table, seed: int, buckets: _Buckets) -> None:
    """Append records to the bucket their order key falls in, with their order and split."""
    ids = table.column("id").to_pylist()
    orders = [order_key(seed, i) for i in ids]
    n = len(buckets)
    which = [(o * n) >> 64 for o in orders]
    full = (
        table.select(RECORD_SCHEMA.names)
        .append_column("order", pa.array(orders, type=pa.uint64()))
        .append_column("out_split", table.column("out_split"))
    )
    for b in sorted(set(which)):
        mask = pa.array([w == b for w in which], type=pa.bool_())
        buckets.add(b, full.filter(mask))
