"""Record rules of your own, in Jinja: a recipe's and a source's checks on rendered records."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import CatalogError, run_recipe
from pipeline.runfolder import RunFolder, reject_lines

from .conftest import write


def _echo_template(user_catalog: Path) -> None:
    """A template whose answer is its own prompt: the rule below must catch it."""
    write(
        user_catalog / "templates" / "mini_nli_echo.yaml",
        """
        source: mini_nli
        templates:
          - id: echo
            instruction: "{{ premise }}"
            output: "{{ premise }}"
        """,
    )


def test_a_recipe_rule_rejects_records_that_fail_it(tmp_path: Path, user_catalog: Path) -> None:
    _echo_template(user_catalog)
    recipe = user_catalog / "recipes" / "mini.yaml"
    recipe.write_text(
        recipe.read_text(encoding="utf-8")
        + "record_rules:\n"
        + "  - name: answer_repeats_prompt\n"
        + '    check: "{{ output | trim | lower != prompt | trim | lower }}"\n'
        + "    message: the answer only repeats the prompt\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    manifest = run_recipe(recipe, out)
    assert manifest.check() == []
    counts = manifest.sources["mini_nli"]
    assert counts.rejected_by_rule["answer_repeats_prompt"] == 4
    rejects = [r for r in reject_lines(RunFolder(out), "validate", "mini_nli")]
    assert {r["template_id"] for r in rejects} == {"echo"}
    assert all(r["message"] == "the answer only repeats the prompt" for r in rejects)


def test_a_source_rule_applies_to_that_source(tmp_path: Path, user_catalog: Path) -> None:
    spec = user_catalog / "sources" / "mini_nli.yaml"
    spec.write_text(
        spec.read_text(encoding="utf-8")
        + "record_rules:\n"
        + '  - {name: short_answer, check: "{{ output | wordcount <= 3 }}"}\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    manifest = run_recipe(user_catalog / "recipes" / "mini.yaml", out)
    rules = manifest.sources["mini_nli"].rejected_by_rule
    # The inverted template writes a whole hypothesis (three of the four are longer than three
    # words: "Someone makes music." is not); the label answers are one word.
    assert rules == {"short_answer": 3}
    (message,) = {r["message"] for r in reject_lines(RunFolder(out), "validate", "mini_nli")}
    assert message == "the record fails '{{ output | wordcount <= 3 }}'"


@pytest.mark.parametrize(
    ("check", "why"),
    [("output != prompt", "must be a Jinja expression"), ("{{ output !=  }}", "unexpected")],
)
def test_a_broken_rule_stops_the_run_before_rendering(
    tmp_path: Path, user_catalog: Path, check: str, why: str
) -> None:
    recipe = user_catalog / "recipes" / "mini.yaml"
    recipe.write_text(
        recipe.read_text(encoding="utf-8") + f"record_rules:\n  - {{name: r1, check: '{check}'}}\n",
        encoding="utf-8",
    )
    with pytest.raises(CatalogError, match=rf"mini\.yaml: record_rules\[0\] \(r1\): .*{why}"):
        run_recipe(recipe, tmp_path / "out")
    assert not (tmp_path / "out" / "rendered").exists()
