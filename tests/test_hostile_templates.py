"""Hostile or careless templates, round two (issue 8): each case is a test named after it.

- Memory: every operation that builds a string or a list is sized before it runs, and what one
  render builds is charged to a budget, so no template makes a record allocate more than
  ``BOUND`` (measured with tracemalloc). The sizes below are chosen so that, unguarded, the
  cases allocated 140-640 MB each (the integer ones were unbounded in size and time, not yet in
  memory): enough to be unmistakable, small enough for any test machine.
- Compile errors of every kind (Jinja syntax, nesting too deep for Python, a number literal
  Python cannot hold) are ``template_syntax`` rejects or lint findings, in the template, the
  source's rationale, a run, lint and preview alike; a lone surrogate in the output is a
  ``bad_text`` reject; any exception inside a render is a reject.
- Determinism: Jinja's ``random`` filter draws from the record's seeded generator, and no value
  whose text would be a Python repr (a function, a loop, a generator: memory addresses) is ever
  rendered (``object_repr``), which lint reports too.
"""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path
from typing import Any

import jinja2
import pyarrow.parquet as pq
import pytest

from pipeline import RenderError, load_catalog, render_one, run_recipe
from pipeline.catalog import Template
from pipeline.lint import lint_catalog
from pipeline.models import Recipe, TemplateSpec
from pipeline.preview import preview_records

from .conftest import write

# The stated bound (pipeline.sandbox.RECORD_MEMORY_BOUND): peak bytes one record's render may
# allocate beyond its data, whatever the template does.
BOUND = 64 * 2**20

FIELDS = {
    "premise": "A man sleeps.",
    "hypothesis": "A man rests.",
    "label": 0,
    "explanation_1": "Sleeping is resting.",
}


def _template(tmp_path: Path, instruction: str = "ok", output: str = "ok", **spec: Any) -> Template:
    fields = {"id": "evil", "instruction": instruction, "output": output, **spec}
    return Template(TemplateSpec.model_validate(fields), "esnli", tmp_path / "evil.yaml")


def _recipe(**fields: Any) -> Recipe:
    return Recipe.model_validate(
        {"name": "r", "sources": ["esnli"], "limits": {"max_render_seconds": 5}, **fields}
    )


def _render(catalog: Any, template: Template, **kw: Any) -> dict[str, Any] | RenderError:
    """The record, or the RenderError that rejected it."""
    try:
        return render_one(catalog.source("esnli"), template, kw.pop("fields", FIELDS), **kw)
    except RenderError as exc:
        return exc


def _traced(catalog: Any, template: Template) -> tuple[dict[str, Any] | RenderError, int]:
    """The render's outcome and the peak bytes it allocated (with time to spare: tracing
    slows a render down, and what is measured here is memory)."""
    tracemalloc.start()
    try:
        outcome = _render(catalog, template, recipe=_recipe(limits={"max_render_seconds": 20}))
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------- memory

# (template, the rule of its reject): "sandbox" when one operation is refused before it runs,
# "render_too_large" when many small ones, whose results are kept, pass the render's budget.
MEMORY_BOMBS = [
    pytest.param("{{ 'a'.ljust(200000000) }}", "sandbox", id="str-ljust"),
    pytest.param("{{ 'a'.rjust(200000000) }}", "sandbox", id="str-rjust"),
    pytest.param("{{ 'a'.zfill(200000000) }}", "sandbox", id="str-zfill"),
    pytest.param("{{ 'a'.center(200000000) }}", "sandbox", id="str-center"),
    pytest.param(
        "{{ (['a'] * 200)|map('center', 999999)|list|length }}",
        "render_too_large",
        id="center-filter-results-kept",
    ),
    pytest.param("{{ ('\\t' * 100).expandtabs(2000000) }}", "sandbox", id="str-expandtabs"),
    pytest.param("{{ ('x' * 1000000).join(['a'] * 200) }}", "sandbox", id="str-join"),
    pytest.param("{{ range(20000)|join('x' * 10000) }}", "sandbox", id="join-filter-of-range"),
    pytest.param("{{ (['y' * 10000] * 20000)|join }}", "sandbox", id="join-filter-of-list"),
    pytest.param(
        "{{ ('{}' * 20000).format(*(('x' * 10000,) * 20000)) }}",
        "sandbox",
        id="format-many-fields",
    ),
    pytest.param(
        "{{ ('%s' * 20000) % (('x' * 10000,) * 20000) }}", "sandbox", id="percent-many-fields"
    ),
    pytest.param("{{ '%s' % ([('x' * 200)] * 999999,) }}", "sandbox", id="percent-of-big-list"),
    pytest.param("{{ ['x' * 200] * 999999 }}", "sandbox", id="printing-a-big-list"),
    pytest.param("{{ '' ~ (['x' * 200] * 999999) }}", "sandbox", id="concat-of-a-big-list"),
    pytest.param(
        "{% set s = 'x' * 1000000 %}" + "{% set s = s ~ s %}" * 8 + "{{ s|length }}",
        "sandbox",
        id="concat-doubling",
    ),
    pytest.param(
        "{% set ns = namespace(s='x' * 1000000) %}{% for i in range(8) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "sandbox",
        id="namespace-concat-doubling",
    ),
    pytest.param(
        "{% set ns = namespace(s='x' * 1000000) %}{% for i in range(8) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
        "sandbox",
        id="namespace-plus-doubling",
    ),
    pytest.param(
        "{% set ns = namespace(items=['x'] * 1000000) %}{% for i in range(5) %}"
        "{% set ns.items = ns.items + ns.items %}{% endfor %}{{ ns.items|length }}",
        "sandbox",
        id="namespace-list-doubling",
    ),
    pytest.param("{{ ('x' * 1000000).replace('x', 'y' * 200) }}", "sandbox", id="str-replace"),
    pytest.param("{{ ('x' * 1000000)|replace('x', 'y' * 200) }}", "sandbox", id="replace-filter"),
    pytest.param(
        "{{ ('x ' * 500000)|wordwrap(1, wrapstring='y' * 300) }}", "sandbox", id="wordwrap"
    ),
    pytest.param("{{ ('\\n' * 1000000)|indent(200, blank=true) }}", "sandbox", id="indent"),
    pytest.param(
        "{{ (['x' * 1000000] * 200)|map('truncate', 999990, true, 'y' * 500000)|list|length }}",
        "render_too_large",
        id="truncate-results-kept",
    ),
    pytest.param(
        "{{ (['x' * 1000000] * 200)|map('upper')|list|length }}",
        "render_too_large",
        id="upper-results-kept",
    ),
    pytest.param(
        "{{ ('x' * 200).translate({120: 'y' * 1000000}) }}", "sandbox", id="str-translate"
    ),
    pytest.param(
        "{% set b %}{% for i in range(200) %}{{ premise.center(999999) }}{% endfor %}"
        "{% endset %}{{ b|length }}",
        "sandbox",
        id="set-block-buffer",
    ),
    pytest.param(
        "{% macro m(s) %}{% for i in range(200) %}{{ s }}{% endfor %}{% endmacro %}"
        "{{ m('x' * 1000000)|length }}",
        "sandbox",
        id="macro-output",
    ),
    pytest.param(
        "{% set ns = namespace(l=[]) %}{% set s = 'x' * 1000000 %}{% for i in range(200) %}"
        "{% set ns.l = ns.l + [s[i:]] %}{% endfor %}{{ ns.l|length }}",
        "render_too_large",
        id="slices-kept",
    ),
    pytest.param(
        "{{ (('中' * 1000000)|list + ('中' * 1000000)|list)|length }}",
        "render_too_large",
        id="list-of-non-latin-text",
    ),
    pytest.param(
        "{% set a = (['x'] * 1000000)|batch(1)|list %}{% set b = (['y'] * 1000000)|batch(1)|list %}"
        "{{ a|length + b|length }}",
        "render_too_large",
        id="batch-lists-kept",
    ),
    pytest.param(
        "{% set a = zip(['x'] * 400000, ['y'] * 400000)|list %}"
        "{% set b = zip(['x'] * 400000, ['y'] * 400000)|list %}"
        "{% set c = zip(['x'] * 400000, ['y'] * 400000)|list %}{{ a|length + b|length }}",
        "render_too_large",
        id="zip-tuples-kept",
    ),
    pytest.param("{{ range(200)|list|tojson(999999) }}", "sandbox", id="tojson-indent"),
    pytest.param("{{ (['x' * 1000] * 100000)|pprint }}", "sandbox", id="pprint-of-a-big-list"),
    pytest.param(
        "{{ ('http://a.com ' * 1000)|urlize(target='y' * 200000) }}", "sandbox", id="urlize-target"
    ),
    pytest.param(
        "{{ ([['x'] * 1000000] * 20)|sum(start=[])|length }}", "sandbox", id="sum-of-lists"
    ),
    pytest.param("{{ (1).to_bytes(200000000, 'big')|length }}", "sandbox", id="int-to-bytes"),
    pytest.param(
        "{% set ns = namespace(x=9 ** 1000) %}{% for i in range(12) %}"
        "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x > 0 }}",
        "sandbox",
        id="integer-squaring",
    ),
    pytest.param("{{ ((9 ** 1000) ** 1000) ** 10 }}", "sandbox", id="power-of-a-power"),
]


@pytest.mark.parametrize(("text", "rule"), MEMORY_BOMBS)
def test_memory_bomb_is_refused_before_it_allocates(
    builtin_catalog: Any, tmp_path: Path, text: str, rule: str
) -> None:
    outcome, peak = _traced(builtin_catalog, _template(tmp_path, text))
    assert isinstance(outcome, RenderError), f"rendered: {str(outcome)[:200]}"
    assert outcome.rule == rule, outcome
    assert "evil.yaml: template 'evil'" in str(outcome)
    assert peak < BOUND, f"allocated {peak / 2**20:.0f} MiB"


def test_no_hostile_template_makes_a_record_allocate_more_than_the_bound(
    builtin_catalog: Any, tmp_path: Path
) -> None:
    from pipeline.sandbox import RECORD_MEMORY_BOUND

    assert RECORD_MEMORY_BOUND == BOUND
    peaks: dict[str, int] = {}
    for param in MEMORY_BOMBS:
        text = param.values[0]
        assert isinstance(text, str)
        outcome, peaks[str(param.id)] = _traced(builtin_catalog, _template(tmp_path, text))
        assert isinstance(outcome, RenderError), (param.id, str(outcome)[:200])
    worst = max(peaks, key=lambda k: peaks[k])
    print(f"\nworst peak: {worst}: {peaks[worst] / 2**20:.1f} MiB of {BOUND / 2**20:.0f} MiB")
    assert peaks[worst] < BOUND, {k: f"{v / 2**20:.0f} MiB" for k, v in peaks.items()}


def test_sizes_are_projected_exactly_enough(builtin_catalog: Any, tmp_path: Path) -> None:
    # One operation may build MAX_TEXT characters: exactly that many pass, one more does not.
    ok = _render(builtin_catalog, _template(tmp_path, "{{ 'a'.ljust(1000000, 'b') }}"))
    assert not isinstance(ok, RenderError), ok
    assert len(ok["messages"][0]["content"]) == 1_000_000
    refused = _render(builtin_catalog, _template(tmp_path, "{{ 'a'.ljust(1000001) }}"))
    assert isinstance(refused, RenderError) and refused.rule == "sandbox", refused
    assert "would build 1,000,001 characters" in str(refused)


# --------------------------------------------------------------------------- compile errors

COMPILE_ERRORS = [
    pytest.param(
        "{% for a in x %}" * 25 + "y" + "{% endfor %}" * 25,
        "too many statically nested blocks",
        id="nested-for-SyntaxError",
    ),
    pytest.param(
        "{% if x %}" * 120 + "y" + "{% endif %}" * 120,
        "too many levels of indentation",
        id="nested-if-IndentationError",
    ),
    pytest.param(
        "{% if x %}" * 400 + "y" + "{% endif %}" * 400, "RecursionError", id="nested-if-Recursion"
    ),
    pytest.param(
        "{{ " + "[" * 300 + "1" + "]" * 300 + " }}", "RecursionError", id="nested-list-Recursion"
    ),
    pytest.param("{{ x" + "|upper" * 5000 + " }}", "RecursionError", id="filter-chain-Recursion"),
    pytest.param("{{ " + "9" * 5000 + " }}", "4300 digits", id="5000-digit-literal-ValueError"),
    pytest.param("{{ 1e999 }}", "number literal too large", id="infinite-float-literal"),
]


@pytest.mark.parametrize(("text", "says"), COMPILE_ERRORS)
def test_compile_error_is_a_template_syntax_reject(
    builtin_catalog: Any, tmp_path: Path, text: str, says: str
) -> None:
    outcome = _render(builtin_catalog, _template(tmp_path, output=text))
    assert isinstance(outcome, RenderError), outcome
    assert outcome.rule == "template_syntax", outcome
    assert str(outcome).startswith(f"{tmp_path / 'evil.yaml'}: template 'evil': "), outcome
    assert "(output)" in str(outcome) and says in str(outcome), outcome


def test_compile_error_names_the_template_line(builtin_catalog: Any, tmp_path: Path) -> None:
    text = "Premise: {{ premise }}\n\n" + "{% for a in x %}\n" * 25 + "y" + "{% endfor %}" * 25
    outcome = _render(builtin_catalog, _template(tmp_path, output=text))
    assert isinstance(outcome, RenderError), outcome
    # Python allows 20 nested blocks: the 21st opens on line 3 + 20.
    assert "line 23 of its Jinja (output): nested too deeply" in str(outcome), outcome


@pytest.mark.parametrize(
    ("where", "error"),
    [
        pytest.param("jinja2.Environment._compile", MemoryError("parser stack"), id="MemoryError"),
        pytest.param("jinja2.Environment._compile", OverflowError("big"), id="OverflowError"),
        pytest.param("jinja2.parser.Parser.parse", LookupError("odd"), id="LookupError-in-parse"),
    ],
)
def test_any_exception_compile_raises_is_a_syntax_reject(
    builtin_catalog: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    error: Exception,
) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(where, fail)
    # A loop: the fast path leaves it to Jinja, which compiles it when the template loads.
    output = "{% for w in [premise] %}{{ w }}{% endfor %}"
    outcome = _render(builtin_catalog, _template(tmp_path, output=output))
    assert isinstance(outcome, RenderError), outcome
    assert outcome.rule == "template_syntax"
    assert type(error).__name__ in str(outcome)


def _broken_catalog(user_catalog: Path) -> Path:
    """The user catalog with templates that do not compile, one of each kind, and a source
    whose rationale has a syntax error; every form is drawn, chain of thought included."""
    source = user_catalog / "sources" / "mini_nli.yaml"
    source.write_text(source.read_text() + 'rationale: "{{ premise ~ }}"\n')
    nested = "{% for a in [1] %}" * 25 + "y" + "{% endfor %}" * 25
    templates = {
        "nested-blocks": nested,
        "long-literal": "{{ " + "9" * 5000 + " }}",
        "deep-list": "{{ " + "[" * 300 + "1" + "]" * 300 + " }}",
    }
    body = "".join(
        f"  - id: {tid}\n    instruction: {json.dumps(text)}\n    output: ok\n"
        for tid, text in templates.items()
    )
    body += (
        "  - id: with-cot\n    cot: true\n    instruction: 'Does {{ premise }} entail it?'\n"
        "    output: '{{ answer_choices[label] }}'\n    answer_choices: ['yes', 'maybe', 'no']\n"
    )
    write(user_catalog / "templates" / "broken.yaml", "source: mini_nli\ntemplates:\n" + body)
    recipe = user_catalog / "recipes" / "mini.yaml"
    recipe.write_text(recipe.read_text() + "variants: {zero_shot: 0, cot: 1}\n")
    return recipe


def test_run_turns_compile_errors_and_a_broken_rationale_into_rejects(
    tmp_path: Path, user_catalog: Path
) -> None:
    manifest = run_recipe(_broken_catalog(user_catalog), tmp_path / "o")
    counts = manifest.sources["mini_nli"]
    # 4 examples x (2 good templates + 3 that do not compile + 1 whose rationale does not)
    assert counts.records_rendered == 4 * 6
    assert counts.rejected_by_rule == {"template_syntax": 4 * 4}
    assert manifest.check() == []
    rejects = [
        json.loads(line)
        for path in sorted((tmp_path / "o" / "rejects" / "render").rglob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    cot = [r["message"] for r in rejects if r["template_id"] == "with-cot"]
    assert cot and all("rationale of source 'mini_nli': line 1 of its Jinja" in m for m in cot)


def test_lint_reports_compile_errors_of_every_kind(user_catalog: Path) -> None:
    _broken_catalog(user_catalog)
    catalog = load_catalog([user_catalog / "sources"], [user_catalog / "templates"])
    found = {(f.template_id, f.rule): f for f in lint_catalog(catalog, ["mini_nli"])}
    for tid in ("nested-blocks", "long-literal", "deep-list"):
        assert found[(tid, "template_syntax")].severity == "error"
    rationale = found[(None, "template_syntax")]
    assert rationale.file == str(user_catalog / "sources" / "mini_nli.yaml")
    assert rationale.message.startswith("rationale: line 1:"), rationale


def test_preview_reports_compile_errors_as_rows(user_catalog: Path) -> None:
    _broken_catalog(user_catalog)
    catalog = load_catalog([user_catalog / "sources"], [user_catalog / "templates"])
    rows = preview_records(catalog, "mini_nli", n=1, variant="cot")
    by_template = {row["template_id"]: row for row in rows}
    for tid in ("nested-blocks", "long-literal", "deep-list", "with-cot"):
        assert by_template[tid]["rule"] == "template_syntax", by_template[tid]


# --------------------------------------------------------------------------- text and errors


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{{ "\\ud800" }}', id="string-literal"),
        pytest.param("{{ '%c' % 55296 }}", id="percent-c"),
        pytest.param("{{ '{:c}'.format(57343) }}", id="format-c"),
    ],
)
def test_lone_surrogate_from_a_template_is_a_bad_text_reject(
    builtin_catalog: Any, tmp_path: Path, text: str
) -> None:
    outcome = _render(builtin_catalog, _template(tmp_path, instruction=f"Say {text}"))
    assert isinstance(outcome, RenderError), outcome
    assert outcome.rule == "bad_text"
    assert "user turn 1: character 5 is a lone surrogate" in str(outcome)
    str(outcome).encode("utf-8")  # the message itself can be written anywhere


def test_lone_surrogate_from_the_data_is_a_bad_text_reject(
    builtin_catalog: Any, tmp_path: Path
) -> None:
    fields = {**FIELDS, "hypothesis": "A man \udc80rests."}
    outcome = _render(
        builtin_catalog, _template(tmp_path, output="{{ hypothesis }}"), fields=fields
    )
    assert isinstance(outcome, RenderError), outcome
    assert outcome.rule == "bad_text"
    assert "assistant turn 1: character 7" in str(outcome)


def test_run_with_a_lone_surrogate_in_a_template_completes(
    tmp_path: Path, user_catalog: Path
) -> None:
    write(
        user_catalog / "templates" / "surrogate.yaml",
        """
        source: mini_nli
        templates:
          - id: surrogate
            instruction: '{{ premise }} {{ "\\ud800" }}'
            output: ok
        """,
    )
    manifest = run_recipe(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    counts = manifest.sources["mini_nli"]
    assert counts.rejected_by_rule == {"bad_text": 4}
    assert counts.records_accepted == 4 * 2
    assert manifest.check() == []


def test_any_exception_during_a_render_is_a_reject(
    builtin_catalog: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An exception from anywhere in a render (here, a planted one in the options block; it
    # used to be 27 choices in the lettered style) is that record's reject, not a crash.
    def broken(*a: Any, **k: Any) -> Any:
        raise ValueError("planted")

    monkeypatch.setattr("pipeline.render.format_options", broken)
    template = _template(tmp_path, output="{{ answer_choices[0] }}", answer_choices=["a", "b"])
    outcome = _render(builtin_catalog, template, recipe=_recipe(variants={"options_shown": 1.0}))
    assert isinstance(outcome, RenderError), outcome
    assert outcome.rule == "render_error"
    assert "ValueError: planted" in str(outcome)


def test_only_a_cot_share_still_renders_templates_without_cot(
    builtin_catalog: Any, tmp_path: Path
) -> None:
    recipe = _recipe(variants={"zero_shot": 0, "cot": 1})
    record = _render(builtin_catalog, _template(tmp_path, output="{{ premise }}"), recipe=recipe)
    assert not isinstance(record, RenderError), record
    assert record["variant"] == "zero_shot_noopt"


# --------------------------------------------------------------------------- determinism


def test_random_filter_draws_from_the_record_not_the_process(
    builtin_catalog: Any, tmp_path: Path
) -> None:
    text = "{{ range(1000)|random }} {{ [range(1000), 'abcdefgh']|map('random')|join(' ') }}"
    template = _template(tmp_path, instruction=text)
    outputs = set()
    for global_seed in (1, 2, 3):
        random.seed(global_seed)
        record = _render(builtin_catalog, template, recipe=_recipe())
        assert not isinstance(record, RenderError), record
        outputs.add(record["messages"][0]["content"])
    assert len(outputs) == 1, outputs
    other = _render(builtin_catalog, template, recipe=_recipe(seed=99))
    assert not isinstance(other, RenderError)
    assert other["messages"][0]["content"] not in outputs  # the recipe seed decides


def test_random_filter_gives_the_same_bytes_on_every_run(
    tmp_path: Path, user_catalog: Path
) -> None:
    write(
        user_catalog / "templates" / "random.yaml",
        """
        source: mini_nli
        templates:
          - id: drawn
            instruction: "{{ premise }} (ticket {{ range(100000)|random }})"
            output: "{{ hypothesis }}"
        """,
    )
    recipe = user_catalog / "recipes" / "mini.yaml"
    texts = []
    for run in range(3):
        random.seed(run)
        out = tmp_path / f"run-{run}"
        run_recipe(recipe, out)
        rows = [
            row
            for part in sorted((out / "valid").rglob("*.parquet"))
            for row in pq.read_table(part).to_pylist()
        ]
        texts.append([row["messages"] for row in rows if row["template_id"] == "drawn"])
    assert texts[0] and texts[0] == texts[1] == texts[2]


OBJECTS = [
    pytest.param("{{ shuffle }}", "function 'shuffle'", id="seeded-helper"),
    pytest.param("{{ namespace() }}", "Namespace", id="namespace"),
    pytest.param("{{ cycler }}", "type 'Cycler'", id="cycler"),
    pytest.param("{{ joiner() }}", "Joiner", id="joiner"),
    pytest.param("{{ range(3) }}", "range", id="range"),
    pytest.param("{% macro m() %}x{% endmacro %}{{ m }}", "Macro 'm'", id="macro"),
    pytest.param("{% for i in [1] %}{{ loop }}{% endfor %}", "LoopContext", id="loop"),
    pytest.param("{{ premise.upper }}", "'upper'", id="method"),
    pytest.param("{{ [1, 2]|map('string') }}", "generator", id="generator"),
    pytest.param("{{ zip([1], [2]) }}", "generator", id="zip"),
    pytest.param("{{ premise.encode() }}", "bytes", id="bytes"),
    pytest.param("{{ 'x' ~ shuffle }}", "function 'shuffle'", id="concat"),
    pytest.param("{{ '%s' % (shuffle,) }}", "function 'shuffle'", id="percent"),
    pytest.param("{{ '{}'.format(cycler) }}", "type 'Cycler'", id="format"),
    pytest.param("{{ shuffle|string }}", "function 'shuffle'", id="string-filter"),
    pytest.param("{{ shuffle|upper }}", "function 'shuffle'", id="upper-filter"),
    pytest.param("{{ [1, shuffle]|join }}", "function 'shuffle'", id="join-filter"),
    pytest.param("{{ {'f': shuffle} }}", "inside a list or dict", id="inside-a-dict"),
    pytest.param("{{ shuffle|pprint }}", "function 'shuffle'", id="pprint-filter"),
]


@pytest.mark.parametrize(("text", "what"), OBJECTS)
def test_object_repr_is_never_rendered(
    builtin_catalog: Any, tmp_path: Path, text: str, what: str
) -> None:
    outcome = _render(builtin_catalog, _template(tmp_path, instruction=text))
    assert isinstance(outcome, RenderError), f"rendered: {outcome}"
    assert outcome.rule == "object_repr", outcome
    assert what in str(outcome), outcome


def test_reject_message_holds_no_memory_address(builtin_catalog: Any, tmp_path: Path) -> None:
    # Jinja's own message names the missing key by its repr; the rejects file must not change
    # from run to run.
    outcome = _render(builtin_catalog, _template(tmp_path, instruction="{{ {}[shuffle] }}"))
    assert isinstance(outcome, RenderError) and outcome.rule == "undefined", outcome
    assert "has no element <function" in str(outcome)
    assert str(outcome).endswith(" at 0x...>"), outcome


def test_undefined_inside_a_list_is_undefined(builtin_catalog: Any, tmp_path: Path) -> None:
    # Before: "[Undefined]", silently, for a misspelt field.
    outcome = _render(builtin_catalog, _template(tmp_path, instruction="{{ [premis] }}"))
    assert isinstance(outcome, RenderError)
    assert outcome.rule == "undefined" and "'premis' is undefined" in str(outcome)


def test_plain_values_render_the_objects_inside_them_do_not(
    builtin_catalog: Any, tmp_path: Path
) -> None:
    text = "{{ [1, 'a', none, true, 1.5] }} {{ names }} {{ (1, 2) }} {{ {'b': [2]} }}"
    record = _render(builtin_catalog, _template(tmp_path, instruction=text))
    assert not isinstance(record, RenderError), record
    assert record["messages"][0]["content"] == (
        "[1, 'a', None, True, 1.5] {'label': 'entailment'} (1, 2) {'b': [2]}"
    )
    inside = _render(builtin_catalog, _template(tmp_path, instruction="{{ [1, [cycler]] }}"))
    assert isinstance(inside, RenderError) and inside.rule == "object_repr", inside


def test_lint_reports_printed_functions_and_objects(user_catalog: Path) -> None:
    write(
        user_catalog / "templates" / "objects.yaml",
        """
        source: mini_nli
        templates:
          - id: printed-helper
            instruction: "{{ premise }}\\nDrawn: {{ shuffle }}"
            output: ok
          - id: printed-method
            instruction: "{{ premise.upper }}"
            output: ok
          - id: shadowed
            instruction: "{% set shuffle = 'no' %}{{ premise }} {{ shuffle }}"
            output: ok
        """,
    )
    catalog = load_catalog([user_catalog / "sources"], [user_catalog / "templates"])
    found = {(f.template_id, f.rule): f for f in lint_catalog(catalog, ["mini_nli"])}
    static = found[("printed-helper", "object_repr")]
    assert static.severity == "error" and static.message.startswith("instruction: line 2:")
    assert "'upper'" in found[("printed-method", "object_repr")].message  # found by rendering
    assert ("shadowed", "object_repr") not in found


def test_sandbox_compile_errors_are_syntax_errors_for_every_caller() -> None:
    # promptsource import and any other caller of the environment see one exception class.
    from pipeline.render import make_environment

    env = make_environment()
    with pytest.raises(jinja2.TemplateSyntaxError) as err:
        env.from_string("{{ " + "[" * 300 + "1" + "]" * 300 + " }}")
    assert "nested too deeply" in err.value.message
    with pytest.raises(jinja2.TemplateSyntaxError):
        env.parse("a\n{{ " + "9" * 5000 + " }}")
