"""Rendering: golden output for shipped templates, strict sandbox, seeded template choice."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline import RenderError, load_catalog, render_one
from pipeline.catalog import Template
from pipeline.load import Example
from pipeline.locales import locale_for
from pipeline.models import Recipe, TemplateSpec
from pipeline.preview import sample_examples
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
    ("nq_open", "answer-question"),  # gold answers: one drawn, all listed
    ("comve", "pick-letter"),  # options shuffled by seed, the letter as target
]


def _first_examples(catalog, name: str, n: int) -> list[Example]:  # type: ignore[no-untyped-def]
    return sample_examples(catalog, name, n)


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
    record = render_one(source, template, ESNLI_FIELDS, variant="zero_shot_noopt")
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


# --------------------------------------------------------------------------- variants


def _recipe(**variants: object) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "r",
            "sources": ["esnli"],
            "seed": 11,
            "variants": variants,
            "few_shot": {"k": 3, "max_chars": 2000},
        }
    )


def test_lettered_options_with_marker_targets(builtin_catalog, tmp_path: Path) -> None:
    source = builtin_catalog.source("esnli")
    recipe = _recipe(option_styles=["letters"])
    marker = _template(
        tmp_path,
        instruction="{{ premise }}",
        output="{{ answer_choices[label] }}",
        answer_choices=["yes", "maybe", "no"],
        option_target="marker",
    )
    record = render_one(source, marker, {**ESNLI_FIELDS, "label": 1}, recipe=recipe)
    user = record["messages"][0]["content"]
    assert user.startswith("A man sleeps.\n\n")
    block, form = user.rsplit("\n", 1)
    assert block.endswith("\n(A) yes\n(B) maybe\n(C) no")
    assert form in locale_for("en").answer_forms["letters"]["marker"]  # "the letter only"
    assert record["messages"][1]["content"] == "B"
    assert record["answer_choices"] == ["A", "B", "C"]
    assert record["variant"] == "zero_shot_opt"
    both = _template(
        tmp_path,
        instruction="{{ premise }}",
        output="{{ answer_choices[label] }}",
        answer_choices=["yes", "maybe", "no"],
        option_target="both",
    )
    assert render_one(source, both, ESNLI_FIELDS, recipe=recipe)["messages"][1]["content"] == (
        "(A) yes"
    )


def test_options_placeholder_and_hidden_options(builtin_catalog, tmp_path: Path) -> None:
    source = builtin_catalog.source("esnli")
    template = _template(
        tmp_path,
        instruction="Q: {{ premise }}\n{{ options }}\nA:",
        output="{{ answer_choices[label] }}",
        answer_choices=["yes", "no"],
    )
    shown = render_one(source, template, ESNLI_FIELDS, recipe=_recipe(option_styles=["flan"]))
    assert shown["messages"][0]["content"] == "Q: A man sleeps.\nOPTIONS:\n- yes\n- no\nA:"
    hidden = render_one(source, template, ESNLI_FIELDS, variant="zero_shot_noopt")
    assert hidden["messages"][0]["content"] == "Q: A man sleeps.\n\nA:"
    assert hidden["variant"] == "zero_shot_noopt"


def test_options_shown_share_is_respected(builtin_catalog) -> None:
    source = builtin_catalog.source("paws")
    templates = [t for t in builtin_catalog.templates_for("paws") if t.id == "same-meaning-yes-no"]
    recipe = Recipe.model_validate(
        {"name": "r", "sources": ["paws"], "variants": {"options_shown": 0.3}}
    )
    renderer = Renderer(source, templates, recipe)
    examples = _first_examples(builtin_catalog, "paws", 400)
    variants = [
        r.variant for e in examples for r in renderer.render(e) if not isinstance(r, RenderError)
    ]
    share = variants.count("zero_shot_opt") / len(variants)
    assert 0.22 < share < 0.38


def test_few_shot_exemplars_never_the_example_and_seeded(builtin_catalog) -> None:
    source = builtin_catalog.source("esnli")
    templates = [
        t for t in builtin_catalog.templates_for("esnli") if t.id == "relation-label-question"
    ]
    pool = _first_examples(builtin_catalog, "esnli", 60)
    recipe = _recipe(zero_shot=0, few_shot=1)
    forward = Renderer(source, templates, recipe, pool)
    backward = Renderer(source, templates, recipe, list(reversed(pool)))
    for example in pool[:20]:
        (a,) = forward.render(example)
        (b,) = backward.render(example)
        assert not isinstance(a, RenderError) and not isinstance(b, RenderError)
        assert a.variant == "few_shot_opt"
        ((user, output),) = a.turns
        # Each exemplar and the query are marked by the record's few-shot pattern.
        fits = [
            p
            for p in locale_for("en").few_shot_patterns
            if user.startswith(p.input) and user.endswith("\n" + p.answer.rstrip())
        ]
        pattern = max(fits, key=lambda p: len(p.input))
        blocks = user[len(pattern.input) :].split(pattern.separator + pattern.input)
        assert 2 <= len(blocks) <= 4  # up to k=3 exemplars, then the example itself
        own = forward._single(
            example, forward.templates[0], forward.draw(example, forward.templates[0])
        )
        assert blocks[-1] == own[0] + "\n" + pattern.answer.rstrip() and output == own[1]
        assert not any(b.startswith(own[0] + "\n") for b in blocks[:-1])  # never the example
        assert len(set(blocks)) == len(blocks)  # nor a duplicate
        assert len(user) + len(output) <= 2000
        # Exemplars come from the pool by seeded draw: the pool's order changes nothing...
        assert a.turns == b.turns


def test_few_shot_multi_turn_alternates(builtin_catalog) -> None:
    source = builtin_catalog.source("esnli")
    template = builtin_catalog.templates_for("esnli")[0]
    pool = _first_examples(builtin_catalog, "esnli", 30)
    recipe = Recipe.model_validate(
        {
            "name": "r",
            "sources": ["esnli"],
            "variants": {"zero_shot": 0, "few_shot": 1},
            "few_shot": {"k": 2, "format": "multi_turn"},
        }
    )
    record = render_one(
        source,
        template,
        pool[0].fields,
        recipe=recipe,
        pool=pool,
        example_id=pool[0].example_id,
        split=pool[0].split,
    )
    roles = [m["role"] for m in record["messages"]]
    assert roles == ["user", "assistant"] * 3
    assert record["variant"].startswith("few_shot")


def test_chain_of_thought_shape(builtin_catalog) -> None:
    source = builtin_catalog.source("gsm8k")
    template = next(t for t in builtin_catalog.templates_for("gsm8k") if t.spec.cot)
    ex = _first_examples(builtin_catalog, "gsm8k", 1)[0]
    record = render_one(source, template, ex.fields, variant="cot")
    assert record["variant"] == "cot"
    answer = record["messages"][-1]["content"]
    # Rationale (the worked solution without its '#### 18' line), a blank line, the answer.
    assert answer.endswith("\n\nSo the answer is: 18")
    assert "####" not in answer and answer.startswith("Janet sells 16 - 3 - 4")


def test_seeded_helpers_ignore_the_global_random(builtin_catalog, tmp_path: Path) -> None:
    import random

    source = builtin_catalog.source("esnli")
    template = _template(
        tmp_path,
        instruction="{{ choice(['a', 'b', 'c', 'd', 'e', 'f']) }} "
        "{{ shuffle([1, 2, 3, 4, 5]) | join(',') }}",
    )
    seen = set()
    for global_seed in range(5):
        random.seed(global_seed)
        seen.add(render_one(source, template, ESNLI_FIELDS)["messages"][0]["content"])
    assert len(seen) == 1
    other = [
        render_one(source, template, ESNLI_FIELDS, example_id=str(i))["messages"][0]["content"]
        for i in range(20)
    ]
    assert len(set(other)) > 1  # ...but it does vary with the example


def test_promptsource_style_jinja_form(builtin_catalog, tmp_path: Path) -> None:
    source = builtin_catalog.source("esnli")
    spec = TemplateSpec.model_validate(
        {
            "id": "ps",
            "jinja": "{% set p = premise %}{{ p }} Right? ||| {{ answer_choices[label] }}",
            "answer_choices": "Yes ||| Maybe ||| No",
        }
    )
    record = render_one(
        source,
        Template(spec, "esnli", tmp_path / "ps.yaml"),
        ESNLI_FIELDS,
        variant="zero_shot_noopt",
    )
    assert [m["content"] for m in record["messages"]] == ["A man sleeps. Right?", "Yes"]


def test_truncation_and_list_filters(builtin_catalog, tmp_path: Path) -> None:
    source = builtin_catalog.source("esnli")
    template = _template(
        tmp_path,
        instruction="{{ premise | truncate_chars(9) }}|"
        "{{ ['x', 'y', 'z'] | or_list }}|{{ hypothesis | truncate_words(2) }}",
    )
    content = render_one(source, template, ESNLI_FIELDS)["messages"][0]["content"]
    assert content == "A man...|x, y or z|A man..."
