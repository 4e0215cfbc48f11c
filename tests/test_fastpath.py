"""Pure-substitution templates skip Jinja: the same text, the same errors, the same limits.

``compile_text`` renders a text that is only literals, names, ``a.b``, ``a[k]`` and context-free
filters as plain string building (``pipeline.fastpath``); ``compile_text(..., fast=False)`` is
the Jinja render it replaces, the reference every case here is compared against.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable
from typing import Any

import jinja2
import pytest
from markupsafe import Markup

from pipeline import fastpath, sandbox
from pipeline.catalog import Catalog, Template
from pipeline.lint import load_examples
from pipeline.models import Recipe, TemplateSpec, TemplateText
from pipeline.preview import sample_examples
from pipeline.render import (
    CHOICE_SEPARATOR,
    Rendered,
    Renderer,
    compile_text,
    make_environment,
    rule_of,
    template_context,
)

Outcome = tuple[str, ...]

ENV = make_environment()
CONTEXT: dict[str, Any] = {
    "premise": "A man plays a guitar.",
    "hypothesis": "Someone makes music.",
    "label": 1,
    "answer_choices": ["yes", "maybe", "no"],
    "names": {"label": "neutral"},
    "answers": {"text": ["Paris", "the capital"], "answer_start": [0, 9]},
    "example": {"A-coref": True, "premise": "A man plays a guitar."},
    "options": "",
}


def outcome(fn: Callable[[dict[str, Any]], str], context: Any) -> Outcome:
    """What a render gives: its text, or its exception's class, message and reject rule."""
    try:
        return ("text", fn(context))
    except Exception as exc:
        return (type(exc).__name__, str(exc), rule_of(exc))


def both_ways(text: str, context: Any = None) -> tuple[Outcome, Outcome]:
    context = CONTEXT if context is None else context
    fast = outcome(compile_text(ENV, text), context)
    return fast, outcome(compile_text(ENV, text, fast=False), context)


# --------------------------------------------------------------------------- every shipped text


def _texts(spec: TemplateSpec | TemplateText) -> list[tuple[str, str]]:
    """(part, text) of every text of a template (or of one of its translations)."""
    out = [
        (part, text)
        for part in ("instruction", "input", "output", "system", "jinja")
        if (text := getattr(spec, part)) is not None
    ]
    for part in ("answer_choices", "gold_answers"):
        value = getattr(spec, part, None)
        if isinstance(value, str):
            out.append((part, value))
        elif value is not None:
            out += [(part, c) for c in value]
    return out


def _rendered_list(
    renders: list[Callable[[dict[str, Any]], str]], context: dict[str, Any]
) -> list[str] | None:
    """Choices or gold answers as the renderer makes them (by Jinja), or None."""
    if not renders:
        return None
    try:
        rendered = [render(context) for render in renders]
    except Exception:
        return None
    if len(rendered) == 1:
        rendered = rendered[0].split(CHOICE_SEPARATOR)
    return [r.strip() for r in rendered]


def _is_jinja(text: str) -> bool:
    return any(token in text for token in ("{{", "{%", "{#"))


def test_every_shipped_text_renders_the_same_on_every_sample_row(
    builtin_catalog: Catalog,
) -> None:
    """Every text of every shipped template (its translations too) on every bundled sample row
    of its source: the fast path's text or exception is Jinja's, in the contexts the renderer
    builds: choices and gold answers on the example's fields; the prompt texts with the
    template's ``answer_choices``, an ``options`` block and ``gold_answer`` added."""
    fast_texts: set[str] = set()
    jinja_texts: set[str] = set()
    compared = errors = 0
    for name, templates in sorted(builtin_catalog.templates.items()):
        source = builtin_catalog.source(name)
        contexts = [template_context(source, ex) for ex in load_examples(source)]
        assert contexts, name
        # Texts grouped by the choices and gold answers they are rendered with, so a text that
        # several templates share is rendered once per distinct context.
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], set[tuple[str, str]]] = {}
        for template in templates:
            # A translation replaces the fields it gives (as Renderer.localized lays it over).
            specs = [template.spec] + [
                template.spec.model_copy(
                    update={k: v for k, v in text.model_dump().items() if v is not None}
                )
                for text in template.spec.translations.values()
            ]
            for spec in specs:
                texts = _texts(spec)
                key = (
                    tuple(t for p, t in texts if p == "answer_choices"),
                    tuple(t for p, t in texts if p == "gold_answers"),
                )
                groups.setdefault(key, set()).update((p, t) for p, t in texts if _is_jinja(t))
        for (choice_texts, gold_texts), pairs in groups.items():
            compiled = [
                (part, text, compile_text(ENV, text), compile_text(ENV, text, fast=False))
                for part, text in sorted(pairs)
            ]
            for _, text, _, _ in compiled:
                has_plan = fastpath.plan(ENV, text) is not None
                (fast_texts if has_plan else jinja_texts).add(text)
            choice_renders = [compile_text(ENV, t, fast=False) for t in choice_texts]
            gold_renders = [compile_text(ENV, t, fast=False) for t in gold_texts]
            for base in contexts:
                choices = _rendered_list(choice_renders, base)
                gold = _rendered_list(gold_renders, base)
                full = {
                    **base,
                    "answer_choices": choices,
                    "options": "Options:\n- " + "\n- ".join(choices or []),
                }
                if gold:
                    full.update(gold_answers=gold, gold_answer=gold[0])
                for part, text, fast, slow in compiled:
                    context = base if part in ("answer_choices", "gold_answers") else full
                    got, want = outcome(fast, context), outcome(slow, context)
                    assert got == want, (name, part, text)
                    compared += 1
                    errors += got[0] != "text"
    # Most shipped Jinja texts are pure substitution; the rest (conditions, loops, slices,
    # calls) stay with Jinja.
    assert len(fast_texts) >= 200, len(fast_texts)
    assert len(fast_texts) > 1.5 * len(jinja_texts)
    assert "{{ premise }}" in fast_texts
    assert "{{ answer_choices[label] }}" in fast_texts
    assert compared > 100_000
    assert errors > 0  # some rows lack a field a template (or a translation) names


def test_the_catalog_renders_the_same_records_without_the_fast_path(
    builtin_catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records and rejects of every shipped template on the first sample rows, zero-shot,
    few-shot and chain-of-thought, options shown or not: identical with the fast path and
    with Jinja only."""

    def render_all() -> list[Any]:
        out: list[Any] = []
        for name, templates in sorted(builtin_catalog.templates.items()):
            source = builtin_catalog.source(name)
            recipe = Recipe.model_validate(
                {
                    "name": "fastpath",
                    "sources": [name],
                    "variants": {"zero_shot": 1, "few_shot": 1, "cot": 1, "options_shown": 0.5},
                }
            )
            examples = sample_examples(builtin_catalog, name, 25)
            renderer = Renderer(source, templates, recipe, examples)
            for example in examples:
                for r in renderer.render(example):
                    out.append(r if isinstance(r, Rendered) else (r.rule, str(r), r.template_id))
        return out

    with_fast_path = render_all()
    monkeypatch.setattr(fastpath, "plan", lambda *args, **kwargs: None)
    assert render_all() == with_fast_path
    variants = {r.variant for r in with_fast_path if isinstance(r, Rendered)}
    assert {"zero_shot_opt", "zero_shot_noopt", "few_shot_opt", "cot", "inverted"} <= variants
    assert any(isinstance(r, tuple) for r in with_fast_path)  # rejects are compared too


# --------------------------------------------------------------------------- the subset


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "P: {{ premise }}\nH: {{ hypothesis }}",
            "P: A man plays a guitar.\nH: Someone makes music.",
        ),
        ("{{ names.label }}", "neutral"),
        ("{{ names['label'] }}", "neutral"),
        ("{{ answer_choices[0] }} / {{ answer_choices.2 }}", "yes / no"),
        ("{{ answer_choices[label] }}", "maybe"),
        ("{{ answers.text[0] }} at {{ answers['answer_start'][0] }}", "Paris at 0"),
        ("{{ example['A-coref'] }}", "True"),
        ("{# a note #}  {{- premise -}}  ", "A man plays a guitar."),
        ("{{ answers.text | join(' ||| ') }}", "Paris ||| the capital"),
        ("{{ premise | lower | replace('a ', 'one ') }}", "one man plays one guitar."),
        ("{{ '  x  ' | trim }}{{ names.label | upper }}", "xNEUTRAL"),
        ("{{ answer_choices | first }}", "yes"),
        ("{{ premise | truncate(9, killwords=True, leeway=0) }}", "A man ..."),
        ("{{ 'literal' }} {{ 3 }}", "literal 3"),
        # Conditions, comparisons and displays: plain Python in Jinja's code too.
        ("{% if label == 1 %}maybe{% endif %}", "maybe"),
        (
            "{% if label == 0 %}follows{% elif label == 1 %}may be {{ names.label }}"
            "{% else %}contradicts{% endif %}.",
            "may be neutral.",
        ),
        (
            "{% if label != 1 %}{{ missing }}{% else %}{{ premise }}{% endif %}",
            "A man plays a guitar.",
        ),
        ("{{ answer_choices[1 if label == 2 else 0] }}", "yes"),
        ("{{ 'a' if label > 0 and not options else 'b' }}", "a"),
        ("{{ 0 < label <= 1 }} {{ 2 < label < missing }}", "True False"),
        ("{{ 'yes' in answer_choices }} {{ 'x' not in premise }}", "True True"),
        ("{{ label == 1 or missing }}", "True"),
        (
            "{{ {'a': 1}['a'] }} {{ [premise, hypothesis] | join(' / ') }}",
            "1 A man plays a guitar. / Someone makes music.",
        ),
        ("{{ (1, label) }}{% if label %}{{ answer_choices | first }}{% endif %}", "(1, 1)yes"),
        ("{% if premise | length > 3 %}long{% endif %}", "long"),
    ],
)
def test_pure_substitution_takes_the_fast_path(text: str, expected: str) -> None:
    assert fastpath.plan(ENV, text) is not None
    fast, jinja = both_ways(text)
    assert fast == jinja == ("text", expected)


@pytest.mark.parametrize(
    "text",
    [
        "{{ 'x' if label == 1 }}",  # no else: Jinja builds its own undefined
        "{% if premise is defined %}x{% endif %}",
        "{% if label == 1 %}{% set x = 1 %}{% endif %}",
        "{{ premise ~ hypothesis }}",
        "{{ premise + '!' }}",
        "{{ premise[:5] }}",
        "{{ answer_choices[-1] }}",
        "{{ premise.upper() }}",
        "{{ letter(0) }}",
        "{{ premise is defined }}",
        "{% for c in answer_choices %}{{ c }}{% endfor %}",
        "{% set x = premise %}{{ x }}",
        "{{ answer_choices | select('in', ['yes']) | first }}",  # select takes the Context
        "{{ answer_choices | map('upper') | join }}",
        "{{ answer_choices | random }}",  # the record's own generator, from the Context
        "{{ self }}",  # Jinja binds it to the template, not the context
    ],
)
def test_everything_else_stays_with_jinja(text: str) -> None:
    assert fastpath.plan(ENV, text) is None
    fast, jinja = both_ways(text)
    assert fast == jinja


def test_only_make_environment_s_settings_take_the_fast_path() -> None:
    text = "{{ premise }}"
    assert fastpath.plan(ENV, text) is not None
    assert fastpath.plan(jinja2.Environment(), text) is None
    escaping = sandbox.Sandbox(undefined=jinja2.StrictUndefined, autoescape=True)
    assert fastpath.plan(escaping, text) is None
    assert compile_text(escaping, "{{ x }}")({"x": "<b>"}) == "&lt;b&gt;"


def test_syntax_errors_and_unknown_filters_are_jinja_s() -> None:
    for text in ("{{ premise", "{{ premise | no_such_filter }}"):
        with pytest.raises(jinja2.TemplateSyntaxError) as fast:
            compile_text(ENV, text)
        with pytest.raises(jinja2.TemplateSyntaxError) as slow:
            compile_text(ENV, text, fast=False)
        assert (type(fast.value), str(fast.value)) == (type(slow.value), str(slow.value))


# --------------------------------------------------------------------------- values and errors


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "None"),
        (3, "3"),
        (-2.5, "-2.5"),
        (1e20, "1e+20"),
        (True, "True"),
        ("", ""),
        ([1, "a", None], "[1, 'a', None]"),
        ({"k": [1.5]}, "{'k': [1.5]}"),
        ((1, 2), "(1, 2)"),
        (Markup("<b>x</b>"), "<b>x</b>"),
        ("zürich 東京", "zürich 東京"),
    ],
)
def test_values_print_as_jinja_prints_them(value: Any, text: str) -> None:
    context = {**CONTEXT, "v": value, "box": {"v": value}, "items": [value]}
    for template in ("{{ v }}", "[{{ box.v }}]", "{{ items[0] }}!"):
        fast, jinja = both_ways(template, context)
        assert fast == jinja
    assert both_ways("{{ v }}", context)[0] == ("text", text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ nope }}", "'nope' is undefined"),
        ("P: {{ premise }} {{ nope }}", "'nope' is undefined"),
        ("{{ names.nope }}", "'dict object' has no attribute 'nope'"),
        ("{{ names['nope'] }}", "'dict object' has no attribute 'nope'"),
        ("{{ answer_choices[7] }}", "list object has no element 7"),
        ("{{ nope.label }}", "'nope' is undefined"),
        ("{{ names.nope.deeper }}", "'dict object' has no attribute 'nope'"),
        ("{{ names[nope] }}", "'nope' is undefined"),
        ("{{ nope | join(', ') }}", "'nope' is undefined"),
        ("{{ premise.nope }}", "'str object' has no attribute 'nope'"),
        ("{% if nope %}x{% endif %}", "'nope' is undefined"),
        ("{% if label == 0 %}a{% elif nope == 1 %}b{% endif %}", "'nope' is undefined"),
        ("{% if label %}{{ premise }} {{ nope }}{% endif %}", "'nope' is undefined"),
        ("{{ 'a' if nope < 1 else 'b' }}", "'nope' is undefined"),
        ("{{ label > 0 and names.nope }}", "'dict object' has no attribute 'nope'"),
    ],
)
def test_undefined_is_the_sandbox_s_strict_error(text: str, message: str) -> None:
    fast, jinja = both_ways(text)
    assert fast == jinja
    assert fast == ("UndefinedError", message, "undefined")


def test_the_context_wins_over_globals_and_a_mapping_goes_to_jinja() -> None:
    assert both_ways("{{ letter }}")[0][2] == "object_repr"  # the global helper function
    assert both_ways("{{ letter }}", {"letter": "B"}) == (("text", "B"), ("text", "B"))
    # Not a plain dict: Jinja resolves its names (a mapping's lookups may be anything).
    chained = ChainMap({"premise": "first"}, {"premise": "second", "label": 0})
    assert both_ways("{{ premise }} {{ label }}", chained)[0] == ("text", "first 0")
    assert (
        both_ways("{{ premise }} {{ label }}", chained)[0]
        == both_ways("{{ premise }} {{ label }}", chained)[1]
    )


# --------------------------------------------------------------------------- the sandbox


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("{{ names.__class__ }}", "sandbox"),
        ("{{ names['__class__'] }}", "sandbox"),
        ("{{ premise.__class__.__mro__ }}", "sandbox"),
        ("{{ answer_choices.__class__.__base__.__subclasses__ }}", "sandbox"),
        ("{{ answer_choices.pop }}", "sandbox"),  # the immutable sandbox: no mutating methods
        ("{{ answer_choices['append'] }}", "sandbox"),
        ("{{ names.label.__len__ }}", "sandbox"),
        ("{{ premise.format }}", "object_repr"),
        ("{{ names.items }}", "object_repr"),  # a dict attribute wins over a key, as in Jinja
        ("{{ example.get }}", "object_repr"),
        ("{{ zip }}", "object_repr"),
    ],
)
def test_what_the_sandbox_refuses_stays_refused(text: str, rule: str) -> None:
    assert fastpath.plan(ENV, text) is not None  # on the fast path, and still refused
    context = {**CONTEXT, "names": {"label": "neutral", "items": "a key named items"}}
    fast, jinja = both_ways(text, context)
    assert fast == jinja
    assert fast[2] == rule


def test_output_past_the_limit_is_refused_before_a_later_error() -> None:
    big = "x" * (sandbox.MAX_TEXT // 2)
    context = {**CONTEXT, "big": big}
    fast, jinja = both_ways("{{ big }}{{ big }}!{{ nope }}", context)
    assert fast == jinja == ("RenderLimit", "rendered text passed 1000000 characters",
                             "render_too_large")  # fmt: skip
    literal_past_limit = "{{ big }}" + "y" * (sandbox.MAX_TEXT // 2 + 1) + "{{ nope }}"
    assert both_ways(literal_past_limit, context)[0][2] == "render_too_large"
    assert both_ways("{{ big }}{{ big }}", context)[0] == ("text", big + big)  # at the limit
    in_branches = (
        "{% if label %}{{ big }}{% endif %}{% if premise %}{{ big }}!{% endif %}{{ nope }}"
    )
    fast, jinja = both_ways(in_branches, context)
    assert fast == jinja
    assert fast[2] == "render_too_large"


def test_values_that_are_not_text_are_charged_to_the_render_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Numbers and lists are sized by the sandbox's finalize and charged to one render's
    budget, as in Jinja; text values cost nothing. A small budget shows where each stops."""
    monkeypatch.setattr(sandbox, "MAX_RENDER_BYTES", 1_000)
    numbers = "{{ label }}" * 40  # 40 x (49 + 2) bytes charged
    fast, jinja = both_ways(numbers)
    assert fast == jinja
    assert fast[2] == "render_too_large"
    assert both_ways("{{ label }}" * 10)[0] == ("text", "1" * 10)
    assert both_ways("{{ premise }}" * 40)[0] == ("text", CONTEXT["premise"] * 40)
    joined = "{{ answer_choices | join(', ') }}" * 20  # the filter charges what it builds
    fast, jinja = both_ways(joined)
    assert fast == jinja
    assert fast[2] == "render_too_large"
    # Each render starts afresh: one over budget does not spill into the next.
    assert both_ways("{{ label }}")[0] == ("text", "1")
    # Inside branches, from the first value that is not text (and with a filter in a test,
    # from the start), as Jinja charges them.
    for text in (
        "{% if label == 1 %}" + "{{ premise }}{{ label }}" * 40 + "{% endif %}",
        "{% if premise %}x{% else %}y{% endif %}" + "{{ label }}" * 40,
        "{% if answer_choices | join(',') %}{{ premise }}{% endif %}" * 40,
        "{{ [label, label] }}" * 40,
    ):
        fast, jinja = both_ways(text)
        assert fast == jinja
        assert fast[2] == "render_too_large", text


def test_a_template_renders_the_same_record_and_reject(
    builtin_catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the renderer: a user template's record, and its reject's rule and message."""
    source = builtin_catalog.source("esnli")
    spec = TemplateSpec.model_validate(
        {
            "id": "fast",
            "instruction": "{{ premise }}\n{{ hypothesis | lower }}",
            "output": "{{ answer_choices[label] }}",
            "answer_choices": ["yes", "maybe", "no"],
        }
    )
    broken = spec.model_copy(update={"id": "broken", "output": "{{ names.nope }}"})
    templates = [Template(s, "esnli", source.path) for s in (spec, broken)]
    recipe = Recipe(name="fast", sources=["esnli"])
    example = load_examples(source)[0]
    fast = Renderer(source, templates, recipe).render(example)
    monkeypatch.setattr(fastpath, "plan", lambda *args, **kwargs: None)
    jinja = Renderer(source, templates, recipe).render(example)
    broken_fast, broken_jinja = fast[0], jinja[0]  # sorted by id: "broken" first
    assert isinstance(broken_fast, Exception) and isinstance(broken_jinja, Exception)
    assert (broken_fast.rule, str(broken_fast)) == (broken_jinja.rule, str(broken_jinja))
    assert broken_fast.rule == "undefined"
    assert str(broken_fast).endswith(
        "template 'broken': output: UndefinedError: 'dict object' has no attribute 'nope'"
    )
    record = fast[1]
    assert isinstance(record, Rendered)
    assert record == jinja[1]
    assert record.turns[0][0].startswith(f"{example.fields['premise']}\n")


def test_a_slice_from_the_context_is_charged_as_in_jinja(monkeypatch: pytest.MonkeyPatch) -> None:
    """``x[key]`` with a slice for a key (not written in the template: a context value) copies,
    and the sandbox charges the copy; the fast path renders that text under the budget too."""
    context = {**CONTEXT, "cut": slice(0, 2)}
    assert both_ways("{{ answer_choices[cut] }}", context)[0] == ("text", "['yes', 'maybe']")
    monkeypatch.setattr(sandbox, "MAX_RENDER_BYTES", 1_000)
    for n in (1, 5, 13, 14, 20):
        fast, jinja = both_ways("{{ premise }} {{ answer_choices[cut][0] }}. " * n, context)
        assert fast == jinja
    assert fast[2] == "render_too_large"  # 20 copies of a 2-item list: past 1,000 bytes
    assert both_ways("{{ answer_choices[cut][0] }}" * 5, context)[0] == ("text", "yes" * 5)
    # A slice met in a branch's test or text puts the whole render under the budget.
    for n in (1, 14, 20):
        text = "{% if answer_choices[cut] %}{{ premise }}{% endif %}" * n
        fast, jinja = both_ways(text, context)
        assert fast == jinja
        text = "{% if label %}{{ premise }} {{ answer_choices[cut][0] }}. {% endif %}" * n
        assert both_ways(text, context) == both_ways(text, context)[::-1]


def test_jinja_compiles_a_fast_text_only_for_a_context_that_is_not_a_dict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled: list[str] = []
    from_string = ENV.from_string

    def counting(source: Any, *args: Any, **kwargs: Any) -> Any:
        compiled.append(source)
        return from_string(source, *args, **kwargs)

    monkeypatch.setattr(ENV, "from_string", counting)
    render = compile_text(ENV, "{% if label %}{{ premise }}{% endif %}")
    assert render(CONTEXT) == CONTEXT["premise"]
    assert compiled == []  # parsed (for its syntax errors and its plan), never compiled
    assert render(ChainMap(CONTEXT)) == CONTEXT["premise"]  # a mapping: Jinja's own render
    assert len(compiled) == 1
    render(ChainMap(CONTEXT))
    assert len(compiled) == 1  # once
    compile_text(ENV, "{% for c in answer_choices %}{{ c }}{% endfor %}")
    assert len(compiled) == 2  # Jinja's texts compile when they load
    with pytest.raises(jinja2.TemplateSyntaxError):
        compile_text(ENV, "{% if label %}{{ premise }}")  # no endif: the parse says so
