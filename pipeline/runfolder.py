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

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import RunFolderError
from .models import Manifest, Reject

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
    ]
)

STAGES = ("load", "render", "validate", "mix", "export")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files; outputs are meant to be shared like any other file.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_text(path: Path) -> Iterator[IO[str]]:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        yield fh


class ParquetSink:
    """Writes record batches to one parquet file, atomically; an empty file still has a schema."""

    def __init__(self, path: Path, schema: pa.Schema, row_group_rows: int = 10_000) -> None:
        self.path = path
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.rows = 0
        self._ctx = atomic_path(path)
        tmp = self._ctx.__enter__()
        self._writer = pq.ParquetWriter(tmp, schema, compression="zstd")

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def write_table(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table, row_group_size=self.row_group_rows)
            self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        self._writer.close()
        # Exiting with an exception removes the temporary file and leaves no partial output.
        with suppress(RuntimeError):
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
        return sorted(self.stage_dir(stage, source).glob("part-*.parquet"))

    def mixed(self, split: str) -> Path:
        return self.root / "mixed" / f"{split}.parquet"

    def rejects(self, stage: str, source: str, index: int) -> Path:
        return self.root / "rejects" / stage / source / f"part-{index:05d}.jsonl"

    def reject_files(self, stage: str, source: str) -> list[Path]:
        return sorted((self.root / "rejects" / stage / source).glob("part-*.jsonl"))

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for one process: a second run on it stops with a clear message.

        An OS lock (flock) is released when its process dies, even by SIGKILL, so a crashed run
        never leaves a stale lock. Re-entrant within a process (``run`` holds it across stages).
        """
        key = self.root.resolve()
        if key in _HELD:
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the block
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise RunFolderError(
                f"{self.root}: in use by another instructmix process (pid {holder}); "
                "wait for it to finish or use another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()

    def remove_temporaries(self) -> None:
        """Delete half-written files a killed run left (they never have a final name)."""
        for tmp in self.root.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        for partial in self.root.glob("examples/.*.all.parquet"):
            partial.unlink(missing_ok=True)

    def clear(self, *names: str) -> None:
        """Remove a stage's earlier outputs: they are derived, and stale parts would be read."""
        for name in names:
            target = self.root / name
            if target.exists():
                shutil.rmtree(target)

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
        except ValueError as exc:
            raise RunFolderError(f"{self.manifest_path}: unreadable manifest: {exc}") from None
        if needs is not None and needs not in manifest.stages_done:
            raise RunFolderError(
                f"{self.root}: stage {needs!r} has not run here yet; "
                f"run `instructmix {needs}` first"
            )
        return manifest

    def write_manifest(self, manifest: Manifest) -> None:
        with atomic_text(self.manifest_path) as fh:
            fh.write(manifest.model_dump_json(indent=2) + "\n")


def read_batches(path: Path, batch_rows: int = 4096) -> Iterator[pa.RecordBatch]:
    if not path.is_file():
        raise RunFolderError(f"{path}: missing; rerun the stage that writes it")
    pf = pq.ParquetFile(path)
    yield from pf.iter_batches(batch_size=batch_rows)


def reject_lines(folder: RunFolder, stage: str, source: str) -> list[dict[str, Any]]:
    """Every reject one stage wrote for one source, in part order."""
    out = []
    for path in folder.reject_files(stage, source):
        with open(path, encoding="utf-8") as fh:
            out += [json.loads(line) for line in fh if line.strip()]
    return out


def write_rejects(path: Path, rejects: list[Reject]) -> None:
    """A part's rejects, through the same writer as load's; no file when there are none."""
    if not rejects:
        return
    with RejectSink(path) as sink:
        for reject in rejects:
            sink.add(reject)


def write_part(path: Path, table: pa.Table, row_group_rows: int = 10_000) -> None:
    with ParquetSink(path, table.schema, row_group_rows) as sink:
        sink.write_table(table)


class PartSink:
    """Cuts a stream of rows into parts of ``part_rows`` rows, each written atomically."""

    def __init__(
        self, folder: RunFolder, stage: str, source: str, schema: pa.Schema, part_rows: int
    ) -> None:
        self.folder, self.stage, self.source = folder, stage, source
        self.schema = schema
        self.part_rows = part_rows
        self.rows = 0
        self.parts = 0
        self._buffer: list[pa.Table] = []
        self._buffered = 0

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

    def _flush(self) -> None:
        table = pa.concat_tables(self._buffer) if self._buffer else self.schema.empty_table()
        write_part(self.folder.part(self.stage, self.source, self.parts), table)
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
