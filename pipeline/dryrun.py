"""``run --dry-run``: the plan of a build, before anything is rendered.

The sources are read and loaded into a temporary folder (so the counts are the real run's:
the same ids, caps, split groups and output splits), then every (example, template) pair is
drawn its variant, exactly as render would, without rendering it. Printed per source: examples
available and kept, whether the cap binds, records possible and targeted, examples per output
split, and records per planned variant; then the same by cluster and split.

A record the real run rejects, or that dedup or decontamination drops, is still counted here:
the plan is what the recipe asks for, and the run's manifest says what it got.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .load import DataMode
from .progress import NullProgress, Progress
from .render import Renderer
from .runfolder import RunFolder, read_batches
from .stages import examples_of, few_shot_pool, load_stage, prepare, templates_for_role


def dry_run(
    recipe: Path | str | None = None,
    *,
    data: DataMode = "sample",
    source_dirs: Sequence[Path] = (),
    template_dirs: Sequence[Path] = (),
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The plan as a JSON-ready dict: ``sources``, ``clusters``, ``splits``, ``variants``,
    ``eval_sources`` and ``recipe``."""
    progress = progress or NullProgress()
    prepared = prepare(
        Path(recipe) if recipe is not None else None,
        data=data,
        source_dirs=source_dirs,
        template_dirs=template_dirs,
        progress=progress,
    )
    with tempfile.TemporaryDirectory(prefix="instructmix-dry-run-") as tmp:
        manifest = load_stage(None, Path(tmp) / "run", prepared=prepared, progress=progress)
        folder = RunFolder(Path(tmp) / "run")
        sources = {}
        for name, counts in manifest.sources.items():
            sources[name] = _source_plan(folder, prepared, name, counts.model_dump())
    return {
        "recipe": prepared.recipe.name,
        "sources": sources,
        "clusters": _totals(sources, "cluster"),
        # The mixture always has a train split, as the run's manifest does.
        "splits": _sum_maps([{"train": 0}, *(s["records_by_split"] for s in sources.values())]),
        "variants": _sum_maps(s["variants"] for s in sources.values()),
        "eval_sources": sorted(n for n, s in sources.items() if s["role"] == "eval"),
    }


def _source_plan(
    folder: RunFolder, prepared: Any, name: str, counts: dict[str, Any]
) -> dict[str, Any]:
    recipe, catalog = prepared.recipe, prepared.catalog
    pool = few_shot_pool(folder, name) if recipe.variants.uses_exemplars else []
    renderer = Renderer(catalog.source(name), catalog.templates_for(name), recipe, pool)
    variants: dict[str, int] = {}
    by_split: dict[str, int] = {}
    for path in folder.parts("examples", name):
        for batch in read_batches(path):
            for example in examples_of(batch):
                if example.out_split == "exemplar":
                    continue
                for compiled in renderer.choose(example):
                    base = renderer.draw(example, compiled).base
                    variants[base] = variants.get(base, 0) + 1
                    by_split[example.out_split] = by_split.get(example.out_split, 0) + 1
    possible = sum(by_split.values())
    target = counts["records_target"]
    if possible > target and possible:
        # The cap binds: which records survive is decided by their ids, known after render.
        scaled = {s: round(n * target / possible) for s, n in by_split.items()}
    else:
        scaled = dict(by_split)
    return {
        "cluster": counts["cluster"],
        "role": counts["role"],
        "submix": counts["submix"],
        "examples_available": counts["examples_in"] - counts["examples_rejected"],
        "examples_rejected_at_load": counts["examples_rejected"],
        "examples_capped": counts["examples_capped"],
        "examples_exemplar_pool": counts["examples_exemplar_pool"],
        "examples_by_split": counts["examples_by_split"],
        "templates": len(catalog.templates_for(name)),
        "templates_per_example": templates_for_role(
            recipe, catalog.templates_for(name), counts["role"]
        ),
        "records_possible": possible,
        "records_target": min(target, possible),
        "cap_binds": possible > target,
        "records_by_split": dict(sorted(scaled.items())),
        "records_by_split_exact": possible <= target,
        "variants": dict(sorted(variants.items())),
    }


def _totals(sources: dict[str, dict[str, Any]], key: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for plan in sources.values():
        row = out.setdefault(plan[key], {"sources": 0, "records_target": 0})
        row["sources"] += 1
        row["records_target"] += plan["records_target"]
    return dict(sorted(out.items()))


def _sum_maps(maps: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in maps:
        for k, v in m.items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))
