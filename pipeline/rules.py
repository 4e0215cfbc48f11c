"""Record rules of your own (a recipe's and a source's ``record_rules``), in Jinja.

A rule is a boolean expression over a rendered record; a record it does not pass is rejected at
validation with the rule's name, counted like any other reject. Rules compile when the recipe is
prepared, so a broken one stops the run before anything renders, naming where it is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import CatalogError
from .models import RecordRule
from .render import compile_text, make_environment
from .sandbox import deadline


@dataclass(frozen=True)
class CompiledRule:
    rule: RecordRule
    where: str  # the recipe or source it is written in, for messages
    render: Callable[[dict[str, Any]], str]


def compile_rules(rules: Sequence[RecordRule], where: str) -> list[CompiledRule]:
    env = make_environment()
    out = []
    for i, rule in enumerate(rules):
        if "{{" not in rule.check:
            raise CatalogError(
                f"{where}: record_rules[{i}] ({rule.name}): check must be a Jinja expression "
                f"such as '{{{{ output != prompt }}}}', not {rule.check!r}"
            )
        try:
            out.append(CompiledRule(rule, where, compile_text(env, rule.check)))
        except Exception as exc:
            raise CatalogError(f"{where}: record_rules[{i}] ({rule.name}): {exc}") from None
    return out


def record_context(row: dict[str, Any]) -> dict[str, Any]:
    """What a rule sees of a record (``row`` as the pipeline builds it)."""
    messages = row["messages"]
    users = [m["content"] for m in messages if m["role"] == "user"]
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    return {
        "prompt": users[-1] if users else "",
        "output": messages[-1]["content"] if messages else "",
        "system": system,
        "variant": row["variant"],
        "template_id": row["template_id"],
        "source": row["source"],
        "language": row["language"],
    }


def broken_rule(
    rules: Sequence[CompiledRule], row: dict[str, Any], seconds: float
) -> tuple[str, str] | None:
    """``(rule, message)`` of the first rule ``row`` does not pass, or None."""
    if not rules:
        return None
    context = record_context(row)
    for compiled in rules:
        try:
            with deadline(seconds):
                verdict = compiled.render(dict(context)).strip()
        except Exception as exc:
            return compiled.rule.name, f"{compiled.where}: rule {compiled.rule.name!r}: {exc}"
        if verdict != "True":
            message = compiled.rule.message or f"the record fails {compiled.rule.check!r}"
            return compiled.rule.name, message
    return None
