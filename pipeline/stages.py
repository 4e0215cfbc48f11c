"""The stages over a run folder: load -> render -> validate -> mix (export lives in export.py).

Each stage reads only what the previous one wrote into the run folder, so running them one by one
gives the same bytes as ``run``. Render and validate run part by part on an executor (this
process, worker processes, or Ray); each part's files are named by the part alone, so the bytes
do not depend on the executor or the number of workers.
"""

from __future__ import annotations

import functools
import heapq
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import __version__
from .catalog import (
    Catalog,
    Source,
    Template,
    builtin_root,
    catalog_for_recipe,
    load_recipe,
    recipe_context,
)
from .columns import RecordColumns
from .errors import RunFolderError
from .executor import Executor, LocalExecutor
from .heap import stage_heap
from .load import (
    MIN_SHARD_ROWS,
    SHARD_ROWS,
    BadRow,
    DataMode,
    Example,
    SplitData,
    iter_rows,
    open_source,
)
from .mix import example_key
from .models import Manifest, Recipe, Reject, SourceCounts
from .plan import plan_recipe
from .progress import NullProgress, Progress
from .render import Renderer
from .rules import CompiledRule, broken_rule, compile_rules
from .runfolder import (
    EXAMPLE_SCHEMA,
    PART_SCHEMA,
    ParquetSink,
    PartSink,
    RejectSink,
    RunFolder,
    link_part,
    num_rows,
    part_run,
    read_batches,
    reject_lines,
    write_part,
    write_rejects,
)
from .seeding import stable_id
from .splits import (
    POOL_SPLITS,
    GroupJoiner,
    Membership,
    Role,
    group_function,
    group_hashes,
    group_name,
    out_split,
    resolve_sources,
)
from .validate import check_table, holds_template_syntax

# Examples per part: the unit of parallel work. Fixed, so part files never depend on workers.
EXAMPLES_PER_PART = 2000
# Few-shot exemplars are drawn from at most this many examples of a source (smallest keys).
FEW_SHOT_POOL = 20_000
OUTPUT_DIR = {"render": "rendered", "validate": "valid"}


def default_recipe_path() -> Path:
    return builtin_root() / "recipes" / "default.yaml"


def templates_per_example(recipe: Recipe, n_templates: int) -> int:
    per = recipe.templates_per_example
    return n_templates if per == "all" else min(per, n_templates)


def templates_for_role(recipe: Recipe, templates: Sequence[Template], role: str) -> int:
    """How many templates an example of a source in ``role`` is rendered with: an eval
    source's examples draw only from the templates that pose its task (``eval_templates``)."""
    if role == "eval" and recipe.eval_templates == "original_task":
        posing = [t for t in templates if t.spec.poses_task]
        templates = posing or templates
    return templates_per_example(recipe, len(templates))


# --------------------------------------------------------------------------- load


@dataclass
class Prepared:
    """A recipe resolved against its catalog, with its sources opened and fingerprinted."""

    recipe: Recipe
    recipe_path: Path
    catalog: Catalog
    members: dict[str, Membership]
    opened: dict[str, list[Any]]
    inputs: dict[str, str]
    source_dirs: list[Path]
    template_dirs: list[Path]
    data: DataMode

    @property
    def recipe_fingerprint(self) -> str:
        return stable_id(json.dumps(self.recipe.model_dump(mode="json"), sort_keys=True))

    @property
    def run_fingerprint(self) -> str:
        """Everything the output depends on: recipe, specs, templates, data, code version."""
        parts = [__version__, self.recipe_fingerprint, self.data]
        parts += [f"{n}={self.inputs[n]}" for n in sorted(self.inputs)]
        return stable_id(*parts)


def prepare(
    recipe_path: Path | None,
    *,
    data: DataMode = "sample",
    source_dirs: Sequence[Path] = (),
    template_dirs: Sequence[Path] = (),
    progress: Progress | None = None,
) -> Prepared:
    progress = progress or NullProgress()
    recipe_path = Path(recipe_path) if recipe_path is not None else default_recipe_path()
    if not recipe_path.is_file():
        # A bare name means a recipe of the catalog (built-in or --sources' siblings).
        catalog = catalog_for_recipe(source_dirs, template_dirs)
        recipe_path = catalog.recipe_path(str(recipe_path))
    recipe = load_recipe(recipe_path)
    base = recipe_path.parent
    src_dirs = [Path(d).resolve() for d in source_dirs] + [
        (base / d).resolve() for d in recipe.catalog.sources
    ]
    tpl_dirs = [Path(d).resolve() for d in template_dirs] + [
        (base / d).resolve() for d in recipe.catalog.templates
    ]
    # Folders the recipe names are relative to the recipe file.
    catalog = catalog_for_recipe(src_dirs, tpl_dirs)
    members = resolve_sources(recipe, catalog)
    names = list(members)
    # A broken rule stops the run here, before anything renders.
    compile_rules(recipe.record_rules, f"{recipe_path}")
    for name in names:
        compile_rules(catalog.source(name).spec.record_rules, str(catalog.source(name).path))
    opened = {}
    with progress.task("opening sources", len(names)) as advance:
        for name in names:
            opened[name] = open_source(catalog.source(name), data)
            advance(1)
    inputs = {name: _fingerprint_source(catalog, name, opened[name]) for name in names}
    return Prepared(
        recipe, recipe_path.resolve(), catalog, members, opened, inputs, src_dirs, tpl_dirs, data
    )


def load_stage(
    recipe_path: Path | None,
    out: Path,
    *,
    data: DataMode = "sample",
    source_dirs: Sequence[Path] = (),
    template_dirs: Sequence[Path] = (),
    progress: Progress | None = None,
    prepared: Prepared | None = None,
    executor: Executor | None = None,
) -> Manifest:
    """Stage 1: read the recipe's sources into ``out/examples`` (the cap pushed down).

    The rows are read in shards (``shard_rows``: up to ``SHARD_ROWS`` rows of one split, fewer
    when there are more workers than big shards) on ``executor`` (default: this process),
    every source's and every shard of a big one in parallel; what needs the whole source
    (duplicate ids, the cap, groups joined across rows) is decided here once its shards are
    in, in file order, so the bytes never depend on the shards or the executor."""
    progress = progress or NullProgress()
    folder = RunFolder(out)
    with folder.lock(create=True):
        started = time.perf_counter()
        p = prepared or prepare(
            recipe_path,
            data=data,
            source_dirs=source_dirs,
            template_dirs=template_dirs,
            progress=progress,
        )
        # Everything downstream derives from what load writes: start the folder afresh.
        folder.clear("examples", "rendered", "valid", "mixed", "rejects")
        folder.remove_temporaries()
        manifest = Manifest(
            instructmix_version=__version__,
            recipe=p.recipe.model_dump(mode="json"),
            recipe_path=str(p.recipe_path),
            recipe_fingerprint=p.recipe_fingerprint,
            run_fingerprint=p.run_fingerprint,
            catalog_dirs={
                "sources": [str(d) for d in p.source_dirs],
                "templates": [str(d) for d in p.template_dirs],
            },
            data=p.data,
            inputs=p.inputs,
        )
        folder.write_manifest(manifest)  # stages_done stays empty until load completes
        sizes = {
            name: (
                sum(len(s) for s in p.opened[name]),
                templates_for_role(p.recipe, p.catalog.templates_for(name), p.members[name].role),
            )
            for name in p.members
        }
        plans = plan_recipe(p.recipe, sizes, p.members)
        seconds = p.recipe.limits.max_render_seconds
        for name in p.members:
            # A split_group that cannot compile stops the run here, before any worker starts.
            group_function(p.catalog.source(name), seconds)
        own = executor is None
        runner = executor or LocalExecutor(1)
        tasks = _load_shards(folder, p, runner.workers)
        results: dict[str, list[ShardResult]] = {name: [] for name in p.members}
        shards = {name: sum(t.name == name for t in tasks) for name in p.members}
        loaded: dict[str, SourceCounts] = {}

        def finish(name: str) -> None:
            loaded[name] = _finish_source(
                folder, p.recipe, name, p.members[name], results[name],
                plans[name].examples_needed, p.run_fingerprint,
            )  # fmt: skip

        try:
            with (
                progress.task("load", sum(size for size, _ in sizes.values())) as advance,
                stage_heap(),
            ):
                for name in p.members:
                    if not shards[name]:
                        finish(name)  # no rows at all: its empty part and reject file
                # The driver may read shards itself while the workers start: a shard renders no
                # record (its row filters and split groups are bounded by the time limit), and
                # the executor keeps tasks off the driver under a memory limit.
                for i, result in runner.imap(load_shard, tasks, assist=True):
                    name = tasks[i].name
                    advance(result.rows_in)
                    results[name].append(result)
                    if len(results[name]) == shards[name]:
                        # Its shards are in: the whole-source pass runs here while workers
                        # go on with the other sources' shards.
                        finish(name)
        finally:
            if own:
                runner.close()
        for name in p.members:
            counts = loaded[name]
            counts.records_target = plans[name].records_target
            counts.cluster = p.catalog.source(name).spec.cluster
            counts.role = p.members[name].role
            counts.submix = p.members[name].submix
            manifest.sources[name] = counts
        manifest.stages_done = ["load"]
        manifest.timings_s["load"] = round(time.perf_counter() - started, 3)
        folder.write_manifest(manifest)
        return manifest


def _fingerprint_source(catalog: Catalog, name: str, splits: list[Any]) -> str:
    parts = [catalog.source(name).spec.model_dump_json()]
    parts += [t.spec.model_dump_json() for t in catalog.templates_for(name)]
    for s in splits:
        where = Path(s.where)
        if where.is_file():
            # A local file: its size and modification time stand for its content.
            stat = where.stat()
            parts.append(f"{s.split}:{where.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
        else:
            parts.append(f"{s.split}:{s.where}:{s.dataset._fingerprint}")
    return stable_id(*parts)


# A load shard's rejects, as the JSON lines its source's reject file holds.
_REJECT_LINES = pa.schema([("line", pa.string())])


@dataclass(frozen=True)
class LoadShard:
    """Rows ``start`` to ``stop`` of one split of one source: a unit of load's first pass.

    Picklable, so it runs on worker processes and Ray as parts do: the split travels as the
    table or dataset ``open_source`` opened, which pickles as a reference to its files (on a
    Ray cluster of several machines, the sources, like the run folder, must be on storage every
    node mounts)."""

    out: str
    name: str
    shard: int  # its number among its source's shards, in file order: names its files
    # Left out of the repr: a dead worker's message names the task, in one readable line.
    source: Source = field(repr=False)
    split_data: SplitData = field(repr=False)
    data: DataMode = field(repr=False)
    recipe: Recipe = field(repr=False)
    role: Role = field(repr=False)
    start: int = 0
    stop: int = 0


@dataclass(frozen=True)
class ShardResult:
    shard: int
    rows_in: int
    # Rows with several group keys: their groups (and splits) are named once the whole source
    # is in; a row with one key has both from the row alone.
    joined: int


def shard_rows(total_rows: int, workers: int) -> int:
    """Rows per load shard: ``SHARD_ROWS``, or fewer when the run's rows would not give every
    worker four shards to read (40,000 rows on two workers: eight shards of 5,000, not one of
    40,000 that one worker reads while the other waits); never under ``MIN_SHARD_ROWS``,
    where a task's own start costs more than its share of the rows. Four, not two: the driver
    reads the first shards while the workers start, and with two each the last shard ran
    alone (40,000 e-SNLI rows on two workers: load 1.44 s against 1.56 s, three alternating
    runs each). Where the shards end never changes what load writes (the whole-source pass
    reads them in file order)."""
    if workers <= 1:
        return SHARD_ROWS  # one process reads them one after another anyway
    wanted = -(-total_rows // (4 * workers))
    return max(MIN_SHARD_ROWS, min(SHARD_ROWS, wanted))


def _load_shards(folder: RunFolder, p: Prepared, workers: int = 1) -> list[LoadShard]:
    """Every shard of every source, the biggest first (so no big one starts last)."""
    tasks = []
    size = shard_rows(sum(len(s) for splits in p.opened.values() for s in splits), workers)
    for name, member in p.members.items():
        source = p.catalog.source(name)
        shard = 0
        for split_data in p.opened[name]:
            rows = len(split_data)
            for start in range(0, rows, size):
                stop = min(start + size, rows)
                tasks.append(
                    LoadShard(
                        str(folder.root),
                        name,
                        shard,
                        source,
                        split_data,
                        p.data,
                        p.recipe,
                        member.role,
                        start,
                        stop,
                    )
                )
                shard += 1
    return sorted(tasks, key=lambda t: t.start - t.stop)


def _shard_file(folder: RunFolder, name: str, shard: int, what: str = "") -> Path:
    # Named as load's temporaries are (`examples/.NAME.all.parquet`): a run that dies leaves
    # nothing the next one does not clear.
    return folder.root / "examples" / f".{name}.shard-{shard:05d}{what}.all.parquet"


def load_shard(task: LoadShard) -> ShardResult:
    """Load's first pass over one shard (a top-level function, so worker processes and Ray
    can run it): every row normalised, a bad one rejected with its reason, a good one written
    with its seeded key, its group keys' hashes and, when it has one key, its group and output
    split. Writes the shard's rows and rejects beside the parts; only counts travel back."""
    folder = RunFolder(Path(task.out))
    recipe, name, source = task.recipe, task.name, task.source
    group_of = group_function(source, recipe.limits.max_render_seconds)
    rows_in = joined = 0
    rows_sink = ParquetSink(_shard_file(folder, name, task.shard), EXAMPLE_SCHEMA, plain=True)
    rejects_file = _shard_file(folder, name, task.shard, ".rejects")
    with (
        rows_sink,
        ParquetSink(rejects_file, _REJECT_LINES, plain=True) as bad,
        stage_heap(),
    ):
        for batch in iter_rows(
            source,
            task.split_data,
            task.data,
            filter_seconds=recipe.limits.max_render_seconds,
            start=task.start,
            stop=task.stop,
        ):
            rows_in += len(batch)
            rows: list[dict[str, Any]] = []
            lines: list[dict[str, Any]] = []
            for item in batch:
                if isinstance(item, BadRow):
                    reject = _load_reject(
                        name, item.split, item.example_id, item.rule, item.message, item.locator
                    )
                    lines.append({"line": reject.model_dump_json()})
                    continue
                try:
                    hashed = group_hashes(group_of(item.example_id, item.fields))
                except Exception as exc:
                    reject = _load_reject(
                        name,
                        item.split,
                        item.example_id,
                        "split_group",
                        f"{source.path}: split_group: {type(exc).__name__}: {exc}",
                        item.locator,
                    )
                    lines.append({"line": reject.model_dump_json()})
                    continue
                key = example_key(recipe.seed, name, item.example_id)
                if len(hashed) == 1:
                    group = group_name(hashed[0])
                    split = out_split(recipe, name, task.role, group)
                    rows.append(_example_row(item, key, group, split))
                else:
                    # Its group is known once every row is in: named by _finish_source.
                    joined += 1
                    rows.append(_example_row(item, key, json.dumps(hashed), ""))
            rows_sink.write_rows(rows)
            bad.write_rows(lines)
    return ShardResult(task.shard, rows_in, joined)


def _key_summary(paths: list[Path], needed: int) -> tuple[set[int], int | None]:
    """The keys that occur more than once, and the largest key the cap keeps (None: it keeps
    every distinct key). Only the 8-byte key column is read: memory is 8 bytes per row."""
    chunks = [pq.read_table(path, columns=["key"]).column("key").to_numpy() for path in paths]
    keys = np.concatenate(chunks) if chunks else np.empty(0, np.uint64)
    del chunks
    keys.sort()
    first = np.ones(len(keys), np.bool_)  # where each distinct key first appears, sorted
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    distinct = int(np.count_nonzero(first))
    repeated = set(np.unique(keys[1:][~first[1:]]).tolist())
    bound = None
    if 0 < needed < distinct:
        # The `needed` smallest keys of distinct examples survive the cap.
        at = needed - 1 if distinct == len(keys) else int(np.flatnonzero(first)[needed - 1])
        bound = int(keys[at])
    return repeated, bound


def _finish_source(
    folder: RunFolder,
    recipe: Recipe,
    name: str,
    member: Membership,
    shards: list[ShardResult],
    needed: int,
    run: str,
) -> SourceCounts:
    """Load's pass over the whole source, once its shards are in: reject later duplicates of
    an id, keep the ``needed`` examples with the smallest seeded keys, name the groups joined
    across rows, and cut the rest into parts, in file order.

    Memory stays flat in the size of the source but for its key column (8 bytes a row) and, for
    a source whose rows have several group keys, the map of those keys."""
    shards = sorted(shards, key=lambda s: s.shard)
    paths = [_shard_file(folder, name, s.shard) for s in shards]
    counts = SourceCounts(examples_in=sum(s.rows_in for s in shards))
    repeated, bound = _key_summary(paths, needed)
    joiner: GroupJoiner | None = None
    if any(s.joined for s in shards):
        joiner = GroupJoiner()
        for path in paths:
            for batch in pq.ParquetFile(path).iter_batches(columns=["group"]):
                for group in batch.column(0).to_pylist():
                    if group.startswith("["):
                        joiner.join(json.loads(group))
    first_seen: dict[int, tuple[str, str]] = {}
    parts = PartSink(folder, "examples", name, EXAMPLE_SCHEMA, EXAMPLES_PER_PART, run)
    capped = 0
    by_split: dict[str, int] = {}
    with RejectSink(folder.rejects("load", name, 0)) as rejects, parts:
        for s in shards:
            for batch in read_batches(_shard_file(folder, name, s.shard, ".rejects")):
                for line in batch.column(0).to_pylist():
                    rejects.add(Reject.model_validate_json(line))
        for path in paths:
            for batch in read_batches(path):
                table = pa.Table.from_batches([batch], schema=EXAMPLE_SCHEMA)
                keys = table.column("key").to_numpy()
                if not needed:
                    keep = np.zeros(len(keys), np.bool_)
                elif bound is None:
                    keep = np.ones(len(keys), np.bool_)
                else:
                    keep = keys <= bound
                for i in np.flatnonzero(np.isin(keys, list(repeated))) if repeated else ():
                    k = int(keys[i])
                    eid = table.column("example_id")[i].as_py()
                    where = table.column("locator")[i].as_py()
                    first = first_seen.setdefault(k, (eid, where))
                    if first[1] != where and first[0] == eid:
                        keep[i] = False
                        rejects.add(
                            _load_reject(
                                name,
                                table.column("split")[i].as_py(),
                                eid,
                                "duplicate_example_id",
                                f"example id {eid!r} already used at {first[1]}",
                                where,
                            )
                        )
                        capped -= 1  # counted below as not kept; it is a reject, not capped
                capped += len(keep) - int(np.count_nonzero(keep))
                kept = table.filter(pa.array(keep, type=pa.bool_()))
                if joiner is not None:
                    kept = _with_groups(kept, joiner, recipe, name, member)
                for pair in pc.value_counts(kept.column("out_split")).to_pylist():
                    split, n = pair["values"], pair["counts"]
                    by_split[split] = by_split.get(split, 0) + n
                parts.write_table(kept)
        counts.examples_rejected = rejects.count
        counts.rejected_by_rule = dict(rejects.by_rule)
    for s in shards:
        _shard_file(folder, name, s.shard).unlink()
        _shard_file(folder, name, s.shard, ".rejects").unlink()
    counts.examples_exemplar_pool = by_split.pop("exemplar", 0)
    counts.examples_rendered = parts.rows - counts.examples_exemplar_pool
    counts.examples_by_split = dict(sorted(by_split.items()))
    counts.examples_capped = capped
    return counts


def _with_groups(
    table: pa.Table, joiner: GroupJoiner, recipe: Recipe, name: str, member: Membership
) -> pa.Table:
    """Name each example's group (its component of shared keys) and so its output split, for a
    source some of whose rows have several keys: a row with one key whose group another row
    joined to others is renamed (and resplit) too."""
    groups: list[str] = []
    splits: list[str] = []
    for written, split in zip(
        table.column("group").to_pylist(), table.column("out_split").to_pylist(), strict=True
    ):
        hashed = json.loads(written) if written.startswith("[") else [int(written, 16)]
        group = joiner.group(hashed)
        groups.append(group)
        splits.append(split if group == written else out_split(recipe, name, member.role, group))
    table = table.set_column(
        table.schema.get_field_index("group"), "group", pa.array(groups, pa.string())
    )
    return table.set_column(
        table.schema.get_field_index("out_split"), "out_split", pa.array(splits, pa.string())
    )


def _load_reject(
    source: str, split: str, example_id: str | None, rule: str, message: str, locator: str
) -> Reject:
    return Reject(
        stage="load",
        source=source,
        split=split,
        example_id=example_id,
        template_id=None,
        rule=rule,
        message=message,
        locator=locator,
    )


# ``json.dumps(fields, ensure_ascii=False, sort_keys=True)``, without building an encoder per row.
_FIELDS_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True)


def _example_row(example: Example, key: int, group: str, split: str) -> dict[str, Any]:
    return {
        "example_id": example.example_id,
        "split": example.split,
        "locator": example.locator,
        "fields": _FIELDS_JSON.encode(example.fields),
        "key": key,
        "group": group,
        "out_split": split,
        "language": example.language,
        "license": example.license,
    }


def examples_of(batch: pa.RecordBatch) -> list[Example]:
    # Column by column: a dict per row (``to_pylist``) cost as much again as the JSON.
    loads = json.loads
    return [
        Example(eid, split, loads(fields), locator, group, out_split, language, license)
        for eid, split, fields, locator, group, out_split, language, license in zip(
            *(batch.column(name).to_pylist() for name in _EXAMPLE_COLUMNS), strict=True
        )
    ]


# The columns ``examples_of`` reads, in the order of ``Example``'s fields.
_EXAMPLE_COLUMNS = (
    "example_id", "split", "fields", "locator", "group", "out_split", "language", "license",
)  # fmt: skip


# --------------------------------------------------------------------------- parts on executors


@dataclass(frozen=True)
class PartTask:
    """One part of one source for one stage; small and picklable, so it travels to workers."""

    out: str
    fingerprint: str  # the recipe's: cached per-process state is keyed by it
    source: str
    part: int
    run: str  # the run fingerprint, stamped into every part this task writes


@dataclass(frozen=True)
class PartResult:
    rows_in: int  # only a count travels back: the worker wrote the part itself


@functools.lru_cache(maxsize=4)
def _context(out: str, fingerprint: str) -> tuple[Recipe, Catalog]:
    # Per process: each worker rebuilds the recipe and catalog once, not once per part.
    return recipe_context(RunFolder(Path(out)).read_manifest())


@functools.lru_cache(maxsize=64)
def _rules(out: str, fingerprint: str, source: str) -> list[CompiledRule]:
    recipe, catalog = _context(out, fingerprint)
    spec = catalog.source(source)
    return [
        *compile_rules(recipe.record_rules, f"recipe {recipe.name!r}"),
        *compile_rules(spec.spec.record_rules, f"{spec.path}"),
    ]


@functools.lru_cache(maxsize=64)
def _renderer(out: str, fingerprint: str, source: str) -> Renderer:
    recipe, catalog = _context(out, fingerprint)
    pool = few_shot_pool(RunFolder(Path(out)), source) if recipe.variants.uses_exemplars else []
    return Renderer(catalog.source(source), catalog.templates_for(source), recipe, pool)


def few_shot_pool(folder: RunFolder, source: str) -> list[Example]:
    """The few-shot pool: of the examples that may be exemplars (train ones, or an eval
    source's exemplar pool), the FEW_SHOT_POOL with the smallest keys. Validation and eval
    examples are never in it, so no held-out answer reaches a prompt."""
    heap: list[tuple[int, str]] = []
    rows: dict[str, Example] = {}
    for path in folder.parts("examples", source):
        for batch in read_batches(path):
            for key, example in zip(
                batch.column("key").to_pylist(), examples_of(batch), strict=True
            ):
                if example.out_split not in POOL_SPLITS:
                    continue
                item = (-key, example.example_id)
                if len(heap) < FEW_SHOT_POOL:
                    heapq.heappush(heap, item)
                    rows[example.example_id] = example
                elif item > heap[0]:
                    dropped = heapq.heapreplace(heap, item)
                    del rows[dropped[1]]
                    rows[example.example_id] = example
    return list(rows.values())


def render_part(task: PartTask) -> PartResult:
    """Render one part of examples into records and write it (a top-level function, so worker
    processes and Ray can run it). Its output names come from the task alone."""
    # A part's records pile up as objects and Arrow buffers: see heap.py.
    with stage_heap():
        n, records, rejects, _ = _render_records(task)
        _finish_part(RunFolder(Path(task.out)), "render", task, records.table(), rejects)
        return PartResult(n)


def validate_part(task: PartTask) -> PartResult:
    """Check one part of rendered records; keep the good ones, reject the rest with a reason."""
    # A part's records pile up as objects and Arrow buffers: see heap.py.
    with stage_heap():
        folder = RunFolder(Path(task.out))
        table = pq.read_table(folder.part("rendered", task.source, task.part), schema=PART_SCHEMA)
        examples = folder.part("examples", task.source, task.part)
        with_syntax = _examples_with_template_syntax(examples)
        valid, rejects = _validate_records(task, table, with_syntax)
        _finish_part(folder, "validate", task, valid, rejects)
        return PartResult(table.num_rows)


def render_validate_part(task: PartTask) -> PartResult:
    """Both stages on one part without reading the rendered records back from disk; writes
    exactly the files ``render_part`` then ``validate_part`` would."""
    # A part's records pile up as objects and Arrow buffers: see heap.py.
    with stage_heap():
        folder = RunFolder(Path(task.out))
        n, records, render_rejects, with_syntax = _render_records(task)
        table = records.table()
        valid, validate_rejects = _validate_records(task, table, with_syntax)
        _finish_part(folder, "render", task, table, render_rejects)
        rendered = folder.part("rendered", task.source, task.part)
        _finish_part(folder, "validate", task, valid, validate_rejects, same_as=rendered)
        return PartResult(n)


def _render_records(
    task: PartTask,
) -> tuple[int, RecordColumns, list[Reject], set[str]]:
    """Render a part; also returns the ids of its examples whose data holds template syntax
    (validation needs them, and the examples are read here anyway)."""
    _, catalog = _context(task.out, task.fingerprint)
    source = catalog.source(task.source)
    renderer = _renderer(task.out, task.fingerprint, task.source)
    folder = RunFolder(Path(task.out))
    records = RecordColumns(source)
    rejects: list[Reject] = []
    with_syntax: set[str] = set()
    n = 0
    for batch in read_batches(folder.part("examples", task.source, task.part)):
        with_syntax.update(_syntax_ids(batch))
        examples = examples_of(batch)
        n += len(examples)
        # An eval source's exemplars are shown in prompts, never queries.
        queries = [e for e in examples if e.out_split != "exemplar"]
        for example, error in renderer.render_many(queries, records):
            rejects.append(
                Reject(
                    stage="render",
                    source=task.source,
                    split=example.split,
                    example_id=example.example_id,
                    template_id=error.template_id,
                    rule=error.rule,
                    message=str(error),
                    locator=example.locator,
                )
            )
    return n, records, rejects, with_syntax


def _validate_records(
    task: PartTask, table: pa.Table, with_syntax: set[str]
) -> tuple[pa.Table, list[Reject]]:
    """Check a part's records (``validate.check_table``, then the record rules); return the
    good rows and a reject for each other one, in row order."""
    recipe, _ = _context(task.out, task.fingerprint)
    rules = _rules(task.out, task.fingerprint, task.source)
    seconds = recipe.limits.max_render_seconds
    # A few-shot prompt also holds its exemplars' data, which may hold Jinja delimiters
    # (SciTLDR's LaTeX "}}"): then they are no leftovers either.
    pool_syntax = (
        recipe.variants.uses_exemplars
        and _renderer(task.out, task.fingerprint, task.source).pool_has_template_syntax
    )
    data_syntax = np.asarray(
        pc.fill_null(
            pc.is_in(table.column("example_id"), pa.array(sorted(with_syntax), pa.string())),
            False,
        )
    )
    if pool_syntax:
        data_syntax |= np.asarray(pc.starts_with(table.column("variant"), "few_shot"))
    problems = dict(check_table(table, recipe.limits, data_syntax))
    if rules:
        for i, row in enumerate(table.to_pylist()):
            if i not in problems:
                problem = broken_rule(rules, row, seconds)
                if problem is not None:
                    problems[i] = problem
    if not problems:
        return table, []
    bad = sorted(problems)
    keep = np.ones(table.num_rows, dtype=bool)
    keep[bad] = False
    picked = table.select(["id", "split", "example_id", "template_id"]).take(pa.array(bad))
    rejects = [
        Reject(
            stage="validate",
            source=task.source,
            split=row["split"],
            example_id=row["example_id"],
            template_id=row["template_id"],
            rule=problems[i][0],
            message=problems[i][1],
            locator=f"record {row['id']}",
        )
        for i, row in zip(bad, picked.to_pylist(), strict=True)
    ]
    return table.filter(pa.array(keep)), rejects


def _finish_part(
    folder: RunFolder,
    stage: str,
    task: PartTask,
    table: pa.Table,
    rejects: list[Reject],
    same_as: Path | None = None,
) -> None:
    """Write a part's rejects, then the part; ``same_as``: a part holding this very table,
    written by the same task in the same codec, to link to when nothing was rejected."""
    # Rejects first: the part's parquet file appearing is what marks the part done.
    write_rejects(folder.rejects(stage, task.source, task.part), rejects)
    path = folder.part(OUTPUT_DIR[stage], task.source, task.part)
    if same_as is not None and not rejects:
        # Every record passed: the valid part is the rendered part this task just wrote.
        link_part(path, same_as, table, task.run)
    else:
        write_part(path, table, task.run)


def _examples_with_template_syntax(path: Path) -> set[str]:
    return set().union(*(_syntax_ids(batch) for batch in read_batches(path)))


def _syntax_ids(batch: pa.RecordBatch) -> set[str]:
    """Ids of examples whose data itself contains Jinja delimiters (then they are no leftovers).

    JSON escaping leaves braces, % and # alone, so the serialised fields are searched as is."""
    found = holds_template_syntax(batch.column("fields"))
    return set(batch.column("example_id").filter(pa.array(found)).to_pylist())


def _run_parts(
    folder: RunFolder,
    manifest: Manifest,
    stage: _PartStage,
    executor: Executor,
    progress: Progress,
) -> None:
    """Run the stage on every part of every source that has no output of this run yet.
    Workers write their own files; a part's parquet file is written last, so its presence
    (stamped with the current run fingerprint) means done. A part left by another run, such
    as a worker that outlived a killed parent, or a truncated one, is redone."""
    run = manifest.run_fingerprint
    for name in manifest.sources:
        stale = folder.stale_parts(stage.reads, name, run)
        if stale:
            raise RunFolderError(
                f"{stale[0]}: written by another run (or truncated); rerun with --fresh"
            )
    tasks = [
        PartTask(str(folder.root), manifest.recipe_fingerprint, name, i, run)
        for name in manifest.sources
        for i in range(len(folder.parts(stage.reads, name)))
        if part_run(folder.part(stage.writes, name, i)) != run
    ]
    total = sum(num_rows(folder.part(stage.reads, t.source, t.part)) for t in tasks)
    with progress.task(stage.name, total) as advance:
        for _, result in executor.imap(stage.fn, tasks):
            advance(result.rows_in)


def _rules_on_disk(folder: RunFolder, stage: str, source: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in reject_lines(folder, stage, source):
        out[row["rule"]] = out.get(row["rule"], 0) + 1
    return out


def _merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- render, validate


@dataclass(frozen=True)
class _PartStage:
    name: str
    reads: str  # the parts it reads
    writes: str  # the parts whose presence marks a part done
    owns: tuple[str, ...]  # folders it writes (cleared unless resuming)
    invalidates: tuple[str, ...]  # later outputs made stale by rerunning it
    before: tuple[str, ...]  # stages that must be done
    after: tuple[str, ...]  # stages done once it finishes
    fn: Callable[[PartTask], PartResult]


_RENDER = _PartStage(
    "render",
    "examples",
    "rendered",
    ("rendered", "rejects/render"),
    ("valid", "rejects/validate", "mixed"),
    ("load",),
    ("load", "render"),
    render_part,
)
_VALIDATE = _PartStage(
    "validate",
    "rendered",
    "valid",
    ("valid", "rejects/validate"),
    ("mixed",),
    ("load", "render"),
    ("load", "render", "validate"),
    validate_part,
)
# What `run` uses: both stages per part, in one task.
_RENDER_VALIDATE = _PartStage(
    "render+validate",
    "examples",
    "valid",
    ("rendered", "rejects/render", "valid", "rejects/validate"),
    ("mixed",),
    ("load",),
    ("load", "render", "validate"),
    render_validate_part,
)


def _part_stage(
    stage: _PartStage,
    out: Path,
    executor: Executor | None,
    progress: Progress | None,
    resume: bool,
) -> Manifest:
    """Run a part-by-part stage: clear what it invalidates, run its parts (with ``resume``,
    only those without output), then recount every source from the files on disk, so a rerun
    or a resume never counts twice."""
    progress = progress or NullProgress()
    folder = RunFolder(out)
    with folder.lock():
        started = time.perf_counter()
        manifest = folder.read_manifest(needs=stage.before[-1])
        folder.remove_temporaries()
        if not resume:
            folder.clear(*stage.owns)
        folder.clear(*stage.invalidates)
        manifest.stages_done = list(stage.before)
        folder.write_manifest(manifest)
        own = executor is None
        executor = executor or LocalExecutor(1)
        try:
            with stage_heap():
                _run_parts(folder, manifest, stage, executor, progress)
        finally:
            if own:
                executor.close()
        for name, counts in manifest.sources.items():
            _recount(folder, name, counts, validated="validate" in stage.after)
        manifest.stages_done = list(stage.after)
        manifest.timings_s[stage.name] = round(time.perf_counter() - started, 3)
        folder.write_manifest(manifest)
        return manifest


def _recount(folder: RunFolder, name: str, counts: SourceCounts, validated: bool) -> None:
    rules = {s: _rules_on_disk(folder, s, name) for s in ("load", "render", "validate")}
    rendered = sum(num_rows(p) for p in folder.parts("rendered", name))
    render_rejects = sum(rules["render"].values())
    counts.records_rendered = rendered + render_rejects
    counts.records_rejected = render_rejects + sum(rules["validate"].values())
    counts.records_accepted = (
        sum(num_rows(p) for p in folder.parts("valid", name)) if validated else 0
    )
    counts.records_selected = counts.records_dropped_by_mix = 0
    counts.rejected_by_rule = _merge(_merge(rules["load"], rules["render"]), rules["validate"])


def render_stage(
    out: Path,
    *,
    executor: Executor | None = None,
    progress: Progress | None = None,
    resume: bool = False,
) -> Manifest:
    """Stage 2: render every examples part into records. With ``resume``, parts already
    rendered are kept (they are the same bytes a rerun would write)."""
    return _part_stage(_RENDER, out, executor, progress, resume)


def validate_stage(
    out: Path,
    *,
    executor: Executor | None = None,
    progress: Progress | None = None,
    resume: bool = False,
) -> Manifest:
    """Stage 3: check every rendered record; good ones to ``valid``, others to ``rejects``."""
    return _part_stage(_VALIDATE, out, executor, progress, resume)


def render_validate_stage(
    out: Path,
    *,
    executor: Executor | None = None,
    progress: Progress | None = None,
    resume: bool = False,
) -> Manifest:
    """Stages 2 and 3 part by part in one pass (what ``run`` does): the same files as
    ``render_stage`` then ``validate_stage``, without reading the records back."""
    return _part_stage(_RENDER_VALIDATE, out, executor, progress, resume)
