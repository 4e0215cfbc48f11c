"""How answer options are shown in a prompt, in the many styles the Flan Collection found to help.

A style is drawn per record from the recipe seed and stable ids. When a style puts markers in
front of the options (letters, numbers), the expected output can be the marker, the option text
or both, as the template's ``option_target`` says, and the block ends with a line that says
which (``locales.yaml`` ``answer_forms``).

Any number of choices can be shown: letters go on past Z the way spreadsheet columns do (``Z``,
``AA``, ``AB``, ... ``AZ``, ``BA``), numbers count on. Which styles a record may draw from is
decided by ``styles_for``: the recipe's styles, narrowed by the template's own
``option_styles``, less any style that does not suit the record's number of choices (``inline``
puts every choice on one line, unreadable past ``MAX_INLINE_CHOICES``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .models import OptionStyle as Style

# One line of "a; b; c" stops being readable somewhere past ten choices; longer lists get a
# style that puts one choice per line.
MAX_INLINE_CHOICES = 10


@dataclass(frozen=True)
class OptionsBlock:
    text: str  # what goes into the prompt
    targets: list[str]  # the expected output for each choice, in choice order


def letter_marker(index: int) -> str:
    """The letters for option ``index`` (0-based): A..Z, then AA..AZ, BA.. (bijective base 26,
    as spreadsheet columns), so no count of choices runs out of markers."""
    if index < 0:
        raise ValueError(f"no letter for option {index}")
    out = ""
    n = index + 1
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(ord("A") + r) + out
    return out


def style_applies(style: Style, n_choices: int) -> bool:
    """Whether ``style`` suits a record with ``n_choices`` choices (the documented rule)."""
    return not (style == "inline" and n_choices > MAX_INLINE_CHOICES)


def styles_for(
    recipe_styles: Sequence[Style],
    template_styles: Sequence[Style] | None,
    n_choices: int,
    language: str = "en",
) -> list[Style]:
    """The styles a record draws its style from, in a fixed order (so the draw is stable).

    1. the recipe's ``variants.option_styles``; a template that lists ``option_styles`` keeps
       only those of them, or, when the recipe has none of them, its own list (the template
       knows its choices: 151 intents may need ``numbers`` whatever the recipe prefers);
    2. less the styles that do not suit ``n_choices`` (``style_applies``) or the record's
       ``language`` (``flan`` writes FLAN's English ``OPTIONS:``, so only English records draw
       it), unless none would be left: the rule is about readability, never a reason to lose a
       record.
    """
    styles = list(recipe_styles)
    if template_styles:
        styles = [s for s in styles if s in template_styles] or list(template_styles)
    english = language.split("-")[0] == "en"
    fitting = [s for s in styles if style_applies(s, n_choices) and (english or s != "flan")]
    return fitting or styles


def format_options(
    choices: Sequence[str],
    style: Style,
    opening: str,
    target: Literal["text", "marker", "both"] = "text",
    answer_form: str = "",
) -> OptionsBlock:
    """The block for ``choices`` in ``style``. Lettered and numbered blocks end with
    ``answer_form``, the line saying whether to answer with the marker, the text or both (the
    record's target obeys ``target``): without it a reader cannot know which is wanted."""
    if style == "flan":
        # FLAN 2021's own layout, kept for comparison with its published mixtures.
        text = "OPTIONS:\n" + "\n".join(f"- {c}" for c in choices)
        return OptionsBlock(text, list(choices))
    if style == "dashes":
        return OptionsBlock(opening + "\n" + "\n".join(f"- {c}" for c in choices), list(choices))
    if style == "inline":
        return OptionsBlock(f"{opening} {'; '.join(choices)}.", list(choices))
    if style == "letters":
        markers = [f"({letter_marker(i)})" for i in range(len(choices))]
    else:
        markers = [f"{i + 1}." for i in range(len(choices))]
    lines = [f"{m} {c}" for m, c in zip(markers, choices, strict=True)]
    if target == "marker":
        targets = [m.strip("().") for m in markers]
    elif target == "both":
        targets = lines
    else:
        targets = list(choices)
    text = opening + "\n" + "\n".join(lines)
    return OptionsBlock(f"{text}\n{answer_form}" if answer_form else text, targets)


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def names_choice(folded: str, choice: str) -> bool:
    """Whether ``folded`` (a casefolded prompt) names ``choice`` as words of its own: "no" is
    not named by "nobody", nor "yes" by "eyesore". The renderer's ``_opt`` label and lint's
    choices check agree on this one test."""
    return _names(folded, choice, text_ends_are_edges=True)


def names_within(literal: str, choice: str) -> bool:
    """Whether ``literal`` (casefolded text a template always prints) names ``choice`` with
    both word edges inside it: then every prompt that holds ``literal`` names the choice, as
    ``names_choice`` judges it, whatever the data printed around it."""
    return _names(literal, choice, text_ends_are_edges=False)


def _names(text: str, choice: str, text_ends_are_edges: bool) -> bool:
    # str.find with the word-boundary test by hand: a regex per choice costs far more. The
    # ends of ``text`` count as word edges for a whole prompt, not for a piece of one.
    c, left, right = _folded_choice(choice)
    if not c:
        return True
    n, size = len(c), len(text)
    j = text.find(c)
    while j >= 0:
        before_ok = (j > 0 and not _is_word(text[j - 1])) or (j == 0 and text_ends_are_edges)
        after_ok = (
            (j + n < size and not _is_word(text[j + n])) or (j + n == size and text_ends_are_edges)
        )
        if (not left or before_ok) and (not right or after_ok):
            return True
        j = text.find(c, j + 1)
    return False


@functools.lru_cache(maxsize=4096)
def _folded_choice(choice: str) -> tuple[str, bool, bool]:
    """A choice as ``names_choice`` looks for it, and whether each end must be a word edge."""
    c = choice.strip().casefold()
    return (c, _is_word(c[0]), _is_word(c[-1])) if c else ("", False, False)
