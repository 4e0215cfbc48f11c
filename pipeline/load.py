"""Source adapters: read one task through ``datasets.load_dataset`` and normalise its rows.

The bundled sample and the full Hub dataset go through the same call; the source spec maps the
sample's raw columns onto the Hub's features, so a row looks the same to templates either way.
A row that cannot be normalised (missing value, unknown label, wrong type, duplicate id) becomes
a reject with its reason and locator; it is never dropped silently.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .catalog import Source
from .errors import SourceError
from .models import ClassLabel, FeatureType, FieldMap, SequenceOfClassLabel
from .seeding import stable_id

DataMode = Literal["sample", "hub"]
BATCH_ROWS = 1000


@dataclass(frozen=True)
class Example:
    example_id: str
    split: str
    fields: dict[str, Any]
    locator: str


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

    def __len__(self) -> int:
        return len(self.dataset)


class RowError(ValueError):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def open_source(source: Source, data: DataMode) -> list[SplitData]:
    """Open every split of a source, as Arrow-backed datasets (memory-mapped, not in RAM)."""
    import datasets

    datasets.disable_progress_bars()
    # We report read errors ourselves, with the file and line; datasets would log them too.
    logging.getLogger("datasets").setLevel(logging.CRITICAL)
    if data == "sample":
        return [_open_sample(source, datasets)]
    hub = source.spec.hub
    out = []
    for split in hub.splits:
        where = f"hub:{hub.id}" + (f"/{hub.config}" if hub.config else "") + f"[{split}]"
        try:
            ds = datasets.load_dataset(hub.id, hub.config, split=split, revision=hub.revision)
        except Exception as exc:  # the Hub raises many types; the user needs the one line
            raise SourceError(f"{source.path}: source {source.name!r}: {where}: {exc}") from None
        _check_columns(source, ds.column_names, where, hub_mode=True)
        out.append(SplitData(split, ds, where))
    return out


def _open_sample(source: Source, datasets: Any) -> SplitData:
    sample = source.spec.sample
    assert sample is not None
    path = source.sample_path()
    fmt = sample.format or _format_of(path.name)
    kwargs: dict[str, Any] = {}
    if fmt == "csv" and sample.csv is not None:
        kwargs = {"delimiter": sample.csv.delimiter, "quoting": sample.csv.quoting}
        if sample.csv.column_names:
            kwargs["column_names"] = sample.csv.column_names
    if fmt == "json" and sample.json_field:
        kwargs["field"] = sample.json_field
    try:
        ds = datasets.load_dataset(
            fmt, data_files={sample.split: str(path)}, split=sample.split, **kwargs
        )
    except Exception as exc:
        raise SourceError(_diagnose(path, fmt, source.name, exc)) from None
    if len(ds) == 0:
        raise SourceError(f"{path}: source {source.name!r} has no rows")
    _check_columns(source, ds.column_names, str(path), hub_mode=False)
    return SplitData(sample.split, ds, str(path))


def _diagnose(path: Path, fmt: str, source: str, exc: BaseException) -> str:
    """One line naming the file, and the line in it, that load_dataset could not read.

    load_dataset's own errors are generic ("An error occurred while generating the dataset");
    the cause is found again here by reading the file the simple way.
    """
    where = f"source {source!r}"
    if path.stat().st_size == 0:
        return f"{path}: file is empty ({where})"
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return (
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                    f"{err.start + 1}) ({where})"
                )
    if fmt == "json":
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            try:
                json.loads(text)
            except json.JSONDecodeError as err:
                return (
                    f"{path}:{err.lineno}: invalid JSON: {err.msg} (column {err.colno}) ({where})"
                )
        else:
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    json.loads(line)
                except json.JSONDecodeError as err:
                    return (
                        f"{path}:{lineno}: invalid JSON line: {err.msg} (column {err.colno}) "
                        f"({where})"
                    )
    return f"{path}: cannot read as {fmt} ({where}): {_root_cause(exc)}"


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


def _column_for(source: Source, feature: str, hub_mode: bool) -> str:
    if hub_mode or source.spec.sample is None:
        return feature
    mapped = source.spec.sample.fields.get(feature, feature)
    return mapped.column if isinstance(mapped, FieldMap) else mapped


def _check_columns(source: Source, columns: list[str], where: str, hub_mode: bool) -> None:
    spec = source.spec
    id_field = spec.hub.id_field if hub_mode else (spec.sample.id_field if spec.sample else None)
    wanted = {_column_for(source, f, hub_mode) for f in spec.features}
    if id_field:
        wanted.add(id_field)
    missing = sorted(wanted - set(columns))
    if missing:
        raise SourceError(
            f"{source.path}: source {source.name!r}: {where} has no column(s) {missing} "
            f"(it has {sorted(columns)})"
        )


def iter_rows(
    source: Source, split_data: SplitData, data: DataMode
) -> Iterator[list[Example | BadRow]]:
    """Batches of normalised examples (or bad rows) in file order, with stable example ids.

    Duplicate ids are not detected here: that needs the whole source, and the load stage does
    it without holding the source in memory."""
    spec = source.spec
    hub_mode = data == "hub"
    id_field = spec.hub.id_field if hub_mode else (spec.sample.id_field if spec.sample else None)
    index = 0
    for batch in _batches(source, split_data):
        n = len(next(iter(batch.values()))) if batch else 0
        out: list[Example | BadRow] = []
        for i in range(n):
            index += 1
            raw = {k: v[i] for k, v in batch.items()}
            locator = f"{split_data.where} row {index}"
            out.append(_normalise(source, raw, split_data.split, locator, id_field, hub_mode))
        yield out


def _batches(source: Source, split_data: SplitData) -> Iterator[dict[str, list[Any]]]:
    """The dataset's batches; a file that only fails when decoded (Arrow keeps invalid UTF-8
    until then) still gets the one-line diagnosis naming its line."""
    batches = _read_batches(split_data.dataset)
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
        yield batch


def _read_batches(ds: Any) -> Iterator[dict[str, list[Any]]]:
    """The dataset's rows as decoded batches, read from its Arrow cache files with plain reads.

    ``Dataset.iter`` goes through a memory map, and every page it touches stays in the process's
    resident memory: reading a 1M-row source that way grew peak RSS by its whole cache file.
    Reading the same files as streams keeps one batch in memory. In-memory datasets, or ones
    with an indices mapping, fall back to ``Dataset.iter``.
    """
    import pyarrow as pa

    files = [f["filename"] for f in ds.cache_files]
    if not files or ds._indices is not None:
        yield from ds.iter(batch_size=BATCH_ROWS)
        return
    rows = 0
    for name in files:
        with pa.OSFile(name) as fh:
            for batch in pa.ipc.open_stream(fh):
                rows += batch.num_rows
                yield ds.features.decode_batch(batch.to_pydict())
    if rows != len(ds):
        raise ValueError(f"read {rows} rows from the dataset's cache files, expected {len(ds)}")


def _normalise(
    source: Source,
    raw: dict[str, Any],
    split: str,
    locator: str,
    id_field: str | None,
    hub_mode: bool,
) -> Example | BadRow:
    spec = source.spec
    example_id = None
    if id_field is not None and raw.get(id_field) not in (None, ""):
        example_id = str(raw[id_field])
    fields: dict[str, Any] = {}
    try:
        for name, ftype in spec.features.items():
            mapping = None
            if not hub_mode and spec.sample is not None:
                m = spec.sample.fields.get(name)
                mapping = m if isinstance(m, FieldMap) else None
            column = _column_for(source, name, hub_mode)
            fields[name] = convert_value(name, raw.get(column), ftype, mapping)
    except RowError as exc:
        return BadRow(split, example_id, exc.rule, f"{exc} ({locator})", locator)
    if example_id is None:
        # No id column: the content is the identity, so reordering the file keeps every id.
        canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
        example_id = stable_id(spec.name, split, canonical)[:16]
    # Duplicate ids are found by the load stage over the whole source (see stages.py).
    return Example(example_id, split, fields, locator)


def convert_value(name: str, value: Any, ftype: FeatureType, mapping: FieldMap | None) -> Any:
    """One raw value as the Hub feature type; raises RowError with a rule name."""
    if mapping is not None and mapping.split is not None and isinstance(value, str):
        value = [part.strip() for part in value.split(mapping.split) if part.strip()]
    if mapping is not None and mapping.values is not None:
        value = _map_values(name, value, mapping.values)
    if value is None and ftype != "any":
        raise RowError("missing_field", f"field {name!r} is missing or null")
    if isinstance(ftype, ClassLabel):
        return _label(name, value, ftype.names)
    if isinstance(ftype, SequenceOfClassLabel):
        if not isinstance(value, list):
            raise RowError("bad_type", f"field {name!r}: expected a list of labels, got {value!r}")
        return [_label(name, v, ftype.sequence.names) for v in value]
    return _scalar(name, value, ftype)


def _map_values(name: str, value: Any, table: dict[str, str | int]) -> Any:
    def one(v: Any) -> Any:
        key = str(v).strip() if v is not None else None
        if key is None:
            return None
        if key not in table:
            raise RowError(
                "bad_label", f"field {name!r}: value {v!r} is not in the spec's values map"
            )
        return table[key]

    return [one(v) for v in value] if isinstance(value, list) else one(value)


def _label(name: str, value: Any, names: list[str]) -> int:
    if isinstance(value, str) and value in names:
        return names.index(value)
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise RowError("bad_label", f"field {name!r}: {value!r} is not one of {names}") from None
    if index == -1:
        raise RowError("unlabeled", f"field {name!r} is -1 (no gold label)")
    if not 0 <= index < len(names) or (isinstance(value, float) and value != index):
        raise RowError("bad_label", f"field {name!r}: {value!r} is not a label index of {names}")
    return index


def _scalar(name: str, value: Any, ftype: str) -> Any:
    try:
        if ftype == "any":
            return value
        if ftype == "string":
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                return str(value)
        elif ftype == "int":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        elif ftype == "float":
            if not isinstance(value, bool):
                return float(value)
        elif ftype == "bool":
            if isinstance(value, bool):
                return value
            if str(value).strip().lower() in {"true", "1"}:
                return True
            if str(value).strip().lower() in {"false", "0"}:
                return False
        elif ftype == "list[string]":
            if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
                return [str(v) for v in value]
        elif ftype == "list[int]" and isinstance(value, list):
            return [int(v) for v in value]
        elif (
            ftype == "list[list[string]]"
            and isinstance(value, list)
            and all(isinstance(v, list) for v in value)
        ):
            return [[str(x) for x in v] for v in value]
    except (TypeError, ValueError):
        pass
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    raise RowError("bad_type", f"field {name!r}: expected {ftype}, got {shown}")
