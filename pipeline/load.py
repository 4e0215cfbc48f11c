"""Source adapters: read one task and normalise its rows to the features its spec declares.

The Hub dataset (and a parquet sample) is read through ``datasets.load_dataset``; a CSV/TSV or
JSON sample is read here, every value as written, because datasets' readers guess types from the
data and a guess rewrites it (``02134`` became ``2134.0``, ``NA`` a null, a 20-digit id a float).
The source spec maps the sample's raw columns onto the Hub's features and ``convert_value``
converts each value by its declared type only, so a row looks the same to templates either way.
A row that cannot be normalised (missing value, unknown label, wrong type, text that is not
Unicode, a malformed row, duplicate id) becomes a reject with its reason and locator; it is never
dropped silently.
"""

from __future__ import annotations

import codecs
import csv
import decimal
import io
import itertools
import json
import logging
import math
import os
import re
import stat
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

from .catalog import Source
from .errors import CatalogError, SourceError
from .models import (
    PARQUET_BRANCH,
    ClassLabel,
    CsvOptions,
    FeatureType,
    FieldMap,
    HubSpec,
    LicenseBy,
    SampleFile,
    SequenceOfClassLabel,
    SourceSpec,
    Struct,
    is_noncommercial,
    records_steps,
)
from .seeding import stable_id
from .transforms import Fields, TransformError, compile_transforms

DataMode = Literal["sample", "hub"]
BATCH_ROWS = 1000
# Rows of one split per load shard, the unit of parallel load: at most SHARD_ROWS, at least
# MIN_SHARD_ROWS (``stages.shard_rows`` picks between them by the number of workers). Where
# shards end never changes a byte load writes: its whole-source pass reads them in file order.
SHARD_ROWS = 50_000
MIN_SHARD_ROWS = 5_000
# Records of a JSON Lines sample that opening it parses (for its columns); the rest are
# parsed by the shards that load them.
PARSED_AT_OPEN = 1_000


@dataclass(frozen=True)
class Example:
    example_id: str
    split: str  # of the original dataset
    fields: dict[str, Any]
    locator: str
    # Set by load: the split group (examples that must share a split and never exemplify each
    # other) and the split of the mixture the example goes to (train, validation, eval, or
    # exemplar: an eval source's few-shot pool, never a query).
    group: str = ""
    out_split: str = "train"
    # The row's language code: its `language_field` value, else its file's language, else the
    # source's (first) language.
    language: str = ""
    # The row's licence where the source's `license_by` sets one per row; empty: the source's.
    license: str = ""


@dataclass(frozen=True)
class BadRow:
    split: str
    example_id: str | None
    rule: str
    message: str
    locator: str


@dataclass(frozen=True)
class SplitData:
    split: str
    dataset: Any  # datasets.Dataset; typed loosely so this module imports without datasets stubs
    where: str  # human-readable origin, used in locators
    language: str | None = None  # every row's, when its file says (sample.files[].language)
    sampled: bool = False  # a local sample file: sample.filter applies

    def __len__(self) -> int:
        return len(self.dataset)


class RowError(ValueError):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def open_source(source: Source, data: DataMode) -> list[SplitData]:
    """Open every split of a source, as Arrow-backed datasets (memory-mapped, not in RAM)."""
    if source.spec.license_by is not None:
        # Jinja that cannot compile stops here, before any row is read.
        LicensePicker.of(source)
    if data == "sample":
        # A filter that cannot compile stops here, before any row is read.
        _sample_filter(source)
        sample = source.spec.sample
        paths = source.sample_paths()
        assert sample is not None
        return [
            _open_sample(source, entry, path)
            for entry, path in zip(sample.entries, paths, strict=True)
        ]
    hub = source.spec.hub
    if hub is None:
        raise SourceError(
            f"{source.path}: source {source.name!r} has no 'hub' (its data is local only); "
            "build it with --data sample"
        )
    datasets = _datasets()
    out = []
    for split in hub.splits_read:
        where = hub_where(hub, split)
        path, kwargs = hub_load_arguments(hub, split)
        try:
            ds = datasets.load_dataset(path, **kwargs)
        except Exception as exc:  # the Hub raises many types; the user needs the one line
            raise SourceError(
                f"{source.path}: source {source.name!r}: {where}: {_hub_problem(hub, exc)}"
            ) from None
        _check_columns(source, ds.column_names, where, hub_mode=True)
        out.append(SplitData(split, ds, where))
    return out


def hub_load_arguments(hub: HubSpec, split: str) -> tuple[str, dict[str, Any]]:
    """The ``datasets.load_dataset(path, **kwargs)`` call that reads one split of a Hub source.

    ``open_source`` makes exactly this call. ``path`` is the repo id; a local folder laid out
    like the repo (its README ``configs:``, its ``data_dir`` and ``data_files``) read with the
    same keyword arguments is read the same way (datasets ignores ``revision`` for a local
    folder, which stands for the one revision laid out), so the path can be tested offline.
    """
    kwargs: dict[str, Any] = {"name": hub.config, "split": split}
    if hub.revision is not None:
        kwargs["revision"] = hub.revision
    if hub.data_dir is not None:
        kwargs["data_dir"] = hub.data_dir
    if isinstance(hub.data_files, dict):
        # Only the split read: given every split's files, load_dataset would fetch them all.
        kwargs["data_files"] = {split: hub.data_files[split]}
    elif hub.data_files is not None:
        kwargs["data_files"] = hub.data_files
    return hub.id, kwargs


def hub_where(hub: HubSpec, split: str) -> str:
    """A Hub split as locators and messages name it: ``hub:ID/CONFIG[split]``."""
    parts = [hub.id, *(p for p in (hub.config, hub.data_dir) if p)]
    return "hub:" + "/".join(parts) + f"[{split}]"


def _hub_problem(hub: HubSpec, exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 400:
        text = text[:397] + "..."
    if "scripts are no longer supported" in text and hub.revision != PARQUET_BRANCH:
        text += (
            f"; read the Hub's converted copy instead: hub.revision: {PARQUET_BRANCH} with "
            "hub.data_dir: <config>"
        )
    return text


def _datasets() -> Any:
    """``datasets``, imported where a source needs it (the Hub, a parquet sample): a build of
    CSV and JSON samples never pays its import (a third of a second, pandas with it)."""
    import datasets

    datasets.disable_progress_bars()
    # We report read errors ourselves, with the file and line; datasets would log them too.
    logging.getLogger("datasets").setLevel(logging.CRITICAL)
    return datasets


def _open_sample(source: Source, entry: SampleFile, path: Path) -> SplitData:
    sample = source.spec.sample
    assert sample is not None
    fmt = sample.format or _format_of(path.name)
    if fmt != "parquet":
        # CSV and JSON are read here, not by datasets: its readers guess types from the data
        # (pandas made `02134` a float, `NA` a null; pyarrow made big ids floats), and a guess
        # rewrites what the spec declares. Values come out as written; _normalise converts them.
        if entry.records is not None and fmt != "json":
            raise SourceError(
                f"{_shown(path)}: sample.records reads a JSON document, but the file is {fmt} "
                f"(source {source.name!r})"
            )
        table = TextTable.open(source, path, fmt, entry.json_field, entry.records)
        try:
            try:
                _check_columns(source, table.columns, str(path), hub_mode=False)
            except SourceError:
                # open() parsed only the first records: whether a column is there is for all
                # of them to say.
                if not table.complete():
                    raise
                _check_columns(source, table.columns, str(path), hub_mode=False)
        except SourceError:
            if table.one_object is not None:
                # One line holding one object: a JSON document whose rows sit under a key, not
                # a one-row JSON Lines file (its "columns" are the document's keys).
                raise SourceError(
                    _object_file_message(table.where, table.one_object, f"source {source.name!r}")
                ) from None
            if not table.columns and table.first_bad is not None:
                raise SourceError(
                    f"{table.where}: no row is a JSON object ({table.first_bad}) "
                    f"(source {source.name!r})"
                ) from None
            raise
        return SplitData(entry.split, table, table.where, entry.language, sampled=True)
    try:
        ds = _datasets().load_dataset(
            fmt, data_files={entry.split: str(path.resolve())}, split=entry.split
        )
    except Exception as exc:
        raise SourceError(_diagnose(path, fmt, source.name, exc)) from None
    if len(ds) == 0:
        raise SourceError(f"{path}: source {source.name!r} has no rows")
    _check_columns(source, ds.column_names, str(path), hub_mode=False)
    if sample.limit is not None and sample.limit < len(ds):
        ds = ds.select(range(sample.limit))
    return SplitData(entry.split, ds, str(path), entry.language, sampled=True)


# --------------------------------------------------------------------------- CSV and JSON


class _LongNumber(str):
    """A JSON integer too long to be a Python int (a 5,000-digit literal), kept as its text:
    an id or a string feature takes the text; a number or label rejects it."""


class _JsonFloat(float):
    """A JSON number with a fraction or exponent (or NaN/Infinity), remembering its text, so
    a ``string`` feature or an id gets ``1.50`` as written, not ``1.5``."""

    __slots__ = ("literal",)
    literal: str

    def __new__(cls, literal: str) -> _JsonFloat:
        self = super().__new__(cls, literal)
        self.literal = literal
        return self


# Python's int() of more digits than this is slow, and past 4,300 it raises.
MAX_INT_DIGITS = 400


def _json_int(text: str) -> int | str:
    return int(text) if len(text) <= MAX_INT_DIGITS else _LongNumber(text)


class _DuplicateKeys(dict[str, Any]):
    """A JSON object that names a key twice (JSON parsers keep the last silently): the row,
    or the ``any`` value holding it, is rejected."""

    def __init__(self, pairs: list[tuple[str, Any]], key: str) -> None:
        super().__init__(pairs)
        self.duplicate = key


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                return _DuplicateKeys(pairs, key)
            seen.add(key)
    return out


# One decoder for every line: json.loads with hooks would build a new one per call.
_DECODER = json.JSONDecoder(
    parse_int=_json_int,
    parse_float=_JsonFloat,
    parse_constant=_JsonFloat,
    object_pairs_hook=_json_object,
)


def _json_loads(text: str) -> Any:
    return _DECODER.decode(text)


class _BadRecord:
    """A row that is not a row: wrong number of CSV fields, a JSON line that is no object."""

    def __init__(self, message: str, path: str = "") -> None:
        self.message = message
        self.path = path  # where a nested record sits (`data[0].paragraphs[2].qas[1]`)


class _NestedRecord(dict[str, Any]):
    """A record read through ``sample.records``, with its parents' keys and its place."""

    def __init__(self, fields: dict[str, Any], path: str) -> None:
        super().__init__(fields)
        self.path = path


def _kind_of_json(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a boolean" if isinstance(value, bool) else "a number"


class TextTable:
    """A CSV/TSV or JSON (array, lines, or a list under one key) sample, read as written.

    CSV cells are text (or None where the spec's ``csv.null_values`` says so); JSON values are
    Python's, with every number exact (ints of any size, floats with their literal text). The
    file is parsed once when opened (to count rows, find columns and report a malformed file
    with its line), and again, streaming, when iterated.
    """

    def __init__(
        self, source: Source, path: Path, fmt: str, json_field: str | None, records: str | None
    ) -> None:
        assert source.spec.sample is not None
        self.source = source
        self.sample = source.spec.sample
        self.json_field = json_field
        self.records_path = records
        # sample.limit: the rows after it are never read (nor counted).
        self.limit = self.sample.limit
        self.path = path
        self.real = path.resolve()
        self.fmt = fmt
        self.where = _shown(path)
        self.columns: list[str] = []
        self.rows = 0
        self._header: list[str] | None = None  # a CSV's, once read
        # A JSON Lines file's (byte offset, line number) of every MIN_SHARD_ROWS-th record, noted
        # by open()'s scan, so a shard of rows starts reading where it starts.
        self._marks: dict[int, tuple[int, int]] = {}
        # Set by open(): the only row, when the file is a single JSON object; the first row that
        # is not an object.
        self.one_object: dict[str, Any] | None = None
        self.first_bad: str | None = None
        self.parsed_all = True  # whether open() parsed every record (see complete)
        self._fingerprint = ""  # what stages uses for a split that is not a local file

    @classmethod
    def open(
        cls,
        source: Source,
        path: Path,
        fmt: str,
        json_field: str | None = None,
        records: str | None = None,
    ) -> TextTable:
        table = cls(source, path, fmt, json_field, records)
        try:
            st = table.real.stat()
        except OSError as exc:
            raise SourceError(f"{table.where}: cannot read: {exc.strerror or exc}") from None
        table._fingerprint = f"{table.real}:{st.st_size}:{st.st_mtime_ns}"
        if st.st_size == 0:
            raise SourceError(f"{table.where}: file is empty (source {source.name!r})")
        # A JSON Lines file is counted to the end but parsed only for its first records: the
        # rest are parsed where they are loaded (a line that is not JSON fails there, with its
        # line), and ``complete`` parses them all when the first ones lack a column. Parsing
        # every row here cost the driver 3 us a row before any worker could start.
        parse = PARSED_AT_OPEN if table._reads_json_lines() else None
        table.rows, first = table._survey(table.records(parse=parse))
        table.parsed_all = parse is None or table.rows <= parse
        if (
            table.rows == 1
            and isinstance(first, dict)
            and any(_is_rows(v) for v in first.values())
            and table._reads_json_lines()
        ):
            table.one_object = first
        if table.fmt == "csv":
            table.columns = list(table._header or [])
        if table.rows == 0:
            raise SourceError(f"{table.where}: source {source.name!r} has no rows")
        return table

    def __len__(self) -> int:
        return self.rows

    def complete(self) -> bool:
        """Parse every record for the columns and the first row that is not an object, where
        ``open`` parsed only the first ones; False when it had parsed them all already."""
        if self.parsed_all:
            return False
        self._survey(self.records())
        self.parsed_all = True
        return True

    def _survey(
        self, records: Iterable[dict[str, Any] | _BadRecord | None]
    ) -> tuple[int, dict[str, Any] | _BadRecord | None]:
        """Count ``records`` and add the keys of the parsed ones to ``columns`` (and note the
        first that is not an object); returns the count and the first record."""
        columns = dict.fromkeys(self.columns)
        rows = 0
        first: dict[str, Any] | _BadRecord | None = None
        for rows, record in enumerate(records, 1):
            if rows == 1:
                first = record
            if isinstance(record, dict):
                columns.update(dict.fromkeys(record))
            elif record is not None and self.first_bad is None:
                self.first_bad = f"row {rows}: {record.message}"
        self.columns = list(columns)
        return rows, first

    def batches(
        self, start: int = 0, stop: int | None = None
    ) -> Iterator[list[dict[str, Any] | _BadRecord]]:
        """The records numbered ``start`` to ``stop`` (from 0, in file order) in batches."""
        batch: list[dict[str, Any] | _BadRecord] = []
        records = self.records(start)
        if stop is not None:
            records = itertools.islice(records, stop - start)
        for record in records:
            batch.append(record)
            if len(batch) == BATCH_ROWS:
                yield batch
                batch = []
        if batch:
            yield batch

    @overload
    def records(self, start: int = 0) -> Iterator[dict[str, Any] | _BadRecord]: ...

    @overload
    def records(
        self, start: int = 0, *, parse: int | None
    ) -> Iterator[dict[str, Any] | _BadRecord | None]: ...

    def records(
        self, start: int = 0, *, parse: int | None = None
    ) -> Iterator[dict[str, Any] | _BadRecord | None]:
        """The records from the ``start``-th on (the ones before are skipped unparsed where
        the format allows: a JSON Lines or CSV file). ``parse``: of a JSON Lines file, only the
        first ``parse`` records are parsed, and None stands for each of the others."""
        if self.limit is None:
            yield from self._all_records(start, parse)
            return
        read = start
        records = self._all_records(start, parse)
        try:
            # Stopped after the limit: a JSON Lines or CSV file is not read further.
            while read < self.limit:
                try:
                    record = next(records)
                except StopIteration:
                    return
                read += 1
                yield record
        finally:
            records.close()

    def _all_records(
        self, skip: int = 0, parse: int | None = None
    ) -> Generator[dict[str, Any] | _BadRecord | None, None, None]:
        try:
            if self.fmt == "csv":
                yield from self._csv_records(skip)
            elif self.records_path is not None:
                records = self._nested(self._json_document(), self.records_path)
                yield from itertools.islice(records, skip, None)
            elif self.json_field is not None:
                records = self._json_list(self._json_document(), self.json_field)
                yield from itertools.islice(records, skip, None)
            elif self._starts_with(b"["):
                yield from itertools.islice(
                    self._json_list(self._json_document(), None), skip, None
                )
            else:
                yield from self._json_lines(skip, parse)
        except UnicodeDecodeError:
            raise SourceError(self._utf8_error()) from None
        except OSError as exc:
            raise SourceError(
                f"{self.where}: cannot read: {exc.strerror or exc} (source {self.source.name!r})"
            ) from None

    # -- CSV

    def _csv_records(self, skip: int = 0) -> Iterator[dict[str, Any] | _BadRecord]:
        opts = self.sample.csv or CsvOptions()
        nulls = frozenset(opts.null_values)
        # The csv module's default field limit (128 KiB) would fail a file that pandas read;
        # the render's limits reject an oversized record later, with its reason.
        csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
        with _open_regular(self.real) as raw:
            fh = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            reader = csv.reader(
                fh,
                delimiter=opts.delimiter,
                quotechar='"',
                doublequote=True,
                # A quote left open would swallow the rest of the file into one cell; pandas
                # refused such a file, and so do we, naming the line.
                strict=True,
                # QUOTE_NONNUMERIC would turn cells into floats: every cell is read as text.
                quoting=csv.QUOTE_NONE if opts.quoting == csv.QUOTE_NONE else csv.QUOTE_MINIMAL,
            )
            header = list(opts.column_names) if opts.column_names else None
            self._header = header
            try:
                for cells in reader:
                    if not cells:  # a blank line, as pandas skips it
                        continue
                    if header is None:
                        header = self._header = self._csv_header(cells, reader.line_num)
                        continue
                    if skip:
                        # A row before the shard: parsed (a quoted cell may span lines), not kept.
                        skip -= 1
                        continue
                    if len(cells) != len(header):
                        yield _BadRecord(
                            f"row has {len(cells)} fields, the header has {len(header)}"
                        )
                        continue
                    yield {
                        name: None if cell in nulls else cell
                        for name, cell in zip(header, cells, strict=True)
                    }
            except csv.Error as exc:
                raise SourceError(
                    f"{self.where}:{reader.line_num}: cannot read as CSV: {exc} "
                    f"(source {self.source.name!r})"
                ) from None

    def _csv_header(self, cells: list[str], line: int) -> list[str]:
        seen: set[str] = set()
        for name in cells:
            if name in seen:
                raise SourceError(
                    f"{self.where}:{line}: column {name!r} appears twice in the header "
                    f"(source {self.source.name!r})"
                )
            seen.add(name)
        return cells

    # -- JSON

    def _reads_json_lines(self) -> bool:
        return (
            self.fmt != "csv"
            and self.json_field is None
            and self.records_path is None
            and not self._starts_with(b"[")
        )

    def _starts_with(self, prefix: bytes) -> bool:
        with _open_regular(self.real) as fh:
            head = fh.read(4096)
            while head.isspace() and len(head) == 4096:
                head = fh.read(4096)
        return head.removeprefix(codecs.BOM_UTF8).lstrip().startswith(prefix)

    def _json_document(self) -> Any:
        with _open_regular(self.real) as fh:
            text = fh.read().decode("utf-8-sig")
        try:
            return _json_loads(text)
        except json.JSONDecodeError as err:
            if err.msg == "Extra data" and self.json_field is not None and not self.records_path:
                raise SourceError(
                    f"{self.where}:{err.lineno}: a second JSON value starts here (column "
                    f"{err.colno}): the file looks like JSON Lines, but sample.json_field "
                    f"reads a list under a key of one JSON object; leave json_field out "
                    f"(source {self.source.name!r})"
                ) from None
            raise SourceError(
                f"{self.where}:{err.lineno}: invalid JSON: {err.msg} (column {err.colno}) "
                f"(source {self.source.name!r})"
            ) from None
        except (RecursionError, ValueError) as exc:
            raise SourceError(
                f"{self.where}: invalid JSON: {_json_problem(exc)} (source {self.source.name!r})"
            ) from None

    def _json_list(self, data: Any, field: str | None) -> Iterator[dict[str, Any] | _BadRecord]:
        if field is not None:
            if not isinstance(data, dict):
                raise SourceError(
                    f"{self.where}: sample.json_field is {field!r}, but the file is "
                    f"{_kind_of_json(data)}, not a JSON object"
                    + (
                        "; leave json_field out to read its items as rows"
                        if isinstance(data, list)
                        else ""
                    )
                    + f" (source {self.source.name!r})"
                )
            if not isinstance(data.get(field), list):
                problem = (
                    f"its value is {_kind_of_json(data[field])}, not a list"
                    if field in data
                    else "the object has no such key"
                )
                raise SourceError(
                    f"{self.where}: sample.json_field {field!r}: {problem}; "
                    f"{_object_keys_and_hint(data)} (source {self.source.name!r})"
                )
            data = data[field]
        for item in data:
            yield _record(item, "item")

    def _nested(self, document: Any, path: str) -> Iterator[dict[str, Any] | _BadRecord]:
        """The records ``sample.records`` names, each with the keys of the objects above it."""
        steps = records_steps(path)
        for record in _walk(document, steps, {}, ""):
            if isinstance(record, _BadRecord) and not record.path:
                # The document itself is not shaped as the path says: nothing can be read.
                raise SourceError(
                    f"{self.where}: sample.records {path!r}: {record.message} "
                    f"(source {self.source.name!r})"
                )
            yield record

    def _json_lines(
        self, skip: int = 0, parse: int | None = None
    ) -> Iterator[dict[str, Any] | _BadRecord | None]:
        seen_a_line = False
        # open()'s scan (skip 0) notes where every MIN_SHARD_ROWS-th record starts.
        scanning = not skip and not self._marks
        record = offset = first = 0
        mark = max((m for m in self._marks if m <= skip), default=0)
        with _open_regular(self.real) as fh:
            if mark:
                offset, first = self._marks[mark]
                fh.seek(offset)
                record, skip, seen_a_line = mark, skip - mark, True
            for lineno, raw in enumerate(fh, first + 1):
                start, offset = offset, offset + len(raw)
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                if not line.strip():
                    continue
                if scanning and record and record % MIN_SHARD_ROWS == 0:
                    self._marks[record] = (start, lineno - 1)
                record += 1
                if skip:
                    # A line before the shard: no JSON parse.
                    skip -= 1
                    seen_a_line = True
                    continue
                if parse is not None and record > parse:
                    yield None  # counted, not parsed: its shard parses it
                    continue
                try:
                    value = _json_loads(line)
                except json.JSONDecodeError as err:
                    # A pretty-printed JSON document fails on its first line (`{` alone).
                    document = self._whole_object() if not seen_a_line else None
                    if document is not None:
                        raise SourceError(
                            _object_file_message(
                                self.where, document, f"source {self.source.name!r}"
                            )
                        ) from None
                    problem = err.msg
                    if err.msg == "Extra data":
                        problem = "a second JSON value follows the first on this line"
                    raise SourceError(
                        f"{self.where}:{lineno}: invalid JSON line: {problem} (column "
                        f"{err.colno}) (source {self.source.name!r})"
                    ) from None
                except (RecursionError, ValueError) as exc:
                    raise SourceError(
                        f"{self.where}:{lineno}: invalid JSON line: {_json_problem(exc)} "
                        f"(source {self.source.name!r})"
                    ) from None
                seen_a_line = True
                yield _record(value, "line")

    def _whole_object(self) -> dict[str, Any] | None:
        """The file as one JSON object, when it is one (a JSON Lines line failed to parse, and a
        pretty-printed JSON document fails on its first line)."""
        try:
            document = self._json_document()
        except SourceError:
            return None
        return document if isinstance(document, dict) else None

    def _utf8_error(self) -> str:
        who = f"source {self.source.name!r}"
        with _open_regular(self.real) as fh:
            found = _non_utf8_message(self.where, fh, who)
        return found or f"{self.where}: not UTF-8 text ({who})"


def _object_keys_and_hint(data: dict[str, Any]) -> str:
    """The keys of a JSON object with what each holds, and which to give as
    ``sample.json_field`` (the keys holding a list of objects)."""
    shown = []
    for key, value in list(data.items())[:12]:
        if isinstance(value, list):
            objects = sum(isinstance(v, dict) for v in value)
            what = f"a list of {len(value):,} items, {objects:,} of them objects"
            if objects == len(value):
                what = f"a list of {len(value):,} objects"
        elif isinstance(value, dict):
            what = "an object"
        else:
            what = _kind_of_json(value)
        shown.append(f"{key!r} ({what})")
    more = f" and {len(data) - 12} more" if len(data) > 12 else ""
    keys = f"its keys: {', '.join(shown)}{more}" if data else "it has no keys"
    lists = [k for k, v in data.items() if _is_rows(v)]
    if len(lists) == 1:
        hint = f"set `sample.json_field: {lists[0]}` to read the rows under that key"
    elif lists:
        hint = "set `sample.json_field:` to the key whose list holds the rows (one of "
        hint += ", ".join(repr(k) for k in lists) + "; a second split needs a second source)"
    else:
        hint = "no key holds a list of objects to read as rows"
    return f"{keys}; {hint}"


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _object_file_message(where: str, data: dict[str, Any], reader: str) -> str:
    return (
        f"{where}: the file is one JSON object, not JSON Lines or a JSON array of rows; "
        f"{_object_keys_and_hint(data)} ({reader})"
    )


def _walk(
    value: Any, steps: list[tuple[str | None, bool]], inherited: dict[str, Any], where: str
) -> Iterator[dict[str, Any] | _BadRecord]:
    """Follow ``steps`` (see ``models.records_steps``) down from ``value``: each record found,
    with ``inherited`` (its parents' keys) under its own; a part not shaped as the path says
    is a bad record naming its place (``where`` empty: the document itself)."""
    key, each = steps[0]
    if key is not None:
        here = f"{where}.{key}" if where else key
        if not isinstance(value, dict):
            yield _BadRecord(f"{where or 'the document'} is {_kind_of_json(value)}, "
                             f"not an object with the key {key!r}", where)  # fmt: skip
            return
        if isinstance(value, _DuplicateKeys):
            yield _BadRecord(f"the key {value.duplicate!r} appears twice in the object", where)
            return
        if key not in value:
            keys = ", ".join(repr(k) for k in list(value)[:12]) or "none"
            yield _BadRecord(
                f"{where or 'the document'} has no key {key!r} (its keys: {keys})", where
            )
            return
        # A parent's keys are the record's context (an article's title, a paragraph's
        # context), except the one the path goes on into.
        inherited = {**inherited, **{k: v for k, v in value.items() if k != key}}
        value, where = value[key], here
    if not each:
        yield from _walk(value, steps[1:], inherited, where)
        return
    if not isinstance(value, list):
        yield _BadRecord(f"{where or 'the document'} is {_kind_of_json(value)}, not a list", where)
        return
    for i, item in enumerate(value):
        place = f"{where}[{i}]"
        if len(steps) > 1:
            yield from _walk(item, steps[1:], inherited, place)
            continue
        record = _record(item, "record")
        if isinstance(record, _BadRecord):
            yield _BadRecord(record.message, place)
        else:
            yield _NestedRecord({**inherited, **record}, place)


def _record(value: Any, what: str) -> dict[str, Any] | _BadRecord:
    if isinstance(value, _DuplicateKeys):
        return _BadRecord(f"the key {value.duplicate!r} appears twice in the object")
    if isinstance(value, dict):
        return value
    return _BadRecord(f"the {what} is {_kind_of_json(value)}, not a JSON object")


def _json_problem(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return _root_cause(exc)


def _open_regular(path: Path) -> io.BufferedReader:
    """``path`` opened for reading, refused unless it is a regular file when opened (not only
    when the catalog checked it): O_NONBLOCK keeps a FIFO swapped in meanwhile from hanging."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceError(f"{_shown(path)}: not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _shown(path: Path) -> str:
    """The path as text that is valid Unicode (a file name with undecodable bytes would
    otherwise carry surrogates into every locator and crash the Arrow writers)."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def _diagnose(path: Path, fmt: str, source: str, exc: BaseException, named: bool = False) -> str:
    """One line naming the file, and the line in it, that load_dataset could not read.

    load_dataset's own errors are generic ("An error occurred while generating the dataset");
    the cause is found again here by reading the file the simple way.
    """
    where = source if named else f"source {source!r}"
    if path.stat().st_size == 0:
        return f"{path}: file is empty ({where})"
    with open(path, "rb") as fh:
        found = _non_utf8_message(str(path), fh, where)
    if found:
        return found
    if fmt == "json":
        text = path.read_text(encoding="utf-8")
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            document = err
        if isinstance(document, dict) and any(_is_rows(v) for v in document.values()):
            return _object_file_message(str(path), document, where)
        if text.lstrip().startswith("["):
            if isinstance(document, json.JSONDecodeError):
                return (
                    f"{path}:{document.lineno}: invalid JSON: {document.msg} (column "
                    f"{document.colno}) ({where})"
                )
            bad = _lone_surrogate(document)
            if bad is not None:
                return f"{path}: {bad} ({where})"
        else:
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as err:
                    return (
                        f"{path}:{lineno}: invalid JSON line: {err.msg} (column {err.colno}) "
                        f"({where})"
                    )
                # Python's json reads "\ud800" as a lone surrogate; Arrow's reader refuses it,
                # and its fallback (pandas) then says "Trailing data at position N".
                bad = _lone_surrogate(value)
                if bad is not None:
                    return f"{path}:{lineno}: {bad} ({where})"
    return f"{path}: cannot read as {fmt} ({where}): {_root_cause(exc)}"


def _lone_surrogate(value: Any, depth: int = 0) -> str | None:
    """Where a JSON value holds a lone surrogate (``"\\ud800"``), which is not Unicode text."""
    texts: list[str] = []
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, dict) and depth < 100:
        for key, item in value.items():
            found = _lone_surrogate(key, depth + 1) or _lone_surrogate(item, depth + 1)
            if found:
                return found
    elif isinstance(value, list) and depth < 100:
        for item in value:
            found = _lone_surrogate(item, depth + 1)
            if found:
                return found
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            return (
                f"a string holds a lone surrogate ({text[err.start]!r}, written as a "
                f"\\u escape), which is not Unicode text"
            )
    return None


def _non_utf8_message(where: str, lines: Iterable[bytes], who: str) -> str | None:
    """``where:LINE: not UTF-8 text (byte 0x.. at column N) (who)`` for the first line of
    ``lines`` that is not UTF-8; None when every line is."""
    for lineno, raw in enumerate(lines, 1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return (
                f"{where}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                f"{err.start + 1}) ({who})"
            )
    return None


# The name other readers of user data files (decontamination's `against`) can call.
def diagnose_file(path: Path, fmt: str, what: str, exc: BaseException) -> str:
    """One line naming what is wrong in a data file that ``datasets.load_dataset`` could not
    read: the line of invalid UTF-8 or JSON, a lone surrogate, a JSON object file, or the
    reader's own root cause. ``what`` names who reads it (``source 'x'``)."""
    return _diagnose(path, fmt, what, exc, named=True)


def _root_cause(exc: BaseException) -> str:
    seen: list[BaseException] = [exc]
    while (nxt := seen[-1].__cause__ or seen[-1].__context__) is not None and nxt not in seen:
        seen.append(nxt)
    for err in reversed(seen):
        text = " ".join(str(err).split())
        if text:
            return text if len(text) <= 300 else text[:297] + "..."
    return type(exc).__name__


def _format_of(filename: str) -> str:
    name = filename.lower()
    for ext, fmt in (
        (".jsonl", "json"),
        (".json", "json"),
        (".csv", "csv"),
        (".tsv", "csv"),
        (".parquet", "parquet"),
    ):
        if name.endswith(ext):
            return fmt
    raise SourceError(f"{filename}: cannot tell the format from the extension; set sample.format")


def _column_for(source: Source, feature: str, hub_mode: bool) -> str | None:
    """The raw column a feature is read from; None: the sample lacks it (``fields: {f: null}``)."""
    if hub_mode or source.spec.sample is None:
        return feature
    fields = source.spec.sample.fields
    if feature not in fields:
        return feature
    mapped = fields[feature]
    return mapped.column if isinstance(mapped, FieldMap) else mapped


def _id_field(spec: SourceSpec, hub_mode: bool) -> str | None:
    if hub_mode:
        return spec.hub.id_field if spec.hub else None
    return spec.sample.id_field if spec.sample else None


def _check_columns(source: Source, columns: list[str], where: str, hub_mode: bool) -> None:
    spec = source.spec
    id_field = _id_field(spec, hub_mode)
    # A nullable feature may be missing from a table altogether (NTREX's document ids on the
    # Hub): its value is then None in every row, as where the sample maps it to null.
    nullable = set(spec.nullable)
    wanted = {
        c
        for f in spec.features
        if (c := _column_for(source, f, hub_mode)) is not None and f not in nullable
    }
    if id_field:
        wanted.add(id_field)
    # A dotted path (`q.text`) needs its first key as a column; the rest is checked per row.
    wanted = {c if c in columns else c.split(".")[0] for c in wanted}
    missing = sorted(wanted - set(columns))
    if missing:
        raise SourceError(
            f"{source.path}: source {source.name!r}: {where} has no column(s) {missing} "
            f"(it has {sorted(columns)})"
        )


def iter_rows(
    source: Source,
    split_data: SplitData,
    data: DataMode,
    *,
    filter_seconds: float = 2.0,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[list[Example | BadRow]]:
    """Batches of normalised examples (or bad rows) in file order, with stable example ids:
    the rows numbered ``start`` to ``stop`` (from 0; all by default), so a source can be read
    in shards that give, one after the other, exactly the batches' items of one whole read.

    A sample's ``filter`` runs on each normalised example (for at most ``filter_seconds``); a
    row it rejects is a ``filtered`` bad row. Duplicate ids are not detected here: that needs
    the whole source, and the load stage does it without holding the source in memory."""
    spec = source.spec
    hub_mode = data == "hub"
    id_field = _id_field(spec, hub_mode)
    index = start  # a row's number in its locator counts from the split's first row
    plan = _plan(source, hub_mode)
    keep = _sample_filter(source) if split_data.sampled else None
    licenses = LicensePicker.of(source, filter_seconds) if spec.license_by else None
    transform = compile_transforms(spec.transforms)
    for batch in _batches(source, split_data, start, stop):
        out: list[Example | BadRow] = []
        for raw in batch:
            index += 1
            locator = f"{split_data.where} row {index}"
            place = getattr(raw, "path", "")
            if place:
                locator += f" ({place})"
            if isinstance(raw, _BadRecord):
                message = f"{raw.message} ({locator})"
                out.append(BadRow(split_data.split, None, "bad_row", message, locator))
                continue
            item = _normalise(
                source, raw, split_data.split, locator, id_field, hub_mode, plan,
                split_data.language, licenses, transform,
            )  # fmt: skip
            if keep is not None and isinstance(item, Example):
                item = _filtered(keep, item, filter_seconds)
            out.append(item)
        yield out


Filter = Callable[[dict[str, Any]], str]


def _sample_filter(source: Source) -> Filter | None:
    """The sample's ``filter`` compiled, or None; one that cannot compile is a CatalogError."""
    spec = source.spec
    expr = spec.sample.filter if spec.sample else None
    if expr is None:
        return None
    where = f"{source.path}: source {source.name!r}: sample.filter"
    if "{{" not in expr and "{%" not in expr:
        raise CatalogError(
            f"{where}: {expr!r} is not a Jinja expression; write it as "
            "'{{ label != 2 }}' (a test on the features that renders True or False)"
        )
    return _compile_row_expression(source, expr, where, "the filter", set(spec.features))


def _compile_row_expression(
    source: Source, expr: str, where: str, what: str, names: set[str]
) -> Filter:
    """A Jinja text over a row's ``names`` compiled in the sandbox; a CatalogError naming
    ``where`` when it does not compile or names anything else."""
    # Imported here: render imports this module.
    import jinja2.meta

    from .render import compile_text, make_environment

    env = make_environment()
    try:
        render = compile_text(env, expr)
        unknown = sorted(
            jinja2.meta.find_undeclared_variables(env.parse(expr)) - names - set(env.globals)
        )
    except Exception as exc:
        raise CatalogError(f"{where}: {' '.join(str(exc).split())}") from None
    if unknown:
        raise CatalogError(
            f"{where}: unknown name(s) {unknown}; {what} sees the features "
            f"({', '.join(sorted(source.spec.features))})"
        )
    return render


@dataclass(frozen=True)
class LicensePicker:
    """A source's ``license_by``, ready to name each row's licence (see ``pick``)."""

    source: Source
    by: LicenseBy
    render: Filter | None  # the compiled Jinja; None when ``field`` is a feature
    seconds: float = 2.0

    @classmethod
    def of(cls, source: Source, seconds: float = 2.0) -> LicensePicker:
        by = source.spec.license_by
        assert by is not None
        render = None
        if "{" in by.field:
            where = f"{source.path}: source {source.name!r}: license_by.field"
            names = {*source.spec.features, "names", "example"}
            render = _compile_row_expression(source, by.field, where, "license_by.field", names)
        return cls(source, by, render, seconds)

    def pick(self, fields: dict[str, Any]) -> str:
        """The row's licence, or a RowError: ``unknown_license`` (a value not listed, with
        ``default: reject``), ``noncommercial_license`` (a NonCommercial licence, unless the
        source allows them) or ``license_error`` (the Jinja failed)."""
        spec = self.source.spec
        value = self._value(fields)
        license = self.by.licenses.get(value)
        if license is None:
            if self.by.default == "reject":
                listed = ", ".join(repr(v) for v in self.by.licenses)
                raise RowError(
                    "unknown_license",
                    f"license_by: {self.by.field!r} is {_shown_value(value)}, which is not "
                    f"listed in license_by.licenses ({listed})",
                )
            license = self.by.default or spec.license
        if is_noncommercial(license) and not spec.allow_noncommercial:
            raise RowError(
                "noncommercial_license",
                f"licence {license!r} ({self.by.field!r} is {_shown_value(value)}) is "
                "NonCommercial; set allow_noncommercial: true to keep such rows",
            )
        return license

    def _value(self, fields: dict[str, Any]) -> str:
        if self.render is None:
            value = fields.get(self.by.field)
            ftype = self.source.spec.features[self.by.field]
            if isinstance(ftype, ClassLabel) and isinstance(value, int):
                return ftype.names[value]
            return "" if value is None else _literal(value).strip()
        from .render import template_context
        from .sandbox import deadline

        context = template_context(self.source, Example("", "", fields, ""))
        try:
            with deadline(self.seconds):
                return self.render(context).strip()
        except Exception as exc:  # a user's expression may raise anything; the row says what
            raise RowError(
                "license_error", f"license_by.field: {type(exc).__name__}: {exc}"
            ) from None


def _filtered(keep: Filter, item: Example, seconds: float) -> Example | BadRow:
    from .sandbox import deadline

    def bad(rule: str, message: str) -> BadRow:
        message = f"{message} ({item.locator})"
        return BadRow(item.split, item.example_id, rule, message, item.locator)

    try:
        with deadline(seconds):
            verdict = keep(dict(item.fields)).strip()
    except Exception as exc:  # a user's expression may raise anything; the row says what
        return bad("filter_error", f"sample.filter: {type(exc).__name__}: {exc}")
    if verdict == "True":
        return item
    if verdict == "False":
        return bad("filtered", "sample.filter is false for this row")
    shown = verdict if len(verdict) <= 80 else verdict[:77] + "..."
    return bad("filter_error", f"sample.filter rendered {shown!r}, not True or False")


def _batches(
    source: Source, split_data: SplitData, start: int = 0, stop: int | None = None
) -> Iterator[list[dict[str, Any]] | list[dict[str, Any] | _BadRecord]]:
    """The split's rows ``start`` to ``stop`` in batches; a file that only fails when decoded
    (Arrow keeps invalid UTF-8 until then) still gets the one-line diagnosis naming its line."""
    if isinstance(split_data.dataset, TextTable):
        yield from split_data.dataset.batches(start, stop)
        return
    batches = _read_batches(split_data.dataset, start, stop)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:
            path = Path(split_data.where)
            if path.is_file():
                fmt = source.spec.sample.format if source.spec.sample else None
                raise SourceError(
                    _diagnose(path, fmt or _format_of(path.name), source.name, exc)
                ) from None
            raise SourceError(
                f"{source.path}: source {source.name!r}: {split_data.where}: {_root_cause(exc)}"
            ) from None
        n = len(next(iter(batch.values()))) if batch else 0
        yield [{k: v[i] for k, v in batch.items()} for i in range(n)]


def _read_batches(
    ds: Any, start: int = 0, stop: int | None = None
) -> Iterator[dict[str, list[Any]]]:
    """The dataset's rows ``start`` to ``stop`` as decoded batches, read from its Arrow cache
    files with plain reads.

    ``Dataset.iter`` goes through a memory map, and every page it touches stays in the process's
    resident memory: reading a 1M-row source that way grew peak RSS by its whole cache file.
    Reading the same files as streams keeps one batch in memory (the batches before ``start``
    are read but never decoded). In-memory datasets, or ones with an indices mapping, fall back
    to ``Dataset.iter``.
    """
    import pyarrow as pa

    end = len(ds) if stop is None else min(stop, len(ds))
    files = [f["filename"] for f in ds.cache_files]
    if not files or ds._indices is not None:
        part = ds if (start, end) == (0, len(ds)) else ds.select(range(start, end))
        yield from part.iter(batch_size=BATCH_ROWS)
        return
    rows = 0
    for name in files:
        with pa.OSFile(name) as fh:
            for batch in pa.ipc.open_stream(fh):
                first, rows = rows, rows + batch.num_rows
                if first >= end and end < len(ds):
                    return  # a shard's last row is read; the count is checked by a full read
                if rows <= start or first >= end:
                    continue
                if first < start or rows > end:
                    batch = batch.slice(max(start - first, 0), min(rows, end) - max(first, start))
                yield ds.features.decode_batch(batch.to_pydict())
    if rows != len(ds):
        raise ValueError(f"read {rows} rows from the dataset's cache files, expected {len(ds)}")


# Per feature: its name, type, raw column (None: absent from the sample), mapping, nullable.
Plan = list[tuple[str, FeatureType, str | None, FieldMap | None, bool]]


def _plan(source: Source, hub_mode: bool) -> Plan:
    """Per feature: how its value is read (worked out once per split)."""
    spec = source.spec
    plan: Plan = []
    nullable = set(spec.nullable)
    for name, ftype in spec.features.items():
        mapping = None
        if not hub_mode and spec.sample is not None:
            m = spec.sample.fields.get(name)
            mapping = m if isinstance(m, FieldMap) else None
        column = _column_for(source, name, hub_mode)
        plan.append((name, ftype, column, mapping, name in nullable))
    return plan


def _normalise(
    source: Source,
    raw: dict[str, Any],
    split: str,
    locator: str,
    id_field: str | None,
    hub_mode: bool,
    plan: Plan | None = None,
    file_language: str | None = None,
    licenses: LicensePicker | None = None,
    transform: Callable[[Fields], Fields] | None = None,
) -> Example | BadRow:
    spec = source.spec
    example_id = None
    fields: dict[str, Any] = {}
    try:
        if id_field is not None:
            raw_id = _lookup(raw, id_field, None)
            if raw_id not in (None, ""):
                example_id = _id_text(id_field, raw_id)
        for name, ftype, column, mapping, nullable in plan or _plan(source, hub_mode):
            value = None if column is None else _lookup(raw, column, name)
            fields[name] = convert_value(name, value, ftype, mapping, nullable=nullable)
        language = _language(spec, fields, file_language)
    except RowError as exc:
        return BadRow(split, example_id, exc.rule, f"{exc} ({locator})", locator)
    if example_id is None:
        # No id column: the content is the identity, so reordering the file keeps every id.
        canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
        example_id = stable_id(spec.name, split, canonical)[:16]
    license = ""
    if spec.license_by is not None:
        # The row's licence is a fact of the row as published: read before any clean-up.
        try:
            license = (licenses or LicensePicker.of(source)).pick(fields)
        except RowError as exc:
            return BadRow(split, example_id, exc.rule, f"{exc} ({locator})", locator)
    # Transforms run after the id is fixed: a change of clean-up keeps every example's id.
    try:
        fields = (transform or compile_transforms(spec.transforms))(fields)
    except TransformError as exc:
        return BadRow(split, example_id, "bad_transform", f"{exc} ({locator})", locator)
    # Duplicate ids are found by the load stage over the whole source (see stages.py).
    return Example(example_id, split, fields, locator, language=language, license=license)


def _lookup(raw: dict[str, Any], column: str, name: str | None) -> Any:
    """The raw value under ``column``: a key of the row, or (when the row has no such key) a
    dotted path into it, ``q.text`` or ``answers.text.0`` (dict keys and list indexes).

    A path that does not resolve raises a ``missing_field`` RowError naming it (for the id
    field, ``name`` None, it is simply no id)."""
    if column in raw or "." not in column:
        return raw.get(column)
    value: Any = raw
    walked: list[str] = []
    for part in column.split("."):
        here = ".".join(walked) or "the row"
        if isinstance(value, _DuplicateKeys) and part == value.duplicate:
            if name is None:
                return None
            raise RowError(
                "bad_type", f"field {name!r}: path {column!r}: {here} has the key {part!r} twice"
            )
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isascii() and part.isdigit():
            if int(part) >= len(value):
                if name is None:
                    return None
                raise RowError(
                    "missing_field",
                    f"field {name!r}: path {column!r} does not resolve: {here} has "
                    f"{len(value)} item(s), no index {part}",
                )
            value = value[int(part)]
        else:
            if name is None:
                return None
            what = f"no key {part!r}" if isinstance(value, dict) else f"is {_kind_of_json(value)}"
            raise RowError(
                "missing_field", f"field {name!r}: path {column!r} does not resolve: {here} {what}"
            )
        walked.append(part)
    return value


def _language(spec: SourceSpec, fields: dict[str, Any], file_language: str | None) -> str:
    """A row's language: its ``language_field`` value, else its file's, else the source's."""
    language = file_language or spec.default_language
    if spec.language_field is not None:
        value = fields[spec.language_field]
        ftype = spec.features[spec.language_field]
        language = ftype.names[value] if isinstance(ftype, ClassLabel) else value
        if not language:
            raise RowError("bad_language", f"field {spec.language_field!r} is empty")
    if isinstance(spec.language, list) and language not in spec.language:
        raise RowError(
            "bad_language",
            f"language {language!r} is not one of the source's languages {spec.language}",
        )
    return str(language)


def _id_text(name: str, value: Any) -> str:
    """An id as the text it was written as: a JSON id 18446744073709551617 stays exact (a
    float would round it onto its neighbour), ``1.50`` stays ``1.50``."""
    if isinstance(value, (list, dict)):
        raise RowError(
            "bad_type", f"id field {name!r}: expected a string or number, got {_shown_value(value)}"
        )
    text = _literal(value)
    _check_text(f"id field {name!r}", text)
    return text


def _literal(value: Any) -> str:
    """A scalar's text as written in the file, where the file had one."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, _JsonFloat):
        return value.literal
    return str(value)


def convert_value(
    name: str, value: Any, ftype: FeatureType, mapping: FieldMap | None, *, nullable: bool = False
) -> Any:
    """One raw value as the declared feature type; raises RowError with a rule name.

    Conversions are by declared type only, never guessed from the data:

    - ``string``: text as written (a JSON number becomes its literal text); never a boolean.
    - ``int``: an integer, or a number or numeral whose value is an exact integer (``7``,
      ``"7"``, ``7.0``, ``"7e0"``), within the int64 range; never a boolean.
    - ``float``: a finite number or numeral (``nan``, ``inf``, ``1e400`` are rejected).
    - ``bool``: a boolean, or the text/number true, false, 1, 0 (any case).
    - labels: a name of the label, or an index (an integer, or an integral number); a boolean
      is not a label (``bad_type``).
    - ``any``: a JSON value as is, with finite numbers and valid Unicode text.
    - a struct: an object, each declared key converted by its type (others left out); a list
      of objects, where every key's type is a list, is read as the Hub stores a sequence of
      objects: one list per key.

    A null (or missing) value is ``None`` where the feature is ``nullable``, else a
    ``missing_field`` reject. Every text value must be valid Unicode: a JSON ``"\ud800"`` (a
    lone surrogate) is rejected (``bad_text``) rather than crashing the Arrow writers later.
    """
    if mapping is not None and mapping.split is not None and isinstance(value, str):
        value = [part.strip() for part in value.split(mapping.split) if part.strip()]
    if mapping is not None and mapping.values is not None:
        value = _map_values(name, value, mapping.values)
    if value is None and nullable:
        return None
    if value is None and ftype != "any":
        raise RowError("missing_field", f"field {name!r} is missing or null")
    if isinstance(ftype, Struct):
        return _struct(name, value, ftype)
    if isinstance(ftype, ClassLabel):
        return _label(name, value, ftype.names)
    if isinstance(ftype, SequenceOfClassLabel):
        if not isinstance(value, list):
            raise RowError(
                "bad_type", f"field {name!r}: expected a list of labels, got {_shown_value(value)}"
            )
        return [_label(name, v, ftype.sequence.names) for v in value]
    return _scalar(name, value, ftype)


def _struct(name: str, value: Any, ftype: Struct) -> dict[str, Any]:
    if isinstance(value, _DuplicateKeys):
        raise RowError("bad_type", f"field {name!r}: the key {value.duplicate!r} appears twice")
    if isinstance(value, list) and ftype.of_lists and all(isinstance(v, dict) for v in value):
        # SQuAD's JSON writes answers as [{text, answer_start}, ...]; the Hub's rows hold
        # {text: [...], answer_start: [...]}. Templates see the Hub's form either way.
        out: dict[str, Any] = {}
        for key, sub in ftype.struct.items():
            items = []
            for i, item in enumerate(value):
                if isinstance(item, _DuplicateKeys):
                    raise RowError(
                        "bad_type",
                        f"field {name!r}: item {i + 1} has the key {item.duplicate!r} twice",
                    )
                if item.get(key) is None:
                    raise RowError(
                        "missing_field",
                        f"field {name + '.' + key!r}: item {i + 1} of {name!r} has no {key!r}",
                    )
                items.append(item[key])
            out[key] = convert_value(f"{name}.{key}", items, sub, None)
        return out
    if not isinstance(value, dict):
        raise RowError(
            "bad_type",
            f"field {name!r}: expected an object with keys {list(ftype.struct)}, got "
            f"{_shown_value(value)}",
        )
    return {
        key: convert_value(f"{name}.{key}", value.get(key), sub, None)
        for key, sub in ftype.struct.items()
    }


def _map_values(name: str, value: Any, table: dict[str, str | int]) -> Any:
    def one(v: Any) -> Any:
        key = _literal(v).strip() if v is not None else None
        if key is None:
            return None
        if key not in table:
            raise RowError(
                "bad_label", f"field {name!r}: value {v!r} is not in the spec's values map"
            )
        return table[key]

    return [one(v) for v in value] if isinstance(value, list) else one(value)


def _label(name: str, value: Any, names: list[str]) -> int:
    if isinstance(value, bool):
        raise RowError("bad_type", f"field {name!r}: {value!r} is a boolean, not a label")
    if isinstance(value, str) and value in names:
        return names.index(value)
    index = _exact_int(value)
    if index is None:
        shown = _shown_value(value)
        raise RowError("bad_label", f"field {name!r}: {shown} is not one of {names}")
    if index == -1:
        raise RowError("unlabeled", f"field {name!r} is -1 (no gold label)")
    if not 0 <= index < len(names):
        raise RowError(
            "bad_label", f"field {name!r}: {_shown_value(value)} is not a label index of {names}"
        )
    return index


# A decimal numeral as a CSV cell or JSON number may write it; Python's int()/float() accept
# more (`nan`, `inf`, `1_000`, Unicode digits), none of which a data file means as a number.
_NUMERAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _exact_int(value: Any) -> int | None:
    """The integer a value stands for exactly (``7``, ``"7"``, ``7.0``, ``"7e0"``), or None.

    Floats are compared through their written text, so ``9007199254740993.0`` is not rounded
    onto a neighbour; anything past the int64 range is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, _JsonFloat):
        text = value.literal
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        text = repr(value)
    elif isinstance(value, str):
        text = value.strip()
        if _INTEGER.fullmatch(text):
            number = int(text) if len(text) <= 20 else None
            return number if number is not None and INT64_MIN <= number <= INT64_MAX else None
    else:
        return None
    if not _NUMERAL.fullmatch(text):
        return None
    dec = decimal.Decimal(text)
    # adjusted() is the exponent of the leading digit: past 18 it cannot fit in int64, and
    # checking first keeps `1e999999999` from being expanded into a billion digits.
    if dec.adjusted() > 18 or dec != dec.to_integral_value():
        return None
    number = int(dec)
    return number if INT64_MIN <= number <= INT64_MAX else None


def _finite_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if isinstance(value, _LongNumber) or not _NUMERAL.fullmatch(value.strip()):
            return None
        number = float(value)
    elif isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _string(name: str, value: Any) -> str:
    if isinstance(value, str):
        _check_text(f"field {name!r}", value)
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return _literal(value)
    raise _bad_type(name, "string", value)


def _scalar(name: str, value: Any, ftype: str) -> Any:
    if ftype == "any":
        _check_any(name, value)
        return value
    if ftype == "string":
        return _string(name, value)
    if ftype == "int":
        number = _exact_int(value)
        if number is None:
            raise _bad_type(name, "int", value)
        return number
    if ftype == "float":
        real = _finite_float(value)
        if real is None:
            raise _bad_type(name, "float (finite)", value)
        return real
    if ftype == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)):
            text = value.strip().lower() if isinstance(value, str) else str(value)
            if text in {"true", "1"}:
                return True
            if text in {"false", "0"}:
                return False
        raise _bad_type(name, "bool", value)
    if ftype == "list[string]" and isinstance(value, list):
        return [_string(name, v) for v in value]
    if ftype == "list[int]" and isinstance(value, list):
        numbers = [_exact_int(v) for v in value]
        if all(n is not None for n in numbers):
            return numbers
    if (
        ftype == "list[list[string]]"
        and isinstance(value, list)
        and all(isinstance(v, list) for v in value)
    ):
        return [[_string(name, x) for x in v] for v in value]
    raise _bad_type(name, ftype, value)


def _check_text(what: str, text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise RowError(
            "bad_text",
            f"{what}: character {err.start + 1} is a lone surrogate "
            f"({text[err.start]!r}), not Unicode text",
        ) from None


def _check_any(name: str, value: Any, depth: int = 0) -> None:
    """An ``any`` value is stored as JSON: only JSON's types, finite, valid text."""
    if depth > 100:
        raise RowError("bad_type", f"field {name!r}: nested more than 100 levels deep")
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, _LongNumber):
        raise RowError("bad_type", f"field {name!r}: a number with {len(value)} digits")
    if isinstance(value, str):
        _check_text(f"field {name!r}", value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise RowError("bad_type", f"field {name!r}: {_literal(value)} is not a finite number")
    elif isinstance(value, list):
        for item in value:
            _check_any(name, item, depth + 1)
    elif isinstance(value, dict):
        if isinstance(value, _DuplicateKeys):
            raise RowError("bad_type", f"field {name!r}: the key {value.duplicate!r} appears twice")
        for key, item in value.items():
            if not isinstance(key, str):
                raise RowError("bad_type", f"field {name!r}: a key {key!r} that is not text")
            _check_text(f"field {name!r}", key)
            _check_any(name, item, depth + 1)
    else:
        raise RowError("bad_type", f"field {name!r}: {type(value).__name__} is not a JSON value")


def _bad_type(name: str, ftype: str, value: Any) -> RowError:
    return RowError("bad_type", f"field {name!r}: expected {ftype}, got {_shown_value(value)}")


def _shown_value(value: Any) -> str:
    text = _literal(value) if isinstance(value, _JsonFloat) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
