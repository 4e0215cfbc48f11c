"""What a source spec can reach: nested raw fields, several files, languages per row or file,
a row filter and limit, per-language template phrasings, and features named like context names."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline import load_catalog
from pipeline.catalog import Source
from pipeline.errors import CatalogError
from pipeline.load import BadRow, Example, iter_rows, open_source
from pipeline.models import SourceSpec, TemplateSpec

from .conftest import write

SPEC_HEAD = """
name: reach
task: toy question answering
cluster: closed_book_qa
license: CC0-1.0
"""


def _catalog(tmp_path: Path, spec: str, files: dict[str, list[Any] | str]) -> Source:
    """A one-source catalog: the spec (after SPEC_HEAD) and its data files (rows or text)."""
    root = tmp_path / "cat"
    for name, content in files.items():
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in content), encoding="utf-8")
    write(root / "sources" / "reach.yaml", SPEC_HEAD + textwrap.dedent(spec))
    return load_catalog([root / "sources"], builtin=False).source("reach")


def _items(source: Source) -> list[Example | BadRow]:
    return [
        item
        for split in open_source(source, "sample")
        for batch in iter_rows(source, split, "sample")
        for item in batch
    ]


# --------------------------------------------------------------------------- dotted paths


def test_dotted_paths_reach_nested_keys_and_list_items(tmp_path: Path) -> None:
    rows = [
        {"meta": {"id": "q1"}, "q": {"text": "Capital of France?"}, "answers": {"text": ["Paris"]}},
        {"meta": {"id": "q2"}, "q": {"text": "2 + 2?"}, "answers": {"text": ["4", "four"]}},
        {"meta": {"id": "q3"}, "q": {"text": "Unanswered?"}, "answers": {"text": []}},
        {"meta": {"id": "q4"}, "q": "not an object", "answers": {"text": ["x"]}},
    ]
    source = _catalog(
        tmp_path,
        """
        features: {question: string, answer: string}
        sample:
          file: qa.jsonl
          split: train
          id_field: meta.id
          fields: {question: q.text, answer: {column: answers.text.0}}
        """,
        {"qa.jsonl": rows},
    )
    items = _items(source)
    good = [i for i in items if isinstance(i, Example)]
    assert [(e.example_id, e.fields) for e in good] == [
        ("q1", {"question": "Capital of France?", "answer": "Paris"}),
        ("q2", {"question": "2 + 2?", "answer": "4"}),
    ]
    bad = [i for i in items if isinstance(i, BadRow)]
    assert [(b.example_id, b.rule) for b in bad] == [
        ("q3", "missing_field"),
        ("q4", "missing_field"),
    ]
    # Each reject names the path that did not resolve, and why.
    assert "'answers.text.0' does not resolve: answers.text has 0 item(s)" in bad[0].message
    assert "'q.text' does not resolve: q is a string" in bad[1].message


# --------------------------------------------------------------------------- several files


def test_several_files_each_with_its_split_language_and_json_field(tmp_path: Path) -> None:
    document = {"train": [{"q": "Hauptstadt?", "a": "Berlin"}], "dev": [{"q": "Zwei?", "a": "2"}]}
    source = _catalog(
        tmp_path,
        """
        language: [en, de]
        features: {q: string, a: string}
        sample:
          files:
            - {file: en.jsonl, split: train, language: en}
            - {file: de.json, split: train, language: de, json_field: train}
            - {file: de.json, split: validation, language: de, json_field: dev}
        """,
        {"en.jsonl": [{"q": "Capital?", "a": "Paris"}], "de.json": json.dumps(document)},
    )
    items = _items(source)
    assert all(isinstance(i, Example) for i in items)
    shown = [(i.split, i.language, i.fields["a"], Path(i.locator).name) for i in items]
    assert shown == [
        ("train", "en", "Paris", "en.jsonl row 1"),
        ("train", "de", "Berlin", "de.json row 1"),
        ("validation", "de", "2", "de.json row 1"),
    ]


def test_every_listed_file_goes_through_the_catalog_checks(tmp_path: Path) -> None:
    outside = tmp_path / "secret.jsonl"
    outside.write_text('{"q": "x", "a": "y"}\n', encoding="utf-8")
    source = _catalog(
        tmp_path,
        """
        features: {q: string, a: string}
        sample:
          files:
            - {file: ok.jsonl, split: train}
            - {file: linked.jsonl, split: validation}
        """,
        {"ok.jsonl": [{"q": "x", "a": "y"}]},
    )
    os.symlink(outside, tmp_path / "cat" / "data" / "linked.jsonl")
    with pytest.raises(CatalogError) as err:
        open_source(source, "sample")
    message = str(err.value)
    assert "sample.files[1].file:" in message and "outside the catalog folder" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (
            {"file": "a.jsonl", "split": "train", "files": [{"file": "b.jsonl", "split": "x"}]},
            "not both",
        ),
        ({"files": [{"file": "b.jsonl", "split": "x"}], "split": "train"}, "not both"),
        ({"file": "a.jsonl"}, "needs 'file' and 'split'"),
        ({"files": [{"file": "../b.jsonl", "split": "x"}]}, "relative path inside the catalog"),
        ({"files": [{"file": "b.jsonl", "split": "x", "language": "de"}]}, "not among"),
    ],
)
def test_a_sample_takes_file_and_split_or_files_not_both(
    sample: dict[str, Any], expected: str
) -> None:
    spec = {"name": "x", "task": "t", "cluster": "misc", "license": "MIT"}
    with pytest.raises(ValidationError, match=expected):
        SourceSpec.model_validate({**spec, "features": {"q": "string"}, "sample": sample})


# --------------------------------------------------------------------------- languages


def test_language_field_sets_each_rows_language_and_rejects_unlisted(tmp_path: Path) -> None:
    rows = [
        {"text": "Hello", "lang": "en"},
        {"text": "Bonjour", "lang": "fr"},
        {"text": "Hallo", "lang": "de"},
        {"text": "?", "lang": ""},
    ]
    source = _catalog(
        tmp_path,
        """
        language: [en, fr]
        language_field: lang
        features: {text: string, lang: string}
        sample: {file: mixed.jsonl, split: train}
        """,
        {"mixed.jsonl": rows},
    )
    items = _items(source)
    assert [(i.fields["text"], i.language) for i in items if isinstance(i, Example)] == [
        ("Hello", "en"),
        ("Bonjour", "fr"),
    ]
    bad = [i for i in items if isinstance(i, BadRow)]
    assert [b.rule for b in bad] == ["bad_language", "bad_language"]
    assert "'de' is not one of the source's languages ['en', 'fr']" in bad[0].message


@pytest.mark.parametrize(("language", "expected"), [("de", "de"), ("[fr, en]", "fr")])
def test_every_example_carries_its_language(tmp_path: Path, language: str, expected: str) -> None:
    source = _catalog(
        tmp_path,
        f"""
        language: {language}
        features: {{text: string}}
        sample: {{file: one.jsonl, split: train}}
        """,
        {"one.jsonl": [{"text": "a"}]},
    )
    [item] = _items(source)
    assert isinstance(item, Example) and item.language == expected
    assert source.spec.default_language == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"language": []}, "at least one code"),
        ({"language": ["en", "en"]}, "listed once"),
        ({"language": "English"}, "pattern"),
        ({"language_field": "nope"}, "unknown feature 'nope'"),
        ({"language_field": "n"}, "must be a string or ClassLabel"),
    ],
)
def test_languages_are_codes_and_language_field_a_text_feature(
    spec: dict[str, Any], expected: str
) -> None:
    base = {"name": "x", "task": "t", "cluster": "misc", "license": "MIT", "hub": {"id": "a/b"}}
    features = {"q": "string", "n": "int"}
    with pytest.raises(ValidationError, match=expected):
        SourceSpec.model_validate({**base, "features": features, **spec})


def test_templates_take_per_language_translations() -> None:
    template = TemplateSpec.model_validate(
        {
            "id": "yes-no",
            "instruction": "Is it true? {{ text }}",
            "output": "{{ answer_choices[label] }}",
            "answer_choices": ["yes", "no"],
            "translations": {
                "de": {"instruction": "Stimmt das? {{ text }}", "answer_choices": ["ja", "nein"]},
                "pt-BR": {"system": "Responda com uma palavra."},
            },
        }
    )
    assert template.translations["de"].answer_choices == ["ja", "nein"]
    assert template.translations["pt-BR"].instruction is None


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ({"translations": {"de": {}}}, "at least one of"),
        ({"translations": {"German": {"output": "ja"}}}, "pattern"),
        ({"translations": {"de": {"jinja": "a ||| b"}}}, "not 'jinja'"),
        ({"translations": {"de": {"answer_choices": ["ja"]}}}, "the template has none"),
        (
            {"instruction": None, "output": None, "jinja": "a ||| b",
             "translations": {"de": {"output": "ja"}}},
            "translate it with 'jinja'",
        ),
    ],
)  # fmt: skip
def test_a_translation_sets_something_in_the_templates_own_form(
    template: dict[str, Any], expected: str
) -> None:
    base = {"id": "t", "instruction": "{{ text }}", "output": "yes"}
    with pytest.raises(ValidationError, match=expected):
        TemplateSpec.model_validate({**base, **template})


# --------------------------------------------------------------------------- filter and limit

LABELLED = [
    {"text": "A long enough sentence.", "label": 0},
    {"text": "Short.", "label": 1},
    {"text": "Another long sentence.", "label": 2},
]


def _labelled(tmp_path: Path, sample_extra: str, rows: list[Any] | str = LABELLED) -> Source:
    return _catalog(
        tmp_path,
        f"""
        features: {{text: string, label: {{names: [a, b, c]}}}}
        sample: {{file: rows.jsonl, split: train{sample_extra}}}
        """,
        {"rows.jsonl": rows},
    )


@pytest.mark.parametrize(
    ("expr", "kept", "dropped_row"),
    [
        ("{{ label != 2 }}", ["A long enough sentence.", "Short."], 3),
        ("{{ text | length > 10 }}", ["A long enough sentence.", "Another long sentence."], 2),
    ],
)
def test_filter_keeps_rows_it_passes_and_rejects_the_rest(
    tmp_path: Path, expr: str, kept: list[str], dropped_row: int
) -> None:
    items = _items(_labelled(tmp_path, f', filter: "{expr}"'))
    assert [i.fields["text"] for i in items if isinstance(i, Example)] == kept
    # Nothing is lost: the other row is a reject, with its rule, id and locator.
    [bad] = [i for i in items if isinstance(i, BadRow)]
    assert bad.rule == "filtered" and bad.example_id
    assert bad.locator.endswith(f"rows.jsonl row {dropped_row}")


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("{{ label != }}", "sample.filter: unexpected"),
        ("{{ lable != 2 }}", "unknown name(s) ['lable']"),
        ("label != 2", "is not a Jinja expression"),
    ],
)
def test_a_filter_that_cannot_compile_is_a_one_line_error(
    tmp_path: Path, expr: str, expected: str
) -> None:
    source = _labelled(tmp_path, f', filter: "{expr}"')
    with pytest.raises(CatalogError) as err:
        open_source(source, "sample")
    message = str(err.value)
    assert message.startswith(f"{source.path}: source 'reach': sample.filter")
    assert expected in message and "\n" not in message


def test_a_filter_that_fails_on_a_row_rejects_that_row(tmp_path: Path) -> None:
    # label 0 divides by zero; 10 // 1 > 6 holds; 10 // 2 > 6 does not.
    items = _items(_labelled(tmp_path, ', filter: "{{ 10 // label > 6 }}"'))
    assert [type(i).__name__ for i in items] == ["BadRow", "Example", "BadRow"]
    first, _, last = items
    assert isinstance(first, BadRow) and first.rule == "filter_error"
    assert "ZeroDivisionError" in first.message and first.locator.endswith("row 1")
    assert isinstance(last, BadRow) and last.rule == "filtered"


def test_limit_reads_only_the_first_rows_of_each_file(tmp_path: Path) -> None:
    # The third line is broken: with limit 2 it is never read, so the file loads.
    text = "".join(json.dumps(r) + "\n" for r in LABELLED[:2]) + "{not json\n"
    source = _labelled(tmp_path, ", limit: 2", text)
    [split] = open_source(source, "sample")
    assert len(split) == 2
    items = [i for batch in iter_rows(source, split, "sample") for i in batch]
    texts = [i.fields["text"] for i in items if isinstance(i, Example)]
    assert texts == ["A long enough sentence.", "Short."]


# --------------------------------------------------------------------------- context names


def test_a_feature_named_like_a_context_name_validates() -> None:
    # AQuA-RAT and MathQA publish a feature called `options`.
    spec = SourceSpec.model_validate(
        {
            "name": "aqua_rat",
            "task": "math word problems",
            "cluster": "math",
            "license": "Apache-2.0",
            "hub": {"id": "deepmind/aqua_rat"},
            "features": {"question": "string", "options": "list[string]", "correct": "string"},
        }
    )
    assert "options" in spec.features
