"""Source transforms: documented clean-ups of loaded text, so targets carry no data artefacts.

A source spec lists them under ``transforms``; load applies them in order to every example
(bundled sample and Hub alike), after the example id is fixed, so a change of clean-up never
changes which example is which. Each op is a fixed rule written here, never a user regex (a
user's regex could backtrack for hours on one row):

- ``strip_calculator_annotations``: GSM8K's calculator calls ``<<48/2=24>>`` removed (the text
  around them already states the result: ``48/2 = <<48/2=24>>24``).
- ``text_before`` / ``text_after``: the text before / after the first ``marker``, stripped
  (GSM8K's solution and its final answer, around ``####``); ``text_after`` of a text without
  the marker is an error, since there is no answer to take.
- ``detokenize``: Penn-Treebank-style tokenised text (``a dog , running .``, ``` `` quoted ''```,
  ``do n't``, ``-LRB-``) back to plain text.
- ``replace``: literal strings replaced, in the order given (DART's ``[TITLE]`` markers).
- ``collapse_whitespace``: runs of whitespace become one space, ends stripped.

Strings inside lists and structs (at any depth) are transformed one by one, keys kept; other
values pass as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from .models import Transform

CALCULATOR = re.compile(r"<<[^<>]*>>")

# PTB conventions, undone in this order. Quotes first, so the spacing rules below see plain
# double quotes.
_BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}
# No space before closing punctuation, but ".537" is a number, not a full stop.
_CLOSING = ",;:!?%)]}"
_CLOSE_UP = re.compile(r"\s+([,;:!?%)\]}]|\.(?!\d))")


def _close_up(text: str) -> str:
    """``_CLOSE_UP`` on a text whose only whitespace is the space (the step most tokenised rows
    need: "packages ."), in one pass: a run of spaces goes before a closing mark, and before a
    full stop unless a digit follows it (".537" is a number). Removing runs never changes what
    another run is followed by, so one pass does what the regex's repeated matches do."""
    return _SPACES_BEFORE_CLOSING.sub("", text)


_SPACES_BEFORE_CLOSING = re.compile(r" +(?=[,;:!?%)\]}]|\.(?!\d))")
# The characters without one of which no step but the close-up changes a spaces-only text.
_RARE = re.compile(r"[`'(\[{$#]")


# Each step: its pattern and replacement; the characters one of which any text it changes
# holds; and, for a text whose only whitespace is the space, the substrings one of which it
# holds, or the function that does the step on such a text. A step that cannot match is not
# run (most of a plain text's steps, per row), and a substring test is a few C-level searches
# where the regex would try its pattern at every space.
_PTB_STEPS: list[
    tuple[re.Pattern[str], str, frozenset[str], tuple[str, ...], Callable[[str], str] | None]
] = [
    # opening quote: attach to the next word
    (re.compile(r"``\s*"), '"', frozenset("`"), ("``",), None),
    # closing quote: attach to the previous word
    (re.compile(r"\s*''"), '"', frozenset("'"), ("''",), None),
    (_CLOSE_UP, r"\1", frozenset(_CLOSING + "."), (), _close_up),
    # Nor after opening brackets and currency.
    (
        re.compile(r"([(\[{$#])\s+"),
        r"\1",
        frozenset("([{$#"),
        tuple(c + " " for c in "([{$#"),
        None,
    ),
    (
        re.compile(r"\s+(n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE),
        r"\1",
        frozenset("'"),
        (" '", " n'", " N'"),
        None,
    ),
    # plural possessive: "girls ' school"
    (re.compile(r"(?<=\ws) '(?=\s)"), "'", frozenset("'"), (" ' ",), None),
]
# Quotes standing alone as tokens (a straight double quote, or PTB's two backticks and two
# apostrophes) are paired up by position, odd ones opening, even ones closing: the position
# decides, not the mark, since PAWS's word-swapped sentences carry PTB quotes the wrong way
# round (two apostrophes, Macpelah Cemetery, two backticks).
_STRAIGHT_QUOTE = re.compile(r"(?:(?<=\s)|^)(?:\"|``|'')(?=\s|$)")


class TransformError(ValueError):
    """A row the transform cannot work on (its reject names the op and the field)."""


def detokenize(text: str) -> str:
    """Plain text from PTB-tokenised ``text``; already plain text passes unchanged (apart from
    runs of spaces)."""
    if "-" in text:
        for token, char in _BRACKETS.items():
            text = text.replace(token, char)
    if '"' in text or "``" in text or "''" in text:
        text = _pair_straight_quotes(text)
    # Every whitespace character but the space is unprintable (tabs, newlines, no-break and
    # other Unicode spaces); no step adds one, so this holds through the steps.
    spaces_only = text.isprintable()
    # One search for the rare characters spares a spaces-only text most steps' spot tests.
    rare = not spaces_only or _RARE.search(text) is not None
    for pattern, replacement, needs, spots, spaced in _PTB_STEPS:
        if not spaces_only:
            if not needs.isdisjoint(text):
                text = pattern.sub(replacement, text)
        elif spaced is not None:
            text = spaced(text)
        elif rare:
            for spot in spots:
                if spot in text:
                    text = pattern.sub(replacement, text)
                    break
    # Runs of whitespace to one space, ends stripped: what re's \s+ and strip() do (both take
    # str.isspace's whitespace), in one C call.
    return " ".join(text.split())


def _pair_straight_quotes(text: str) -> str:
    # Odd-numbered free-standing quotes open, even-numbered ones close; an unpaired last one
    # is left as it is.
    spots = [(m.start(), m.end()) for m in _STRAIGHT_QUOTE.finditer(text)]
    if len(spots) < 2:
        return text
    out: list[str] = []
    last = 0
    for n, (spot, end) in enumerate(spots[: len(spots) // 2 * 2]):
        out.append(text[last:spot])
        out.append("``" if n % 2 == 0 else "''")
        last = end
    out.append(text[last:])
    return "".join(out)


def text_before(text: str, marker: str) -> str:
    return text.split(marker, 1)[0].strip()


def text_after(text: str, marker: str) -> str:
    if marker not in text:
        raise TransformError(f"has no {marker!r} to take the text after")
    return text.split(marker, 1)[1].strip()


def replace_all(text: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        text = text.replace(old, new)
    return text


def step_function(step: Transform) -> Callable[[str], str]:
    """The function one transform applies to each string."""
    if step.op == "strip_calculator_annotations":
        return lambda text: CALCULATOR.sub("", text)
    if step.op == "text_before":
        marker = step.marker or ""
        return lambda text: text_before(text, marker)
    if step.op == "text_after":
        marker = step.marker or ""
        return lambda text: text_after(text, marker)
    if step.op == "detokenize":
        return detokenize
    if step.op == "replace":
        table = dict(step.map or {})
        return lambda text: replace_all(text, table)
    return lambda text: " ".join(text.split())


def _each_string(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_each_string(v, fn) for v in value]
    if isinstance(value, dict):  # a struct (DART's annotations): its strings, keys kept
        return {k: _each_string(v, fn) for k, v in value.items()}
    return value


Fields = dict[str, Any]


def compile_transforms(steps: Sequence[Transform]) -> Callable[[Fields], Fields]:
    """The steps as one function over a row's fields, each step's function built here, once
    (load calls it for every row of a source; building the steps per row was a cost per row).
    The function returns a new dict, leaves its input alone, and raises TransformError naming
    the op and field when a step cannot work on the row."""
    if not steps:
        return lambda fields: fields
    compiled = [
        (step.op, step.field, step.into or step.field, step_function(step)) for step in steps
    ]

    def run(fields: Fields) -> Fields:
        out = dict(fields)
        for op, field, into, fn in compiled:
            try:
                value = _each_string(out.get(field), fn)
            except TransformError as exc:
                raise TransformError(f"transform {op} of {field!r}: {exc}") from None
            out[into] = value
        return out

    return run


def apply_transforms(steps: Sequence[Transform], fields: Fields) -> Fields:
    """``fields`` with every step applied in order (a new dict; the input is left alone).
    Raises TransformError naming the op and field when a step cannot work on the row. For many
    rows, ``compile_transforms`` once and call its function per row."""
    return compile_transforms(steps)(fields)
