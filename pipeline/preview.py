"""Render a few real sample examples with a source's templates (``templates preview``).

Without a recipe the draws come from preview's own mix of forms (below). With one
(``--recipe``), the examples are the ones the recipe's own load makes (its caps, splits and
split groups), the exemplars come from its train pool, and every draw, option style, few-shot
setting, limit and system prompt is the recipe's: preview shows the records ``run`` would make
for those examples, and a record that ``run``'s validation would reject shows as that reject.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .catalog import Catalog, Template
from .errors import CatalogError
from .load import Example, iter_rows, open_source
from .models import VARIANTS, Limits, Recipe, Variants
from .render import (
    Renderer,
    RenderError,
    VariantUnavailable,
    forced_draw,
    to_record,
    unmade_variant,
    variant_problem,
)
from .splits import GroupJoiner, group_function
from .validate import check_record, has_template_syntax

FORMS = VARIANTS
# Few-shot previews draw exemplars from this many sample rows.
POOL_ROWS = 200


def sample_examples(catalog: Catalog, source: str, n: int) -> list[Example]:
    """The first ``n`` good examples of a source's bundled sample (bad rows are skipped), each
    with its split group, so that a preview's few-shot exemplar is never of the query's group
    (a sibling pair with the query's own premise), as in a run."""
    src = catalog.source(source)
    out: list[Example] = []
    for split in open_source(src, "sample"):
        for batch in iter_rows(src, split, "sample"):
            out += [e for e in batch if isinstance(e, Example)]
            if len(out) >= n:
                break
        if len(out) >= n:
            break
    out = out[:n]
    keys_of = group_function(src, Limits().max_render_seconds)
    joiner = GroupJoiner()
    hashed = []
    for example in out:
        try:
            hashed.append(joiner.add(keys_of(example.example_id, example.fields)))
        except Exception:  # a group that cannot be computed: the example stands alone
            hashed.append(joiner.add([example.example_id]))
    return [dataclasses.replace(e, group=joiner.group(h)) for e, h in zip(out, hashed, strict=True)]


def preview_recipe(seed: int, source: str) -> Recipe:
    """Preview's own mix when no recipe is given: every form, options shown half the time."""
    return Recipe(
        name="preview",
        sources=[source],
        seed=seed,
        variants=Variants(zero_shot=0.5, few_shot=0.3, cot=0.2, options_shown=0.5),
    )


def preview_records(
    catalog: Catalog | None,
    source: str,
    template_id: str | None = None,
    n: int = 2,
    variant: str | None = None,
    seed: int | None = None,
    *,
    recipe: str | Path | None = None,
    source_dirs: Sequence[Path] = (),
    template_dirs: Sequence[Path] = (),
    skipped: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Rendered rows (or ``{"template_id", "example_id", "stage", "rule", "error"}`` rejects)
    for ``n`` examples x templates.

    ``recipe`` (a file or a catalog recipe name, resolved like ``run``'s, with ``source_dirs``
    and ``template_dirs`` added to its catalog): show what ``run`` of it makes (see the module
    doc); ``catalog`` is then not used. ``variant`` forces a form: a template that cannot take
    it (or a form the recipe gives no share) is left out, with the reason appended to
    ``skipped``; it is an error when no template can, or the one asked for (``template_id``)
    cannot.
    """
    if variant is not None and variant not in FORMS:
        raise CatalogError(f"unknown variant {variant!r} (choose from {', '.join(FORMS)})")
    if recipe is not None:
        if seed is not None:
            raise CatalogError("--seed and --recipe: with a recipe, the seed is the recipe's")
        catalog, rec, pool, queries = _recipe_examples(recipe, source, source_dirs, template_dirs)
    elif catalog is None:
        raise CatalogError("preview needs a catalog or a recipe")
    else:
        rec = preview_recipe(seed or 0, source)
        pool = sample_examples(catalog, source, max(n, POOL_ROWS))
        queries = pool
    src = catalog.source(source)
    templates = _templates(catalog, source, template_id)
    renderer = Renderer(src, templates, rec, pool)
    compiled = [c for c in renderer.templates if c.error is not None or variant is None]
    if variant is not None:
        for c in renderer.templates:
            if c.error is not None:
                continue  # shown as its template_syntax reject, whatever the form
            problem = variant_problem(renderer, c, variant, recipe_shares=True)
            if problem is None:
                compiled.append(c)
            elif template_id is not None:
                raise VariantUnavailable(problem)
            elif skipped is not None:
                skipped.append(problem)
        if not compiled:
            raise VariantUnavailable(f"no template of source {source!r} can make {variant!r}")
    compiled.sort(key=lambda c: c.id)
    rows: list[dict[str, Any]] = []
    shown = 0
    for example in queries:
        if shown == n:
            break
        chosen = compiled
        if recipe is not None:
            # templates_per_example: only the templates run picks for this example.
            picked = {c.id for c in renderer.choose(example)}
            chosen = [c for c in compiled if c.id in picked]
            if not chosen:
                continue
        shown += 1
        for c in chosen:
            rows.append(_row(renderer, example, c, variant, len(pool), template_id is not None))
    return rows


def _templates(catalog: Catalog, source: str, template_id: str | None) -> list[Template]:
    templates = list(catalog.templates_for(source))
    if template_id is None:
        return templates
    picked = [t for t in templates if t.id == template_id]
    if not picked:
        known = ", ".join(t.id for t in templates) or "none"
        raise CatalogError(f"source {source!r} has no template {template_id!r} (known: {known})")
    return picked


def _row(
    renderer: Renderer,
    example: Example,
    compiled: Any,
    variant: str | None,
    pool_size: int,
    one_template: bool,
) -> dict[str, Any]:
    reject = {"template_id": compiled.id, "example_id": example.example_id}
    try:
        draw = renderer.draw(example, compiled)
        if variant is not None:
            draw = forced_draw(draw, variant)
        rendered = renderer.render_with(example, compiled, draw)
    except RenderError as exc:
        return {**reject, "stage": "render", "rule": exc.rule, "error": str(exc)}
    if variant is not None:
        problem = unmade_variant(compiled, renderer.recipe, pool_size, variant, rendered.variant)
        if problem is not None:
            if one_template:
                raise VariantUnavailable(problem)
            return {**reject, "stage": "render", "rule": "variant_unavailable", "error": problem}
    row = to_record(renderer.source, example, rendered)
    if example.out_split:
        row["out_split"] = example.out_split
    syntax = has_template_syntax(example.fields.values())
    problem_rule = check_record(row, renderer.recipe.limits, syntax)
    if problem_rule is not None:
        rule, message = problem_rule
        return {**reject, "stage": "validate", "rule": rule, "error": message}
    return row


def _recipe_examples(
    recipe: str | Path,
    source: str,
    source_dirs: Sequence[Path],
    template_dirs: Sequence[Path],
) -> tuple[Catalog, Recipe, list[Example], list[Example]]:
    """(catalog, recipe, few-shot pool, queries) as ``run`` of ``recipe`` loads them."""
    # Imported here: stages pulls in the executors, which plain preview does not need.
    from .runfolder import RunFolder, read_batches
    from .stages import examples_of, few_shot_pool, load_stage, prepare

    prepared = prepare(Path(recipe), source_dirs=source_dirs, template_dirs=template_dirs)
    if source not in prepared.members:
        built = ", ".join(sorted(prepared.members)) or "none"
        raise CatalogError(
            f"recipe {prepared.recipe.name!r} does not build source {source!r} (it builds: {built})"
        )
    rec = prepared.recipe
    with tempfile.TemporaryDirectory(prefix="instructmix-preview-") as tmp:
        out = Path(tmp) / "run"
        load_stage(None, out, prepared=prepared)
        folder = RunFolder(out)
        examples = [
            e
            for path in folder.parts("examples", source)
            for batch in read_batches(path)
            for e in examples_of(batch)
        ]
        pool = few_shot_pool(folder, source) if rec.variants.uses_exemplars else []
    queries = [e for e in examples if e.out_split != "exemplar"]
    return prepared.catalog, rec, pool, queries
