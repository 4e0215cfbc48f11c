"""Reading a run's rejects back: every left-out example or record, as one table (polars)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .models import Reject
from .runfolder import RunFolder

COLUMNS = list(Reject.model_fields)


def read_rejects(out: Path, source: str | None = None, rule: str | None = None) -> pl.DataFrame:
    """All rejects of a run folder (load, render, validate), optionally for one source/rule."""
    folder = RunFolder(out)
    folder.read_manifest()  # a clear error when this is not a run folder
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
        table = table.filter(pl.col("source") == source)
    if rule is not None:
        table = table.filter(pl.col("rule") == rule)
    return table


def summarize(table: pl.DataFrame) -> pl.DataFrame:
    """Counts by stage, source and rule, largest first."""
    return (
        table.group_by(["stage", "source", "rule"])
        .len(name="count")
        .sort(["count", "stage", "source", "rule"], descending=[True, False, False, False])
    )
