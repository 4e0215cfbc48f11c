"""``templates preview`` and ``templates lint`` agree with ``run``: no fake forms, a recipe's
own settings with ``--recipe``, and ``choices_in_prompt`` only where the prompt shows them."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import load_catalog, render_one, run_recipe
from pipeline.cli import app
from pipeline.lint import lint_catalog
from pipeline.render import VariantUnavailable

from .conftest import write


def _preview(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["templates", "preview", *args])
    return result.exit_code, result.stdout, result.stderr


def test_forced_cot_on_a_template_without_cot_is_an_error() -> None:
    code, _, err = _preview("esnli", "-t", "relation-label-question", "--variant", "cot")
    assert code == 1 and "is not marked 'cot: true'" in err
    code, out, err = _preview("esnli", "--variant", "cot", "--json", "-n", "1")
    assert code == 0
    assert {r["variant"] for r in json.loads(out)} == {"cot"}
    assert "left out: template 'relation-label-question'" in err


def test_forced_cot_on_a_source_without_rationale_is_an_error(user_catalog: Path) -> None:
    tpl = user_catalog / "templates" / "mini_nli.yaml"
    tpl.write_text(
        tpl.read_text().replace(
            "  - id: does-it-follow\n", "  - id: does-it-follow\n    cot: true\n"
        )
    )
    dirs = ["--sources", str(user_catalog / "sources"), "--templates", str(tpl.parent)]
    code, _, err = _preview("mini_nli", "-t", "does-it-follow", "--variant", "cot", *dirs)
    assert code == 1 and "has no 'rationale:'" in err
    catalog = load_catalog([user_catalog / "sources"], [tpl.parent], builtin=False)
    template = catalog.templates_for("mini_nli")[0]
    with pytest.raises(VariantUnavailable, match="rationale"):
        render_one(
            catalog.source("mini_nli"),
            template,
            {"premise": "p", "hypothesis": "h", "label": 0},
            variant="cot",
        )


def test_variant_inverted_exists_and_only_inverted_templates_take_it(user_catalog: Path) -> None:
    dirs = [
        "--sources",
        str(user_catalog / "sources"),
        "--templates",
        str(user_catalog / "templates"),
    ]
    code, out, _ = _preview("mini_nli", "--variant", "inverted", "--json", *dirs)
    assert code == 0 and {r["template_id"] for r in json.loads(out)} == {"write-claim"}
    code, _, err = _preview("mini_nli", "-t", "does-it-follow", "--variant", "inverted", *dirs)
    assert code == 1 and "is not inverted" in err
    code, _, err = _preview("mini_nli", "-t", "write-claim", "--variant", "zero_shot_noopt", *dirs)
    assert code == 1 and "is inverted" in err


def test_preview_with_a_recipe_shows_what_run_makes(tmp_path: Path, user_catalog: Path) -> None:
    recipe = user_catalog / "recipes" / "mini.yaml"
    recipe.write_text(
        recipe.read_text()
        + "system: You are careful.\nvariants: {options_shown: 1, option_styles: [numbers]}\n"
    )
    run_recipe(recipe, tmp_path / "o")
    made = {
        (r["example_id"], r["template_id"]): r["messages"]
        for p in (tmp_path / "o" / "valid").rglob("*.parquet")
        for r in pq.read_table(p).to_pylist()
    }
    code, out, _ = _preview("mini_nli", "--recipe", str(recipe), "-n", "4", "--json")
    assert code == 0
    rows = json.loads(out)
    assert {(r["example_id"], r["template_id"]): r["messages"] for r in rows} == made
    assert rows[0]["messages"][0] == {"role": "system", "content": "You are careful."}
    # The recipe never hides options: a forced `_noopt` is an error, not a fake record.
    code, _, err = _preview(
        "mini_nli", "--recipe", str(recipe), "-t", "does-it-follow", "--variant", "zero_shot_noopt"
    )
    assert code == 1 and "always shows options" in err


def test_preview_shows_a_record_runs_validation_rejects(user_catalog: Path) -> None:
    recipe = user_catalog / "recipes" / "mini.yaml"
    recipe.write_text(recipe.read_text() + "limits: {max_prompt_chars: 20}\n")
    code, out, _ = _preview("mini_nli", "--recipe", str(recipe), "-n", "1", "--json")
    assert code == 0
    assert {(r["stage"], r["rule"]) for r in json.loads(out)} == {("validate", "prompt_too_long")}


def test_lint_with_the_recipe_is_green_for_what_the_recipe_renders_cleanly(
    tmp_path: Path, user_catalog: Path
) -> None:
    # The prompt is only the options block: empty whenever options are hidden.
    write(
        user_catalog / "templates" / "only-options.yaml",
        """
        source: mini_nli
        templates:
          - id: only-options
            instruction: "{{ options }}"
            output: "{{ answer_choices[label] }}"
            answer_choices: ["yes", "maybe", "no"]
        """,
    )
    recipe = user_catalog / "recipes" / "mini.yaml"
    recipe.write_text(recipe.read_text() + "variants: {options_shown: 1}\n")
    dirs = [
        "--sources",
        str(user_catalog / "sources"),
        "--templates",
        str(user_catalog / "templates"),
    ]
    plain = CliRunner().invoke(app, ["templates", "lint", "mini_nli", *dirs])
    assert plain.exit_code == 1 and "empty_prompt" in plain.stdout
    with_recipe = CliRunner().invoke(app, ["templates", "lint", "--recipe", str(recipe)])
    assert with_recipe.exit_code == 0, with_recipe.output
    assert run_recipe(recipe, tmp_path / "o").sources["mini_nli"].records_rejected == 0


def test_choices_in_prompt_that_the_prompt_never_shows(tmp_path: Path, user_catalog: Path) -> None:
    tpl = user_catalog / "templates" / "mini_nli.yaml"
    tpl.write_text(
        tpl.read_text().replace(
            '    answer_choices: ["yes", "maybe", "no"]\n',
            '    answer_choices: ["yes", "maybe", "no"]\n    metadata: {choices_in_prompt: true}\n',
        )
    )
    catalog = load_catalog([user_catalog / "sources"], [tpl.parent], builtin=False)
    found = [f for f in lint_catalog(catalog) if f.rule == "choices_not_in_prompt"]
    assert [(f.severity, f.template_id) for f in found] == [("error", "does-it-follow")]
    manifest = run_recipe(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert manifest.sources["mini_nli"].records_rejected == 0
    variants = {
        r["variant"]
        for p in (tmp_path / "o" / "valid").rglob("*.parquet")
        for r in pq.read_table(p).to_pylist()
        if r["template_id"] == "does-it-follow"
    }
    assert variants == {"zero_shot_noopt"}


def test_every_json_help_says_what_it_prints() -> None:
    for cmd in (["templates", "preview"], ["templates", "lint"], ["sources", "list"],
                ["templates", "list"], ["recipes", "list"], ["rejects"]):  # fmt: skip
        text = CliRunner().invoke(app, [*cmd, "--help"], terminal_width=200).stdout
        assert "run manifest" not in text, cmd
