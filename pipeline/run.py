"""``run``: every stage in order over one run folder, the same as running them one by one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .executor import ExecutorName, make_executor
from .export import export_stage
from .load import DataMode
from .models import Manifest
from .progress import NullProgress, Progress
from .stages import load_stage, mix_stage, render_stage, validate_stage


def run_recipe(
    recipe: Path | str | None = None,
    out: Path | str = "output",
    *,
    data: DataMode = "sample",
    source_dirs: Sequence[Path] = (),
    template_dirs: Sequence[Path] = (),
    workers: int | None = 1,
    executor: ExecutorName = "local",
    address: str | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Build a recipe (default: the bundled one) into ``out``; returns the final manifest.

    ``workers`` processes (None: every core) or a Ray cluster (``executor="ray"``) render and
    validate; the output bytes are the same either way.
    """
    progress = progress or NullProgress()
    out = Path(out)
    recipe_path = Path(recipe) if recipe is not None else None
    load_stage(
        recipe_path,
        out,
        data=data,
        source_dirs=source_dirs,
        template_dirs=template_dirs,
        progress=progress,
    )
    pool = make_executor(executor, workers, address)
    try:
        render_stage(out, executor=pool, progress=progress)
        validate_stage(out, executor=pool, progress=progress)
    finally:
        pool.close()
    mix_stage(out, progress=progress)
    return export_stage(out, progress=progress)
