"""The run folder: where each stage reads the previous stage's output and writes its own.

    <out>/manifest.json                       counts per source, stages done, timings
    <out>/examples/<source>/part-NNNNN.parquet   load: normalised examples (after the cap)
    <out>/rendered/<source>/part-NNNNN.parquet   render: one record per (example, template)
    <out>/valid/<source>/part-NNNNN.parquet      validate: records that passed every rule
    <out>/mixed/<split>.parquet                  mix: the selected, shuffled mixture
    <out>/rejects/<stage>/<source>/part-NNNNN.jsonl   everything left out, with its reason
    <out>/dataset/                            export: the Hub-style folder

A source's examples are cut into parts of a fixed number of rows in file order; a part is the
unit of parallel work, and part N of every stage derives from part N of the stage before. Every
file is written under a temporary name and renamed into place, so a file that exists is
complete.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import RunFolderError, os_cause
from .models import COMPRESSION_PATTERN, Manifest, Recipe, Reject

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("messages", pa.list_(MESSAGE_TYPE)),
        ("source", pa.string()),
        ("task", pa.string()),
        ("cluster", pa.string()),
        ("template_id", pa.string()),
        ("variant", pa.string()),
        ("answer_choices", pa.list_(pa.string())),
        ("gold_answers", pa.list_(pa.string())),
        ("example_id", pa.string()),
        ("split", pa.string()),
        ("language", pa.string()),
        ("license", pa.string()),
    ]
)

EXAMPLE_SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("split", pa.string()),
        ("locator", pa.string()),
        ("fields", pa.string()),  # JSON: sources differ in schema; one file layout serves all
        ("key", pa.uint64()),
        ("group", pa.string()),
        ("out_split", pa.string()),
        ("language", pa.string()),
        ("license", pa.string()),  # the row's own licence (`license_by`), or empty: the source's
    ]
)

# Rendered and valid parts carry the output split of their example beside the record columns;
# the mixture and the export hold the record columns only.
PART_SCHEMA = RECORD_SCHEMA.append(pa.field("out_split", pa.string()))

OUT_SPLITS = ("train", "validation", "eval")

STAGES = ("load", "render", "validate", "mix", "export")

# Parquet key-value metadata that ties a part to the run that wrote it: a resume keeps a part
# only when it carries the current run fingerprint (a stale worker's part never survives).
RUN_KEY = b"instructmix.run"

# The only names the tool ever deletes in a run folder, per top-level folder; each pattern
# matches a path relative to that folder. Nothing else is touched, and nothing is scanned
# recursively.
_SLUG = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_OWN_FILES: dict[str, tuple[str, ...]] = {
    "examples": (rf"{_SLUG}/part-\d{{5}}\.parquet", rf"\.{_SLUG}\.all\.parquet"),
    "rendered": (rf"{_SLUG}/part-\d{{5}}\.parquet",),
    "valid": (rf"{_SLUG}/part-\d{{5}}\.parquet",),
    # The mix's scratch files: Arrow IPC files, and the parquet ones earlier versions wrote.
    "mixed": (
        rf"{_SLUG}\.parquet",
        r"conflicts\.jsonl",
        r"\.buckets/b-\d{5}\.arrow",
        r"\.buckets/b-\d{5}\.parquet",
    ),
    "rejects": (rf"{_SLUG}/{_SLUG}/part-\d{{5}}\.jsonl",),
}
# What the stage that runs once ``needs`` is done reads from the run folder (render, validate,
# mix, then export and the eval harness), and what it writes afresh or clears as stale. A
# folder `run --keep` dropped is refused to the first and is back once the second has run.
_READS_AFTER: dict[str, tuple[str, ...]] = {
    "load": ("examples",),
    "render": ("rendered", "examples"),
    "validate": ("valid", "examples"),
    "mix": ("mixed",),
}
_REWRITES_AFTER: dict[str, tuple[str, ...]] = {
    "load": ("rendered", "valid", "mixed"),
    "render": ("valid", "mixed"),
    "validate": ("mixed",),
}
# mkstemp's temporary name for a final name: `.NAME.` + 8 random characters + `.tmp`.
_TEMP_SUFFIX = r"\.[a-z0-9_]{8}\.tmp"


# Every file the tool writes is zstd-compressed (level 1, Arrow's default), the export's always;
# `run --compression` picks another codec for the examples, rendered and valid parts.
DEFAULT_COMPRESSION = "zstd"
COMPRESSIONS = ("zstd", "zstd:N", "lz4", "snappy", "gzip", "brotli", "none")
_COMPRESSION = re.compile(COMPRESSION_PATTERN)


def parse_compression(spec: str) -> tuple[str, int | None]:
    """``zstd``, ``zstd:LEVEL`` (1-22), ``lz4``, ``snappy``, ``gzip``, ``brotli`` or ``none``, as
    pyarrow's (codec, level)."""
    match = _COMPRESSION.fullmatch(spec)
    if match is None:
        raise RunFolderError(
            f"compression {spec!r}: use one of {', '.join(COMPRESSIONS)} (N: a level, 1-22)"
        )
    if match.group(1):
        return "zstd", int(match.group(2)) if match.group(2) else None
    return spec, None


def _temporary_of(pattern: str) -> str:
    """The pattern of atomic_path's temporaries for files whose names match ``pattern``."""
    head, _, name = pattern.rpartition("/")
    return f"{head}/" * bool(head) + rf"\.{name}{_TEMP_SUFFIX}"


def _own_patterns(top: str) -> list[re.Pattern[str]]:
    pats = _OWN_FILES[top]
    return [re.compile(p) for p in (*pats, *(_temporary_of(p) for p in pats))]


def _depth(pattern: re.Pattern[str]) -> int:
    return pattern.pattern.count("/")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            # mkstemp makes 0600 files; outputs are meant to be shared like any other file.
            os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, path)
        except OSError as exc:
            raise _write_error(path, exc) from None
    finally:
        with suppress(OSError):
            tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_text(path: Path) -> Iterator[IO[str]]:
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
                yield fh
        except OSError as exc:
            raise _write_error(path, exc) from None


def _write_error(path: Path, exc: OSError) -> RunFolderError:
    cause = os_cause(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        cause = "no space left on the device; free some space and rerun (the run resumes)"
    return RunFolderError(f"{path}: cannot write: {cause}")


class ParquetSink:
    """Writes record batches to one parquet file, atomically; an empty file still has a schema.

    Disk errors (full, read-only, gone) surface as one RunFolderError naming the file; the
    temporary file is removed, so no partial output is left under a final name."""

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        row_group_rows: int = 10_000,
        compression: str = DEFAULT_COMPRESSION,
        plain: bool = False,
    ) -> None:
        """``plain``: no dictionary pages and no column statistics, for the run folder's own
        parts, which only this tool reads, whole: their ids and texts are all distinct, so a
        dictionary is built only to be dropped, and nothing filters on statistics (measured on
        a rendered part of 24,000 records: 19 ms against 28 ms a write, 0.95 against 1.01 MB)."""
        self.path = path
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.rows = 0
        self._ctx = atomic_path(path)
        try:
            tmp = self._ctx.__enter__()
        except OSError as exc:
            raise _write_error(path, exc) from None
        try:
            codec, level = parse_compression(compression)
            self._writer = pq.ParquetWriter(
                tmp,
                schema,
                compression=codec,
                compression_level=level,
                use_dictionary=not plain,
                write_statistics=not plain,
            )
        except OSError as exc:
            self._ctx.__exit__(type(exc), exc, None)
            raise _write_error(path, exc) from None

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def write_table(self, table: pa.Table) -> None:
        if table.num_rows:
            try:
                self._writer.write_table(table, row_group_size=self.row_group_rows)
            except OSError as exc:
                self.abort()
                raise _write_error(self.path, exc) from None
            self.rows += table.num_rows

    def close(self) -> None:
        try:
            self._writer.close()
            self._ctx.__exit__(None, None, None)
        except OSError as exc:
            self.abort()
            raise _write_error(self.path, exc) from None

    def abort(self) -> None:
        with suppress(OSError):
            self._writer.close()
        # Exiting with an exception removes the temporary file and leaves no partial output.
        with suppress(RuntimeError, OSError):
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class RejectSink:
    """Rejects of one stage and source as JSON lines, renamed into place when complete."""

    def __init__(self, path: Path) -> None:
        self._ctx = atomic_text(path)
        self._fh = self._ctx.__enter__()
        self.by_rule: dict[str, int] = {}

    def add(self, reject: Reject) -> None:
        self._fh.write(reject.model_dump_json() + "\n")
        self.by_rule[reject.rule] = self.by_rule.get(reject.rule, 0) + 1

    @property
    def count(self) -> int:
        return sum(self.by_rule.values())

    def __enter__(self) -> RejectSink:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._ctx.__exit__(exc_type, exc, tb)


# Run folders this process holds the lock of (the lock is per process, not per call).
_HELD: set[Path] = set()
_PART = re.compile(r"part-\d{5}\.parquet")
_REJECT_PART = re.compile(r"part-\d{5}\.jsonl")
_MANIFEST_TEMP = re.compile(r"\.manifest\.json" + _TEMP_SUFFIX)


def is_run_folder(root: Path) -> bool:
    """Whether ``root`` holds a manifest an instructmix run wrote (valid or not as a Manifest:
    a hand-edited one is still ours to clean, and read_manifest reports what is wrong)."""
    path = Path(root) / "manifest.json"
    if not path.is_file() or path.is_symlink():
        return False
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"instructmix_version", "recipe_fingerprint"} <= set(data)


class RunFolder:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def stage_dir(self, stage: str, source: str) -> Path:
        """``examples``, ``rendered`` or ``valid`` parts of one source."""
        return self.root / stage / source

    def part(self, stage: str, source: str, index: int) -> Path:
        return self.stage_dir(stage, source) / f"part-{index:05d}.parquet"

    def parts(self, stage: str, source: str) -> list[Path]:
        # Exactly the names the tool writes: a user's `part-1.parquet` is not read as a part.
        paths = self.stage_dir(stage, source).glob("part-*.parquet")
        return sorted(p for p in paths if _PART.fullmatch(p.name))

    def stale_parts(self, stage: str, source: str, run: str) -> list[Path]:
        """Parts of a stage not written by the run ``run`` (another run's, or unreadable)."""
        return [p for p in self.parts(stage, source) if part_run(p) != run]

    def mixed(self, split: str) -> Path:
        return self.root / "mixed" / f"{split}.parquet"

    def rejects(self, stage: str, source: str, index: int) -> Path:
        return self.root / "rejects" / stage / source / f"part-{index:05d}.jsonl"

    def reject_files(self, stage: str, source: str) -> list[Path]:
        paths = (self.root / "rejects" / stage / source).glob("part-*.jsonl")
        return sorted(p for p in paths if _REJECT_PART.fullmatch(p.name))

    @contextmanager
    def lock(self, create: bool = False) -> Iterator[None]:
        """Hold the folder for one process: a second run on it stops with a clear message.

        An OS lock (flock) is released when its process dies, even by SIGKILL, so a crashed run
        never leaves a stale lock. Re-entrant within a process (``run`` holds it across stages).
        """
        key = self.root.resolve()
        if key in _HELD:
            yield
            return
        self.claim()
        if not create and not self.root.is_dir():
            # Only load and run start a run folder; a later stage on a missing one is a typo.
            raise RunFolderError(
                f"{self.root}: no run folder here; run `instructmix load` (or `run`) first"
            )
        path = self.root / ".lock"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the block
        except OSError as exc:
            raise _write_error(path, exc) from None
        holder = try_lock(fh)
        if holder is not None:
            raise RunFolderError(
                f"{self.root}: in use by another instructmix process (pid {holder}); "
                "wait for it to finish or use another --out"
            )
        sign_lock(fh)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()

    def claim(self) -> None:
        """Refuse to write into a folder that is not ours: a run folder is new, empty, or holds
        an instructmix manifest. A user's folder given as ``--out`` by mistake is left as it is.
        """
        root = self.root
        if root.is_symlink() and not root.exists():
            raise RunFolderError(f"{root}: a broken symlink; pick another --out")
        if not root.exists():
            return
        if not root.is_dir():
            raise RunFolderError(f"{root}: is a file, not a folder; pick another --out")
        try:
            entries = sorted(os.listdir(root))
        except OSError as exc:
            raise RunFolderError(f"{root}: cannot read the folder: {exc.strerror}") from None
        foreign = [e for e in entries if e != ".lock" and not _MANIFEST_TEMP.fullmatch(e)]
        if not foreign or is_run_folder(root):
            return
        if "manifest.json" in foreign:
            raise RunFolderError(
                f"{self.manifest_path}: not an instructmix manifest (unreadable, or edited by "
                "hand); refusing to write into this folder: use a new --out, or restore it"
            )
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        shown = ", ".join(foreign[:3]) + more
        raise RunFolderError(
            f"{root}: not an instructmix run folder (it holds {shown} and no instructmix "
            "manifest.json); refusing to write into it: pick a new or empty --out"
        )

    def _own_files(self, top: str) -> list[Path]:
        """Files under ``top`` that the tool wrote, by their exact names, at known depths."""
        base = self.root / top.split("/")[0]
        patterns = _own_patterns(top.split("/")[0])
        prefix = top.partition("/")[2]
        found = []
        for depth in sorted({_depth(p) for p in patterns}):
            for path in base.glob("/".join(["*"] * (depth + 1))):
                rel = path.relative_to(base).as_posix()
                if prefix and not rel.startswith(prefix + "/"):
                    continue
                if (
                    path.is_file()
                    and not path.is_symlink()
                    and any(p.fullmatch(rel) for p in patterns if _depth(p) == depth)
                ):
                    found.append(path)
        return found

    def _delete(self, files: list[Path], top: str) -> None:
        dirs: set[Path] = set()
        for path in files:
            path.unlink(missing_ok=True)
            dirs.update(p for p in path.parents if self.root / top in (p, *p.parents))
        # Folders go only when empty: anything a user put there stays, with its folder.
        for d in sorted(dirs, key=lambda p: -len(p.parts)):
            with suppress(OSError):
                d.rmdir()

    def remove_temporaries(self) -> None:
        """Delete half-written files a killed run left (they never have a final name). Only
        the names the tool's own writers use are matched; nothing else in the tree is scanned."""
        for top in _OWN_FILES:
            temps = [p for p in self._own_files(top) if p.name.endswith(".tmp")]
            self._delete(temps, top)
        for path in self.root.glob(".*.tmp"):
            if _MANIFEST_TEMP.fullmatch(path.name) and path.is_file():
                path.unlink(missing_ok=True)
        for partial in self._own_files("examples"):
            if partial.name.endswith(".all.parquet"):
                partial.unlink(missing_ok=True)

    def clear(self, *names: str) -> None:
        """Remove a stage's earlier outputs: they are derived, and stale parts would be read.
        ``names`` are top-level folders (``rendered``) or one level below (``rejects/render``);
        only files matching the tool's own names are deleted."""
        for name in names:
            self._delete(self._own_files(name), name)

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    def read_manifest(self, needs: str | None = None) -> Manifest:
        if not self.manifest_path.is_file():
            raise RunFolderError(
                f"{self.root}: no manifest.json here; run `instructmix load` (or `run`) first"
            )
        try:
            manifest = Manifest.model_validate_json(self.manifest_path.read_text("utf-8"))
            # The recipe travels inside the manifest; every later stage rebuilds it from there.
            Recipe.model_validate(manifest.recipe)
        except (OSError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[:3]
            raise RunFolderError(
                f"{self.manifest_path}: unreadable manifest (edited by hand?): "
                f"{' '.join(line.strip() for line in first)}; rerun with --fresh"
            ) from None
        if needs is not None and needs not in manifest.stages_done:
            raise RunFolderError(
                f"{self.root}: stage {needs!r} has not run here yet; "
                f"run `instructmix {needs}` first"
            )
        if needs is not None:
            self._check_not_dropped(manifest, needs)
            # The stage starting now writes these afresh (or clears them as stale): from here
            # on, they are that stage's, not gone.
            rewritten = _REWRITES_AFTER.get(needs, ())
            manifest.storage.dropped = [
                name for name in manifest.storage.dropped if name not in rewritten
            ]
        return manifest

    def _check_not_dropped(self, manifest: Manifest, needs: str) -> None:
        gone = [name for name in _READS_AFTER.get(needs, ()) if name in manifest.storage.dropped]
        if not gone:
            return
        folders = " and ".join(f"{name}/" for name in gone)
        recipe = f" {manifest.recipe_path}" if manifest.recipe_path else ""
        data = " --data hub" if manifest.data == "hub" else ""
        raise RunFolderError(
            f"{self.root}: {folders} {'was' if len(gone) == 1 else 'were'} removed by "
            f"`run --keep {manifest.storage.keep}` once every stage reading "
            f"{'it' if len(gone) == 1 else 'them'} had run; rebuild with `instructmix run"
            f"{recipe} --out {self.root}{data} --keep all` (the same recipe and catalog "
            "options: it rebuilds what is gone, and the dataset comes out the same)"
        )

    def drop(self, name: str) -> None:
        """Delete what ``run --keep`` drops of a stage folder: the parts of ``examples``,
        ``rendered`` or ``valid``, or the mixture's split files (``mixed/conflicts.jsonl`` and
        every reject stay). Only files by the tool's own names, as ``clear``."""
        files = self._own_files(name)
        if name == "mixed":
            files = [p for p in files if not p.name.startswith(("conflicts.jsonl", ".conflicts"))]
        self._delete(files, name)

    def write_manifest(self, manifest: Manifest) -> None:
        with atomic_text(self.manifest_path) as fh:
            fh.write(manifest.model_dump_json(indent=2) + "\n")


def try_lock(fh: IO[str]) -> str | None:
    """Take an exclusive OS lock on an open lock file without waiting: None when taken, else
    the pid its holder wrote into it (the file is closed then)."""
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        return holder
    return None


def sign_lock(fh: IO[str]) -> None:
    """Write this process's pid into a lock file it holds, for the message a waiter gets."""
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()


def read_batches(path: Path, batch_rows: int = 4096) -> Iterator[pa.RecordBatch]:
    if not path.is_file():
        raise RunFolderError(f"{path}: missing; rerun the stage that writes it")
    try:
        pf = pq.ParquetFile(path)
        yield from pf.iter_batches(batch_size=batch_rows)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None


def read_row_groups(path: Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """A parquet file's rows, a row group at a time (``read_batches``: batches of a set size).
    ``ParquetFile.iter_batches`` holds memory that grows with the file: reading a mixture of a
    million records in batches peaked 60 MB higher than one of 100,000 records, even with the
    allocator's free pages handed back after each batch; reading its row groups in turn peaked
    7 MB higher."""
    if not path.is_file():
        raise RunFolderError(f"{path}: missing; rerun the stage that writes it")
    try:
        with pq.ParquetFile(path) as reader:
            for group in range(reader.num_row_groups):
                yield reader.read_row_group(group, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None


def num_rows(path: Path) -> int:
    """Rows of a parquet file the run wrote, from its footer."""
    try:
        return int(pq.read_metadata(path).num_rows)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None


def part_run(path: Path) -> str | None:
    """The run fingerprint a part was written by; None when it is missing, unreadable (a
    truncated file) or was written without one."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError):
        return None
    run = meta.get(RUN_KEY)
    return run.decode() if run is not None else None


def with_run(schema: pa.Schema, run: str) -> pa.Schema:
    return schema.with_metadata({**(schema.metadata or {}), RUN_KEY: run.encode()})


def _unreadable(path: Path, exc: BaseException) -> RunFolderError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return RunFolderError(
        f"{path}: unreadable ({first}); it was changed or truncated outside instructmix: "
        "rerun with --fresh"
    )


def reject_lines(folder: RunFolder, stage: str, source: str) -> list[dict[str, Any]]:
    """Every reject one stage wrote for one source, in part order."""
    out = []
    for path in folder.reject_files(stage, source):
        with open(path, encoding="utf-8") as fh:
            out += [json.loads(line) for line in fh if line.strip()]
    return out


def write_rejects(path: Path, rejects: list[Reject]) -> None:
    """A part's rejects, through the same writer as load's; no file when there are none (and
    none left from an earlier attempt at the part)."""
    if not rejects:
        path.unlink(missing_ok=True)
        return
    with RejectSink(path) as sink:
        for reject in rejects:
            sink.add(reject)


def write_part(path: Path, table: pa.Table, run: str, row_group_rows: int = 10_000) -> None:
    """One part, stamped with the fingerprint of the run that wrote it, in its run folder's
    codec (a part lies at ``<out>/<stage>/<source>/part-NNNNN.parquet``)."""
    codec = part_compression(path.parent.parent.parent)
    with ParquetSink(path, with_run(table.schema, run), row_group_rows, codec, plain=True) as sink:
        sink.write_table(table)


def link_part(path: Path, same_as: Path, table: pa.Table, run: str) -> None:
    """Write ``path`` holding what the part ``same_as`` holds (``table``, the same run): a hard
    link to it where the file system allows (a validated part that lost no record is the
    rendered part, byte for byte: one encode and one copy on disk instead of two), else a
    write of its own."""
    try:
        with atomic_path(path) as tmp:
            tmp.unlink()
            os.link(same_as, tmp)
    except (OSError, RunFolderError):
        write_part(path, table, run)


# The codec each run folder's parts are written with, for `run --compression`: set in the
# process that runs `run` (load writes its parts before the manifest can say it) ...
_PART_COMPRESSION: dict[Path, str] = {}
# ... and read from the manifest's `storage.compression` by worker processes and Ray tasks,
# per manifest version (path -> (mtime_ns, size, codec)): one stat per part written.
_MANIFEST_COMPRESSION: dict[Path, tuple[int, int, str]] = {}


@contextmanager
def parts_compressed(root: Path, compression: str) -> Iterator[None]:
    """Within the block, this process writes the parts of the run folder ``root`` with
    ``compression`` (the run also records it in the manifest, for its workers)."""
    parse_compression(compression)
    key = Path(root).resolve()
    before = _PART_COMPRESSION.get(key)
    _PART_COMPRESSION[key] = compression
    try:
        yield
    finally:
        if before is None:
            _PART_COMPRESSION.pop(key, None)
        else:
            _PART_COMPRESSION[key] = before


def part_compression(root: Path) -> str:
    """The codec for a new part of the run folder ``root``."""
    root = Path(root).resolve()
    chosen = _PART_COMPRESSION.get(root)
    if chosen is not None:
        return chosen
    path = root / "manifest.json"
    try:
        stat = path.stat()
    except OSError:
        return DEFAULT_COMPRESSION
    cached = _MANIFEST_COMPRESSION.get(path)
    if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
        return cached[2]
    try:
        storage = json.loads(path.read_text("utf-8")).get("storage") or {}
        codec = str(storage.get("compression") or DEFAULT_COMPRESSION)
        parse_compression(codec)
    except (OSError, ValueError, AttributeError, RunFolderError):
        # The stage reading this manifest reports what is wrong with it; a part is still
        # written whole.
        codec = DEFAULT_COMPRESSION
    _MANIFEST_COMPRESSION[path] = (stat.st_mtime_ns, stat.st_size, codec)
    return codec


class PartSink:
    """Cuts a stream of rows into parts of ``part_rows`` rows, each written atomically.

    A part is encoded and written on a background thread while the caller produces the next
    (Arrow's parquet writer runs without the GIL): load's whole-source pass, which runs alone
    while the workers wait, spent half its time writing (40,000 e-SNLI examples: 88 of 179 ms).
    At most ``WRITES_AHEAD`` parts wait to be written, so memory stays bounded; ``close``
    (or leaving the ``with`` block) waits for every write and raises the first error."""

    WRITES_AHEAD = 2

    def __init__(
        self,
        folder: RunFolder,
        stage: str,
        source: str,
        schema: pa.Schema,
        part_rows: int,
        run: str,
    ) -> None:
        self.folder, self.stage, self.source, self.run = folder, stage, source, run
        self.schema = schema
        self.part_rows = part_rows
        self.rows = 0
        self.parts = 0
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="instructmix-part")
        self._writes: list[Future[None]] = []

    def __enter__(self) -> PartSink:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        # Failing already: let the writes under way end (no file is left half-written, and
        # none appears after the caller has moved on), their own errors aside.
        for write in self._writes:
            with suppress(Exception):
                write.result()
        self._writer.shutdown()

    def write_table(self, table: pa.Table) -> None:
        while table.num_rows:
            take = min(table.num_rows, self.part_rows - self._buffered)
            self._buffer.append(table.slice(0, take))
            self._buffered += take
            table = table.slice(take)
            if self._buffered == self.part_rows:
                self._flush()

    def close(self) -> None:
        if self._buffered or self.parts == 0:
            self._flush()
        try:
            for write in self._writes:
                write.result()
        finally:
            self._writes = []
            self._writer.shutdown()

    def _flush(self) -> None:
        table = pa.concat_tables(self._buffer) if self._buffer else self.schema.empty_table()
        path = self.folder.part(self.stage, self.source, self.parts)
        while len(self._writes) >= self.WRITES_AHEAD:
            self._writes.pop(0).result()
        self._writes.append(self._writer.submit(write_part, path, table, self.run))
        self.rows += table.num_rows
        self.parts += 1
        self._buffer, self._buffered = [], 0


class RowGroups:
    """Writes rows in row groups of exactly ``rows`` rows (the last may be short), so file
    bytes do not depend on how the rows arrived in batches."""

    def __init__(self, sink: ParquetSink, rows: int) -> None:
        self.sink, self.rows = sink, rows
        self._pending: list[pa.Table] = []
        self._count = 0

    def add(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._count += table.num_rows
        while self._count >= self.rows:
            merged = pa.concat_tables(self._pending)
            self.sink.write_table(merged.slice(0, self.rows))
            rest = merged.slice(self.rows)
            self._pending, self._count = [rest], rest.num_rows

    def close(self) -> None:
        if self._count:
            self.sink.write_table(pa.concat_tables(self._pending))
        self._pending, self._count = [], 0
