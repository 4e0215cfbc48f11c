"""The renderer's own sentences in the language of each example (``locales.yaml``).

Option openings, chain-of-thought requests and the chain-of-thought answer line are written by
the renderer, not by a template, so a French example gets them in French. The table is data in
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
class Locale:
    language: str
    option_openings: tuple[str, ...]
    cot_triggers: tuple[str, ...]
    cot_answer_prefix: str


@functools.cache
def _table() -> dict[str, Locale]:
    raw = yaml.safe_load((Path(__file__).parent / "locales.yaml").read_text(encoding="utf-8"))
    return {
        code: Locale(
            code,
            tuple(entry["option_openings"]),
            tuple(entry["cot_triggers"]),
            entry["cot_answer_prefix"],
        )
        for code, entry in raw.items()
    }


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
