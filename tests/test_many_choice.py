"""Many-choice templates (27, 77 and 151 answer choices) build without a lost record.

Letters go on past Z as spreadsheet columns do (AA, AB, ...), numbers count on, ``inline``
(one line of choices) is skipped past ten choices, and a template can pin its styles with
``option_styles``. Each count goes through ``run``, ``templates preview``, ``templates lint``
and ``render_one``, and every expected output is the marker or text of the gold label.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from pipeline import load_catalog, render_one, run_recipe
from pipeline.catalog import load_recipe
from pipeline.cli import app
from pipeline.lint import lint_catalog
from pipeline.locales import locale_for
from pipeline.models import Recipe, TemplateSpec
from pipeline.options import MAX_INLINE_CHOICES, letter_marker, styles_for
from pipeline.preview import preview_records

from .conftest import write

BANKING77 = load_catalog().source("banking77").spec.features["label"].names  # type: ignore[union-attr]
STYLES = ["dashes", "letters", "numbers", "inline", "flan"]


def test_letters_go_on_past_z_like_spreadsheet_columns() -> None:
    assert [letter_marker(i) for i in (0, 25, 26, 27, 51, 52, 76, 150, 701, 702)] == [
        "A", "Z", "AA", "AB", "AZ", "BA", "BY", "EU", "ZZ", "AAA",
    ]  # fmt: skip


def test_style_rule_skips_inline_for_long_lists_and_honours_a_pin() -> None:
    assert "inline" in styles_for(STYLES, None, MAX_INLINE_CHOICES)  # type: ignore[arg-type]
    assert styles_for(STYLES, None, 151) == ["dashes", "letters", "numbers", "flan"]  # type: ignore[arg-type]
    assert styles_for(STYLES, ["numbers"], 151) == ["numbers"]  # type: ignore[arg-type]
    # The recipe has none of the pinned styles: the template's own list is used.
    assert styles_for(["letters"], ["numbers"], 151) == ["numbers"]
    # Only inline is left: the rule is about readability, it never loses the record.
    assert styles_for(["inline"], None, 151) == ["inline"]


def test_a_pinned_style_list_is_checked() -> None:
    base = {"id": "t", "instruction": "x", "output": "y"}
    assert TemplateSpec.model_validate({**base, "option_styles": ["numbers"]}).option_styles
    for bad in (["numbers", "numbers"], ["roman"], []):
        with pytest.raises(ValidationError):
            TemplateSpec.model_validate({**base, "option_styles": bad})


def _catalog(root: Path, n: int) -> tuple[Path, list[str]]:
    """A user catalog for an ``n``-way intent task: source, data, templates and a recipe.

    77 is BANKING77's real label set (its bundled sample's queries); 27 and 151 are made-up
    labels for this test only."""
    name = f"intents{n}"
    if n == 77:
        labels = list(BANKING77)
        rows = [
            {"id": i, "text": f"query about {labels[i]}", "intent": labels[i]} for i in range(77)
        ]
    else:
        labels = [f"intent number {i}" for i in range(n)]
        rows = [{"id": i, "text": f"message {i}", "intent": labels[i]} for i in range(n)]
    (root / "data").mkdir(parents=True, exist_ok=True)
    with open(root / "data" / f"{name}.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    write(
        root / "sources" / f"{name}.yaml",
        f"""
        name: {name}
        task: intent detection
        cluster: intent_classification
        license: CC0-1.0
        hub: {{id: someone/{name}, splits: [train]}}
        features:
          text: string
          label: {{names: {json.dumps(labels)}}}
        sample:
          file: {name}.jsonl
          split: train
          id_field: id
          fields: {{text: text, label: intent}}
        """,
    )
    choices = json.dumps(labels)
    write(
        root / "templates" / f"{name}.yaml",
        f"""
        source: {name}
        templates:
          - id: marker
            instruction: "Which intent is this? {{{{ text }}}}"
            output: "{{{{ answer_choices[label] }}}}"
            answer_choices: {choices}
            option_target: marker
          - id: text
            instruction: "Name the intent: {{{{ text }}}}"
            output: "{{{{ answer_choices[label] }}}}"
            answer_choices: {choices}
          - id: pinned
            instruction: "Intent of: {{{{ text }}}}"
            output: "{{{{ answer_choices[label] }}}}"
            answer_choices: {choices}
            option_target: marker
            option_styles: [numbers]
        """,
    )
    recipe = write(
        root / "recipes" / f"{name}.yaml",
        f"""
        name: {name}
        seed: 5
        sources: [{name}]
        mixing: {{cap: null}}
        dedup: {{exact: false, normalized: false}}
        variants: {{options_shown: 1.0, option_styles: {json.dumps(STYLES)}}}
        catalog: {{sources: [../sources], templates: [../templates]}}
        """,
    )
    return recipe, labels


def _expected(record: dict[str, Any], labels: list[str], label: int) -> None:
    """The record's target is the gold label's marker or text, in the style it shows."""
    user = record["messages"][-2]["content"]
    target = record["messages"][-1]["content"]
    shown = record["answer_choices"]
    assert len(shown) == len(labels)
    if shown == labels:  # the text is the target: the text template, or dashes and flan
        assert target == labels[label]
        assert any(line.endswith(" " + labels[label]) for line in user.splitlines())
        assert record["template_id"] != "pinned"
    elif shown[0] == "A":  # letters
        assert shown[label] == letter_marker(label) and target == letter_marker(label)
        assert f"\n({letter_marker(label)}) {labels[label]}" in user
    else:
        assert shown[:3] == ["1", "2", "3"], shown[:3]
        assert target == str(label + 1)
        assert f"\n{label + 1}. {labels[label]}" in user
    if record["template_id"] == "pinned":
        assert target == str(label + 1)
    # One line of 27+ choices is unreadable: inline is never drawn for these templates.
    assert f"{labels[0]}; {labels[1]}" not in user


@pytest.mark.parametrize("n", [27, 77, 151])
def test_many_choices_through_run_preview_lint_and_render_one(tmp_path: Path, n: int) -> None:
    recipe, labels = _catalog(tmp_path, n)
    out = tmp_path / "out"
    manifest = run_recipe(recipe, out)
    counts = manifest.sources[f"intents{n}"]
    assert counts.records_rejected == 0, counts.rejected_by_rule
    assert counts.records_rendered == 3 * n and counts.records_accepted == 3 * n
    records = [
        row for path in sorted((out / "valid").rglob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]  # fmt: skip
    assert len(records) == 3 * n
    styles = set()
    for record in records:
        _expected(record, labels, int(record["example_id"]))
        styles.add(record["answer_choices"][0])
    assert {"A", "1"} <= styles  # letters past Z and numbers were both drawn

    rows = preview_records(None, f"intents{n}", n=n, recipe=recipe)
    assert len(rows) == 3 * n and not [r for r in rows if "error" in r]
    for row in rows:
        _expected(row, labels, int(row["example_id"]))

    catalog = load_catalog([tmp_path / "sources"], [tmp_path / "templates"], builtin=False)
    # Under the recipe that builds them (options always shown): with options hidden, lint
    # would rightly say that 27+ labels the prompt never shows cannot be answered.
    built = load_recipe(recipe)
    assert [str(f) for f in lint_catalog(catalog, recipe=built) if f.severity == "error"] == []
    hidden = {f.rule for f in lint_catalog(catalog) if f.severity == "error"}
    assert "no_answer_form" in hidden
    result = CliRunner().invoke(app, ["templates", "lint", "--recipe", str(recipe)])
    assert result.exit_code == 0, result.output

    source = catalog.source(f"intents{n}")
    marker = next(t for t in catalog.templates_for(f"intents{n}") if t.id == "marker")
    letters = Recipe.model_validate(
        {"name": "r", "sources": [source.name], "variants": {"option_styles": ["letters"]}}
    )
    last = n - 1
    record = render_one(source, marker, {"text": "q", "label": last}, recipe=letters)
    assert record["messages"][1]["content"] == letter_marker(last)
    *block, form = record["messages"][0]["content"].splitlines()
    assert block[-1] == f"({letter_marker(last)}) {labels[last]}"
    assert form in locale_for("en").answer_forms["letters"]["marker"]  # says: answer the letter
    assert record["variant"] == "zero_shot_opt"
