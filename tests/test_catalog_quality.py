"""The shipped catalog at FLAN depth, and the default build's records free of the defect classes
issue 11 found (read from the records, not from counts).

Catalog: every bundled task is a source, at least 10 phrasings each, 12+ clusters, Hub facts
with where they were checked, choices on classification templates, CoT where a rationale
exists (lint clean: tests/test_lint.py). Build: no calculator annotations or `####` in any
output, no PTB tokenisation or table markers in a target, every lettered/numbered record's
target is the form its prompt asks for, one-turn few-shot answers are marked, inverted
templates make varied prompts, and multi-answer QA lists every gold answer and answers with
one of them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipeline.locales import locale_for
from pipeline.models import ClassLabel, Manifest, SequenceOfClassLabel

BUNDLED = Path(__file__).resolve().parents[1] / "data"
MULTI_ANSWER = ("nq_open", "web_questions")
LOCALES = ("en", "de", "es", "fi", "fr")


def test_every_bundled_task_is_a_source_with_ten_phrasings(builtin_catalog) -> None:
    sources = builtin_catalog.sources
    assert len(sources) >= 20
    files = {p.name for p in BUNDLED.iterdir() if p.suffix in (".jsonl", ".json", ".csv", ".tsv")}
    used = {Path(p).name for s in sources.values() if s.spec.sample for p in s.sample_paths()}
    assert files <= used, f"bundled files no source reads: {sorted(files - used)}"
    assert len({s.spec.cluster for s in sources.values()}) >= 12
    for name in sources:
        templates = builtin_catalog.templates_for(name)
        assert len(templates) >= 10, (name, len(templates))
        assert len({t.spec.instruction or t.spec.jinja for t in templates}) == len(templates)


def test_hub_facts_say_where_they_were_checked(builtin_catalog) -> None:
    for source in builtin_catalog.sources.values():
        hub = source.spec.hub
        if hub is not None:
            assert hub.checked.strip(), f"{source.name}: hub.checked is empty"


def test_classification_templates_have_choices_and_cot_where_a_rationale_exists(
    builtin_catalog,
) -> None:
    for source in builtin_catalog.sources.values():
        labels = [
            n
            for n, t in source.spec.features.items()
            if isinstance(t, ClassLabel | SequenceOfClassLabel)
        ]
        templates = builtin_catalog.templates_for(source.name)
        if source.spec.rationale is not None:
            assert sum(t.spec.cot for t in templates) >= 2, source.name
        for t in templates:
            output = t.spec.output or t.spec.jinja or ""
            single = [n for n in labels if isinstance(source.spec.features[n], ClassLabel)]
            answers_a_label = any(
                re.search(rf"answer_choices\[\s*{n}\s*\]|names\.{n}\b", output) for n in single
            )
            if answers_a_label and not t.spec.inverted:
                assert t.spec.answer_choices is not None, (source.name, t.id)


def test_no_template_writes_a_plural_hack(builtin_catalog) -> None:
    # "these 1 triple(s)": a template says the count properly (a question's own "(s)" is data).
    for name in builtin_catalog.sources:
        for t in builtin_catalog.templates_for(name):
            texts = [t.spec.instruction, t.spec.input, t.spec.output, t.spec.jinja]
            for text in filter(None, texts):
                assert not ARTEFACTS["plural hack"].search(text), (name, t.id)


def _records(out: Path) -> list[dict[str, Any]]:
    files = sorted((out / "mixed").glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def records(default_run: tuple[Path, Manifest]) -> list[dict[str, Any]]:
    return _records(default_run[0])


ARTEFACTS = {
    "calculator annotation": re.compile(r"<<[^>]*>>"),
    "#### answer line": re.compile(r"####"),
    "PTB quotes": re.compile(r"``|''"),
    "PTB bracket": re.compile(r"-[LR][RSC]B-"),
    "space before punctuation": re.compile(r"\w \.$|\w ,\s|\w \.\s"),
    "table marker": re.compile(r"\[(TABLECONTEXT|TITLE)\]"),
    "plural hack": re.compile(r"\w\(s\)"),
}


def test_no_output_carries_a_data_artefact(records: list[dict[str, Any]]) -> None:
    found: dict[str, list[str]] = defaultdict(list)
    for r in records:
        output = r["messages"][-1]["content"]
        for name, pattern in ARTEFACTS.items():
            # "(s)" in an abstract or a question is the data's own wording; a template's own
            # "(s)" is test_no_template_writes_a_plural_hack's.
            if name != "plural hack" and pattern.search(output):
                found[name].append(f"{r['source']}/{r['template_id']}: {output[:80]!r}")
    assert dict(found) == {}


def test_no_prompt_carries_a_table_marker_or_annotation(records: list[dict[str, Any]]) -> None:
    for r in records:
        prompt = "\n".join(m["content"] for m in r["messages"][:-1])
        assert not ARTEFACTS["calculator annotation"].search(prompt), r["id"]
        assert not ARTEFACTS["table marker"].search(prompt), r["id"]


def test_lettered_and_numbered_targets_are_what_the_prompt_asks(
    records: list[dict[str, Any]],
) -> None:
    checked = 0
    forms = locale_for("en").answer_forms
    for r in records:
        if not r["answer_choices"] or r["language"] != "en":
            continue
        prompt = r["messages"][-2]["content"]
        answer = r["messages"][-1]["content"]
        if r["variant"] in ("cot", "few_shot_cot"):
            answer = answer.rsplit(locale_for("en").cot_answer_prefix, 1)[-1]
        for style, by_target in forms.items():
            for target, lines in by_target.items():
                if not any(prompt.rstrip().endswith(line) for line in lines):
                    continue
                checked += 1
                marker = r"[A-Z]+" if style == "letters" else r"[0-9]+"
                if target == "marker":
                    assert re.fullmatch(marker, answer), (r["template_id"], answer)
                elif target == "both":
                    assert re.match(rf"\(?{marker}[).] ", answer), (r["template_id"], answer)
                else:
                    assert not re.fullmatch(rf"\(?{marker}\)?\.?", answer), answer
                    assert f" {answer}" in prompt, (r["template_id"], answer)
    assert checked > 100


def test_one_turn_few_shot_answers_are_marked(records: list[dict[str, Any]]) -> None:
    few = [r for r in records if r["variant"].startswith("few_shot") and len(r["messages"]) == 2]
    assert few
    for r in few:
        prompt = r["messages"][0]["content"]
        # The prompt's language may differ from the rows' (a German-phrased NTREX template).
        patterns = [p for code in LOCALES for p in locale_for(code).few_shot_patterns]
        assert any(prompt.endswith("\n" + p.answer.rstrip()) for p in patterns), prompt[-200:]


def test_inverted_templates_make_varied_prompts(records: list[dict[str, Any]]) -> None:
    prompts: dict[tuple[str, str], set[str]] = defaultdict(set)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for r in records:
        if r["variant"] == "inverted":
            key = (r["source"], r["template_id"])
            prompts[key].add(r["messages"][-2]["content"])
            counts[key] += 1
    assert prompts
    degenerate = {k: (len(prompts[k]), n) for k, n in counts.items() if len(prompts[k]) * 10 < n}
    assert degenerate == {}


def test_multi_answer_qa_lists_and_accepts_every_gold_answer(
    records: list[dict[str, Any]], builtin_catalog
) -> None:
    qa = [r for r in records if r["source"] in MULTI_ANSWER and r["variant"] != "inverted"]
    assert qa
    several = 0
    for r in qa:
        gold = r["gold_answers"]
        assert gold, (r["source"], r["template_id"])
        answer = r["messages"][-1]["content"]
        if r["variant"] in ("cot", "few_shot_cot"):
            answer = answer.rsplit(locale_for("en").cot_answer_prefix, 1)[-1]
        assert answer in gold
        several += len(gold) > 1
    assert several > 0
