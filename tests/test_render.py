"""Rendering: golden output for shipped templates, strict sandbox, seeded template choice."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline import RenderError, load_catalog, render_one
from pipeline.catalog import Template
from pipeline.load import Example, iter_rows, open_source
from pipeline.models import Recipe, TemplateSpec
from pipeline.render import Renderer

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("INSTRUCTMIX_UPDATE_GOLDEN") == "1"

# A few shipped templates of different shapes: options in the prompt, a multi-label join,
# a worked solution, an inverted template.
GOLDEN_CASES = [
    ("esnli", "premise-hypothesis-options"),
    ("esnli", "write-hypothesis"),
    ("go_emotions", None),
    ("gsm8k", None),
    ("banking77", None),
]


def _first_examples(catalog, name: str, n: int) -> list[Example]:  # type: ignore[no-untyped-def]
    source = catalog.source(name)
    out: list[Example] = []
    for split in open_source(source, "sample"):
        for batch in iter_rows(source, split, "sample"):
            out += [e for e in batch if isinstance(e, Example)]
            if len(out) >= n:
                return out[:n]
    return out


@pytest.mark.parametrize(("source_name", "template_id"), GOLDEN_CASES)
def test_golden_rendered_output(builtin_catalog, source_name: str, template_id: str | None) -> None:
    source = builtin_catalog.source(source_name)
    templates = builtin_catalog.templates_for(source_name)
    template = next(t for t in templates if t.id == template_id) if template_id else templates[0]
    rendered = [
        render_one(source, template, ex.fields, example_id=ex.example_id, split=ex.split)
        for ex in _first_examples(builtin_catalog, source_name, 3)
    ]
    golden = GOLDEN / f"{source_name}.{template.id}.json"
    text = json.dumps(rendered, indent=2, ensure_ascii=False) + "\n"
    if UPDATE or not golden.exists():
        if not UPDATE:
            pytest.fail(f"{golden} missing; rerun with INSTRUCTMIX_UPDATE_GOLDEN=1 and review it")
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def test_every_shipped_template_renders_the_first_sample_rows(builtin_catalog) -> None:
    for name, templates in builtin_catalog.templates.items():
        source = builtin_catalog.source(name)
        for ex in _first_examples(builtin_catalog, name, 20):
            for template in templates:
                record = render_one(source, template, ex.fields)
                assert record["messages"][-1]["content"].strip(), (name, template.id)
                choices = record["answer_choices"]
                if choices is not None:
                    assert record["messages"][-1]["content"] in choices, (name, template.id)


def _template(tmp_path: Path, **fields: object) -> Template:
    spec = TemplateSpec.model_validate({"id": "t", "instruction": "x", "output": "y", **fields})
    return Template(spec, "esnli", tmp_path / "user.yaml")


ESNLI_FIELDS = {
    "premise": "A man sleeps.",
    "hypothesis": "A man rests.",
    "label": 0,
    "explanation_1": "Sleeping is resting.",
}


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ premise.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ names.__class__.__base__.__subclasses__() }}",
        "{{ answer_choices.append('x') }}",
    ],
)
def test_sandbox_turns_escapes_into_rejects(builtin_catalog, tmp_path: Path, attack: str) -> None:
    source = builtin_catalog.source("esnli")
    template = _template(tmp_path, instruction=attack, answer_choices=["a", "b"])
    with pytest.raises(RenderError) as err:
        render_one(source, template, ESNLI_FIELDS)
    assert err.value.rule in {"sandbox", "undefined"}
    assert str(err.value).startswith(f"{tmp_path / 'user.yaml'}: template 't': instruction:")


def test_misspelt_field_is_an_error_not_empty_text(builtin_catalog, tmp_path: Path) -> None:
    source = builtin_catalog.source("esnli")
    template = _template(tmp_path, instruction="Premise: {{ premis }}")
    with pytest.raises(RenderError) as err:
        render_one(source, template, ESNLI_FIELDS)
    assert err.value.rule == "undefined"
    assert "'premis' is undefined" in str(err.value)


def test_syntax_error_names_file_template_and_line(builtin_catalog, tmp_path: Path) -> None:
    source = builtin_catalog.source("esnli")
    template = _template(tmp_path, output="ok\n{% if label %}yes")
    with pytest.raises(RenderError) as err:
        render_one(source, template, ESNLI_FIELDS)
    assert err.value.rule == "template_syntax"
    assert str(err.value).startswith(f"{tmp_path / 'user.yaml'}: template 't': line 2 of its Jinja")


def test_answer_choices_as_jinja_string_split_on_bars(builtin_catalog, tmp_path: Path) -> None:
    source = builtin_catalog.source("esnli")
    template = _template(
        tmp_path,
        instruction="{{ premise }}",
        input="{{ hypothesis }}",
        output="{{ answer_choices[label] }}",
        answer_choices="Yes ||| Maybe ||| {{ 'No' }}",
        system="Be brief.",
    )
    record = render_one(source, template, ESNLI_FIELDS)
    assert record["answer_choices"] == ["Yes", "Maybe", "No"]
    assert record["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "A man sleeps.\n\nA man rests."},
        {"role": "assistant", "content": "Yes"},
    ]


def test_k_templates_per_example_depend_on_seed_and_id_only(builtin_catalog) -> None:
    source = builtin_catalog.source("esnli")
    templates = builtin_catalog.templates_for("esnli")
    recipe = Recipe(name="r", sources=["esnli"], templates_per_example=2, seed=3)
    renderer = Renderer(source, templates, recipe)
    examples = _first_examples(builtin_catalog, "esnli", 50)
    forward = {e.example_id: [c.id for c in renderer.choose(e)] for e in examples}
    backward = {e.example_id: [c.id for c in renderer.choose(e)] for e in reversed(examples)}
    assert forward == backward
    assert all(len(v) == 2 for v in forward.values())
    assert len({tuple(v) for v in forward.values()}) > 3  # the draw does vary by example
    other = Renderer(source, templates, recipe.model_copy(update={"seed": 4}))
    assert forward != {e.example_id: [c.id for c in other.choose(e)] for e in examples}


def test_user_template_folder_overrides_nothing_but_adds(user_catalog: Path) -> None:
    catalog = load_catalog([user_catalog / "sources"], [user_catalog / "templates"])
    source = catalog.source("mini_nli")
    t = catalog.templates_for("mini_nli")[1]
    record = render_one(source, t, {"premise": "P.", "hypothesis": "H.", "label": 2})
    assert record["variant"] == "inverted"
    assert record["messages"][0]["content"] == "Write a claim that is contradiction given: P."
