"""Record rules: every rendered record is checked; a failure is a reject with rule and message."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import TypeAdapter, ValidationError

from .locales import cot_answer_prefixes, locale_for
from .models import VARIANTS, Limits, OutSplit, Record

TEMPLATE_SYNTAX = ("{{", "}}", "{%", "%}", "{#", "#}")

_record_adapter: TypeAdapter[Record] = TypeAdapter(Record)

# Every delimiter is a brace and one byte beside it: "{" then one of the bytes that follow it in
# TEMPLATE_SYNTAX, or one of those that come before "}" then "}".
_OPEN, _CLOSE = ord("{"), ord("}")
_AFTER_OPEN = np.zeros(256, dtype=bool)
_AFTER_OPEN[[ord(t[1]) for t in TEMPLATE_SYNTAX if t[0] == "{"]] = True
_BEFORE_CLOSE = np.zeros(256, dtype=bool)
_BEFORE_CLOSE[[ord(t[0]) for t in TEMPLATE_SYNTAX if t[1] == "}"]] = True


def holds_template_syntax(strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per string, whether it holds one of ``TEMPLATE_SYNTAX``'s delimiters (null: False).

    One pass over the array's bytes with NumPy, where a substring search per delimiter (or a
    regular expression) walks every string again for each: a brace is one byte in UTF-8 and
    never part of another character, and braces are rare, so only they are looked at twice."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    n = len(strings)
    found = np.zeros(n, dtype=bool)
    data_buffer = strings.buffers()[2]
    if n == 0 or data_buffer is None:
        return found
    wide = pa.types.is_large_string(strings.type) or pa.types.is_large_binary(strings.type)
    width = np.dtype(np.int64 if wide else np.int32)
    offsets = np.frombuffer(strings.buffers()[1], width, n + 1, strings.offset * width.itemsize)
    starts = offsets.astype(np.int64) - int(offsets[0])
    data = np.frombuffer(data_buffer, np.uint8)[int(offsets[0]) : int(offsets[-1])]
    braces = np.flatnonzero((data == _OPEN) | (data == _CLOSE))
    if len(braces):
        # The first byte of each delimiter: "{" with its next byte, "}" with its previous.
        opening = braces[data[braces] == _OPEN]
        opening = opening[opening + 1 < len(data)]
        opening = opening[_AFTER_OPEN[data[opening + 1]]]
        closing = braces[(data[braces] == _CLOSE) & (braces > 0)]
        closing = closing[_BEFORE_CLOSE[data[closing - 1]]] - 1
        first = np.concatenate([opening, closing])
        rows = np.searchsorted(starts, first, side="right") - 1
        # Both bytes in one string, not the end of one and the start of the next.
        found[rows[first + 1 < starts[rows + 1]]] = True
    if strings.null_count:
        found &= np.asarray(strings.is_valid())
    return found


def has_template_syntax(values: Iterable[Any]) -> bool:
    """Whether raw example data itself contains Jinja delimiters (then they are not leftovers)."""
    for value in values:
        if isinstance(value, str):
            if any(tok in value for tok in TEMPLATE_SYNTAX):
                return True
        elif isinstance(value, (list, dict)):
            inner = value.values() if isinstance(value, dict) else value
            if has_template_syntax(inner):
                return True
    return False


def check_record(
    row: dict[str, Any], limits: Limits, data_has_syntax: bool = False
) -> tuple[str, str] | None:
    """``None`` if the record is good, else ``(rule, message)`` for the first rule it breaks."""
    try:
        record = _record_adapter.validate_python(row)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return "schema", f"{where}: {err['msg']}"
    turns = record.messages
    output = turns[-1].content
    prompt = [m.content for m in turns[:-1] if m.role == "user"]
    if not output.strip():
        return "empty_output", "the assistant turn is empty"
    if any(not p.strip() for p in prompt):
        return "empty_prompt", "a user turn is empty"
    cot = record.variant in ("cot", "few_shot_cot")
    answer = output
    if cot:
        # The rationale, then the answer after the fixed line of the prompt's language (which
        # may differ from the rows': an English template over Finnish rows).
        cut = max((output.rfind(p), p) for p in cot_answer_prefixes())
        if cut[0] < 0:
            prefix = locale_for(record.language).cot_answer_prefix
            return "cot_shape", f"chain-of-thought output lacks the line {prefix!r}"
        answer = output[cut[0] + len(cut[1]) :]
    if record.answer_choices is not None:
        if any(not c for c in record.answer_choices):
            return (
                "empty_choice",
                f"answer choices contain an empty string: {record.answer_choices}",
            )
        if answer not in record.answer_choices:
            return (
                "output_not_in_choices",
                f"output {_short(answer)!r} is not one of {record.answer_choices}",
            )
    if record.gold_answers is not None and answer not in record.gold_answers:
        return (
            "output_not_gold",
            f"output {_short(answer)!r} is not one of the gold answers {record.gold_answers}",
        )
    prompt_chars = sum(len(m.content) for m in turns[:-1])
    if prompt_chars > limits.max_prompt_chars:
        return "prompt_too_long", f"{prompt_chars} prompt characters > {limits.max_prompt_chars}"
    if len(output) > limits.max_output_chars:
        return "output_too_long", f"{len(output)} output characters > {limits.max_output_chars}"
    if not data_has_syntax:
        for m in turns:
            for tok in TEMPLATE_SYNTAX:
                if tok in m.content:
                    return "leftover_template_syntax", f"{m.role} turn contains {tok!r}"
    return None


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


# --------------------------------------------------------------------------- whole parts

# Python's str.isspace, as a character class RE2 understands: Unicode Z (Zs, Zl, Zp), the C0
# separators \x1c-\x1f, NEL, and \t-\r. "Empty after .strip()" is "only these".
_BLANK = r"^[\t-\r\x1c-\x20\x85\p{Z}]*$"
_COT = ("cot", "few_shot_cot")


def check_table(
    table: pa.Table, limits: Limits, data_has_syntax: np.ndarray
) -> list[tuple[int, tuple[str, str]]]:
    """``check_record`` over a whole part: ``(row index, (rule, message))`` for every record
    that breaks a rule, the same rule and message ``check_record`` gives it.

    Each rule runs as one expression over the part's columns (Arrow compute and NumPy), which
    marks the records that may break it; only those are checked again one by one, with
    ``check_record`` itself, for the first rule broken and its message. The marks never miss a
    bad record (a mark may be a false alarm, which the exact check clears): the tests hold both
    ways of checking to the same answers on planted and real records.
    ``data_has_syntax``: per row, whether the data itself may hold Jinja delimiters.
    """
    n = table.num_rows
    if n == 0:
        return []
    suspect = _marks(table, limits, data_has_syntax)
    rows = np.flatnonzero(suspect)
    if len(rows) == 0:
        return []
    out: list[tuple[int, tuple[str, str]]] = []
    for i, row in zip(rows, table.take(pa.array(rows)).to_pylist(), strict=True):
        problem = check_record(row, limits, bool(data_has_syntax[i]))
        if problem is not None:
            out.append((int(i), problem))
    return out


def _marks(table: pa.Table, limits: Limits, data_has_syntax: np.ndarray) -> np.ndarray:
    n = table.num_rows
    messages = table.column("messages").combine_chunks()
    offsets = messages.offsets.to_numpy()
    if messages.offset != 0 or offsets[0] != 0:
        # A sliced column: the plain way round, every record checked one by one.
        return np.ones(n, dtype=bool)
    values = messages.values
    roles = values.field("role")
    contents = values.field("content")
    starts, ends = offsets[:-1], offsets[1:]
    counts = ends - starts
    suspect = counts < 2  # schema: at least a user and an assistant turn
    suspect |= np.asarray(messages.is_null())
    safe_ends = np.maximum(ends - 1, 0)

    # schema: ids, variants, required strings, alternating roles ending on the assistant.
    suspect |= ~_true(pc.match_substring_regex(table.column("id"), r"^[0-9a-f]{32}$"))
    suspect |= ~_true(pc.is_in(table.column("variant"), value_set=pa.array(list(VARIANTS))))
    for name in ("source", "task", "cluster", "template_id", "example_id", "split", "language",
                 "license"):  # fmt: skip
        suspect |= np.asarray(table.column(name).is_null())
    out_split = table.column("out_split")
    allowed = _true(pc.is_in(out_split, value_set=pa.array(list(get_args(OutSplit)))))
    suspect |= ~(allowed | np.asarray(out_split.is_null()))
    code = _role_codes(roles)
    row_of = np.repeat(np.arange(n), counts)
    first = starts[row_of] if len(row_of) else row_of
    has_system = np.zeros(n, dtype=bool)
    nonempty = counts > 0
    has_system[nonempty] = code[starts[nonempty]] == 0
    position = np.arange(len(code)) - first - has_system[row_of]
    expected = np.where(position % 2 == 0, 1, 2)
    wrong = (code != expected) & (position >= 0)
    wrong |= code < 0  # a role that is none of the three
    suspect |= _any_by_row(wrong, row_of, n)
    if len(code):
        suspect |= code[safe_ends] != 2
    suspect |= counts - has_system < 2

    # empty_output, empty_prompt, output_too_long, prompt_too_long, leftovers.
    blank = _true(pc.match_substring_regex(contents, _BLANK))
    is_last = np.zeros(len(code), dtype=bool)
    is_last[ends[nonempty] - 1] = True
    suspect |= _any_by_row(blank & (is_last | (code == 1)), row_of, n)
    lengths = pc.utf8_length(contents).to_numpy(zero_copy_only=False)
    output_chars = np.where(nonempty, lengths[safe_ends] if len(lengths) else 0, 0)
    suspect |= output_chars > limits.max_output_chars
    prompt_chars = np.bincount(row_of[~is_last], weights=lengths[~is_last], minlength=n)
    suspect |= prompt_chars > limits.max_prompt_chars
    syntax = holds_template_syntax(contents)
    suspect |= _any_by_row(syntax, row_of, n) & ~data_has_syntax

    # cot_shape and the answer: chain-of-thought records are read one by one (they are few,
    # and their answer is what follows the last answer line); the rest answer with the output.
    variants = table.column("variant").to_numpy(zero_copy_only=False)
    cot = np.isin(variants, _COT)
    suspect |= cot  # their answer needs the line: checked exactly
    outputs = contents.take(pa.array(safe_ends)) if len(code) else pa.nulls(n, pa.string())
    for name in ("answer_choices", "gold_answers"):
        suspect |= _not_member(table.column(name).combine_chunks(), outputs, n, empty=name)
    return np.asarray(suspect, dtype=bool)


def _not_member(lists: pa.ListArray, answers: pa.Array, n: int, empty: str) -> np.ndarray:
    """Rows whose list is there and does not hold the row's answer (or, for answer choices,
    holds an empty string)."""
    present = ~np.asarray(lists.is_null())
    if not present.any():
        return np.zeros(n, dtype=bool)
    parents = pc.list_parent_indices(lists).to_numpy()
    flat = pc.list_flatten(lists)
    hit = _true(pc.equal(flat, answers.take(pa.array(parents))))
    found = _any_by_row(hit, parents, n)
    bad = present & ~found
    if empty == "answer_choices":
        bad |= _any_by_row(_true(pc.equal(pc.utf8_length(flat), 0)), parents, n)
    return np.asarray(bad, dtype=bool)


def _role_codes(roles: pa.Array) -> np.ndarray:
    codes = pc.index_in(roles, value_set=pa.array(["system", "user", "assistant"]))
    return np.asarray(codes.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _true(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow result as NumPy, null as False."""
    return np.asarray(pc.fill_null(mask, False), dtype=bool)


def _any_by_row(flags: np.ndarray, row_of: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[row_of[flags]] = True
    return out
