"""How answer options are shown in a prompt, in the many styles the Flan Collection found to help.

A style is drawn per record from the recipe seed and stable ids. When a style puts markers in
front of the options (letters, numbers), the expected output can be the marker, the option text
or both, as the template's ``option_target`` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .helpers import letter
from .models import OptionStyle as Style

# Our own phrasings of the line that introduces the options.
OPENINGS = (
    "Options:",
    "Choose from:",
    "Possible answers:",
    "Pick one of these:",
    "Answer with one of the following:",
    "Select one:",
    "The choices are:",
    "Which is it?",
)


@dataclass(frozen=True)
class OptionsBlock:
    text: str  # what goes into the prompt
    targets: list[str]  # the expected output for each choice, in choice order


def format_options(
    choices: Sequence[str],
    style: Style,
    opening: str,
    target: Literal["text", "marker", "both"] = "text",
) -> OptionsBlock:
    if style == "flan":
        # FLAN 2021's own layout, kept for comparison with its published mixtures.
        text = "OPTIONS:\n" + "\n".join(f"- {c}" for c in choices)
        return OptionsBlock(text, list(choices))
    if style == "dashes":
        return OptionsBlock(opening + "\n" + "\n".join(f"- {c}" for c in choices), list(choices))
    if style == "inline":
        return OptionsBlock(f"{opening} {'; '.join(choices)}.", list(choices))
    if style == "letters":
        markers = [f"({letter(i)})" for i in range(len(choices))]
    else:
        markers = [f"{i + 1}." for i in range(len(choices))]
    lines = [f"{m} {c}" for m, c in zip(markers, choices, strict=True)]
    if target == "marker":
        targets = [m.strip("().") for m in markers]
    elif target == "both":
        targets = lines
    else:
        targets = list(choices)
    return OptionsBlock(opening + "\n" + "\n".join(lines), targets)
