"""Hostile templates: escapes, memory bombs and runaway loops are rejects, never crashes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline import RenderError, load_catalog, render_one, run_recipe
from pipeline.catalog import Template
from pipeline.lint import lint_catalog
from pipeline.models import Recipe, TemplateSpec

from .conftest import write

FIELDS = {
    "premise": "A man sleeps.",
    "hypothesis": "A man rests.",
    "label": 0,
    "explanation_1": "Sleeping is resting.",
}

ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__base__.__subclasses__()[0] }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ premise.__class__.__subclasses__() }}",
    "{{ range.__self__ }}",
    "{{ (names|attr('__class__')).__mro__ }}",
    "{{ ''|attr('__class__')|attr('__base__') }}",
    "{{ answer_choices.append('x') }}",
    "{{ names.update({'a': 1}) }}",
    "{{ example.clear() }}",
    "{{ lipsum(1000000) }}",
]

BOMBS = [
    ("{{ 'x' * 1000000000 }}", "sandbox"),
    ("{{ ['x'] * 100000000 }}", "sandbox"),
    ("{{ '%0999999999d' % 1 }}", "sandbox"),
    ("{{ '%.*f' % (999999999, 1.0) }}", "sandbox"),
    ("{{ '{:999999999}'.format(1) }}", "sandbox"),
    ("{{ '{:{w}}'.format(1, w=999999999) }}", "sandbox"),
    ("{{ 'a' | center(1000000000) }}", "sandbox"),
    ("{{ 'a' | indent(1000000000) }}", "sandbox"),
    ("{{ '%0999999999d' | format(1) }}", "sandbox"),
    ("{{ [1] | batch(1000000000, 0) | list }}", "sandbox"),
    ("{{ 2 ** 100000000 }}", "sandbox"),
    (
        "{% for i in range(100000) %}{% for j in range(100000) %}xx{% endfor %}{% endfor %}",
        "render_too_large",
    ),
    (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "render_timeout",
    ),
]


def _template(tmp_path: Path, instruction: str) -> Template:
    spec = TemplateSpec.model_validate({"id": "evil", "instruction": instruction, "output": "ok"})
    return Template(spec, "esnli", tmp_path / "evil.yaml")


def _recipe() -> Recipe:
    return Recipe.model_validate(
        {"name": "r", "sources": ["esnli"], "limits": {"max_render_seconds": 0.5}}
    )


@pytest.mark.parametrize("attack", ESCAPES)
def test_escape_attempts_are_rejects(builtin_catalog, tmp_path: Path, attack: str) -> None:
    with pytest.raises(RenderError) as err:
        render_one(
            builtin_catalog.source("esnli"), _template(tmp_path, attack), FIELDS, recipe=_recipe()
        )
    assert err.value.rule in {"sandbox", "undefined", "render_error"}, err.value
    assert "evil.yaml: template 'evil'" in str(err.value)


@pytest.mark.parametrize(("bomb", "rule"), BOMBS)
def test_size_and_time_bombs_are_stopped(
    builtin_catalog, tmp_path: Path, bomb: str, rule: str
) -> None:
    with pytest.raises(RenderError) as err:
        render_one(
            builtin_catalog.source("esnli"), _template(tmp_path, bomb), FIELDS, recipe=_recipe()
        )
    assert err.value.rule == rule, err.value


def test_hostile_catalog_runs_to_the_end_with_rejects(tmp_path: Path, user_catalog: Path) -> None:
    templates = "\n".join(
        f"  - id: evil-{i}\n    instruction: {text!r}\n    output: ok"
        for i, text in enumerate([*ESCAPES[:4], *(b for b, _ in BOMBS)])
    )
    write(user_catalog / "templates" / "evil.yaml", f"source: mini_nli\ntemplates:\n{templates}\n")
    recipe = user_catalog / "recipes" / "mini.yaml"
    recipe.write_text(recipe.read_text() + "limits: {max_render_seconds: 0.3}\n")
    manifest = run_recipe(recipe, tmp_path / "o")
    counts = manifest.sources["mini_nli"]
    n_evil = 4 + len(BOMBS)
    assert counts.records_rendered == 4 * (2 + n_evil)
    assert counts.records_rejected == 4 * n_evil
    assert set(counts.rejected_by_rule) <= {
        "sandbox",
        "undefined",
        "render_error",
        "render_timeout",
        "render_too_large",
    }
    assert manifest.check() == []


def test_lint_reports_hostile_templates_as_errors(tmp_path: Path, user_catalog: Path) -> None:
    write(
        user_catalog / "templates" / "evil.yaml",
        """
        source: mini_nli
        templates:
          - id: escape
            instruction: "{{ ''.__class__.__mro__ }}"
            output: ok
          - id: bomb
            instruction: "{{ 'x' * 1000000000 }}"
            output: ok
        """,
    )
    catalog = load_catalog([user_catalog / "sources"], [user_catalog / "templates"])
    findings = [f for f in lint_catalog(catalog, ["mini_nli"]) if f.severity == "error"]
    assert {(f.template_id, f.rule) for f in findings} >= {
        ("escape", "sandbox"),
        ("bomb", "sandbox"),
    }


def test_hub_token_never_reaches_outputs(
    tmp_path: Path, user_catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "hf_" + "Z" * 34
    monkeypatch.setenv("HF_TOKEN", token)
    out = tmp_path / "o"
    run_recipe(user_catalog / "recipes" / "mini.yaml", out)
    for path in out.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    assert token not in os.environ.get("HF_TOKEN_NOT_SET", "")
