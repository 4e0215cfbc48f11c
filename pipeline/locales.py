"""The renderer's own sentences in the language of each example (``locales.yaml``).

Option openings, the answer-form line after lettered or numbered options, few-shot patterns,
chain-of-thought requests and the chain-of-thought answer line are written by the renderer, not
by a template, so a French prompt gets them in French. The table is data in
YAML beside this module; a language it lacks falls back to its base language (``pt-BR`` to
``pt``) and then to English, and lint warns about it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT = "en"


@dataclass(frozen=True)
class FewShotPattern:
    """How a one-turn few-shot prompt marks each exemplar's input and answer (Flan 2022's
    few-shot templates do the same), so an answer never reads as one more line of its input."""

    input: str  # before each exemplar's prompt and the query's
    answer: str  # before each exemplar's answer; the query ends with it
    separator: str  # between exemplars


@dataclass(frozen=True)
class Locale:
    language: str
    option_openings: tuple[str, ...]
    cot_triggers: tuple[str, ...]
    cot_answer_prefix: str
    # style ("letters", "numbers") -> option_target ("text", "marker", "both") -> phrasings
    answer_forms: dict[str, dict[str, tuple[str, ...]]]
    few_shot_patterns: tuple[FewShotPattern, ...]


@functools.cache
def _table() -> dict[str, Locale]:
    raw = yaml.safe_load((Path(__file__).parent / "locales.yaml").read_text(encoding="utf-8"))
    return {
        code: Locale(
            code,
            tuple(entry["option_openings"]),
            tuple(entry["cot_triggers"]),
            entry["cot_answer_prefix"],
            {
                style: {target: tuple(lines) for target, lines in forms.items()}
                for style, forms in entry["answer_forms"].items()
            },
            tuple(FewShotPattern(**p) for p in entry["few_shot_patterns"]),
        )
        for code, entry in raw.items()
    }


def cot_answer_prefixes() -> tuple[str, ...]:
    """Every language's chain-of-thought answer line (a record's prompt language may differ
    from its rows' language: an English template over Finnish rows)."""
    return tuple(dict.fromkeys(loc.cot_answer_prefix for loc in all_locales()))


def all_locales() -> list[Locale]:
    """Every language's sentences, in the file's order."""
    return list(_table().values())


def has_locale(language: str) -> bool:
    """Whether ``language`` (or its base language) has its own sentences."""
    return _resolve(language) is not None


def locale_for(language: str | None) -> Locale:
    found = _resolve(language or DEFAULT)
    return found if found is not None else _table()[DEFAULT]


def _resolve(language: str) -> Locale | None:
    table = _table()
    for code in (language, language.split("-")[0].split("_")[0]):
        if code in table:
            return table[code]
    return None
