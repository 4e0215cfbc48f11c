"""Export: the mixture as a Hub-style dataset folder, in one or more formats (configs).

    dataset/data/train-00000-of-00002.parquet   config `default`: `messages` + provenance
    dataset/data/<format>/train-00000-of-00002.parquet   other formats (see formats.py)
    dataset/README.md                           dataset card with the Hub's YAML header
    dataset/dataset_info.json                   LLaMA-Factory entries
    dataset/.instructmix-export.json            marker: this is an export, and the files it wrote

``datasets.load_dataset(folder, config)`` reads the folder the way the Hub would.

An export is a transaction (``pipeline.transaction``, shared with the eval harness). The new
folder is built beside the target, in ``.<name>.export-XXXXXXXX``, and renamed into place; an
earlier export is first renamed aside to ``.<name>.old-XXXXXXXX`` and removed once the new one
is in. A failure at any point leaves the target as it was, and an export killed between the
renames is finished by the next one. Only a folder whose marker lists everything in it is
replaced; anything else is refused, or with ``force`` renamed to ``<target>.bak-N`` and never
deleted. ``.<name>.export.lock`` beside the target keeps two exports (from any run folders) off
one target.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..catalog import Catalog, recipe_context
from ..errors import PipelineError, os_cause, os_filename
from ..heap import FreedMemory
from ..models import Manifest, Recipe
from ..progress import NullProgress, Progress
from ..runfolder import RunFolder, atomic_text, read_row_groups
from ..transaction import SHOWN as SHOWN
from ..transaction import FolderKind, Words, scan, target_path, write_folder, write_marker
from ..transaction import read_marker as _read_marker
from .card import Composition, ExportedConfig, dataset_card
from .formats import FORMATS, Format, Shard, parse_formats
from .llamafactory import llamafactory_info

MARKER = ".instructmix-export.json"
# The folders under data/ that hold a format's files (the default config's lie in data/).
_CONFIG_DIRS = tuple(f.folder.removeprefix("data/") for f in FORMATS.values() if f.folder != "data")
_DIRS = "(?:" + "|".join(re.escape(d) for d in _CONFIG_DIRS) + ")"
_DATA_FILE = rf"data/(?:{_DIRS}/)?[^/]+-\d{{5}}-of-\d{{5}}\.(?:parquet|jsonl)"
# Every name an export writes inside its folder, temporaries included: a leftover folder of a
# killed export holds nothing else.
_LAYOUT = re.compile(
    rf"README\.md|dataset_info\.json|{_DATA_FILE}|(?:data/(?:{_DIRS}/)?)?\.[^/]+\.tmp"
)
FINAL_LAYOUT = re.compile(rf"README\.md|dataset_info\.json|{_DATA_FILE}")
EXPORT = FolderKind(
    marker=MARKER,
    marker_key="instructmix_export",
    # The folders an export writes into, the export's own first: all that a scan reads.
    levels=("", "data/", *(f"data/{d}/" for d in _CONFIG_DIRS)),
    layout=_LAYOUT,
    build="export-",
    aside="old-",
    lock="export.lock",
    run_entries=frozenset(
        {"manifest.json", ".lock", "examples", "rendered", "valid", "mixed", "rejects"}
    ),
    words=Words(
        tool="export",
        writer="export",
        write_to="export to",
        at_root="export to",
        under_file="export to",
        own_folder="export to a folder of its own",
        is_folder="export writes a folder of its own",
        elsewhere="export to another path",
        nothing_done="nothing exported",
        done="exported",
    ),
    blame_parent=True,
)
# The mixture's columns the card counts.
_COUNTED = ["source", "language", "license", "template_id", "variant"]


def export_stage(
    out: Path,
    *,
    to: Path | None = None,
    force: bool = False,
    formats: Sequence[str] | None = None,
    jsonl: bool | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Write the Hub-style folder (default ``<out>/dataset``) from the run's mixture, with one
    config per format (``messages``, ``prompt_completion``, ``alpaca``, ``sharegpt``,
    ``flan``, or ``all``) and, with ``jsonl=True``, every parquet shard as JSON lines beside it.
    Left as None, both are the recipe's (``export.formats``, ``export.jsonl``).

    The target must be new, empty or an earlier export; a folder holding anything else is
    refused, or with ``force=True`` renamed to ``<target>.bak-N`` (recorded in
    ``manifest.export["moved_aside"]``). A failed export leaves the target as it was.
    """
    progress = progress or NullProgress()
    folder = RunFolder(Path(out))
    try:
        with folder.lock():
            if formats is None or jsonl is None:
                spec = recipe_context(folder.read_manifest(needs="mix"))[0].export
                formats = spec.formats if formats is None else formats
                jsonl = spec.jsonl if jsonl is None else jsonl
            chosen = [FORMATS[name] for name in parse_formats(formats)]
            return _export(folder, to, force, chosen, jsonl, progress)
    except OSError as exc:
        # Reading the run folder or writing its manifest: the export itself is settled by now.
        raise PipelineError(f"{os_filename(exc) or folder.root}: {os_cause(exc)}") from None


def _export(
    folder: RunFolder,
    to: Path | None,
    force: bool,
    formats: list[Format],
    jsonl: bool,
    progress: Progress,
) -> Manifest:
    started = time.perf_counter()
    manifest = folder.read_manifest(needs="mix")
    folder.remove_temporaries()
    recipe, catalog = recipe_context(manifest)
    target = target_path(EXPORT, folder, to if to is not None else folder.dataset)
    legacy = _legacy_files(manifest, target)
    for split in manifest.splits:
        # Said here, naming the file: once the build reads it, the error is the target's.
        if not folder.mixed(split).is_file():
            raise PipelineError(
                f"{folder.mixed(split)}: no such file (the mix stage's output is gone); rerun "
                f"`instructmix mix --out {folder.root}`; nothing exported"
            )
    files, moved = write_folder(
        EXPORT,
        target,
        lambda build: _build(build, folder, manifest, recipe, catalog, formats, jsonl, progress),
        force=force,
        legacy=legacy,
    )
    manifest.export = {
        "path": str(target.resolve()),
        "formats": [f.name for f in formats],
        "files": files,
    }
    if moved is not None:
        manifest.export["moved_aside"] = str(moved)
    if "export" not in manifest.stages_done:
        manifest.stages_done = [*manifest.stages_done, "export"]
    manifest.timings_s["export"] = round(time.perf_counter() - started, 3)
    folder.write_manifest(manifest)
    return manifest


def _build(
    build: Path,
    folder: RunFolder,
    manifest: Manifest,
    recipe: Recipe,
    catalog: Catalog,
    formats: list[Format],
    jsonl: bool,
    progress: Progress,
) -> dict[str, dict[str, list[str]]]:
    """Write shards, card and dataset_info.json into ``build``, the marker first and last.
    Returns the data files written, by config and split."""
    extra = {"formats": [f.name for f in formats]}
    # Written first, so a build folder a killed export leaves is recognisably ours.
    write_marker(EXPORT, build, manifest, None, extra)
    composition = Composition.count(
        (split, table)
        for split in manifest.splits
        for table in read_row_groups(folder.mixed(split), _COUNTED)
    )
    files: dict[str, dict[str, list[str]]] = {f.config: {} for f in formats}
    with progress.task("export", sum(manifest.splits.values())) as advance:
        for split, rows in manifest.splits.items():
            written = _write_shards(
                folder.mixed(split), build, split, rows, recipe, formats, jsonl, advance
            )
            for config, names in written.items():
                files[config][split] = names
    exported = []
    for f in formats:
        shards = {split: _parquet(names) for split, names in files[f.config].items()}
        sizes = {
            split: sum((build / n).stat().st_size for n in names) for split, names in shards.items()
        }
        exported.append(ExportedConfig(f, shards, sizes, jsonl))
    with atomic_text(build / "README.md") as fh:
        fh.write(dataset_card(manifest, recipe, catalog, composition, exported))
    with atomic_text(build / "dataset_info.json") as fh:
        entries = llamafactory_info(recipe.name, {c.format.name: c.files for c in exported})
        fh.write(json.dumps(entries, indent=2) + "\n")
    names = ["README.md", "dataset_info.json", *_names(files)]
    sizes = {n: (build / n).stat().st_size for n in names}
    write_marker(EXPORT, build, manifest, sizes, extra)
    return files


def _parquet(names: list[str]) -> list[str]:
    return [n for n in names if n.endswith(".parquet")]


def _legacy_files(manifest: Manifest, target: Path) -> dict[str, int | None]:
    """Files an export from before the marker wrote at ``target``, as this run recorded them
    (``files`` by split, or by config and split)."""
    if manifest.export.get("path") != str(target.parent.resolve() / target.name):
        return {}
    return dict.fromkeys(["README.md", "dataset_info.json", *_names(manifest.export.get("files"))])


def _names(files: Any) -> list[str]:
    if isinstance(files, str):
        return [files]
    if isinstance(files, Mapping):
        return [n for value in files.values() for n in _names(value)]
    if isinstance(files, list):
        return [n for value in files for n in _names(value)]
    return []


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The export's marker in ``folder``, or None when it has none."""
    return _read_marker(EXPORT, folder)


def scan_export(
    folder: Path,
    written: Mapping[str, Any],
    extra: re.Pattern[str] | None,
    limit: int | None = None,
) -> tuple[list[Path], list[str]]:
    """Files under ``folder`` an export wrote (listed in ``written``, with its size when
    recorded, or named as ``extra`` allows), and the first entries it did not write.

    Only the folder, its ``data/`` and the formats' folders in ``data/`` are read: an export
    has nothing else, and a user's tree is never walked.
    """
    return scan(EXPORT, folder, written, extra, limit)


def _write_shards(
    src: Path,
    build: Path,
    split: str,
    rows: int,
    recipe: Recipe,
    formats: list[Format],
    jsonl: bool,
    advance: Any,
) -> dict[str, list[str]]:
    """Stream one split of the mixture into every format's shards of ``shard_rows`` rows, in
    one pass. Returns the files written, by config."""
    spec = recipe.export
    n_shards = max(1, math.ceil(rows / spec.shard_rows))
    names: dict[str, list[str]] = {f.config: [] for f in formats}
    # Shards are cut by rows alone, so how the rows arrive does not change their bytes.
    tables = read_row_groups(src)
    pending: pa.Table | None = None
    freed = FreedMemory()
    for i in range(n_shards):
        shards: list[Shard] = []
        try:
            for f in formats:
                name = f.file_name(split, i, n_shards)
                shards.append(Shard(build / name, f, spec.row_group_rows, jsonl))
                names[f.config].append(name)
                if jsonl:
                    names[f.config].append(name.removesuffix(".parquet") + ".jsonl")
            left = min(spec.shard_rows, rows - i * spec.shard_rows)
            while left > 0:
                if pending is None or pending.num_rows == 0:
                    pending = next(tables)
                take = pending.slice(0, left)
                for shard in shards:
                    shard.add(take)
                left -= take.num_rows
                pending = pending.slice(take.num_rows)
                advance(take.num_rows)
                freed.passed(take.num_rows)
            for shard in shards:
                shard.close()
        except BaseException:
            for shard in shards:
                shard.abort()
            raise
    return names
