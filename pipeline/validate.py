"""Record rules: every rendered record is checked; a failure is a reject with rule and message."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .locales import cot_answer_prefixes, locale_for
from .models import Limits, Record

TEMPLATE_SYNTAX = ("{{", "}}", "{%", "%}", "{#", "#}")

_record_adapter: TypeAdapter[Record] = TypeAdapter(Record)


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
