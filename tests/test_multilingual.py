"""A multilingual source, as a new user writes it: one spec, one template file, several
languages; the renderer's own sentences and the card follow each row's language."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline import load_catalog, run_recipe
from pipeline.lint import lint_catalog
from pipeline.locales import locale_for

from .conftest import write

# Made up for this test: short reviews in three languages with a rationale each.
ROWS = [
    ("en", "The soup was cold and the waiter ignored us.", 0, "Cold food and bad service."),
    ("en", "Lovely staff and the best bread in town.", 1, "Kind staff and great bread."),
    ("en", "We waited an hour and left hungry.", 0, "A long wait with no food."),
    ("en", "A warm welcome and a fair bill.", 1, "Friendly and fairly priced."),
    ("de", "Die Suppe war kalt und der Kellner unfreundlich.", 0, "Kalt, schlechter Service."),
    ("de", "Freundliches Personal und sehr gutes Brot.", 1, "Nettes Personal, gutes Brot."),
    ("de", "Wir haben eine Stunde gewartet und sind gegangen.", 0, "Zu lange gewartet."),
    ("de", "Herzlicher Empfang und eine faire Rechnung.", 1, "Freundlich und preiswert."),
    ("fr", "La soupe était froide et le serveur nous a ignorés.", 0, "Plat froid, service absent."),
    ("fr", "Personnel charmant et le meilleur pain du quartier.", 1, "Accueil et pain excellents."),
    ("fr", "Une heure d'attente, nous sommes partis le ventre vide.", 0, "Attente trop longue."),
    ("fr", "Un accueil chaleureux et une addition honnête.", 1, "Chaleureux et honnête."),
]  # fmt: skip


def _catalog(root: Path, languages: str = "[en, de, fr]") -> Path:
    lines = [
        json.dumps({"id": f"r{i}", "lang": lang, "text": t, "stars": y, "why": w})
        for i, (lang, t, y, w) in enumerate(ROWS)
    ]
    write(root / "data" / "reviews.jsonl", "\n".join(lines) + "\n")
    write(
        root / "sources" / "reviews.yaml",
        f"""
        name: reviews
        task: restaurant review sentiment (test data, made up)
        cluster: sentiment
        license: CC0-1.0
        citation: "A made-up test set of restaurant reviews."
        language: {languages}
        language_field: lang
        rationale: why
        features:
          lang: string
          text: string
          why: string
          label: {{names: [negative, positive]}}
        sample:
          file: reviews.jsonl
          split: train
          id_field: id
          fields: {{lang: lang, text: text, why: why, label: stars}}
        """,
    )
    write(
        root / "templates" / "reviews.yaml",
        """
        source: reviews
        templates:
          - id: review-sentiment
            cot: true
            instruction: "Is this review positive or negative? {{ text }}"
            output: "{{ answer_choices[label] }}"
            answer_choices: [negative, positive]
            translations:
              de:
                instruction: "Ist diese Bewertung positiv oder negativ? {{ text }}"
                answer_choices: [negativ, positiv]
              fr:
                instruction: "Cet avis est-il positif ou négatif ? {{ text }}"
                answer_choices: [négatif, positif]
        """,
    )
    return write(
        root / "recipes" / "r.yaml",
        """
        name: r
        seed: 5
        sources: [reviews]
        mixing: {cap: null}
        variants: {zero_shot: 1, few_shot: 1, cot: 1, options_shown: 1.0}
        few_shot: {k: 1}
        decontamination: {enabled: false}
        catalog: {sources: [../sources], templates: [../templates]}
        """,
    )


def _rows(out: Path) -> list[dict[str, Any]]:
    files = sorted((out / "dataset" / "data").glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def test_one_spec_and_one_template_file_build_three_languages(tmp_path: Path) -> None:
    recipe = _catalog(tmp_path)
    out = tmp_path / "out"
    manifest = run_recipe(recipe, out, max_reject_share=0.01)
    assert manifest.check() == []
    rows = _rows(out)
    lang_of = {f"r{i}": lang for i, (lang, *_) in enumerate(ROWS)}
    assert len(rows) == len(ROWS)
    for row in rows:
        lang = lang_of[row["example_id"]]
        assert row["language"] == lang
        user, answer = row["messages"][-2]["content"], row["messages"][-1]["content"]
        words = locale_for(lang)
        question = {"en": "Is this review", "de": "Ist diese Bewertung", "fr": "Cet avis est-il"}
        assert question[lang] in user, row
        if row["variant"] == "cot":
            assert answer.split("\n")[-1].startswith(words.cot_answer_prefix), row
            assert any(t in user for t in words.cot_triggers)
        if row["variant"].endswith("_opt"):
            # FLAN's own layout opens with an English "OPTIONS:", so only English rows get it.
            flan = lang == "en" and "OPTIONS:\n" in user
            assert flan or any(o in user for o in words.option_openings), row
        if row["variant"].startswith("few_shot"):
            # The exemplar is another review of the same language.
            others = [t for i, (lg, t, *_) in enumerate(ROWS) if lg != lang]
            assert not any(t in user for t in others), row
        expected = {"en": ["negative", "positive"], "de": ["negativ", "positiv"]}
        expected["fr"] = ["négatif", "positif"]
        gold = ROWS[int(row["example_id"][1:])][2]
        assert answer.endswith(expected[lang][gold]), row
    assert {r["variant"] for r in rows} >= {"cot"}
    card = (out / "dataset" / "README.md").read_text(encoding="utf-8")
    assert "- de\n- en\n- fr" in card
    assert card.count("A made-up test set of restaurant reviews.") == 1


def test_lint_warns_where_a_language_would_fall_back_to_english(tmp_path: Path) -> None:
    _catalog(tmp_path, languages="[en, de, fr, sw]")
    catalog = load_catalog([tmp_path / "sources"], [tmp_path / "templates"])
    findings = [f for f in lint_catalog(catalog, ["reviews"]) if f.severity == "warning"]
    rules = {f.rule: str(f) for f in findings}
    assert "no_locale" in rules and "'sw'" in rules["no_locale"]
    assert "untranslated_template" in rules and "['sw']" in rules["untranslated_template"]
    _catalog(tmp_path)
    catalog = load_catalog([tmp_path / "sources"], [tmp_path / "templates"])
    assert not [f for f in lint_catalog(catalog, ["reviews"]) if f.rule in rules]


def test_no_translation_is_asked_for_a_language_no_row_can_have(builtin_catalog) -> None:
    # NTREX lists [en, de] for its English-German pairs, but its rows have no language field:
    # every row is `en`, so a one-language direction template needs no German phrasing.
    source = builtin_catalog.source("ntrex")
    assert source.spec.languages == ["en", "de"] and source.spec.language_field is None
    rules = {f.rule for f in lint_catalog(builtin_catalog, ["ntrex"])}
    assert "untranslated_template" not in rules
