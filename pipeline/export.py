"""Export: the mixture as a Hub-style dataset folder, and optionally pushed to the Hub.

    dataset/data/train-00000-of-00002.parquet   `messages` + provenance columns
    dataset/README.md                           dataset card with the Hub's YAML header
    dataset/dataset_info.json                   LLaMA-Factory entries (sharegpt, role/content)
    dataset/.instructmix-export.json            marker: this is an export, and the files it wrote

``datasets.load_dataset(folder)`` reads the folder the way the Hub would.

An export is a transaction. The new folder is built beside the target, in
``.<name>.export-XXXXXXXX``, and renamed into place; an earlier export is first renamed aside to
``.<name>.old-XXXXXXXX`` and removed once the new one is in. A failure at any point leaves the
target as it was, and an export killed between the renames is finished by the next one. Only a
folder whose marker lists everything in it is replaced; anything else is refused, or with
``force`` renamed to ``<target>.bak-N`` and never deleted. ``.<name>.export.lock`` beside the
target keeps two exports (from any run folders) off one target.
"""

from __future__ import annotations

import configparser
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from .catalog import Catalog, recipe_context
from .errors import PipelineError, os_cause, os_filename
from .models import Manifest, Recipe
from .progress import NullProgress, Progress
from .runfolder import (
    RECORD_SCHEMA,
    ParquetSink,
    RowGroups,
    RunFolder,
    _umask,
    atomic_text,
    read_batches,
    sign_lock,
    try_lock,
)

LICENSE_IDS = {
    "CC BY 4.0": "cc-by-4.0",
    "CC BY-SA 4.0": "cc-by-sa-4.0",
    "CC BY-SA 3.0": "cc-by-sa-3.0",
    "MIT": "mit",
    "Apache-2.0": "apache-2.0",
}

MARKER = ".instructmix-export.json"
_MARKER_FORMAT = 1
# Every name an export writes inside its folder, temporaries included: a leftover folder of a
# killed export holds nothing else.
_LAYOUT = re.compile(
    r"README\.md|dataset_info\.json|data/[^/]+-\d{5}-of-\d{5}\.parquet|(data/)?\.[^/]+\.tmp"
)
_FINAL_LAYOUT = re.compile(r"README\.md|dataset_info\.json|data/[^/]+-\d{5}-of-\d{5}\.parquet")
# What a build folder can hold before its marker exists: the marker's own temporary.
_MARKER_TMP = re.compile(re.escape(MARKER) + r"\.[^/]+\.tmp")
# Entries of a run folder the stages read: an export there would pull them out from under it.
_RUN_ENTRIES = frozenset(
    {"manifest.json", ".lock", "examples", "rendered", "valid", "mixed", "rejects"}
)
_SHOWN = 3  # foreign entries a refusal names


def export_stage(
    out: Path,
    *,
    to: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Manifest:
    """Write the Hub-style folder (default ``<out>/dataset``) from the run's mixture.

    The target must be new, empty or an earlier export; a folder holding anything else is
    refused, or with ``force=True`` renamed to ``<target>.bak-N`` (recorded in
    ``manifest.export["moved_aside"]``). A failed export leaves the target as it was.
    """
    progress = progress or NullProgress()
    folder = RunFolder(Path(out))
    try:
        with folder.lock():
            return _export(folder, to, force, progress)
    except OSError as exc:
        # Reading the run folder or writing its manifest: the export itself is settled by now.
        raise PipelineError(f"{os_filename(exc) or folder.root}: {os_cause(exc)}") from None


def _export(folder: RunFolder, to: Path | None, force: bool, progress: Progress) -> Manifest:
    started = time.perf_counter()
    manifest = folder.read_manifest(needs="mix")
    folder.remove_temporaries()
    recipe, catalog = recipe_context(manifest)
    target = _target_path(folder, to)
    legacy = _legacy_files(manifest, target)
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
                files = _build(build, folder, manifest, recipe, catalog, progress)
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
    manifest.export = {"path": str(target.resolve()), "files": files}
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
    progress: Progress,
) -> dict[str, list[str]]:
    """Write shards, card and dataset_info.json into ``build``, the marker first and last."""
    # Written first, so a build folder a killed export leaves is recognisably ours.
    _write_marker(build, manifest, None)
    files: dict[str, list[str]] = {}
    variants = Counter[str]()
    languages = Counter[str]()
    for split in manifest.splits:
        table = pq.read_table(folder.mixed(split), columns=["variant", "language"])
        for counter, name in ((variants, "variant"), (languages, "language")):
            for item in pc.value_counts(table.column(name)).to_pylist():
                counter[item["values"]] += item["counts"]
    with progress.task("export", sum(manifest.splits.values())) as advance:
        for split, rows in manifest.splits.items():
            files[split] = _write_shards(
                folder.mixed(split), build / "data", split, rows, recipe, advance
            )
    with atomic_text(build / "README.md") as fh:
        sizes = {
            split: sum((build / name).stat().st_size for name in names)
            for split, names in files.items()
        }
        fh.write(dataset_card(manifest, recipe, catalog, files, variants, sizes, languages))
    with atomic_text(build / "dataset_info.json") as fh:
        fh.write(json.dumps(llamafactory_info(recipe.name, files), indent=2) + "\n")
    written = ["README.md", "dataset_info.json", *(n for names in files.values() for n in names)]
    _write_marker(build, manifest, {name: (build / name).stat().st_size for name in written})
    return files


def _write_marker(build: Path, manifest: Manifest, files: dict[str, int] | None) -> None:
    # Deterministic like every other file of the export: no time, no absolute path.
    marker = {
        "instructmix_export": _MARKER_FORMAT,
        "complete": files is not None,
        "instructmix_version": manifest.instructmix_version,
        "recipe": manifest.recipe.get("name"),
        "recipe_fingerprint": manifest.recipe_fingerprint,
        "run_fingerprint": manifest.run_fingerprint,
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
    """Files an export from before the marker wrote at ``target``, as this run recorded them."""
    if manifest.export.get("path") != str(target.parent.resolve() / target.name):
        return {}
    names = [n for names in manifest.export.get("files", {}).values() for n in names]
    return dict.fromkeys(["README.md", "dataset_info.json", *names])


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
    marker = _read_marker(target)
    written = marker["files"] if marker is not None and marker["complete"] is True else legacy
    foreign = _scan(target, written, None, limit=_SHOWN + 1)[1]
    if foreign:
        return _Holding("foreign", foreign)
    with os.scandir(target) as entries:
        empty = next(entries, None) is None
    return _Holding("empty" if empty else "ours")


def _refuse_foreign(target: Path, holding: _Holding, force: bool) -> None:
    if holding.kind == "foreign" and not force:
        shown = ", ".join(holding.foreign[:_SHOWN])
        more = ", ..." if len(holding.foreign) > _SHOWN else ""
        raise PipelineError(
            f"{target}: holds files no instructmix export wrote ({shown}{more}); refusing to "
            f"replace it: export to a new or empty folder, or pass --force to move it aside "
            f"to {target}.bak-N"
        )


def _read_marker(folder: Path) -> dict[str, Any] | None:
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


def _scan(
    folder: Path,
    written: Mapping[str, Any],
    extra: re.Pattern[str] | None,
    limit: int | None = None,
) -> tuple[list[Path], list[str]]:
    """Files under ``folder`` an export wrote (listed in ``written``, with its size when
    recorded, or named as ``extra`` allows), and the first entries it did not write.

    Only the folder and its ``data/`` are read: an export has nothing deeper, and a user's
    tree is never walked.
    """
    ours: list[Path] = []
    foreign: list[str] = []
    for prefix in ("", "data/"):
        where = folder / prefix
        if prefix and (where.is_symlink() or not where.is_dir()):
            continue
        with os.scandir(where) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = prefix + entry.name
            if rel == "data" and entry.is_dir(follow_symlinks=False):
                continue  # read as the second prefix
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
    marker = _read_marker(folder)
    if marker is None:
        return not _scan(folder, {}, _MARKER_TMP, limit=1)[1]
    return not _scan(folder, marker["files"], _LAYOUT, limit=1)[1]


def _remove_export_dir(folder: Path) -> None:
    """Delete a folder of ours file by file (never a recursive delete), the marker last, so a
    removal cut short still leaves a folder recognisably ours. Best effort: what stays is
    cleaned by the next export."""
    marker = _read_marker(folder)
    ours, foreign = _scan(folder, marker["files"] if marker else {}, _LAYOUT)
    if foreign:
        return
    with suppress(OSError):
        for path in ours:
            path.unlink()
        if (folder / "data").is_dir():
            (folder / "data").rmdir()
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
    marker = _read_marker(folder)
    if marker is None or marker["complete"] is not True:
        return False
    return not _scan(folder, marker["files"], None, limit=1)[1]


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
    src: Path, data_dir: Path, split: str, rows: int, recipe: Recipe, advance: Any
) -> list[str]:
    """Stream the mixture into shards of ``shard_rows`` rows, in fixed-size row groups."""
    shard_rows = recipe.export.shard_rows
    n_shards = max(1, math.ceil(rows / shard_rows))
    schema = _schema_with_features()
    names = [f"data/{split}-{i:05d}-of-{n_shards:05d}.parquet" for i in range(n_shards)]
    batches = read_batches(src, batch_rows=recipe.export.row_group_rows)
    pending: pa.Table = schema.empty_table()
    for i, name in enumerate(names):
        with ParquetSink(data_dir / Path(name).name, schema, recipe.export.row_group_rows) as sink:
            groups = RowGroups(sink, recipe.export.row_group_rows)
            left = min(shard_rows, rows - i * shard_rows)
            while left > 0:
                if pending.num_rows == 0:
                    batch = next(batches)
                    pending = pa.Table.from_batches([batch]).cast(schema)
                take = pending.slice(0, left)
                groups.add(take)
                left -= take.num_rows
                pending = pending.slice(take.num_rows)
                advance(take.num_rows)
            groups.close()
    return names


def _schema_with_features() -> pa.Schema:
    # The `huggingface` metadata fixes the feature types datasets reports (e.g. messages as a
    # list of {role, content}) instead of leaving them to inference from the first shard.
    features = {
        "id": _value(),
        "messages": {"feature": {"role": _value(), "content": _value()}, "_type": "List"},
        "source": _value(),
        "task": _value(),
        "cluster": _value(),
        "template_id": _value(),
        "variant": _value(),
        "answer_choices": {"feature": _value(), "_type": "List"},
        "gold_answers": {"feature": _value(), "_type": "List"},
        "example_id": _value(),
        "split": _value(),
        "language": _value(),
        "license": _value(),
    }
    meta = {"info": {"features": features}}
    return RECORD_SCHEMA.with_metadata({b"huggingface": json.dumps(meta).encode()})


def _value() -> dict[str, str]:
    return {"dtype": "string", "_type": "Value"}


def llamafactory_info(name: str, files: dict[str, list[str]]) -> dict[str, Any]:
    """LLaMA-Factory's dataset_info.json entries: one per shard file (its file_name is one path)."""
    entry = {
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }
    info: dict[str, Any] = {}
    for split, paths in files.items():
        for i, path in enumerate(paths):
            key = f"{name}_{split}" if len(paths) == 1 else f"{name}_{split}_{i:05d}"
            info[key] = {"file_name": path, **entry}
    return info


def _size_category(n: int) -> str:
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
    ]
    for bound, label in bounds:
        if n < bound:
            return label
    return "100M<n<1B"


def dataset_card(
    manifest: Manifest,
    recipe: Recipe,
    catalog: Catalog,
    files: dict[str, list[str]],
    variants: Counter[str],
    sizes: dict[str, int],
    languages: Counter[str] | None = None,
) -> str:
    """README.md with the Hub's YAML header, the composition and every source's licence."""
    used = {n: c for n, c in manifest.sources.items() if c.records_selected}
    total = sum(c.records_selected for c in used.values())
    specs = {n: catalog.source(n).spec for n in used}
    licenses = sorted({LICENSE_IDS.get(s.license, "other") for s in specs.values()})
    header: dict[str, Any] = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*"} for s in files],
            }
        ],
        "license": licenses if len(licenses) > 1 else licenses[0] if licenses else "other",
        # The languages of the rows themselves (a multilingual source sets one per row).
        "language": sorted(languages) if languages else _spec_languages(specs.values()),
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(total)],
        "tags": ["instruction-tuning", "flan", "instructmix"],
        "pretty_name": recipe.export.pretty_name or f"instructmix {recipe.name}",
        # Split sizes: the Hub shows them, and `datasets` keys its cache of a local folder on
        # the card. Without them two exports with the same file names share one cache entry,
        # and load_dataset returns the first one's rows for the second.
        "dataset_info": {
            "splits": [
                {"name": split, "num_bytes": sizes[split], "num_examples": manifest.splits[split]}
                for split in files
            ],
            "download_size": sum(sizes.values()),
            "dataset_size": sum(sizes.values()),
        },
    }
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    lines += [
        f"# {header['pretty_name']}",
        "",
        f"An instruction-tuning mixture built by instructmix {manifest.instructmix_version} from "
        f"recipe `{recipe.name}` (seed {recipe.seed}, "
        f"fingerprint `{manifest.recipe_fingerprint}`), "
        f"from the {'bundled samples' if manifest.data == 'sample' else 'full Hub datasets'}. "
        f"The same recipe and seed rebuild these files byte for byte.",
        "",
        "## Splits",
        "",
        "| split | records |",
        "|---|---|",
        *[f"| {s} | {n} |" for s, n in manifest.splits.items()],
        "",
        "## Composition",
        "",
        "| source | cluster | task | license | records | share |",
        "|---|---|---|---|---|---|",
    ]
    for name, counts in sorted(used.items()):
        s = specs[name]
        share = counts.records_selected / total if total else 0.0
        lines.append(
            f"| {name} | {s.cluster} | {s.task} | {s.license} | "
            f"{counts.records_selected} | {share:.1%} |"
        )
    lines += _provenance_section(manifest, used)
    lines += ["", "## Variants", "", "| variant | records |", "|---|---|"]
    lines += [f"| {v} | {n} |" for v, n in sorted(variants.items())]
    lines += [
        "",
        "## Columns",
        "",
        "- `messages`: list of `{role, content}` (optional system turn, then user/assistant turns "
        "ending on assistant). TRL's SFTTrainer, Axolotl (`type: chat_template`) and "
        "open-instruct read it as is; `dataset_info.json` holds LLaMA-Factory entries.",
        "- `id`: stable hash of source, split, example id, template id and variant.",
        "- `source`, `task`, `cluster`, `template_id`, `variant`, `answer_choices`, `example_id`, "
        "`split` (of the original dataset), `language`, `license`: provenance of every row; "
        "filter on `license` to honour each source's terms.",
        "- `gold_answers`: every correct answer where the task has several (NQ-open, "
        "WebQuestions); the assistant turn is one of them. Score against all of them.",
        "",
        "## Licences and attribution",
        "",
        "Each row carries its source's licence. ShareAlike (CC BY-SA) rows oblige derived datasets "
        "to use the same licence. Cite the sources you train on:",
        "",
    ]
    # One entry per citation: sources that share one (one dataset in several languages or
    # configurations) are listed together, so the card never repeats a citation.
    by_citation: dict[str, list[str]] = {}
    for name in sorted(used):
        s = specs[name]
        cite = " ".join(s.citation.split()) if s.citation else f"(no citation given: {name})"
        by_citation.setdefault(cite, []).append(name)
    for cite, names in by_citation.items():
        s = specs[names[0]]
        where = s.homepage or (s.hub.id if s.hub else "local data")
        terms = ", ".join(sorted({specs[n].license for n in names}))
        lines.append(f"- **{', '.join(names)}** ({terms}; {where}): {cite}")
    lines += [
        "",
        "## Load",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'ds = load_dataset("path/or/repo-id")',
        "```",
        "",
    ]
    return "\n".join(lines)


def _spec_languages(specs: Any) -> list[str]:
    return sorted({code for spec in specs for code in spec.languages}) or ["en"]


def _provenance_section(manifest: Manifest, used: dict[str, Any]) -> list[str]:
    """Where every split's rows came from, per source, in the original dataset's split names;
    the held-out protocol; what dedup and decontamination removed; and the warnings."""
    lines = [
        "",
        "## Where the rows come from",
        "",
        "Each source's records by the split of this dataset (rows) and the split of the "
        "original dataset they were drawn from. Train and validation never share an example or "
        "a split group (such as one premise or one meaning representation), and few-shot "
        "exemplars are drawn from train examples only.",
        "",
        "| source | role | split | original split: records |",
        "|---|---|---|---|",
    ]
    for name, counts in sorted(used.items()):
        for split, origins in counts.original_splits.items():
            where = ", ".join(f"{o}: {n}" for o, n in origins.items())
            lines.append(f"| {name} | {counts.role} | {split} | {where} |")
    held = sorted(n for n, c in manifest.sources.items() if c.role == "eval")
    if held:
        lines += [
            "",
            f"The `eval` split holds the held-out sources ({', '.join(held)}): no record of "
            "theirs is in train or validation, so a model trained on train can be evaluated "
            "on them as unseen tasks (the FLAN protocol).",
        ]
    dedup = sum(c.records_deduplicated for c in manifest.sources.values())
    decon = sum(c.records_decontaminated for c in manifest.sources.values())
    report = manifest.decontamination
    lines += ["", f"Duplicates removed: {dedup} records (exact or after normalisation)."]
    if report.get("enabled"):
        lines.append(
            f"Decontamination: {decon} train records dropped for sharing a "
            f"{report['n']}-gram (or a whole text of at least {report['min_tokens']} tokens) "
            f"with held-out text: {report['texts_indexed']} validation, eval and external "
            f"texts indexed, {report['texts_too_short']} too short to match on."
        )
    else:
        lines.append("Decontamination was turned off for this build.")
    train = [c.original_splits.get("train", {}) for c in manifest.sources.values()]
    total = sum(n for origins in train for n in origins.values())
    borrowed = sum(n for origins in train for s, n in origins.items() if s != "train")
    if borrowed:
        lines += [
            "",
            f"{borrowed} of {total} train records ({borrowed / total:.0%}) come from the "
            "evaluation (dev or test) splits of their datasets.",
        ]
    if manifest.warnings:
        lines += ["", "**Warnings**", ""] + [f"- {w}" for w in manifest.warnings]
    return lines


def push_to_hub(
    folder: Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    api: Any = None,
) -> str:
    """Upload an export folder as a dataset repo; the token comes from the environment or the
    login cache when not given, and is never printed. Returns the repo URL.

    Only an export is uploaded: a folder holding files no export wrote is refused, so nothing
    of the user's is published by mistake."""
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise PipelineError(f"{folder}: not an export folder (no README.md); run export first")
    marker = _read_marker(folder)
    if marker is not None and marker["complete"] is True:
        foreign = _scan(folder, marker["files"], None, limit=_SHOWN + 1)[1]
    else:
        foreign = _scan(folder, {}, _FINAL_LAYOUT, limit=_SHOWN + 1)[1]  # an older export
    if foreign:
        shown = ", ".join(foreign[:_SHOWN]) + (", ..." if len(foreign) > _SHOWN else "")
        raise PipelineError(
            f"{folder}: holds files no instructmix export wrote ({shown}); "
            "push uploads only an export folder"
        )
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id=repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            commit_message="Upload instructmix export",
            ignore_patterns=[MARKER],  # local bookkeeping, not part of the dataset
        )
    except Exception as exc:
        # Hub errors can echo request headers; keep only the first line of the message.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(
            f"push to hub {repo_id!r} failed: {redact_secrets(first, token)}"
        ) from None
    return str(url)


# Environment variables huggingface_hub takes a secret from (utils/_auth.py, _oidc.py).
TOKEN_VARIABLES = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_OIDC_ID_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
)
# User (hf_) and organisation (api_org_) tokens: the backstop for a token not known by value.
# It also hides identifiers such as hf_hub_download; a message a little less clear is the price.
_TOKEN_PATTERN = re.compile(r"(?<![A-Za-z0-9])(hf|api_org)_[A-Za-z0-9_-]{8,}")
# Shorter values are no real token, and replacing them would garble the message (a "1" in 401).
_MIN_SECRET = 8
_MAX_SECRET_FILE = 1 << 16


def redact_secrets(text: str, token: str | None = None) -> str:
    """``text`` with every Hub secret this process could have sent replaced by ``***``: the
    token given, the token variables of the environment, the login cache (token file and
    stored tokens, read from disk, never refreshed over the network), huggingface_hub's
    in-process token caches; then anything shaped like a Hub token by the pattern."""
    for secret in sorted(_known_secrets(token), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _TOKEN_PATTERN.sub(lambda m: f"{m.group(1)}_***", text)


def _known_secrets(token: str | None) -> set[str]:
    values: list[object] = [token, *(os.environ.get(name) for name in TOKEN_VARIABLES)]
    values += _login_cache_secrets()
    values += _in_process_secrets()
    secrets = set()
    for value in values:
        if isinstance(value, str):
            # huggingface_hub sends the value without newlines and surrounding spaces.
            for form in (value, value.replace("\r", "").replace("\n", "").strip()):
                if len(form) >= _MIN_SECRET:
                    secrets.add(form)
    return secrets


def _token_paths() -> set[str]:
    """The login token file as huggingface_hub finds it now (HF_TOKEN_PATH, HF_HOME,
    XDG_CACHE_HOME) and as it found it when imported (its constants)."""
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    home = os.path.expandvars(
        os.path.expanduser(os.environ.get("HF_HOME", os.path.join(cache, "huggingface")))
    )
    paths = {
        os.path.expandvars(
            os.path.expanduser(os.environ.get("HF_TOKEN_PATH", os.path.join(home, "token")))
        )
    }
    constants = sys.modules.get("huggingface_hub.constants")
    imported = getattr(constants, "HF_TOKEN_PATH", None)
    if isinstance(imported, str):
        paths.add(imported)
    return paths


def _login_cache_secrets() -> list[str]:
    found = []
    for token_path in _token_paths():
        text = _read_small(Path(token_path))
        if text is not None:
            found.append(text)
        stored = _read_small(Path(token_path).parent / "stored_tokens")
        if stored is not None:
            config = configparser.ConfigParser(interpolation=None)
            with suppress(configparser.Error):
                config.read_string(stored)
                for section in config.sections():
                    for key in ("hf_token", "refresh_token"):
                        if config.has_option(section, key):
                            found.append(config.get(section, key))
    return found


def _read_small(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(_MAX_SECRET_FILE)
    except OSError:
        return None


def _in_process_secrets() -> list[object]:
    """Tokens huggingface_hub obtained in this process and keeps only in memory (an OIDC
    exchange, a refreshed OAuth token, a Colab secret). Private names: read defensively."""
    auth = sys.modules.get("huggingface_hub.utils._auth")
    if auth is None:
        return []
    found: list[object] = [getattr(auth, "_GOOGLE_COLAB_SECRET", None)]
    for cache in (
        getattr(auth, "_OIDC_TOKEN_CACHE", None),
        getattr(auth, "_OAUTH_REFRESH_CACHE", None),
    ):
        if isinstance(cache, dict):
            found += [cache.get(key) for key in ("token", "file_token", "resolved_token")]
    return found
