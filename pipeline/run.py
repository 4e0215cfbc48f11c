"""``run``: every stage in order over one run folder, the same as running them one by one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
    progress: Progress | None = None,
) -> Manifest:
    """Build a recipe (default: the bundled one) into ``out``; returns the final manifest."""
    progress = progress or NullProgress()
    out = Path(out)
    load_stage(
        Path(recipe) if recipe is not None else None,
        out,
        data=data,
        source_dirs=source_dirs,
        template_dirs=template_dirs,
        progress=progress,
    )
    render_stage(out, progress=progress)
    validate_stage(out, progress=progress)
    mix_stage(out, progress=progress)
    return export_stage(out, progress=progress)
