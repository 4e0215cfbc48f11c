"""Template lint: the shipped catalog is clean, and each planted defect is found and located."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline import Catalog, load_catalog
from pipeline.lint import Finding, lint_catalog

from .conftest import write

HEADER = "source: mini_nli\ntemplates:\n"
GOOD = """
  - id: does-it-follow
    instruction: "Does \\"{{ hypothesis }}\\" follow from \\"{{ premise }}\\"?"
    output: "{{ answer_choices[label] }}"
    answer_choices: ["yes", "maybe", "no"]
"""


@pytest.fixture(scope="module")
def shipped_findings(builtin_catalog: Catalog) -> list[Finding]:
    start = time.perf_counter()
    findings = lint_catalog(builtin_catalog)
    elapsed = time.perf_counter() - start
    warnings = [f for f in findings if f.severity == "warning"]
    print(f"\nlint of the shipped catalog: {elapsed:.1f} s, {len(warnings)} warnings")
    for f in warnings:
        print(f"  {f}")
    return findings


def test_shipped_catalog_has_no_errors(shipped_findings: list[Finding]) -> None:
    errors = [str(f) for f in shipped_findings if f.severity == "error"]
    assert errors == []


def test_doubled_spaces_of_the_data_are_not_the_templates(
    shipped_findings: list[Finding], builtin_catalog: Catalog
) -> None:
    # GSM8K's questions (and banking77's queries) carry doubled spaces of their own.
    rows = [json.loads(line) for line in builtin_catalog.source("gsm8k").sample_path().open()]
    assert any("  " in row["question"] for row in rows)
    assert not [f for f in shipped_findings if f.rule == "double_space" and f.source == "gsm8k"]


# --------------------------------------------------------------------------- planted defects


def lint_user(root: Path, templates: str) -> list[Finding]:
    write(root / "templates" / "mini_nli.yaml", HEADER + templates.strip("\n") + "\n")
    catalog = load_catalog([root / "sources"], [root / "templates"], builtin=False)
    return lint_catalog(catalog)


def only(findings: list[Finding], rule: str) -> Finding:
    matches = [f for f in findings if f.rule == rule]
    assert len(matches) == 1, [str(f) for f in findings]
    return matches[0]


def assert_at(finding: Finding, root: Path, template_id: str, example_id: str | None) -> None:
    assert finding.file == str(root / "templates" / "mini_nli.yaml")
    assert finding.source == "mini_nli"
    assert finding.template_id == template_id
    assert finding.example_id == example_id


def test_the_fixture_catalog_is_clean(user_catalog: Path) -> None:
    catalog = load_catalog([user_catalog / "sources"], [user_catalog / "templates"], builtin=False)
    assert lint_catalog(catalog) == []


def test_syntax_error_names_the_part_and_line(user_catalog: Path) -> None:
    findings = lint_user(
        user_catalog,
        GOOD
        + """
  - id: broken
    instruction: |-
      Premise: {{ premise }}
      Hypothesis: {{ hypothesis }
    output: "{{ answer_choices[label] }}"
    answer_choices: ["yes", "maybe", "no"]
""",
    )
    f = only(findings, "template_syntax")
    assert_at(f, user_catalog, "broken", None)
    assert f.severity == "error"
    assert f.message.startswith("instruction: line 2:")
    assert [x.rule for x in findings] == ["template_syntax"]  # not rendered at all


def test_undefined_at_render_time(user_catalog: Path) -> None:
    findings = lint_user(
        user_catalog,
        GOOD
        + """
  - id: bad-label-name
    instruction: "Is it {{ names.labl }}? {{ premise }}"
    output: "{{ hypothesis }}"
""",
    )
    f = only(findings, "undefined")
    assert_at(f, user_catalog, "bad-label-name", "1")
    assert "labl" in f.message
    assert "[4 of 4 examples]" in f.message


def test_field_the_source_does_not_declare(user_catalog: Path) -> None:
    findings = lint_user(
        user_catalog,
        GOOD
        + """
  - id: typo
    instruction: "{{ premise }} Hence: {{ hypothesys }}?"
    output: "{{ answer_choices[label] }}"
    answer_choices: ["yes", "maybe", "no"]
""",
    )
    f = only(findings, "undeclared_field")
    assert_at(f, user_catalog, "typo", "1")
    assert f.severity == "error"
    assert f.message.startswith("instruction: uses hypothesys,")
    assert only(findings, "undefined").template_id == "typo"


def test_undeclared_field_in_an_untaken_branch_is_still_found(user_catalog: Path) -> None:
    findings = lint_user(
        user_catalog,
        GOOD
        + """
  - id: rare-branch
    instruction: "{{ premise }}{% if label == 7 %} {{ hypotesis }}{% endif %}"
    output: "{{ hypothesis }}"
""",
    )
    f = only(findings, "undeclared_field")
    assert_at(f, user_catalog, "rare-branch", "1")  # the first example it renders on
    assert not [x for x in findings if x.rule == "undefined"]


def test_empty_output(user_catalog: Path) -> None:
    findings = lint_user(
        user_catalog,
        GOOD
        + """
  - id: sometimes-empty
    instruction: "Rewrite: {{ premise }}"
    output: "{{ premise if label != 1 else '' }}"
""",
    )
    f = only(findings, "empty_output")
    assert_at(f, user_catalog, "sometimes-empty", "3")  # the only neutral row
    assert "[1 of 4 examples]" in f.message


def test_empty_prompt(user_catalog: Path) -> None:
    findings = lint_user(
        user_catalog,
        GOOD
        + """
  - id: no-prompt
    instruction: "{% if label == 2 %}Contradict: {{ premise }}{% endif %}"
    output: "{{ hypothesis }}"
""",
    )
    f = only(findings, "empty_prompt")
    assert_at(f, user_catalog, "no-prompt", "1")


def test_output_not_among_the_choices(user_catalog: Path) -> None:
    findings = lint_user(
        user_catalog,
        GOOD
        + """
  - id: label-name-output
    instruction: "Premise: {{ premise }} Hypothesis: {{ hypothesis }}"
    output: "{{ names.label }}"
    answer_choices: ["yes", "maybe", "no"]
""",
    )
    f = only(findings, "output_not_in_choices")
    assert_at(f, user_catalog, "label-name-output", "1")
    assert "'entailment'" in f.message


def test_two_identical_templates(user_catalog: Path) -> None:
    findings = lint_user(
        user_catalog,
        GOOD
        + """
  - id: copy-of-it
    instruction: "Does \\"{{ hypothesis }}\\" follow from \\"{{ premise }}\\"?"
    output: "{{ answer_choices[label] }}"
    answer_choices: ["yes", "maybe", "no"]
""",
    )
    f = only(findings, "duplicate_template")
    assert_at(f, user_catalog, "copy-of-it", "1")
    assert "'does-it-follow'" in f.message


def test_leftover_template_syntax(user_catalog: Path) -> None:
    findings = lint_user(
        user_catalog,
        GOOD
        + """
  - id: leaks-braces
    instruction: "Premise: {{ premise }}"
    output: "{{ '{{' }} hypothesis }}"
""",
    )
    f = only(findings, "leftover_template_syntax")
    assert_at(f, user_catalog, "leaks-braces", "1")
    assert "'{{'" in f.message


def test_braces_in_the_data_are_not_leftovers(user_catalog: Path) -> None:
    rows = [{"id": 1, "p": "Set x = {{ y }} in the template.", "h": "x is set.", "gold": "neutral"}]
    write(user_catalog / "data" / "mini_nli.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert lint_user(user_catalog, GOOD) == []


def test_letter_glued_after_a_field(user_catalog: Path) -> None:
    findings = lint_user(
        user_catalog,
        GOOD
        + """
  - id: flan-newline-bug
    instruction: |-
      Premise: {{ premise }}
      Hypothesis: {{ hypothesis }}n
      Does the premise entail the hypothesis?
    output: "{{ answer_choices[label] }}"
    answer_choices: ["yes", "maybe", "no"]
""",
    )
    f = only(findings, "stray_after_field")
    assert_at(f, user_catalog, "flan-newline-bug", "1")
    assert f.message.startswith("instruction: line 2: 'n' is glued")


def test_doubled_space_from_the_template(user_catalog: Path) -> None:
    findings = lint_user(
        user_catalog,
        GOOD
        + """
  - id: two-spaces
    instruction: "Premise:  {{ premise }}"
    output: "{{ hypothesis }}"
""",
    )
    f = only(findings, "double_space")
    assert_at(f, user_catalog, "two-spaces", "1")
    assert f.severity == "warning"


def test_doubled_space_from_the_data_is_not_flagged(user_catalog: Path) -> None:
    rows = [
        {"id": 1, "p": "A dog  runs.  Fast.", "h": "An animal moves. ", "gold": "entailment"},
        {"id": 2, "p": "A man reads.", "h": "A man sleeps.", "gold": "contradiction"},
    ]
    write(user_catalog / "data" / "mini_nli.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    findings = lint_user(
        user_catalog,
        GOOD
        + """
  - id: two-lines
    instruction: "Premise: {{ premise }}\\nHypothesis: {{ hypothesis }}\\nTrue?"
    output: "{{ answer_choices[label] }}"
    answer_choices: ["yes", "maybe", "no"]
""",
    )
    assert findings == []


def test_trailing_whitespace(user_catalog: Path) -> None:
    findings = lint_user(
        user_catalog,
        GOOD
        + """
  - id: trailing
    instruction: "Premise: {{ premise }} \\nHypothesis: {{ hypothesis }}"
    output: "{{ answer_choices[label] }}"
    answer_choices: ["yes", "maybe", "no"]
""",
    )
    f = only(findings, "trailing_whitespace")
    assert_at(f, user_catalog, "trailing", "1")
    assert f.severity == "warning"
    assert "prompt line 1" in f.message


def test_sandbox_escape(user_catalog: Path) -> None:
    findings = lint_user(
        user_catalog,
        GOOD
        + """
  - id: escape
    instruction: "{{ premise }}"
    output: "{{ ''.__class__.__mro__ }}"
""",
    )
    f = only(findings, "sandbox")
    assert_at(f, user_catalog, "escape", "1")
    assert f.severity == "error"
    assert "'__class__'" in f.message


def test_template_that_ignores_its_inputs(user_catalog: Path) -> None:
    findings = lint_user(
        user_catalog,
        GOOD
        + """
  - id: constant
    instruction: "Write a sentence about a dog."
    output: "{{ premise }}"
""",
    )
    f = only(findings, "constant_render")
    assert_at(f, user_catalog, "constant", "1")
    assert f.severity == "warning"


def test_options_block_is_linted(user_catalog: Path) -> None:
    # Only the options-shown form is wrong: a choice with a doubled space.
    findings = lint_user(
        user_catalog,
        """
  - id: spaced-choice
    instruction: "Premise: {{ premise }} Hypothesis: {{ hypothesis }}"
    output: "{{ answer_choices[label] }}"
    answer_choices: ["yes", "maybe  so", "no"]
""",
    )
    f = only(findings, "double_space")
    assert f.message.startswith("options shown: prompt")
    assert f.example_id is not None


def test_max_examples_caps_each_source(user_catalog: Path) -> None:
    plant = """
  - id: always-undefined
    instruction: "{{ names.nope }}"
    output: "x"
"""
    full = only(lint_user(user_catalog, GOOD + plant), "undefined")
    assert "[4 of 4 examples]" in full.message
    catalog = load_catalog([user_catalog / "sources"], [user_catalog / "templates"], builtin=False)
    capped = only(lint_catalog(catalog, ["mini_nli"], max_examples=2), "undefined")
    assert "[2 of 2 examples]" in capped.message
    again = only(lint_catalog(catalog, ["mini_nli"], max_examples=2), "undefined")
    assert again == capped  # the same seeded subset every time


def test_finding_prints_on_one_line() -> None:
    f = Finding(
        "error",
        "output_not_in_choices",
        "esnli",
        "premise-hypothesis-options",
        "templates/esnli.yaml",
        "output 'x' is not one of ['yes', 'no']",
        "17",
    )
    assert str(f) == (
        "templates/esnli.yaml: esnli/premise-hypothesis-options: error output_not_in_choices: "
        "output 'x' is not one of ['yes', 'no'] (example 17)"
    )


def test_a_translation_is_checked_in_its_own_language(tmp_path: Path) -> None:
    # The French phrasing has a doubled space of its own; lint re-renders a suspect record with
    # its data tidied to blame the template, and that render must stay French.
    rows = [
        {"id": "r0", "lang": "en", "text": "The soup was cold.", "stars": 0},
        {"id": "r1", "lang": "fr", "text": "La soupe était froide.", "stars": 0},
        {"id": "r2", "lang": "fr", "text": "Un accueil chaleureux.", "stars": 1},
    ]
    write(tmp_path / "data" / "reviews.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write(
        tmp_path / "sources" / "reviews.yaml",
        """
        name: reviews
        task: review sentiment
        cluster: sentiment
        license: CC0-1.0
        hub: {id: someone/reviews, splits: [train]}
        language: [en, fr]
        language_field: lang
        features:
          lang: string
          text: string
          label: {names: [negative, positive]}
        sample:
          file: reviews.jsonl
          split: train
          id_field: id
          fields: {label: stars}
        """,
    )
    write(
        tmp_path / "templates" / "reviews.yaml",
        """
        source: reviews
        templates:
          - id: positive-or-negative
            instruction: "Is this review positive or negative? {{ text }}"
            output: "{{ answer_choices[label] }}"
            answer_choices: [negative, positive]
            translations:
              fr:
                instruction: "Cet avis est-il positif  ou négatif ? {{ text }}"
                answer_choices: [négatif, positif]
        """,
    )
    catalog = load_catalog([tmp_path / "sources"], [tmp_path / "templates"], builtin=False)
    findings = lint_catalog(catalog)
    f = only(findings, "double_space")
    assert (f.template_id, f.example_id) == ("positive-or-negative", "r1")
    assert "[2 of 3 examples]" in f.message
    # French sets a space before "?" by rule: not a doubled_punctuation finding.
    assert not [x for x in findings if x.rule == "doubled_punctuation"]
