"""``run``: every stage in order over one run folder, the same as running them one by one.

A run resumes: when the folder holds a manifest with the same run fingerprint (recipe, specs,
templates, data and version), finished stages are skipped and render/validate keep the parts
they already wrote. Every file is written atomically and deterministically, so a resumed run
ends with exactly the bytes of an uninterrupted one.

``keep`` (``retention.py``) drops each stage's output once every stage that reads it has run;
a resume redoes a finished stage only when the output it needs, or the mode keeps, was dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .errors import PipelineError, RunFolderError
from .executor import ExecutorName, LocalExecutor, make_executor
from .export import export_stage
from .load import DataMode
from .mix import mix_stage
from .models import KeepMode, Manifest
from .progress import NullProgress, Progress
from .retention import KEEP_MODES, apply_keep, resumable_stages
from .runfolder import DEFAULT_COMPRESSION, RunFolder, parts_compressed, reject_lines
from .stages import load_stage, prepare, render_validate_stage, validate_stage


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
    resume: bool = True,
    progress: Progress | None = None,
    max_reject_share: float | None = None,
    keep: KeepMode = "all",
    compression: str = DEFAULT_COMPRESSION,
) -> Manifest:
    """Build a recipe (default: the bundled one) into ``out``; returns the final manifest.

    ``workers`` processes (None: every core) or a Ray cluster (``executor="ray"``) render and
    validate; the output bytes are the same either way. ``resume=False`` rebuilds from scratch.
    ``max_reject_share``: stop before the mix when a source, or one template of it, loses more
    than this share of its examples or records to rejects (a misspelt field would otherwise
    ship an empty source); None or 0: never.
    ``keep``: what the folder keeps of the stages once they are read (``retention.py``):
    ``all``, ``resume`` (the examples, the mixture and the dataset) or ``dataset``; the
    dataset's bytes are the same in every mode. ``compression``: the parquet codec of the
    examples, rendered and valid parts (``zstd``, ``zstd:LEVEL``, ``lz4``, ``snappy``, ``gzip``,
    ``brotli``, ``none``); the mixture and the export are always zstd.
    """
    if keep not in KEEP_MODES:
        raise PipelineError(f"keep {keep!r}: use one of {', '.join(KEEP_MODES)}")
    progress = progress or NullProgress()
    folder = RunFolder(Path(out))
    with folder.lock(create=True), parts_compressed(folder.root, compression):
        # One pool for load's shards and the render/validate parts: workers start once. A
        # fresh run on this machine starts them before the recipe is prepared, so their
        # start-up overlaps it (the recipe's memory limit reaches them with each task); a
        # resume knows only once it is prepared whether any stage that needs them is left.
        pool = None
        if executor == "local" and (not resume or not folder.manifest_path.is_file()):
            pool = make_executor(executor, workers, address)
            pool.start()
        try:
            prepared = prepare(
                Path(recipe) if recipe is not None else None,
                data=data,
                source_dirs=source_dirs,
                template_dirs=template_dirs,
                progress=progress,
            )
            done = _stages_to_keep(folder, prepared.run_fingerprint, keep) if resume else []
            memory_mb = prepared.recipe.limits.max_worker_memory_mb
            if isinstance(pool, LocalExecutor):
                pool.memory_mb = memory_mb
            elif "load" not in done or "validate" not in done:
                pool = make_executor(executor, workers, address, memory_mb)
            if "load" not in done:
                load_stage(None, folder.root, prepared=prepared, progress=progress, executor=pool)
            _record_compression(folder, compression)
            if "validate" not in done:
                assert pool is not None
                if "render" not in done:
                    render_validate_stage(
                        folder.root, executor=pool, progress=progress, resume=True
                    )
                else:
                    validate_stage(folder.root, executor=pool, progress=progress, resume=True)
        finally:
            if pool is not None:
                pool.close()
        apply_keep(folder, keep)
        if max_reject_share:
            check_reject_shares(folder, max_reject_share)
        if "mix" not in done:
            mix_stage(folder.root, progress=progress)
            apply_keep(folder, keep)
        if "export" not in done:
            export_stage(folder.root, progress=progress)
        return apply_keep(folder, keep)


def _record_compression(folder: RunFolder, compression: str) -> None:
    """Say the codec in the manifest, where the render and validate workers read it."""
    manifest = folder.read_manifest()
    if manifest.storage.compression != compression:
        manifest.storage.compression = compression
        folder.write_manifest(manifest)


def _stages_to_keep(folder: RunFolder, fingerprint: str, keep: KeepMode = "all") -> list[str]:
    """Stages a previous run of the same work finished in this folder, and that ``keep`` lets
    a resume keep (``retention.resumable_stages``)."""
    if not folder.manifest_path.is_file():
        return []
    try:
        manifest = folder.read_manifest()
    except RunFolderError:
        return []  # unreadable: start again
    if manifest.run_fingerprint != fingerprint:
        return []
    # A part from another run (a worker that outlived its killed parent, or a hand copy) or a
    # truncated one means the folder is not what its manifest says: start again.
    if any(folder.stale_parts("examples", name, fingerprint) for name in manifest.sources):
        return []
    if any(
        folder.stale_parts(stage, name, fingerprint)
        for stage in ("rendered", "valid")
        for name in manifest.sources
    ):
        return ["load"][: len(resumable_stages(manifest, keep))]
    return resumable_stages(manifest, keep)


def check_reject_shares(folder: RunFolder, limit: float) -> None:
    """Raise when a source rejects more than ``limit`` of its examples at load, or a template
    more than ``limit`` of its records at render and validate, naming each with its top rule."""
    manifest = folder.read_manifest()
    if "valid" in manifest.storage.dropped:
        # `--keep` dropped the records once the mix had run; this check stops a run before
        # its mix, and the mix has been done.
        return
    problems = []
    for name, counts in manifest.sources.items():
        # Rows a spec's `filter` leaves out are its intent, not a mistake.
        # A filter and the NonCommercial licence rule are the user's policy, not a broken
        # catalog: however many rows they drop, the run is not stopped for them.
        loads = [
            r
            for r in reject_lines(folder, "load", name)
            if r["rule"] not in ("filtered", "noncommercial_license")
        ]
        if counts.examples_in and len(loads) / counts.examples_in > limit:
            rule = _top_rule(loads)
            problems.append(
                f"source {name!r}: {len(loads)} of {counts.examples_in} examples "
                f"rejected at load (mostly {rule})"
            )
        # Every record rendered is valid or rejected by validate, so the valid parts and the
        # rejects count them all (the rendered parts may be gone: `run --keep`).
        rendered: Counter[str] = Counter()
        for path in folder.parts("valid", name):
            column = pq.read_table(path, columns=["template_id"]).column("template_id")
            rendered.update(column.to_pylist())
        rejected: dict[str, list[dict[str, Any]]] = {}
        for stage in ("render", "validate"):
            for row in reject_lines(folder, stage, name):
                rejected.setdefault(row["template_id"], []).append(row)
        for template, rows in sorted(rejected.items()):
            total = rendered[template] + len(rows)
            if total and len(rows) / total > limit:
                problems.append(
                    f"template {template!r} of {name!r}: {len(rows)} of {total} records "
                    f"rejected (mostly {_top_rule(rows)})"
                )
    if problems:
        raise PipelineError(
            f"{folder.root}: rejects above --max-reject-share {limit:g}: "
            + "; ".join(problems)
            + ". See `instructmix rejects --out "
            f"{folder.root}`, fix the catalog, or rerun with --max-reject-share 0 to go on"
        )


def _top_rule(rows: list[dict[str, Any]]) -> str:
    rule = Counter(r["rule"] for r in rows).most_common(1)[0][0]
    example = next(r["message"] for r in rows if r["rule"] == rule)
    return f"{rule}: {example[:160]}"
