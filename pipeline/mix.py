"""Mixing: how many records each source contributes, and which ones.

The plan is made before anything is rendered, from the sources' sizes, so that a cap is pushed
down to load: a 3k cap on a 400k-example source renders a few thousand examples, not 400k x
templates. Selection is by a seeded hash of stable ids, so it does not depend on arrival order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .catalog import recipe_context
from .errors import CatalogError, RunFolderError
from .models import Manifest, Mixing
from .progress import NullProgress, Progress
from .runfolder import RECORD_SCHEMA, ParquetSink, RowGroups, RunFolder
from .seeding import stable_key, stable_unit

# Some examples are rejected after load; render a little more than the target so the mix can
# still fill it. Extra accepted records are dropped by the mix (and counted as such).
PUSHDOWN_MARGIN = 1.10
PUSHDOWN_SLACK = 8


@dataclass(frozen=True)
class SourcePlan:
    examples_available: int
    templates_per_example: int
    records_target: int
    examples_needed: int

    @property
    def records_possible(self) -> int:
        return self.examples_available * self.templates_per_example


def plan_mixture(mixing: Mixing, sizes: Mapping[str, tuple[int, int]]) -> dict[str, SourcePlan]:
    """``sizes`` maps source -> (examples available, templates per example)."""
    names = sorted(sizes)
    possible = {n: sizes[n][0] * sizes[n][1] for n in names}
    capped = {n: min(possible[n], mixing.cap) if mixing.cap else possible[n] for n in names}

    if mixing.strategy == "proportional":
        weights = {n: float(capped[n]) for n in names}
    elif mixing.strategy == "temperature":
        weights = {n: capped[n] ** (1.0 / mixing.temperature) if capped[n] else 0.0 for n in names}
    else:
        unknown = sorted(set(mixing.weights) - set(names))
        if unknown:
            raise CatalogError(f"mixing.weights names sources not in the recipe: {unknown}")
        missing = [n for n in names if n not in mixing.weights]
        if missing:
            raise CatalogError(f"mixing.weights has no weight for sources {missing}")
        weights = {n: float(mixing.weights[n]) for n in names}

    if mixing.size is None and mixing.strategy == "proportional":
        targets = dict(capped)
    else:
        size = mixing.size if mixing.size is not None else sum(capped.values())
        targets = apportion(size, weights)
        targets = {n: min(targets[n], capped[n]) for n in names}

    plans = {}
    for n in names:
        per = sizes[n][1]
        needed = math.ceil(targets[n] / per * PUSHDOWN_MARGIN) + PUSHDOWN_SLACK if per else 0
        plans[n] = SourcePlan(sizes[n][0], per, targets[n], min(sizes[n][0], needed))
    return plans


def apportion(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights`` into integers that sum to it exactly."""
    names = sorted(weights)
    wsum = sum(weights.values())
    if wsum <= 0:
        return {n: 0 for n in names}
    quotas = {n: total * weights[n] / wsum for n in names}
    out = {n: math.floor(quotas[n]) for n in names}
    leftover = total - sum(out.values())
    # Largest remainder, ties broken by name so the result never depends on dict order.
    for n in sorted(names, key=lambda n: (out[n] - quotas[n], n))[:leftover]:
        out[n] += 1
    return out


def example_key(seed: int, source: str, example_id: str) -> int:
    """Which examples load keeps when a cap binds: the smallest keys."""
    return stable_key(seed, "examples", source, example_id)


def record_key(seed: int, record_id: str) -> int:
    """Which records the mix keeps when it has more than its target: the smallest keys."""
    return stable_key(seed, "records", record_id)


def order_key(seed: int, record_id: str) -> int:
    """Position of a record in the exported mixture: a seeded shuffle across sources."""
    return stable_key(seed, "order", record_id)


def split_of(seed: int, source: str, example_id: str, validation_fraction: float) -> str:
    """Split by example, not by record, so no example leaks from train into validation."""
    if validation_fraction <= 0:
        return "train"
    return (
        "validation"
        if stable_unit(seed, "split", source, example_id) < validation_fraction
        else "train"
    )


# --------------------------------------------------------------------------- the mix stage


# Records per sorting bucket: the mix holds one bucket in memory, never the whole mixture.
MIX_BUCKET_ROWS = 25_000
MAX_BUCKETS = 4096  # open files; past this, buckets grow instead


def mix_stage(out: Path, *, progress: Progress | None = None) -> Manifest:
    """Stage 4: each source's share (smallest seeded keys), shuffled across sources by a seeded
    order key and split into train/validation by example.

    Streams: the order is a global sort done as a bucket sort on the top bits of the order key,
    so memory holds one part and one bucket at a time.
    """
    progress = progress or NullProgress()
    folder = RunFolder(out)
    with folder.lock():
        started = time.perf_counter()
        manifest = folder.read_manifest(needs="validate")
        folder.clear("mixed")
        folder.remove_temporaries()
        recipe, _ = recipe_context(manifest)
        for name in manifest.sources:
            stale = folder.stale_parts("valid", name, manifest.run_fingerprint)
            if stale:
                raise RunFolderError(
                    f"{stale[0]}: written by another run (or truncated); rerun with --fresh"
                )
        seed = recipe.seed
        bounds = {
            name: _selection_bound(folder, name, seed, counts.records_target)
            for name, counts in manifest.sources.items()
        }
        total = sum(min(c.records_target, c.records_accepted) for c in manifest.sources.values())
        n_buckets = min(MAX_BUCKETS, max(1, -(-total // MIX_BUCKET_ROWS)))
        bucket_dir = folder.root / "mixed" / ".buckets"
        buckets = _Buckets(bucket_dir, n_buckets)
        with progress.task(
            "mix", sum(c.records_accepted for c in manifest.sources.values())
        ) as advance:
            for name, counts in manifest.sources.items():
                selected = 0
                for path in folder.parts("valid", name):
                    table = pq.read_table(path, schema=RECORD_SCHEMA)
                    ids = table.column("id").to_pylist()
                    bound = bounds[name]
                    keep = [bound is None or record_key(seed, i) <= bound for i in ids]
                    table = table.filter(pa.array(keep, type=pa.bool_()))
                    selected += table.num_rows
                    _scatter(table, seed, recipe.validation_fraction, buckets)
                    advance(len(ids))
                counts.records_selected = selected
                counts.records_dropped_by_mix = counts.records_accepted - selected
        buckets.close()
        manifest.splits = {}
        sinks = {
            split: ParquetSink(folder.mixed(split), RECORD_SCHEMA, recipe.export.row_group_rows)
            for split in ("train", "validation")
        }
        groups = {split: RowGroups(sinks[split], recipe.export.row_group_rows) for split in sinks}
        for path in buckets.paths:
            table = pq.read_table(path).sort_by([("order", "ascending"), ("id", "ascending")])
            for split in sinks:
                part = table.filter(pc.equal(table["out_split"], split))
                groups[split].add(part.select(RECORD_SCHEMA.names))
                manifest.splits[split] = manifest.splits.get(split, 0) + part.num_rows
            path.unlink()
        for split in list(sinks):
            groups[split].close()
            sinks[split].close()
            if split != "train" and manifest.splits.get(split, 0) == 0:
                folder.mixed(split).unlink()
                del manifest.splits[split]
        with suppress(OSError):
            bucket_dir.rmdir()  # its bucket files are gone; anything else keeps it
        manifest.stages_done = ["load", "render", "validate", "mix"]
        manifest.timings_s["mix"] = round(time.perf_counter() - started, 3)
        folder.write_manifest(manifest)
        return manifest


MIX_SCHEMA = RECORD_SCHEMA.append(pa.field("order", pa.uint64())).append(
    pa.field("out_split", pa.string())
)


def _selection_bound(folder: RunFolder, name: str, seed: int, target: int) -> int | None:
    """The largest record key a source keeps, or None when it keeps every accepted record."""
    chunks = [
        np.fromiter(
            (
                record_key(seed, i)
                for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()
            ),
            dtype=np.uint64,
        )
        for p in folder.parts("valid", name)
    ]
    keys = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.uint64)
    if len(keys) <= target:
        return None
    if target == 0:
        return -1
    return int(np.partition(keys, target - 1)[target - 1])


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


def _scatter(table: pa.Table, seed: int, fraction: float, buckets: _Buckets) -> None:
    """Append records to the bucket their order key falls in, with their order and split."""
    ids = table.column("id").to_pylist()
    orders = [order_key(seed, i) for i in ids]
    splits = [
        split_of(seed, s, e, fraction)
        for s, e in zip(
            table.column("source").to_pylist(), table.column("example_id").to_pylist(), strict=True
        )
    ]
    n = len(buckets)
    which = [(o * n) >> 64 for o in orders]
    full = table.append_column("order", pa.array(orders, type=pa.uint64())).append_column(
        "out_split", pa.array(splits, type=pa.string())
    )
    for b in sorted(set(which)):
        mask = pa.array([w == b for w in which], type=pa.bool_())
        buckets.add(b, full.filter(mask))
