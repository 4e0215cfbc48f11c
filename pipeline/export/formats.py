"""The export's layouts: each a config of the one Hub folder, with the same rows and the same
provenance columns, so ``load_dataset(folder, config)`` gives what a trainer expects.

    messages           config `default`   data/<split>-*.parquet             messages
    prompt_completion  config of its name data/prompt_completion/<split>-*   prompt, completion
    alpaca             ...                data/alpaca/...                    instruction, input,
                                                                             output, system, history
    sharegpt           ...                data/sharegpt/...                  conversations
    flan               ...                data/flan/...                      inputs, targets

Every layout is computed from a record's ``messages`` (an optional system turn, then user and
assistant turns alternating, ending on the assistant): nothing else in a record differs
between layouts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import PipelineError
from ..runfolder import ParquetSink, _write_error, atomic_text

Feature = dict[str, Any]  # a `datasets` feature as its JSON: {"dtype": ..., "_type": "Value"}
Message = dict[str, str]

# Uncompressed bytes of text a row group holds at most, whatever the recipe's row_group_rows:
# the Hub's viewer reads a file one row group at a time, and `datasets` writes groups of at
# most 100 MB for it (datasets.config.MAX_ROW_GROUP_SIZE). Far under that, for any record.
ROW_GROUP_BYTES = 32 << 20


def _value() -> Feature:
    return {"dtype": "string", "_type": "Value"}


def _list(feature: Feature) -> Feature:
    return {"feature": feature, "_type": "List"}


_MESSAGE: Feature = {"role": _value(), "content": _value()}
# Every column of a record but `messages`, in the record's order: the same on every config.
PROVENANCE: dict[str, Feature] = {
    "source": _value(),
    "task": _value(),
    "cluster": _value(),
    "template_id": _value(),
    "variant": _value(),
    "answer_choices": _list(_value()),
    "gold_answers": _list(_value()),
    "example_id": _value(),
    "split": _value(),
    "language": _value(),
    "license": _value(),
}


@dataclass(frozen=True)
class Conversation:
    """A record's turns: the system prompt, the exemplar turns (multi-turn few-shot), the query
    and its answer."""

    system: str | None
    history: list[tuple[str, str]]
    query: str
    answer: str


def conversation(messages: Sequence[Message]) -> Conversation:
    """Split a record's messages; a record that breaks the contract is a ValueError."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    turns = list(messages[1:] if system is not None else messages)
    roles = [m["role"] for m in turns]
    if not turns or len(turns) % 2 or roles != ["user", "assistant"] * (len(turns) // 2):
        raise ValueError(
            f"messages must be an optional system turn, then user/assistant turns ending on "
            f"the assistant; roles are {[m['role'] for m in messages]}"
        )
    pairs = [(turns[i]["content"], turns[i + 1]["content"]) for i in range(0, len(turns), 2)]
    (query, answer) = pairs[-1]
    return Conversation(system, pairs[:-1], query, answer)


Converter = Callable[[list[list[Message]]], dict[str, list[Any]]]


def _prompt_completion(rows: list[list[Message]]) -> dict[str, list[Any]]:
    # Conversational prompt-completion (TRL): the prompt keeps the system turn and the
    # exemplar turns, and the model's chat template renders both halves, so a chat model
    # trains on what it sees at inference; the loss covers the completion only.
    for messages in rows:
        conversation(messages)
    return {"prompt": [m[:-1] for m in rows], "completion": [m[-1:] for m in rows]}


def _alpaca(rows: list[list[Message]]) -> dict[str, list[Any]]:
    # A record does not keep its instruction apart from its input: the whole prompt is the
    # instruction and `input` is empty. Exemplar turns go to `history` as [user, assistant]
    # pairs (LLaMA-Factory's alpaca `history`); a reader that ignores `history` sees the query
    # alone, as a zero-shot prompt.
    convs = [conversation(m) for m in rows]
    return {
        "instruction": [c.query for c in convs],
        "input": ["" for _ in convs],
        "output": [c.answer for c in convs],
        "system": [c.system or "" for c in convs],
        "history": [[list(pair) for pair in c.history] for c in convs],
    }


_SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


def _sharegpt(rows: list[list[Message]]) -> dict[str, list[Any]]:
    for messages in rows:
        conversation(messages)
    return {
        "conversations": [
            [{"from": _SHAREGPT_ROLES[m["role"]], "value": m["content"]} for m in messages]
            for messages in rows
        ]
    }


def _flan(rows: list[list[Message]]) -> dict[str, list[Any]]:
    # One input text, as FLAN and T0 train seq2seq models: the system prompt, then every
    # exemplar turn, then the query, a blank line apart.
    convs = [conversation(m) for m in rows]
    inputs = []
    for c in convs:
        parts = [c.system] if c.system else []
        parts += [text for pair in c.history for text in pair]
        inputs.append("\n\n".join([*parts, c.query]))
    return {"inputs": inputs, "targets": [c.answer for c in convs]}


# --------------------------------------------------------------------------- columnar layouts
# The same layouts computed on Arrow columns, a batch at a time, for the export's hot path: the
# functions above are their definition (and what tests compare against); these give the same
# values and types without building a Python object per turn.

_ROLES = pa.array(["system", "user", "assistant"])
_SHAREGPT_NAMES = pa.array([_SHAREGPT_ROLES[r] for r in ("system", "user", "assistant")])


@dataclass(frozen=True)
class _Turns:
    """A messages column taken apart: every turn in record order, the record of each, and
    where each record's turns start. Only built for records that keep the turn contract."""

    turns: pa.StructArray  # struct<role, content>, every record's turns, in order
    contents: pa.StringArray
    offsets: np.ndarray[Any, np.dtype[np.int64]]  # record r: turns offsets[r]:offsets[r + 1]
    has_system: np.ndarray[Any, np.dtype[np.bool_]]  # per record
    position: np.ndarray[Any, np.dtype[np.int64]]  # per turn: -1 for a system turn, else 0, 1..
    last: np.ndarray[Any, np.dtype[np.bool_]]  # per turn: the record's final turn

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1


def _turns(messages: pa.Array) -> _Turns:
    """The turns of a messages column, checked against the contract ``conversation`` states
    (an optional system turn, then user/assistant turns alternating, ending on the assistant);
    the first record that breaks it is refused with ``conversation``'s own words."""
    n = len(messages)
    lengths = pc.fill_null(pc.list_value_length(messages), 0).to_numpy(zero_copy_only=False)
    lengths = lengths.astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    turns = messages.flatten()  # the values of the slice, null lists' none
    codes = pc.fill_null(pc.index_in(pc.struct_field(turns, "role"), value_set=_ROLES), 3)
    code = codes.to_numpy(zero_copy_only=False).astype(np.int8)
    record = np.repeat(np.arange(n, dtype=np.int64), lengths)
    has_system = np.zeros(n, dtype=np.bool_)
    nonempty = lengths > 0
    # As in ``conversation``: a system turn whose content is null is not taken as the system
    # prompt, so the record then breaks the contract.
    firsts = offsets[:-1][nonempty]
    contents = pc.struct_field(turns, "content")
    valid = pc.is_valid(contents).to_numpy(zero_copy_only=False)
    has_system[nonempty] = (code[firsts] == 0) & valid[firsts]
    position = np.arange(len(code), dtype=np.int64) - offsets[:-1][record]
    position -= has_system[record]
    expected = np.where(position % 2 == 0, 1, 2)
    wrong = np.where(position < 0, code != 0, code != expected)
    count = lengths - has_system
    broken = (count <= 0) | (count % 2 == 1)
    broken |= np.bincount(record[wrong], minlength=n) > 0
    if broken.any():
        conversation(messages[int(np.flatnonzero(broken)[0])].as_py())
        raise AssertionError("a record the columnar check refuses breaks the turn contract")
    last = np.zeros(len(code), dtype=np.bool_)
    last[offsets[1:][nonempty] - 1] = True
    return _Turns(turns, contents, offsets, has_system, position, last)


def _lists(values: pa.Array, counts: np.ndarray[Any, np.dtype[np.int64]]) -> pa.ListArray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), values)


def _per_record(t: _Turns, keep: np.ndarray[Any, np.dtype[np.bool_]]) -> np.ndarray[Any, Any]:
    """How many of each record's turns ``keep`` selects."""
    record = np.repeat(np.arange(t.rows), np.diff(t.offsets))
    return np.bincount(record[keep], minlength=t.rows).astype(np.int64)


def _columns_prompt_completion(t: _Turns) -> list[pa.Array]:
    prompt = ~t.last
    return [
        _lists(t.turns.filter(pa.array(prompt)), _per_record(t, prompt)),
        _lists(t.turns.filter(pa.array(t.last)), _per_record(t, t.last)),
    ]


def _columns_alpaca(t: _Turns) -> list[pa.Array]:
    final = t.offsets[1:] - 1
    query = t.contents.take(pa.array(final - 1))
    system = pc.if_else(
        pa.array(t.has_system),
        t.contents.take(pa.array(np.minimum(t.offsets[:-1], max(len(t.contents) - 1, 0)))),
        "",
    )
    # The exemplar turns: every turn but the system one and the final user/assistant pair.
    exemplar = t.position >= 0
    exemplar[final] = exemplar[final - 1] = False
    pairs = t.contents.filter(pa.array(exemplar))
    history = _lists(_lists(pairs, np.full(len(pairs) // 2, 2, dtype=np.int64)),
                     _per_record(t, exemplar) // 2)  # fmt: skip
    return [
        query,
        pa.array([""] * t.rows, type=pa.string()),
        t.contents.take(pa.array(final)),
        pc.fill_null(system, ""),
        history,
    ]


def _columns_sharegpt(t: _Turns) -> list[pa.Array]:
    codes = pc.index_in(pc.struct_field(t.turns, "role"), value_set=_ROLES)
    pairs = pa.StructArray.from_arrays(
        [_SHAREGPT_NAMES.take(codes), t.contents], names=["from", "value"]
    )
    return [_lists(pairs, np.diff(t.offsets))]


def _columns_flan(t: _Turns) -> list[pa.Array]:
    # The system prompt when it is not empty, every exemplar turn and the query.
    empty_system = (t.position < 0) & ~pc.fill_null(
        pc.greater(pc.binary_length(t.contents), 0), False
    ).to_numpy(zero_copy_only=False)
    parts = ~t.last & ~empty_system
    joined = pc.binary_join(
        _lists(t.contents.filter(pa.array(parts)), _per_record(t, parts)), "\n\n"
    )
    return [joined, t.contents.take(pa.array(t.offsets[1:] - 1))]


ColumnarConverter = Callable[[_Turns], list[pa.Array]]


@dataclass(frozen=True)
class Format:
    """One layout of the records: a config of the export."""

    name: str  # what --format takes
    config: str  # its config name in the card
    folder: str  # where its files lie in the export
    columns: dict[str, Feature]  # its own columns, after `id` and before the provenance
    summary: str  # what it is for, for the card
    convert: Converter | None  # None: the record's own `messages`
    columnar: ColumnarConverter | None = None  # the same layout on Arrow columns

    @property
    def features(self) -> dict[str, Feature]:
        return {"id": _value(), **self.columns, **PROVENANCE}

    @property
    def schema(self) -> pa.Schema:
        # The `huggingface` metadata fixes the feature types datasets reports (messages as a
        # list of {role, content}) instead of leaving them to inference from the first shard.
        meta = {"info": {"features": self.features}}
        fields = [pa.field(n, arrow_type(f)) for n, f in self.features.items()]
        return pa.schema(fields, metadata={b"huggingface": json.dumps(meta).encode()})

    def file_name(self, split: str, index: int, count: int, suffix: str = ".parquet") -> str:
        return f"{self.folder}/{split}-{index:05d}-of-{count:05d}{suffix}"

    def table(self, records: pa.Table) -> pa.Table:
        """This layout of a table of records."""
        if self.convert is None:
            return records.select(list(self.features)).cast(self.schema)
        arrays = [records.column("id")]
        try:
            if self.columnar is not None:
                messages = records.column("messages").combine_chunks()
                for array, f in zip(
                    self.columnar(_turns(messages)), self.columns.values(), strict=True
                ):
                    arrays.append(array.cast(arrow_type(f)))
            else:
                columns = self.convert(records.column("messages").to_pylist())
                arrays += [
                    pa.array(columns[n], type=arrow_type(f)) for n, f in self.columns.items()
                ]
        except ValueError as exc:
            raise PipelineError(f"cannot export as {self.name}: {exc}") from None
        arrays += [records.column(n) for n in PROVENANCE]
        return pa.Table.from_arrays(arrays, schema=self.schema)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "messages",
            "default",
            "data",
            {"messages": _list(_MESSAGE)},
            "`messages`: a list of `{role, content}` (an optional system turn, then user and "
            "assistant turns, ending on the assistant). TRL's SFTTrainer, Axolotl "
            "(`type: chat_template`), open-instruct and LLaMA-Factory (sharegpt with "
            "role/content tags) read it as is.",
            None,
        ),
        Format(
            "prompt_completion",
            "prompt_completion",
            "data/prompt_completion",
            {"prompt": _list(_MESSAGE), "completion": _list(_MESSAGE)},
            "`prompt` (every turn up to the last user turn, the system turn and few-shot "
            "exemplar turns included) and `completion` (the answer, one assistant turn): "
            "TRL's conversational prompt-completion, trained on the completion only.",
            _prompt_completion,
            _columns_prompt_completion,
        ),
        Format(
            "alpaca",
            "alpaca",
            "data/alpaca",
            {
                "instruction": _value(),
                "input": _value(),
                "output": _value(),
                "system": _value(),
                "history": _list(_list(_value())),
            },
            "`instruction` (the whole prompt), `input` (empty: a record keeps no separate "
            "input), `output`, `system` (empty when none) and `history` (multi-turn few-shot "
            "exemplars as [user, assistant] pairs): Alpaca's layout, as LLaMA-Factory reads it.",
            _alpaca,
            _columns_alpaca,
        ),
        Format(
            "sharegpt",
            "sharegpt",
            "data/sharegpt",
            {"conversations": _list({"from": _value(), "value": _value()})},
            "`conversations`: a list of `{from, value}` with `system`, `human` and `gpt`: "
            "ShareGPT's layout (LLaMA-Factory's default tags; Axolotl with "
            "`message_property_mappings`). TRL renames its keys but keeps the human/gpt "
            "roles, which chat templates do not know: give TRL the default config.",
            _sharegpt,
            _columns_sharegpt,
        ),
        Format(
            "flan",
            "flan",
            "data/flan",
            {"inputs": _value(), "targets": _value()},
            "`inputs` (system prompt, exemplar turns and query, a blank line apart) and "
            "`targets`: FLAN's and P3's layout, for seq2seq trainers.",
            _flan,
            _columns_flan,
        ),
    )
}
DEFAULT_FORMATS = ("messages",)


def parse_formats(values: Iterable[str]) -> tuple[str, ...]:
    """``--format`` values (repeated, or comma lists; ``all``) as format names in the order
    of FORMATS; an unknown name is an error naming the known ones."""
    names: set[str] = set()
    for value in values:
        for name in (v.strip() for v in value.split(",")):
            if name == "all":
                names.update(FORMATS)
            elif name in FORMATS:
                names.add(name)
            elif name == "default":
                names.add("messages")
            elif name:
                known = ", ".join([*FORMATS, "all"])
                raise PipelineError(f"unknown export format {name!r} (known: {known})")
    return tuple(n for n in FORMATS if n in names) or DEFAULT_FORMATS


def arrow_type(feature: Feature) -> pa.DataType:
    if feature.get("_type") == "Value":
        return pa.string()
    if feature.get("_type") == "List":
        return pa.list_(arrow_type(feature["feature"]))
    return pa.struct([(name, arrow_type(f)) for name, f in feature.items()])


def yaml_features(features: dict[str, Feature]) -> list[dict[str, Any]]:
    """Features as the card's ``dataset_info.features`` writes them (datasets'
    ``Features._to_yaml_list`` form: ``dtype``, ``list``, ``struct``)."""
    return [{"name": name, **dict([_yaml_type(f)])} for name, f in features.items()]


def _yaml_type(feature: Feature) -> tuple[str, Any]:
    if feature.get("_type") == "Value":
        return "dtype", feature["dtype"]
    if feature.get("_type") == "List":
        key, inner = _yaml_type(feature["feature"])
        return "list", inner if key in ("dtype", "struct") else {key: inner}
    return "struct", yaml_features(feature)


def row_bytes(table: pa.Table) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Bytes of text in each row: what a row adds to its row group."""
    total = np.zeros(table.num_rows, dtype=np.int64)
    for column in table.columns:
        total += _array_bytes(column.combine_chunks())
    return total


def _array_bytes(array: pa.Array) -> np.ndarray[Any, np.dtype[np.int64]]:
    if pa.types.is_string(array.type) or pa.types.is_binary(array.type):
        lengths = pc.fill_null(pc.binary_length(array), 0)
        return np.asarray(lengths.to_numpy(zero_copy_only=False), dtype=np.int64)
    if pa.types.is_list(array.type):
        inner = _array_bytes(pc.list_flatten(array))
        parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
        return np.bincount(parents, weights=inner, minlength=len(array)).astype(np.int64)
    if pa.types.is_struct(array.type):
        out = np.zeros(len(array), dtype=np.int64)
        for child in array.flatten():
            out += _array_bytes(child)
        return out
    return np.zeros(len(array), dtype=np.int64)


class Shard:
    """One shard of one config: parquet in row groups of at most ``max_rows`` rows and
    ``ROW_GROUP_BYTES`` bytes of text, cut by the rows alone (never by how they arrived in
    batches, so the bytes are the same however the mixture is read), and optionally the same
    rows as JSON lines beside it."""

    def __init__(self, path: Path, fmt: Format, max_rows: int, jsonl: bool) -> None:
        self.fmt = fmt
        self.max_rows = max_rows
        self._pending: list[pa.Table] = []
        self._sizes: list[np.ndarray[Any, np.dtype[np.int64]]] = []
        self._sink = ParquetSink(path, fmt.schema, max_rows)
        self._jsonl_path = path.with_suffix(".jsonl")
        self._jsonl: Any = None
        self._fh: IO[str] | None = None
        if jsonl:
            try:
                self._jsonl = atomic_text(self._jsonl_path)
                self._fh = self._jsonl.__enter__()
            except BaseException:
                self._sink.abort()
                raise

    def add(self, records: pa.Table) -> None:
        table = self.fmt.table(records)
        if self._fh is not None:
            try:
                for row in table.to_pylist():
                    self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            except OSError as exc:
                self.abort()
                raise _write_error(self._jsonl_path, exc) from None
        self._pending.append(table)
        self._sizes.append(row_bytes(table))
        self._flush(final=False)

    def _flush(self, final: bool) -> None:
        while self._pending:
            sizes = np.concatenate(self._sizes)
            fits = int(np.searchsorted(np.cumsum(sizes), ROW_GROUP_BYTES, side="right"))
            rows = min(self.max_rows, max(1, fits))
            if rows == len(sizes) and rows < self.max_rows and not final:
                return  # the group may take more rows yet
            merged = pa.concat_tables(self._pending)
            self._sink.write_table(merged.slice(0, rows))
            rest = merged.slice(rows)
            self._pending = [rest] if rest.num_rows else []
            self._sizes = [sizes[rows:]] if rest.num_rows else []

    def close(self) -> None:
        try:
            self._flush(final=True)
        except BaseException:
            self.abort()
            raise
        self._sink.close()
        if self._jsonl is not None:
            self._fh = None
            self._jsonl.__exit__(None, None, None)

    def abort(self) -> None:
        self._sink.abort()
        if self._jsonl is not None:
            jsonl, self._jsonl, self._fh = self._jsonl, None, None
            # Exiting with an exception removes the temporary file: no partial JSONL is left.
            with suppress(Exception):
                jsonl.__exit__(RuntimeError, RuntimeError("aborted"), None)
