"""Render a few real sample examples with a source's templates (``templates preview``)."""

from __future__ import annotations

from typing import Any

from .catalog import Catalog
from .errors import CatalogError
from .load import Example, iter_rows, open_source
from .models import Recipe, Variants
from .render import RenderError, render_one

FORMS = ("zero_shot_opt", "zero_shot_noopt", "few_shot_opt", "few_shot_noopt", "cot")
# Few-shot previews draw exemplars from this many sample rows.
POOL_ROWS = 200


def sample_examples(catalog: Catalog, source: str, n: int) -> list[Example]:
    """The first ``n`` good examples of a source's bundled sample (bad rows are skipped)."""
    src = catalog.source(source)
    out: list[Example] = []
    for split in open_source(src, "sample"):
        for batch in iter_rows(src, split, "sample"):
            out += [e for e in batch if isinstance(e, Example)]
            if len(out) >= n:
                return out[:n]
    return out


def preview_records(
    catalog: Catalog,
    source: str,
    template_id: str | None = None,
    n: int = 2,
    variant: str | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rendered rows (or ``{"error", "rule"}`` entries) for ``n`` examples x templates."""
    if variant is not None and variant not in FORMS:
        raise CatalogError(f"unknown variant {variant!r} (choose from {', '.join(FORMS)})")
    src = catalog.source(source)
    templates = list(catalog.templates_for(source))
    if template_id is not None:
        templates = [t for t in templates if t.id == template_id]
        if not templates:
            known = ", ".join(t.id for t in catalog.templates_for(source)) or "none"
            raise CatalogError(
                f"source {source!r} has no template {template_id!r} (known: {known})"
            )
    pool = sample_examples(catalog, source, max(n, POOL_ROWS))
    defaults = Recipe(name="default", sources=[source]).variants
    recipe = Recipe(
        name="preview",
        sources=[source],
        seed=seed,
        variants=Variants(
            zero_shot=0.5,
            few_shot=0.3,
            cot=0.2,
            options_shown=0.5,
            option_styles=defaults.option_styles,
        ),
    )
    rows: list[dict[str, Any]] = []
    for example in pool[:n]:
        for template in templates:
            try:
                rows.append(
                    render_one(
                        src,
                        template,
                        example.fields,
                        recipe=recipe,
                        variant=variant,
                        pool=pool,
                        example_id=example.example_id,
                        split=example.split,
                    )
                )
            except RenderError as exc:
                rows.append(
                    {
                        "template_id": template.id,
                        "example_id": example.example_id,
                        "rule": exc.rule,
                        "error": str(exc),
                    }
                )
    return rows
