"""The stages over a run folder: load -> render -> validate -> mix (export lives in export.py).

Each stage reads only what the previous one wrote into the run folder, so running them one by one
gives the same bytes as ``run``. Each updates ``manifest.json`` with its counts.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import __version__
from .catalog import Catalog, builtin_root, catalog_for_recipe, load_recipe
from .errors import CatalogError
from .load import BadRow, DataMode, Example, iter_rows, open_source
from .mix import example_key, order_key, plan_mixture, record_key, smallest, split_of
from .models import Manifest, Recipe, Reject, SourceCounts
from .progress import NullProgress, Progress
from .render import Renderer, RenderError, to_record
from .runfolder import (
    EXAMPLE_SCHEMA,
    RECORD_SCHEMA,
    ParquetSink,
    RejectSink,
    RunFolder,
    read_batches,
)
from .seeding import stable_id
from .validate import TEMPLATE_SYNTAX, check_record


def default_recipe_path() -> Path:
    return builtin_root() / "recipes" / "default.yaml"


def resolve_sources(recipe: Recipe, catalog: Catalog) -> list[str]:
    """The recipe's sources: named ones plus whole clusters, minus held-out clusters."""
    clusters = catalog.clusters()
    for cluster in [*recipe.clusters, *recipe.held_out_clusters]:
        if cluster not in clusters:
            raise CatalogError(
                f"recipe {recipe.name!r}: unknown cluster {cluster!r} "
                f"(known: {', '.join(sorted(clusters))})"
            )
    names = list(recipe.sources)
    for cluster in recipe.clusters:
        names += clusters[cluster]
    held_out = {n for c in recipe.held_out_clusters for n in clusters[c]}
    chosen = sorted(set(names) - held_out)
    for name in chosen:
        catalog.source(name)  # raises with the list of known sources
        if not catalog.templates_for(name):
            raise CatalogError(f"recipe {recipe.name!r}: source {name!r} has no templates")
    if not chosen:
        raise CatalogError(f"recipe {recipe.name!r}: selects no sources (all held out?)")
    return chosen


def templates_per_example(recipe: Recipe, n_templates: int) -> int:
    per = recipe.templates_per_example
    return n_templates if per == "all" else min(per, n_templates)


def recipe_context(manifest: Manifest) -> tuple[Recipe, Catalog]:
    """Rebuild the recipe and catalog a run folder was loaded with."""
    recipe = Recipe.model_validate(manifest.recipe)
    catalog = catalog_for_recipe(
        None,
        None,
        [Path(p) for p in manifest.catalog_dirs.get("sources", [])],
        [Path(p) for p in manifest.catalog_dirs.get("templates", [])],
    )
    return recipe, catalog


# --------------------------------------------------------------------------- load


def load_stage(
    recipe_path: Path | None,
    out: Path,
    *,
    data: DataMode = "sample",
    source_dirs: Sequence[Path] = (),
    template_dirs: Sequence[Path] = (),
    progress: Progress | None = None,
) -> Manifest:
    progress = progress or NullProgress()
    started = time.perf_counter()
    recipe_path = Path(recipe_path) if recipe_path is not None else default_recipe_path()
    if not recipe_path.is_file():
        # A bare name means a recipe of the catalog (built-in or --sources' siblings).
        catalog = catalog_for_recipe(None, None, source_dirs, template_dirs)
        recipe_path = catalog.recipe_path(str(recipe_path))
    recipe = load_recipe(recipe_path)
    base = recipe_path.parent
    src_dirs = [Path(d).resolve() for d in source_dirs] + [
        (base / d).resolve() for d in recipe.catalog.sources
    ]
    tpl_dirs = [Path(d).resolve() for d in template_dirs] + [
        (base / d).resolve() for d in recipe.catalog.templates
    ]
    catalog = catalog_for_recipe(None, None, src_dirs, tpl_dirs)
    names = resolve_sources(recipe, catalog)

    folder = RunFolder(out)
    recipe_json = recipe.model_dump(mode="json")
    manifest = Manifest(
        instructmix_version=__version__,
        recipe=recipe_json,
        recipe_path=str(recipe_path.resolve()),
        recipe_fingerprint=stable_id(json.dumps(recipe_json, sort_keys=True)),
        catalog_dirs={
            "sources": [str(p) for p in src_dirs],
            "templates": [str(p) for p in tpl_dirs],
        },
        data=data,
    )

    opened = {}
    with progress.task("opening sources", len(names)) as advance:
        for name in names:
            opened[name] = open_source(catalog.source(name), data)
            advance(1)
    sizes = {
        name: (
            sum(len(s) for s in opened[name]),
            templates_per_example(recipe, len(catalog.templates_for(name))),
        )
        for name in names
    }
    plans = plan_mixture(recipe.mixing, sizes)

    total = sum(size for size, _ in sizes.values())
    with progress.task("load", total) as advance:
        for name in names:
            counts = _load_source(
                folder,
                recipe,
                catalog,
                name,
                opened[name],
                data,
                plans[name].examples_needed,
                advance,
            )
            counts.records_target = plans[name].records_target
            counts.cluster = catalog.source(name).spec.cluster
            manifest.sources[name] = counts
            manifest.inputs[name] = _fingerprint_source(catalog, name, opened[name])
    manifest.stages_done = ["load"]
    manifest.timings_s["load"] = round(time.perf_counter() - started, 3)
    folder.write_manifest(manifest)
    return manifest


def _fingerprint_source(catalog: Catalog, name: str, splits: list[Any]) -> str:
    parts = [catalog.source(name).spec.model_dump_json()]
    parts += [t.spec.model_dump_json() for t in catalog.templates_for(name)]
    parts += [f"{s.split}:{s.dataset._fingerprint}" for s in splits]
    return stable_id(*parts)


def _load_source(
    folder: RunFolder,
    recipe: Recipe,
    catalog: Catalog,
    name: str,
    splits: list[Any],
    data: DataMode,
    needed: int,
    advance: Any,
) -> SourceCounts:
    """Normalise every row; keep the ``needed`` examples with the smallest seeded keys."""
    source = catalog.source(name)
    counts = SourceCounts()
    heap: list[int] = []  # negated keys of the `needed` smallest: memory bounded by the cap
    all_path = folder.examples(name).with_suffix(".all.parquet")
    with (
        RejectSink(folder.rejects("load", name)) as rejects,
        ParquetSink(all_path, EXAMPLE_SCHEMA) as sink,
    ):
        for split_data in splits:
            for batch in iter_rows(source, split_data, data):
                rows = []
                for item in batch:
                    counts.examples_in += 1
                    if isinstance(item, BadRow):
                        rejects.add(
                            Reject(
                                stage="load",
                                source=name,
                                split=item.split,
                                example_id=item.example_id,
                                template_id=None,
                                rule=item.rule,
                                message=item.message,
                                locator=item.locator,
                            )
                        )
                        continue
                    key = example_key(recipe.seed, name, item.example_id)
                    rows.append(_example_row(item, key))
                    if len(heap) < needed:
                        heapq.heappush(heap, -key)
                    elif needed and -heap[0] > key:
                        heapq.heapreplace(heap, -key)
                sink.write_rows(rows)
                advance(len(batch))
        counts.examples_rejected = rejects.count
        counts.rejected_by_rule = dict(rejects.by_rule)
    kept = sink.rows
    threshold = -heap[0] if heap else -1
    with ParquetSink(folder.examples(name), EXAMPLE_SCHEMA) as final:
        if kept > needed:
            for batch in read_batches(all_path):
                table = pa.Table.from_batches([batch])
                bound = pa.scalar(threshold, type=pa.uint64())
                final.write_table(table.filter(pc.less_equal(table["key"], bound)))
        else:
            for batch in read_batches(all_path):
                final.write_table(pa.Table.from_batches([batch]))
    all_path.unlink()
    counts.examples_rendered = final.rows
    counts.examples_capped = kept - final.rows
    return counts


def _example_row(example: Example, key: int) -> dict[str, Any]:
    return {
        "example_id": example.example_id,
        "split": example.split,
        "locator": example.locator,
        "fields": json.dumps(example.fields, ensure_ascii=False, sort_keys=True),
        "key": key,
    }


# --------------------------------------------------------------------------- render


def render_stage(out: Path, *, progress: Progress | None = None) -> Manifest:
    progress = progress or NullProgress()
    started = time.perf_counter()
    folder = RunFolder(out)
    manifest = folder.read_manifest(needs="load")
    recipe, catalog = recipe_context(manifest)
    total = sum(c.examples_rendered for c in manifest.sources.values())
    with progress.task("render", total) as advance:
        for name, counts in manifest.sources.items():
            source = catalog.source(name)
            # Few-shot exemplars come from the source's loaded examples (bounded by the cap).
            pool = _read_examples(folder.examples(name)) if recipe.variants.few_shot > 0 else []
            renderer = Renderer(source, catalog.templates_for(name), recipe, pool)
            rendered = rejected = 0
            with (
                RejectSink(folder.rejects("render", name)) as rejects,
                ParquetSink(folder.rendered(name), RECORD_SCHEMA) as sink,
            ):
                for batch in read_batches(folder.examples(name)):
                    rows = []
                    for example in _examples_of(batch):
                        for result in renderer.render(example):
                            rendered += 1
                            if isinstance(result, RenderError):
                                rejected += 1
                                rejects.add(
                                    Reject(
                                        stage="render",
                                        source=name,
                                        split=example.split,
                                        example_id=example.example_id,
                                        template_id=result.template_id,
                                        rule=result.rule,
                                        message=str(result),
                                        locator=example.locator,
                                    )
                                )
                            else:
                                rows.append(to_record(source, example, result))
                    sink.write_rows(rows)
                    advance(batch.num_rows)
            counts.records_rendered = rendered
            counts.records_rejected = rejected
            counts.records_accepted = 0
            counts.rejected_by_rule = _merge(counts.rejected_by_rule, rejects.by_rule)
    manifest.stages_done = ["load", "render"]
    manifest.timings_s["render"] = round(time.perf_counter() - started, 3)
    folder.write_manifest(manifest)
    return manifest


def _examples_of(batch: pa.RecordBatch) -> list[Example]:
    return [
        Example(ex["example_id"], ex["split"], json.loads(ex["fields"]), ex["locator"])
        for ex in batch.to_pylist()
    ]


def _read_examples(path: Path) -> list[Example]:
    return [ex for batch in read_batches(path) for ex in _examples_of(batch)]


def _merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- validate


def validate_stage(out: Path, *, progress: Progress | None = None) -> Manifest:
    progress = progress or NullProgress()
    started = time.perf_counter()
    folder = RunFolder(out)
    manifest = folder.read_manifest(needs="render")
    recipe, _ = recipe_context(manifest)
    total = sum(c.records_rendered - c.records_rejected for c in manifest.sources.values())
    with progress.task("validate", total) as advance:
        for name, counts in manifest.sources.items():
            with_syntax = _examples_with_template_syntax(folder.examples(name))
            with (
                RejectSink(folder.rejects("validate", name)) as rejects,
                ParquetSink(folder.valid(name), RECORD_SCHEMA) as sink,
            ):
                for batch in read_batches(folder.rendered(name)):
                    rows = []
                    for row in batch.to_pylist():
                        problem = check_record(row, recipe.limits, row["example_id"] in with_syntax)
                        if problem is None:
                            rows.append(row)
                            continue
                        rejects.add(
                            Reject(
                                stage="validate",
                                source=name,
                                split=row["split"],
                                example_id=row["example_id"],
                                template_id=row["template_id"],
                                rule=problem[0],
                                message=problem[1],
                                locator=f"record {row['id']}",
                            )
                        )
                    sink.write_rows(rows)
                    advance(batch.num_rows)
            counts.records_rejected += rejects.count
            counts.records_accepted = sink.rows
            counts.rejected_by_rule = _merge(counts.rejected_by_rule, rejects.by_rule)
    manifest.stages_done = ["load", "render", "validate"]
    manifest.timings_s["validate"] = round(time.perf_counter() - started, 3)
    folder.write_manifest(manifest)
    return manifest


def _examples_with_template_syntax(path: Path) -> set[str]:
    # JSON escaping leaves braces, % and # alone, so the serialised fields can be searched as is.
    found: set[str] = set()
    for batch in read_batches(path):
        for eid, fields in zip(
            batch.column("example_id").to_pylist(), batch.column("fields").to_pylist(), strict=True
        ):
            if any(tok in fields for tok in TEMPLATE_SYNTAX):
                found.add(eid)
    return found


# --------------------------------------------------------------------------- mix


def mix_stage(out: Path, *, progress: Progress | None = None) -> Manifest:
    progress = progress or NullProgress()
    started = time.perf_counter()
    folder = RunFolder(out)
    manifest = folder.read_manifest(needs="validate")
    recipe, _ = recipe_context(manifest)
    seed = recipe.seed
    tables = []
    with progress.task("mix", len(manifest.sources)) as advance:
        for name, counts in manifest.sources.items():
            table = pq.read_table(folder.valid(name))
            ids = table.column("id").to_pylist()
            keep = smallest([record_key(seed, i) for i in ids], counts.records_target)
            mask = pa.array([i in keep for i in range(len(ids))], type=pa.bool_())
            chosen = table.filter(mask)
            counts.records_selected = chosen.num_rows
            counts.records_dropped_by_mix = table.num_rows - chosen.num_rows
            tables.append(chosen)
            advance(1)
    mixture = pa.concat_tables(tables) if tables else RECORD_SCHEMA.empty_table()
    ids = mixture.column("id").to_pylist()
    out_split = [
        split_of(seed, s, e, recipe.validation_fraction)
        for s, e in zip(
            mixture.column("source").to_pylist(),
            mixture.column("example_id").to_pylist(),
            strict=True,
        )
    ]
    order = sorted(range(len(ids)), key=lambda i: (order_key(seed, ids[i]), ids[i]))
    mixture = mixture.take(pa.array(order, type=pa.int64()))
    out_split = [out_split[i] for i in order]
    manifest.splits = {}
    for split in ("train", "validation"):
        mask = pa.array([s == split for s in out_split], type=pa.bool_())
        part = mixture.filter(mask)
        if split == "train" or part.num_rows:
            with ParquetSink(
                folder.mixed(split), RECORD_SCHEMA, recipe.export.row_group_rows
            ) as sink:
                sink.write_table(part)
            manifest.splits[split] = part.num_rows
        elif folder.mixed(split).exists():
            folder.mixed(split).unlink()
    manifest.stages_done = ["load", "render", "validate", "mix"]
    manifest.timings_s["mix"] = round(time.perf_counter() - started, 3)
    folder.write_manifest(manifest)
    return manifest
