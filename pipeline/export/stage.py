"""Export: the mixture as a Hub-style dataset folder, in one or more formats (configs).

    dataset/data/train-00000-of-00002.parquet   config `default`: `messages` + provenance
    dataset/data/<format>/train-00000-of-00002.parquet   other formats (see formats.py)
    dataset/README.md                           dataset card with the Hub's YAML header
    dataset/dataset_info.json                   LLaMA-Factory entries
    dataset/.instructmix-export.json            marker: this is an export, and the files it wrote

``datasets.load_dataset(folder, config)`` reads the folder the way the Hub would.

An export is a transaction. The new folder is built beside the target, in
``.<name>.export-XXXXXXXX``, and renamed into place; an earlier export is first renamed aside to
``.<name>.old-XXXXXXXX`` and removed once the new one is in. A failure at any point leaves the
target as it was, and an export killed between the renames is finished by the next one. Only a
folder whose marker lists everything in it is replaced; anything else is refused, or with
``force`` renamed to ``<target>.bak-N`` and never deleted. ``.<name>.export.lock`` beside the
target keeps two exports (from any run folders) off one target.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from ..catalog import Catalog, recipe_context
from ..errors import PipelineError, os_cause, os_filename
from ..models import Manifest, Recipe
from ..progress import NullProgress, Progress
from ..runfolder import RunFolder, _umask, atomic_text, read_batches, sign_lock, try_lock
from .card import Composition, ExportedConfig, dataset_card
from .formats import FORMATS, Format, Shard, parse_formats
from .llamafactory import llamafactory_info

MARKER = ".instructmix-export.json"
_MARKER_FORMAT = 1
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
# What a build folder can hold before its marker exists: the marker's own temporary.
_MARKER_TMP = re.compile(re.escape(MARKER) + r"\.[^/]+\.tmp")
# Entries of a run folder the stages read: an export there would pull them out from under it.
_RUN_ENTRIES = frozenset(
    {"manifest.json", ".lock", "examples", "rendered", "valid", "mixed", "rejects"}
)
# The folders an export writes into, the export's own first: all that a scan reads.
_PREFIXES = ("", "data/", *(f"data/{d}/" for d in _CONFIG_DIRS))
SHOWN = 3  # foreign entries a refusal names
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
    target = _target_path(folder, to)
    legacy = _legacy_files(manifest, target)
    for split in manifest.splits:
        # Said here, naming the file: once the build reads it, the error is the target's.
        if not folder.mixed(split).is_file():
            raise PipelineError(
                f"{folder.mixed(split)}: no such file (the mix stage's output is gone); rerun "
                f"`instructmix mix --out {folder.root}`; nothing exported"
            )
    build: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _export_lock(target):
            _recover(target)
            _refuse_foreign(target, _holding(target, legacy), force)
            build = Path(tempfile.mkdtemp(prefix=f".{target.name}.export-", dir=target.parent))
            try:
                # mkdtemp makes 0700 folders; the export is meant to be shared like any file.
                os.chmod(build, 0o777 & ~_umask())
                files = _build(build, folder, manifest, recipe, catalog, formats, jsonl, progress)
                # Checked again: the target may have changed while the shards were written.
                holding = _holding(target, legacy)
                _refuse_foreign(target, holding, force)
                moved = _swap_in(build, target, holding)
            except BaseException:
                shutil.rmtree(build, ignore_errors=True)
                raise
    except OSError as exc:
        raise _environment_error(exc, target, build) from None
    except PipelineError as exc:
        if build is None or str(build) not in str(exc):
            raise
        # The writers name the file they failed on; the build folder is gone, show the target.
        raise PipelineError(
            f"{str(exc).replace(str(build), str(target))}; nothing exported, {target} is as it was"
        ) from None
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
    # Written first, so a build folder a killed export leaves is recognisably ours.
    _write_marker(build, manifest, formats, None)
    composition = Composition.count(
        (split, pa.Table.from_batches([batch]))
        for split in manifest.splits
        for batch in pq.ParquetFile(folder.mixed(split)).iter_batches(columns=_COUNTED)
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
    _write_marker(build, manifest, formats, sizes)
    return files


def _parquet(names: list[str]) -> list[str]:
    return [n for n in names if n.endswith(".parquet")]


def _write_marker(
    build: Path, manifest: Manifest, formats: list[Format], files: dict[str, int] | None
) -> None:
    # Deterministic like every other file of the export: no time, no absolute path.
    marker = {
        "instructmix_export": _MARKER_FORMAT,
        "complete": files is not None,
        "instructmix_version": manifest.instructmix_version,
        "recipe": manifest.recipe.get("name"),
        "recipe_fingerprint": manifest.recipe_fingerprint,
        "run_fingerprint": manifest.run_fingerprint,
        "formats": [f.name for f in formats],
        "files": dict(sorted((files or {}).items())),
    }
    with atomic_text(build / MARKER) as fh:
        fh.write(json.dumps(marker, indent=2) + "\n")


def _target_path(folder: RunFolder, to: Path | None) -> Path:
    """The absolute target, refused when it is not a folder export may replace."""
    # abspath, not resolve: a symlink at the target itself must be seen, not followed.
    target = Path(os.path.abspath(to if to is not None else folder.dataset))
    if not target.name:
        raise PipelineError(f"{target}: cannot export to a filesystem root; name a folder")
    for ancestor in target.parents:
        if os.path.lexists(ancestor):
            if not ancestor.is_dir():
                raise PipelineError(
                    f"{ancestor}: is a file, not a folder; cannot export to {target}"
                )
            break
    real = target.parent.resolve() / target.name
    root = folder.root.resolve()
    if real == root or root.is_relative_to(real):
        raise PipelineError(
            f"{target}: holds the run folder {folder.root}; export to a folder of its own"
        )
    if real.is_relative_to(root) and real.relative_to(root).parts[0] in _RUN_ENTRIES:
        raise PipelineError(
            f"{target}: is part of the run folder {folder.root}; export to a folder of its own"
        )
    return target


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


@dataclass(frozen=True)
class _Holding:
    """What an existing target holds, against what an earlier export wrote there."""

    kind: Literal["missing", "empty", "ours", "foreign"]
    foreign: list[str] = field(default_factory=list)


def _holding(target: Path, legacy: Mapping[str, int | None]) -> _Holding:
    if target.is_symlink():
        raise PipelineError(
            f"{target}: is a symbolic link; export writes a folder of its own, "
            "give a path that is not a link"
        )
    if not target.exists():
        return _Holding("missing")
    if not target.is_dir():
        raise PipelineError(f"{target}: is a file, not a folder; export to another path")
    marker = read_marker(target)
    written = marker["files"] if marker is not None and marker["complete"] is True else legacy
    foreign = scan_export(target, written, None, limit=SHOWN + 1)[1]
    if foreign:
        return _Holding("foreign", foreign)
    with os.scandir(target) as entries:
        empty = next(entries, None) is None
    return _Holding("empty" if empty else "ours")


def _refuse_foreign(target: Path, holding: _Holding, force: bool) -> None:
    if holding.kind == "foreign" and not force:
        shown = ", ".join(holding.foreign[:SHOWN])
        more = ", ..." if len(holding.foreign) > SHOWN else ""
        raise PipelineError(
            f"{target}: holds files no instructmix export wrote ({shown}{more}); refusing to "
            f"replace it: export to a new or empty folder, or pass --force to move it aside "
            f"to {target}.bak-N"
        )


def read_marker(folder: Path) -> dict[str, Any] | None:
    path = folder / MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(marker, dict)
        or marker.get("instructmix_export") != _MARKER_FORMAT
        or not isinstance(marker.get("files"), dict)
    ):
        return None
    return marker


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
    ours: list[Path] = []
    foreign: list[str] = []
    for prefix in _PREFIXES:
        where = folder / prefix
        if prefix and (where.is_symlink() or not where.is_dir()):
            continue
        with os.scandir(where) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = prefix + entry.name
            if rel + "/" in _PREFIXES and entry.is_dir(follow_symlinks=False):
                continue  # read as a prefix of its own
            if not entry.is_file(follow_symlinks=False):
                foreign.append(rel + ("/" if entry.is_dir(follow_symlinks=False) else ""))
            elif rel == MARKER:
                pass
            elif rel in written:
                size = written[rel]
                if isinstance(size, int) and entry.stat(follow_symlinks=False).st_size != size:
                    foreign.append(f"{rel} (changed since it was exported)")
                else:
                    ours.append(Path(entry.path))
            elif extra is not None and extra.fullmatch(rel):
                ours.append(Path(entry.path))
            else:
                foreign.append(rel)
            if limit is not None and len(foreign) >= limit:
                return ours, foreign
    return ours, foreign


def _leftover_is_ours(folder: Path) -> bool:
    """A build or aside folder of an export: its marker's files and the export's own names,
    or, before the marker was written, nothing but the marker's temporary."""
    marker = read_marker(folder)
    if marker is None:
        return not scan_export(folder, {}, _MARKER_TMP, limit=1)[1]
    return not scan_export(folder, marker["files"], _LAYOUT, limit=1)[1]


def _remove_export_dir(folder: Path) -> None:
    """Delete a folder of ours file by file (never a recursive delete), the marker last, so a
    removal cut short still leaves a folder recognisably ours. Best effort: what stays is
    cleaned by the next export."""
    marker = read_marker(folder)
    ours, foreign = scan_export(folder, marker["files"] if marker else {}, _LAYOUT)
    if foreign:
        return
    with suppress(OSError):
        for path in ours:
            path.unlink()
        for prefix in reversed(_PREFIXES[1:]):
            if (folder / prefix).is_dir():
                (folder / prefix).rmdir()
        (folder / MARKER).unlink(missing_ok=True)
        folder.rmdir()


def _rename(src: Path, dst: Path) -> None:
    # The swap's renames, in one place: the crash tests stop the process between them.
    os.rename(src, dst)


def _swap_in(build: Path, target: Path, holding: _Holding) -> Path | None:
    """Rename the finished build into place. Returns where a foreign target was moved."""
    aside: Path | None = None
    backup: Path | None = None
    if holding.kind == "ours":
        # An empty folder reserves a unique name; rename replaces an empty folder atomically.
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        try:
            _rename(target, aside)
        except BaseException:
            with suppress(OSError):
                aside.rmdir()
            raise
    elif holding.kind == "foreign":
        backup = _free_backup(target)
        _rename(target, backup)
    try:
        _rename(build, target)
    except BaseException:
        moved = aside or backup
        if moved is not None:
            _rename(moved, target)
        raise
    if aside is not None:
        _remove_export_dir(aside)
    return backup


def _free_backup(target: Path) -> Path:
    n = 1
    while os.path.lexists(f"{target}.bak-{n}"):
        n += 1
    return Path(f"{target}.bak-{n}")


def _recover(target: Path) -> None:
    """Finish what a killed export left beside the target (we hold its lock, so no export is
    running): put back an earlier export renamed aside when the target is missing, then remove
    build and aside folders that are ours. Anything else matching the names is left alone."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(export|old)-[a-z0-9_]{{8}}")
    with os.scandir(target.parent) as it:
        leftovers = sorted(
            (Path(e.path), m.group(1))
            for e in it
            if (m := pattern.fullmatch(e.name)) and e.is_dir(follow_symlinks=False)
        )
    if not os.path.lexists(target):
        asides = [path for path, kind in leftovers if kind == "old" and _complete(path)]
        if asides:
            latest = max(asides, key=lambda p: p.stat().st_ctime_ns)
            _rename(latest, target)
            leftovers = [(p, k) for p, k in leftovers if p != latest]
    for path, _ in leftovers:
        if _leftover_is_ours(path):
            _remove_export_dir(path)


def _complete(folder: Path) -> bool:
    marker = read_marker(folder)
    if marker is None or marker["complete"] is not True:
        return False
    return not scan_export(folder, marker["files"], None, limit=1)[1]


@contextmanager
def _export_lock(target: Path) -> Iterator[None]:
    """Hold the target for one export. The lock file is removed on release; it is removed
    while still locked, and a waiter that locked a removed file tries again, so two
    exports never both hold a lock on one target."""
    path = target.parent / f".{target.name}.export.lock"
    while True:
        fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the block
        holder = try_lock(fh)
        if holder is not None:
            raise PipelineError(
                f"{target}: in use by another instructmix export (pid {holder}); "
                "wait for it to finish or export to another folder"
            )
        try:
            same = os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        fh.close()
    try:
        sign_lock(fh)
        yield
    finally:
        with suppress(OSError):
            path.unlink()
        fh.close()


def _environment_error(exc: OSError, target: Path, build: Path | None) -> PipelineError:
    """``path: cause``, with the build folder's paths shown as the target's."""
    name = os_filename(exc)
    where = Path(name) if name else target
    if build is not None and where.is_relative_to(build):
        where = target / where.relative_to(build)
    elif where.parent == target.parent and where.name.startswith(f".{target.name}."):
        where = target.parent  # the lock file or the build folder itself: the parent is at fault
    return PipelineError(f"{where}: {os_cause(exc)}; nothing exported, {target} is as it was")


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
    batches = read_batches(src, batch_rows=spec.row_group_rows)
    pending: pa.Table | None = None
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
                    pending = pa.Table.from_batches([next(batches)])
                take = pending.slice(0, left)
                for shard in shards:
                    shard.add(take)
                left -= take.num_rows
                pending = pending.slice(take.num_rows)
                advance(take.num_rows)
            for shard in shards:
                shard.close()
        except BaseException:
            for shard in shards:
                shard.abort()
            raise
    return names
