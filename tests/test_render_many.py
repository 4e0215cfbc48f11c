"""The render stage's loop (``Renderer.render_many``) makes what ``Renderer.render`` makes.

``render_many`` builds the common record (zero-shot, a template whose texts are pure
substitution) inline and sends every other one through ``render_with``. Held here to ``render``
record for record and error for error: on every shipped source and template with the recipes a
run uses, and on planted templates whose records leave the loop part way (an undefined name, no
gold answer, a lone surrogate, a broken '|||' split, seeded helpers, translations).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from pipeline.catalog import Catalog, Source, Template
from pipeline.columns import RecordColumns
from pipeline.load import Example
from pipeline.models import Recipe, TemplateSpec
from pipeline.preview import sample_examples
from pipeline.render import Rendered, Renderer, RenderError

Row = tuple[Any, ...]


class Sink(RecordColumns):
    """The part's columns, as the stage fills them, and each record as one comparable row;
    ``inline`` counts the records the loop built itself (not through ``add``)."""

    def __init__(self, source: Source) -> None:
        super().__init__(source)
        self.rows: list[Row] = []
        self.inline = 0
        self._adding = False

    def add(self, example: Example, rendered: Rendered) -> None:
        self._adding = True
        try:
            super().add(example, rendered)
        finally:
            self._adding = False

    def add_turns(self, example: Example, *parts: Any) -> None:
        super().add_turns(example, *parts)
        self.inline += not self._adding
        template_id, variant, system, turns, choices, gold = parts
        rendered = Rendered(template_id, variant, system, list(turns), choices, gold)
        self.rows.append(_row(example, rendered))


def _row(example: Example, r: Rendered) -> Row:
    return (example.example_id, r.template_id, r.variant, r.system, r.turns, r.answer_choices,
            r.gold_answers)  # fmt: skip


def _error(example: Example, e: RenderError) -> Row:
    return (example.example_id, e.template_id, e.rule, str(e))


def both_ways(renderer: Renderer, examples: list[Example]) -> tuple[Sink, list[Row], list[Row]]:
    """(the sink render_many filled, its errors, what render gives as rows then errors); the
    part's table from either way is the same too."""
    sink = Sink(renderer.source)
    errors = [_error(e, x) for e, x in renderer.render_many(examples, sink)]
    reference = RecordColumns(renderer.source)
    rows: list[Row] = []
    expected_errors: list[Row] = []
    for example in examples:
        for result in renderer.render(example):
            if isinstance(result, RenderError):
                expected_errors.append(_error(example, result))
            else:
                rows.append(_row(example, result))
                reference.add(example, result)
    assert sink.rows == rows
    assert errors == expected_errors
    assert sink.table().equals(reference.table())
    return sink, errors, rows


def _recipe(**fields: Any) -> Recipe:
    return Recipe.model_validate({"name": "many", "sources": ["x"], "seed": 5, **fields})


RECIPES = {
    # The benchmark's and many users' recipe: every template, zero-shot, options drawn.
    "zero_shot": _recipe(
        templates_per_example="all", variants={"zero_shot": 1, "few_shot": 0, "cot": 0,
                                               "options_shown": 0.5}),
    # What the default recipe draws: every form, a few templates per example, eval examples
    # posed by the templates that pose their task.
    "every_form": _recipe(
        templates_per_example=3, eval_templates="original_task",
        variants={"zero_shot": 0.4, "few_shot": 0.3, "cot": 0.2, "few_shot_cot": 0.1,
                  "options_shown": 0.5}),
    "options_always": _recipe(
        templates_per_example=2, variants={"zero_shot": 1, "few_shot": 0, "cot": 0,
                                           "options_shown": 1}),
}  # fmt: skip


def _examples(catalog: Catalog, source: str) -> list[Example]:
    # Every third one held out for evaluation, so eval's template choice is exercised too.
    examples = sample_examples(catalog, source, 30)
    return [
        dataclasses.replace(e, out_split="eval") if i % 3 == 2 else e
        for i, e in enumerate(examples)
    ]


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_the_loop_makes_what_render_makes_on_every_shipped_source(
    builtin_catalog: Catalog, recipe: str
) -> None:
    inline = 0
    for name in builtin_catalog.sources:
        examples = _examples(builtin_catalog, name)
        pool = [e for e in examples if e.out_split == "train"]
        source = builtin_catalog.source(name)
        renderer = Renderer(source, builtin_catalog.templates_for(name), RECIPES[recipe], pool)
        sink, _, rows = both_ways(renderer, examples)
        assert rows, name
        inline += sink.inline
    # The comparison is of the loop's own records, not only of render_with's.
    assert inline > 500


ESNLI = [
    {"premise": "A man sleeps.", "hypothesis": "A man rests.", "label": 0,
     "explanation_1": "Sleeping is resting."},
    {"premise": "Two dogs run.", "hypothesis": "Cats sleep.", "label": 2,
     "explanation_1": "Dogs are not cats."},
    {"premise": "A café in Zürich.", "hypothesis": "A place.", "label": 1,
     "explanation_1": "It is a place."},
    # A lone surrogate in the data itself: every record of it is rejected, loop or not.
    {"premise": "Half a pair: \ud83d.", "hypothesis": "A place.", "label": 1,
     "explanation_1": "No."},
]  # fmt: skip

PLANTED: dict[str, dict[str, Any]] = {
    "undefined_name": {"instruction": "{{ premise }} {{ no_such_field }}"},
    "undefined_in_output": {"instruction": "{{ premise }}", "output": "{{ missing }}"},
    "no_gold": {"instruction": "{{ premise }}", "output": "{{ hypothesis }}",
                "gold_answers": "{{ '' }}"},
    "gold": {"instruction": "{{ premise }}", "output": "{{ hypothesis }}",
             "gold_answers": "{{ hypothesis }}|||{{ premise }}"},
    "surrogate_in_data_path": {"instruction": "{{ premise ~ '\\ud800' }}"},
    "surrogate_literal": {"instruction": "{{ premise }}", "output": "{{ '\\udfff' }}"},
    "seeded_helper": {"instruction": "{{ choice(['a', 'b', 'c']) }} {{ premise }}",
                      "output": "{{ hypothesis }}"},
    "rendered_choices": {"instruction": "{{ premise }}", "output": "{{ hypothesis }}",
                         "answer_choices": "{{ hypothesis }}|||{{ premise }}"},
    "literal_choices": {"instruction": "{{ premise }}\n{{ hypothesis }}",
                        "output": "{{ answer_choices[label] }}",
                        "answer_choices": ["yes", "maybe", "no"]},
    "non_ascii_choices": {"instruction": "{{ premise }}", "output": "{{ answer_choices[label] }}",
                          "answer_choices": ["oui", "peut-être", "non"]},
    "options_placed": {"instruction": "{{ premise }}\n{{ options }}",
                       "output": "{{ answer_choices[label] }}",
                       "answer_choices": ["yes", "maybe", "no"]},
    "choices_in_prompt": {"instruction": "{{ premise }} Yes, maybe or no?",
                          "output": "{{ answer_choices[label] }}",
                          "answer_choices": ["yes", "maybe", "no"],
                          "metadata": {"choices_in_prompt": True}},
    "jinja_form": {"instruction": None, "output": None,
                   "jinja": "{{ premise }} ||| {{ answer_choices[label] }}",
                   "answer_choices": ["yes", "maybe", "no"]},
    "jinja_two_bars": {"instruction": None, "output": None,
                       "jinja": "{{ premise }} ||| {{ hypothesis }} ||| x"},
    "system": {"instruction": "{{ premise }}", "system": "Answer briefly about {{ hypothesis }}."},
    "empty_input": {"instruction": "{{ premise }}", "input": "{{ '' }}"},
    "loop_not_bounded": {"instruction": "{% for w in premise.split() %}{{ w }} {% endfor %}"},
    "translated": {"instruction": "{{ premise }}",
                   "translations": {"fi": {"instruction": "Lause: {{ premise }}"}}},
}  # fmt: skip


def _planted(tmp_path: Path) -> list[Template]:
    out = []
    for i, (name, fields) in enumerate(PLANTED.items()):
        spec = TemplateSpec.model_validate(
            {"id": f"{i:02d}-{name}", "instruction": "x", "output": "y", **fields}
        )
        out.append(Template(spec, "esnli", tmp_path / "planted.yaml"))
    return out


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_records_that_leave_the_loop_come_out_as_render_makes_them(
    builtin_catalog: Catalog, tmp_path: Path, recipe: str
) -> None:
    source: Source = builtin_catalog.source("esnli")
    examples = [
        Example(f"ex-{i}", "train", fields, "(test)", out_split="eval" if i == 2 else "train",
                language="fi" if i == 1 else "")
        for i, fields in enumerate(ESNLI)
    ]  # fmt: skip
    templates = _planted(tmp_path)
    renderer = Renderer(source, templates, RECIPES[recipe], examples)
    sink, errors, _ = both_ways(renderer, examples)
    assert sink.inline > 0
    assert {rule for *_, rule, _ in errors} >= (
        {"undefined", "no_gold_answer", "bad_text", "render_error"} if recipe == "zero_shot"
        else {"undefined"}
    )  # fmt: skip
