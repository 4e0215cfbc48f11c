"""Reading a run's rejects back: every left-out example or record, as one table (polars)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .errors import PipelineError
from .models import Reject
from .runfolder import RunFolder

COLUMNS = list(Reject.model_fields)

# Every rule a stage can reject with, so that `--rule` on a real rule with no rejects in this
# run prints none, while a misspelt one is an error. A rule missing here still filters when
# the run has rejects with it.
RULES = frozenset(
    {
        # load
        "missing_field", "bad_type", "bad_label", "unlabeled", "bad_text", "bad_row",
        "duplicate_example_id",
        # render
        "render_error", "undefined", "sandbox", "render_timeout", "render_too_large",
        "template_syntax", "empty_rationale", "variant_unavailable", "object_repr",
        # validate
        "schema", "empty_output", "empty_prompt", "cot_shape", "empty_choice",
        "output_not_in_choices", "prompt_too_long", "output_too_long",
        "leftover_template_syntax",
        # mix
        "duplicate_record", "contaminated",
    }
)  # fmt: skip


def read_rejects(out: Path, source: str | None = None, rule: str | None = None) -> pl.DataFrame:
    """All rejects of a run folder (load, render, validate, mix), optionally for one source/rule.

    A source or rule this run does not know is an error listing the known ones: a misspelt
    filter would otherwise read as "no rejects"."""
    folder = RunFolder(out)
    manifest = folder.read_manifest()  # a clear error when this is not a run folder
    files = [
        path
        for stage_dir in sorted((folder.root / "rejects").glob("*/"))
        for source_dir in sorted(stage_dir.glob("*/"))
        for path in folder.reject_files(stage_dir.name, source_dir.name)
    ]
    schema = {name: pl.String for name in COLUMNS}
    frames = [pl.read_ndjson(f, schema=schema) for f in files if f.stat().st_size]
    table = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    if source is not None:
        known = set(manifest.sources) | set(table["source"].unique().to_list())
        if source not in known:
            raise PipelineError(
                f"{out}: --source {source!r}: no such source in this run (sources: "
                f"{_listed(known)})"
            )
        table = table.filter(pl.col("source") == source)
    if rule is not None:
        seen = set(table["rule"].unique().to_list())
        for counts in manifest.sources.values():
            seen |= {r for r, n in counts.rejected_by_rule.items() if n}
        if rule not in seen | RULES:
            raise PipelineError(
                f"{out}: --rule {rule!r}: no such rule (rules in this run: {_listed(seen)}; "
                f"every rule: {_listed(RULES | seen)})"
            )
        table = table.filter(pl.col("rule") == rule)
    return table


def _listed(names: set[str] | frozenset[str]) -> str:
    return ", ".join(sorted(names)) if names else "none"


def summarize(table: pl.DataFrame) -> pl.DataFrame:
    """Counts by stage, source and rule, largest first."""
    return (
        table.group_by(["stage", "source", "rule"])
        .len(name="count")
        .sort(["count", "stage", "source", "rule"], descending=[True, False, False, False])
    )
