"""benchmarks/catalog_audit.py counts issue 11's defect classes on a run folder: here a small
run built in the test from a catalog with each defect planted once, and the same run made to
look like one from before records carried gold answers."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipeline import run_recipe

from .conftest import write

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "catalog_audit.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("catalog_audit", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


audit_script = _module()

PREMISES = [
    "A man in a blue shirt is standing on a ladder.",
    "Two dogs run across a snowy field.",
    "A woman is slicing tomatoes in a small kitchen.",
    "Children are playing soccer in the park.",
    "An old man reads a newspaper on a bench.",
]


def _catalog(root: Path) -> Path:
    math = [
        {
            "id": i,
            "question": f"Ann has {2 * i + 2} apples and gives half away. How many are left?",
            "answer": f"Half of {2 * i + 2} is <<{2 * i + 2}/2={i + 1}>>{i + 1}.\n#### {i + 1}",
        }
        for i in range(20)
    ]
    nli = [
        {"id": i, "p": PREMISES[i % 5], "h": f"Someone is outside, case {i}.", "y": i % 3}
        for i in range(40)
    ]
    nli.append(dict(nli[0]))  # a duplicate id: one load reject
    rivers = [
        {"id": i, "q": f"What is the name of river number {i}?", "a": [f"River {i}", f"R{i}"]}
        for i in range(10)
    ]
    years = [
        {"id": 10 + i, "q": f"Which year was town {i} founded?", "a": [str(1900 + i)]}
        for i in range(10)
    ]
    trivia = rivers + years
    for name, rows in (("math", math), ("lexnli", nli), ("trivia", trivia)):
        write(root / "data" / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    common = "license: CC0-1.0\nsample: {{file: {n}.jsonl, split: test, id_field: id{f}}}\n"
    common += "hub: {{id: someone/{n}, splits: [test]}}\n"
    write(
        root / "sources" / "math.yaml",
        "name: math\ntask: word problems\ncluster: math\n"
        + common.format(n="math", f="")
        + "features: {question: string, answer: string}\n",
    )
    write(
        root / "sources" / "lexnli.yaml",
        "name: lexnli\ntask: inference\ncluster: nli\n"
        + common.format(n="lexnli", f=", fields: {premise: p, hypothesis: h, label: y}")
        + "features:\n  premise: string\n  hypothesis: string\n"
        + "  label: {names: [entailment, neutral, contradiction]}\n",
    )
    write(
        root / "sources" / "trivia.yaml",
        "name: trivia\ntask: closed-book QA\ncluster: closed_book_qa\n"
        + common.format(n="trivia", f=", fields: {question: q, answers: a}")
        + "features:\n  question: string\n  answers: list[string]\n",
    )
    write(
        root / "templates" / "math.yaml",
        """
        source: math
        templates:
          - id: raw-answer
            instruction: "{{ question }} Show your work."
            output: "{{ answer }}"
        """,
    )
    write(
        root / "templates" / "lexnli.yaml",
        """
        source: lexnli
        templates:
          - id: says-letter
            instruction: "{{ premise }}\\n{{ hypothesis }}\\nAnswer with the letter only."
            output: "{{ answer_choices[label] }}"
            answer_choices: [entailment, neutral, contradiction]
          - id: no-form
            instruction: "{{ premise }}\\n{{ hypothesis }}\\nHow are they related?"
            output: "{{ answer_choices[label] }}"
            answer_choices: [entailment, neutral, contradiction]
          - id: write-hypothesis
            inverted: true
            instruction: "Write a hypothesis that is {{ names.label }}."
            output: "{{ hypothesis }}"
        """,
    )
    write(
        root / "templates" / "trivia.yaml",
        """
        source: trivia
        templates:
          - id: all-gold
            instruction: "{{ question }} Give a short answer."
            output: "{{ gold_answer }}"
            gold_answers: "{{ answers | join('|||') }}"
          - id: first-only
            instruction: "Answer briefly: {{ question }}"
            output: "{{ answers[0] }}"
          - id: hedged
            instruction: "Make a guess: {{ question }}"
            output: "About {{ answers[0] }}"
        """,
    )
    return write(
        root / "recipes" / "audit.yaml",
        """
        name: audit
        seed: 11
        sources: [math, lexnli, trivia]
        mixing: {strategy: proportional, cap: null}
        dedup: {exact: false, normalized: false}
        variants: {zero_shot: 0.5, few_shot: 0.5, options_shown: 0.5, option_styles: [letters]}
        few_shot: {k: 2, max_chars: 4000, format: one_turn}
        catalog: {sources: [../sources], templates: [../templates]}
        """,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit")
    out = root / "out"
    run_recipe(_catalog(root), out)
    return out


def _records(out: Path) -> list[dict[str, Any]]:
    paths = sorted((out / "mixed").glob("*.parquet"))
    return [r for p in paths for r in pq.read_table(p).to_pylist()]


def test_every_planted_defect_is_counted(run_dir: Path) -> None:
    result = audit_script.audit(run_dir, {"trivia": "answers"})
    records = _records(run_dir)
    d = result["defects"]
    assert result["records"] == len(records) and result["gold_answers_column"] == "present"

    math = [r for r in records if r["source"] == "math"]
    assert d["calculator_in_targets"]["count"] == len(math) == 20
    assert d["answer_marker_in_targets"]["count"] == 20
    few_shot_math = [r for r in math if r["variant"].startswith("few_shot")]
    assert few_shot_math and d["calculator_or_marker_in_prompts"]["count"] == len(few_shot_math)

    # Every lettered record of says-letter asks for the letter (the template) and the text
    # (the renderer's line after the block), and gives the text.
    lettered = [
        r for r in records if r["answer_choices"] and "(A) " in r["messages"][-2]["content"]
    ]
    says = [r for r in lettered if r["template_id"] == "says-letter"]
    assert says and d["lettered"]["records"] == len(lettered)
    assert d["lettered_contradicting"]["count"] == len(says)
    assert d["lettered_contradicting"]["by_kind"] == {"asks several, gives text": len(says)}
    assert d["lettered_unspecified"]["count"] == 0
    assert d["lettered"]["asked"] == {"several": len(says), "text": len(lettered) - len(says)}

    # Neither "How are they related?" nor "Answer with the letter only." names the labels.
    noopt = Counter(
        r["template_id"]
        for r in records
        if r["source"] == "lexnli" and r["variant"].endswith("noopt")
    )
    assert set(noopt) == {"no-form", "says-letter"}
    assert d["no_answer_form"]["count"] == sum(noopt.values())
    assert d["no_answer_form"]["by_kind"] == dict(noopt)

    one_turn = [r for r in records if r["variant"].startswith("few_shot")]
    assert d["few_shot_one_turn_records"] == len(one_turn) > 0
    assert d["few_shot_unmarked"]["count"] == 0  # the renderer marks every exemplar's answer

    # 3 prompts (one per label) for 40 records.
    assert [(t["template_id"], t["distinct_prompts"]) for t in d["degenerate_inverted"]] == [
        ("write-hypothesis", 3)
    ]

    trivia = d["multi_answer"]["trivia"]
    first_only = [r for r in records if r["template_id"] == "first-only"]
    hedged = [r for r in records if r["template_id"] == "hedged"]
    rivers = [r for r in first_only + hedged if int(r["example_id"]) < 10]
    assert trivia["records"] == 60 and trivia["records_without_gold_answers"] == 40
    # first-only accepts one answer of two for rivers; hedged accepts none at all.
    assert trivia["records_not_listing_all"] == d["multi_answer_not_all_listed"]["count"]
    assert trivia["records_not_listing_all"] == len(rivers) + 10 == 30
    assert trivia["records_target_outside"] == len(hedged) == 20

    sources = result["sources"]
    assert sources["lexnli"] | {"rejected_by_rule": None} == {
        "records": 120,
        "templates": 3,
        "inverted": 1,
        "cot": 0,
        "choices": 2,
        "examples_in": 41,
        "examples_rejected": 1,
        "records_rejected": 0,
        "rejected_by_rule": None,
        "rejects": {"load/duplicate_example_id": 1},
    }
    per_template = {(t["source"], t["template_id"]): t for t in result["distinct_prompts"]}
    assert per_template[("lexnli", "write-hypothesis")]["records"] == 40


def test_the_command_prints_a_report_and_json(run_dir: Path) -> None:
    base = [sys.executable, str(SCRIPT), "--out", str(run_dir), "--multi-answer", "trivia=answers"]
    text = subprocess.run(base, capture_output=True, text=True, check=True).stdout
    assert re.search(r"\n  targets containing '<<' +20  math 20\n", text)
    assert "lexnli/write-hypothesis: 3 prompts, 40 records" in text
    as_json = json.loads(subprocess.run([*base, "--json"], capture_output=True, text=True,
                                        check=True).stdout)  # fmt: skip
    assert as_json["defects"]["answer_marker_in_targets"]["count"] == 20


def test_a_run_from_before_gold_answers_is_read_and_said(run_dir: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    (old / "mixed").mkdir(parents=True)
    for path in (run_dir / "mixed").glob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop(["gold_answers"]), old / "mixed" / path.name)
    for part in ("examples", "manifest.json"):
        (old / part).symlink_to(run_dir / part)
    result = audit_script.audit(old, {"trivia": "answers"})
    assert result["gold_answers_column"].startswith("absent")
    trivia = result["defects"]["multi_answer"]["trivia"]
    assert trivia["records_without_gold_answers"] == 60
    # all-gold now lists nothing either: its river records accept one answer of two.
    assert trivia["records_not_listing_all"] == 30 + 10


def test_few_shot_answers_without_a_mark_are_found() -> None:
    record = {"variant": "few_shot_noopt", "messages": [{"role": "user", "content": ""}]}
    unmarked = "Is it true?\nyes\n\nIs it false?\nno\n\nIs it so?"
    marked = "Q: Is it true?\nA: yes\n\n###\n\nQ: Is it false?\nA: no\n\n###\n\nQ: Is it so?\nA:"
    assert audit_script.answer_mark(unmarked) is None
    assert audit_script.answer_mark(marked) == "A:"
    record["answer_choices"] = ["yes", "no"]
    assert audit_script.query_part(record, marked) == "Q: Is it so?"
    assert audit_script.query_part(record, unmarked) == "Is it so?"
