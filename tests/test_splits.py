"""Honest splits: no validation or eval example reaches train, as a query, a sibling or an
exemplar; split groups; the eval split; dedup; decontamination; provenance; the dry run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from pipeline import Manifest, run_recipe
from pipeline.cli import app
from pipeline.decontam import tokens
from pipeline.dryrun import dry_run
from pipeline.models import HubSpec, Mixing, Recipe, Submix
from pipeline.plan import plan_recipe
from pipeline.runfolder import RunFolder, reject_lines
from pipeline.splits import Membership

from .conftest import write

MIN_TOKENS = 8  # the decontamination default: shorter texts are too generic to look for


def _records(out: Path, split: str) -> list[dict[str, Any]]:
    files = sorted((out / "dataset" / "data").glob(f"{split}-*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def _examples(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every loaded example: its fields, group and output split."""
    found = {}
    for path in sorted((out / "examples").glob("*/part-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            found[(path.parent.name, row["example_id"])] = row
    return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def _normal(text: str) -> str:
    return " ".join(tokens(text))


def assert_nothing_held_out_in_train(out: Path) -> int:
    """No held-out example (validation or eval) reaches a train record: not by its id, not by
    its split group, and none of its input texts (of MIN_TOKENS words or more, compared after
    tokenising, so case and punctuation do not hide it) occurs in any train record's text, as
    query or as exemplar. Returns how many held-out texts were looked for."""
    examples = _examples(out)
    train = _records(out, "train")
    held_ids = {
        (s, e) for (s, e), row in examples.items() if row["out_split"] in ("validation", "eval")
    }
    assert held_ids, "the build has no held-out examples to check"
    assert not {(r["source"], r["example_id"]) for r in train} & held_ids
    train_groups = {
        (s, examples[(s, e)]["group"]) for s, e in {(r["source"], r["example_id"]) for r in train}
    }
    assert not {(s, examples[(s, e)]["group"]) for s, e in held_ids} & train_groups
    blob = "\n".join(_normal("\n".join(m["content"] for m in r["messages"])) for r in train)
    looked = 0
    for key in sorted(held_ids):
        for text in _strings(json.loads(examples[key]["fields"])):
            words = _normal(text)
            if len(words.split()) >= MIN_TOKENS:
                looked += 1
                assert f" {words} " not in f" {blob} ", (key, text)
    return looked


def test_the_default_build_shows_train_no_held_out_example(
    default_run: tuple[Path, Manifest],
) -> None:
    out, manifest = default_run
    assert manifest.splits["validation"] > 0
    assert assert_nothing_held_out_in_train(out) > 100


def test_few_shot_exemplars_are_train_examples_of_another_group(
    default_run: tuple[Path, Manifest],
) -> None:
    """Every example of the source whose long text (12 words or more, not inside the query's
    own fields) shows up in a few-shot prompt is an exemplar: it must be a train example of
    another split group. Texts are found by their first 12 words, then checked whole."""
    out, _ = default_run
    examples = _examples(out)
    rows = _records(out, "train") + _records(out, "validation")
    heads: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    for (source, _), row in examples.items():
        for text in _strings(json.loads(row["fields"])):
            words = _normal(text).split()
            if len(words) >= 12:
                heads.setdefault((source, " ".join(words[:12])), []).append((" ".join(words), row))
    checked = 0
    for record in rows:
        if not record["variant"].startswith("few_shot"):
            continue
        query = examples[(record["source"], record["example_id"])]
        own = [_normal(s) for s in _strings(json.loads(query["fields"]))]
        words = _normal("\n".join(m["content"] for m in record["messages"][:-1])).split()
        text = " ".join(words)
        for i in range(len(words) - 11):
            for whole, other in heads.get((record["source"], " ".join(words[i : i + 12])), []):
                if other["example_id"] == query["example_id"] or any(whole in o for o in own):
                    continue
                if whole in text:
                    checked += 1
                    assert other["out_split"] == "train", (record["id"], other["example_id"])
                    assert other["group"] != query["group"], (record["id"], other["example_id"])
    assert checked > 100


def test_split_groups_keep_repeated_inputs_in_one_split(
    default_run: tuple[Path, Manifest],
) -> None:
    out, _ = default_run
    examples = _examples(out)
    for source, field in [
        ("e2e_nlg", "meaning_representation"),
        ("esnli", "premise"),
        ("breaking_nli", "sentence1"),
    ]:
        splits: dict[str, set[str]] = {}
        for (s, _), row in examples.items():
            if s == source:
                value = json.loads(row["fields"])[field]
                splits.setdefault(value, set()).add(row["out_split"])
        assert all(len(v) == 1 for v in splits.values()), source
        assert any("validation" in v for v in splits.values()), source


# --------------------------------------------------------------------------- a small catalog


def _catalog(root: Path, recipe: str) -> Path:
    """Two QA sources of our own: `trivia` and `quiz`, where quiz repeats one trivia question
    word for word (a cross-source duplicate) and trivia repeats one of its own questions
    with other casing (a normalised duplicate)."""
    trivia = [
        ("t1", "Which river flows through the city of Vienna on its way to the Black Sea?",
         "The Danube"),
        ("t2", "What is the name of the largest moon of Saturn, discovered by Huygens in 1655?",
         "Titan"),
        ("t3", "Which element has the chemical symbol Fe and is the main part of steel?", "Iron"),
        ("t4", "WHICH ELEMENT HAS THE CHEMICAL SYMBOL FE, AND IS THE MAIN PART OF STEEL",
         "iron"),
        ("t5", "Who wrote the novel about a whale hunt that opens with the words Call me Ishmael?",
         "Herman Melville"),
        ("t6", "In which country is the ancient city of Petra, carved into rose-red rock?",
         "Jordan"),
    ]  # fmt: skip
    quiz = [
        ("q1", "Which river flows through the city of Vienna on its way to the Black Sea?",
         "The Danube"),
        ("q2", "How many sides does a regular hexagon have when drawn on a flat sheet of paper?",
         "Six"),
        ("q3", "Which planet is known as the red planet because of the iron oxide on its surface?",
         "Mars"),
    ]  # fmt: skip
    for name, rows in (("trivia", trivia), ("quiz", quiz)):
        lines = [json.dumps({"id": i, "q": q, "a": a}) for i, q, a in rows]
        write(root / "data" / f"{name}.jsonl", "\n".join(lines) + "\n")
        write(
            root / "sources" / f"{name}.yaml",
            f"""
            name: {name}
            task: {name} questions
            cluster: {"closed_book_qa" if name == "trivia" else "quiz_bowl"}
            license: CC0-1.0
            hub: {{id: local/{name}}}
            features: {{question: string, answer: string}}
            sample:
              file: {name}.jsonl
              split: test
              id_field: id
              fields: {{question: q, answer: a}}
            """,
        )
        write(
            root / "templates" / f"{name}.yaml",
            f"""
            source: {name}
            templates:
              - id: ask
                instruction: "Answer the question in a few words. {{{{ question }}}}"
                output: "{{{{ answer }}}}"
            """,
        )
    return write(root / "recipes" / "r.yaml", recipe)


BASE = """
name: r
seed: 3
catalog: {sources: [../sources], templates: [../templates]}
mixing: {strategy: proportional, cap: null}
"""


def test_dedup_keeps_the_first_by_a_stable_order_and_says_why(tmp_path: Path) -> None:
    recipe = _catalog(
        tmp_path, BASE + "sources: [trivia, quiz]\ndecontamination: {enabled: false}\n"
    )
    out = tmp_path / "out"
    manifest = run_recipe(recipe, out)
    assert manifest.check() == []
    dropped = {
        s: [r for r in reject_lines(RunFolder(out), "mix", s) if r["rule"] == "duplicate_record"]
        for s in ("trivia", "quiz")
    }
    assert sum(len(v) for v in dropped.values()) == 2
    assert {r["example_id"] for v in dropped.values() for r in v} & {"t1", "q1"}
    assert {r["example_id"] for v in dropped.values() for r in v} & {"t3", "t4"}
    messages = [r["message"] for v in dropped.values() for r in v]
    assert any(m.startswith("identical to record") for m in messages)
    assert any(m.startswith("the same, once normalised, as record") for m in messages)
    train = _records(out, "train")
    questions = [_normal(r["messages"][0]["content"]) for r in train]
    assert len(questions) == len(set(questions)) == 7
    # The same recipe and seed drop the same ones.
    again = run_recipe(recipe, tmp_path / "again")
    assert again.sources == manifest.sources


def test_decontamination_drops_train_records_that_contain_eval_text(tmp_path: Path) -> None:
    """quiz is held out (eval_only); trivia's copy of q1 shares its 13-grams and is dropped,
    with the eval item and the span in rejects/mix; the rest of trivia stays."""
    recipe = _catalog(tmp_path, BASE + "sources: [trivia]\neval_only: [quiz]\n")
    out = tmp_path / "out"
    manifest = run_recipe(recipe, out)
    assert manifest.check() == []
    assert manifest.sources["quiz"].role == "eval"
    assert manifest.splits["eval"] == 3
    (dropped,) = [
        r for r in reject_lines(RunFolder(out), "mix", "trivia") if r["rule"] == "contaminated"
    ]
    assert dropped["example_id"] == "t1"
    assert "held-out quiz/eval/q1" in dropped["message"]
    assert "which river flows through the city of vienna" in dropped["message"]
    assert manifest.sources["trivia"].records_decontaminated == 1
    assert manifest.decontamination["records_dropped"] == 1
    assert assert_nothing_held_out_in_train(out) == 3
    eval_rows = _records(out, "eval")
    assert {r["source"] for r in eval_rows} == {"quiz"}
    assert all(not r["variant"].startswith("few_shot") for r in eval_rows)


def test_decontamination_against_the_users_own_eval_file(tmp_path: Path) -> None:
    bench = write(
        tmp_path / "bench.jsonl",
        '{"prompt": "Who wrote the novel about a whale hunt that opens with the words Call me '
        'Ishmael?"}\n',
    )
    recipe = _catalog(
        tmp_path,
        BASE
        + f"""
sources: [trivia]
decontamination:
  against: [{{name: mybench, path: {bench}, fields: [prompt]}}]
""",
    )
    out = tmp_path / "out"
    manifest = run_recipe(recipe, out)
    assert manifest.sources["trivia"].records_decontaminated == 1
    assert manifest.decontamination["external_texts"] == {"mybench": 1}
    (dropped,) = [
        r for r in reject_lines(RunFolder(out), "mix", "trivia") if r["rule"] == "contaminated"
    ]
    assert dropped["example_id"] == "t5" and "mybench/0" in dropped["message"]


def test_a_held_out_cluster_becomes_the_eval_split(tmp_path: Path) -> None:
    recipe = _catalog(
        tmp_path, BASE + "sources: [trivia, quiz]\nheld_out_clusters: [quiz_bowl]\n"
    )
    out = tmp_path / "out"
    manifest = run_recipe(recipe, out)
    ds = datasets.load_dataset(str(out / "dataset"))
    assert set(ds) == {"train", "eval"}
    assert set(ds["eval"]["source"]) == {"quiz"}
    assert "quiz" not in set(ds["train"]["source"])
    assert manifest.sources["quiz"].role == "eval"
    card = (out / "dataset" / "README.md").read_text(encoding="utf-8")
    assert "The `eval` split holds the held-out sources (quiz)" in card


def test_eval_sources_take_few_shot_exemplars_only_from_their_own_pool(tmp_path: Path) -> None:
    recipe = _catalog(
        tmp_path,
        BASE
        + """
sources: [trivia]
eval_only: [quiz]
eval_exemplar_fraction: 0.9
variants: {zero_shot: 0.0, few_shot: 1.0}
few_shot: {k: 1}
decontamination: {enabled: false}
""",
    )
    out = tmp_path / "out"
    manifest = run_recipe(recipe, out)
    quiz = manifest.sources["quiz"]
    assert quiz.examples_exemplar_pool > 0
    assert quiz.examples_in == quiz.examples_exemplar_pool + quiz.examples_rendered
    pool = {
        e
        for (s, e), row in _examples(out).items()
        if s == "quiz" and row["out_split"] == "exemplar"
    }
    eval_rows = _records(out, "eval")
    assert eval_rows and not {r["example_id"] for r in eval_rows} & pool
    assert all(r["variant"].startswith("few_shot") for r in eval_rows)


def test_split_group_by_jinja_expression(tmp_path: Path) -> None:
    recipe = _catalog(tmp_path, BASE + "sources: [trivia]\nvalidation_fraction: 0.5\n")
    spec = tmp_path / "sources" / "trivia.yaml"
    # Questions that open with the same word are one group (t3 and t4 both open with "which").
    spec.write_text(
        spec.read_text() + 'split_group: "{{ question.split()[0] | lower }}"\n', encoding="utf-8"
    )
    out = tmp_path / "out"
    run_recipe(recipe, out)
    rows = [r for (s, _), r in _examples(out).items() if s == "trivia"]
    by_group: dict[str, set[str]] = {}
    for row in rows:
        by_group.setdefault(row["group"], set()).add(row["out_split"])
    assert all(len(v) == 1 for v in by_group.values())
    which = {
        r["group"] for r in rows if json.loads(r["fields"])["question"].lower().startswith("which")
    }
    assert len(which) == 1 and len(by_group) == 4  # which, what, who, in


def test_a_split_group_that_is_neither_a_feature_nor_jinja_is_one_line(tmp_path: Path) -> None:
    recipe = _catalog(tmp_path, BASE + "sources: [trivia]\n")
    spec = tmp_path / "sources" / "trivia.yaml"
    spec.write_text(spec.read_text() + "split_group: questoin\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 1
    assert re.search(r"trivia\.yaml: split_group: 'questoin' is neither a feature", result.output)


def test_the_card_and_run_name_the_original_split_and_warn(
    default_run: tuple[Path, Manifest],
) -> None:
    out, manifest = default_run
    card = (out / "dataset" / "README.md").read_text(encoding="utf-8")
    assert "## Where the rows come from" in card
    for name, counts in manifest.sources.items():
        for split, origins in counts.original_splits.items():
            assert f"| {name} | train | {split} | " in card
            assert all(f"{o}: {n}" in card for o, n in origins.items())
    assert any(w.startswith("gsm8k: train records come from the dataset's evaluation splits")
               for w in manifest.warnings)  # fmt: skip
    assert "'test' split" in card and "**Warnings**" in card


def test_dry_run_matches_the_real_run(tmp_path: Path, user_catalog: Path) -> None:
    recipe = user_catalog / "recipes" / "mini.yaml"
    text = recipe.read_text() + "validation_fraction: 0.5\nvariants: {zero_shot: 1, few_shot: 1}\n"
    recipe.write_text(text.replace("seed: 7", "seed: 14"), encoding="utf-8")
    plan = dry_run(recipe)
    manifest = run_recipe(recipe, tmp_path / "out")
    assert manifest.splits["train"] and manifest.splits["validation"]
    for name, counts in manifest.sources.items():
        p = plan["sources"][name]
        assert p["records_target"] == counts.records_selected
        assert p["examples_by_split"] == counts.examples_by_split
        assert p["records_by_split_exact"]
    assert plan["splits"] == manifest.splits
    variants: dict[str, int] = {}
    for split in manifest.splits:
        for r in _records(tmp_path / "out", split):
            base = r["variant"].rsplit("_", 1)[0] if "shot" in r["variant"] else r["variant"]
            variants[base] = variants.get(base, 0) + 1
    assert plan["variants"] == variants
    result = CliRunner().invoke(
        app, ["run", str(recipe), "--dry-run", "--json", "--out", str(tmp_path / "unused")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == plan
    assert not (tmp_path / "unused").exists()


def test_nested_mixtures_keep_their_rates() -> None:
    recipe = Recipe(
        name="nested",
        mixtures=[
            Submix(name="qa", weight=3, sources=["a", "b"], mixing=Mixing(cap=None)),
            Submix(name="nli", weight=1, sources=["c"], mixing=Mixing(cap=None)),
        ],
    )
    sizes = {"a": (1000, 1), "b": (3000, 1), "c": (500, 1)}
    members = {
        "a": Membership("train", "qa"),
        "b": Membership("train", "qa"),
        "c": Membership("train", "nli"),
    }
    plans = plan_recipe(recipe, sizes, members)
    qa = plans["a"].records_target + plans["b"].records_target
    # nli has 500 records: at 1 part in 4 the whole is 2000, so qa gets 1500, split 1:3.
    assert (qa, plans["c"].records_target) == (1500, 500)
    assert (plans["a"].records_target, plans["b"].records_target) == (375, 1125)
    sized = recipe.model_copy(update={"mixing": Mixing(size=400)})
    plans = plan_recipe(sized, sizes, members)
    assert plans["c"].records_target == 100
    assert plans["a"].records_target + plans["b"].records_target == 300


def test_a_nested_recipe_builds(tmp_path: Path) -> None:
    recipe = _catalog(
        tmp_path,
        BASE.replace("mixing: {strategy: proportional, cap: null}\n", "")
        + """
mixtures:
  - {name: one, weight: 1, sources: [trivia], mixing: {cap: null}}
  - {name: two, weight: 1, sources: [quiz], mixing: {cap: null}}
decontamination: {enabled: false}
dedup: {exact: false, normalized: false}
""",
    )
    manifest = run_recipe(recipe, tmp_path / "out")
    assert manifest.sources["trivia"].submix == "one"
    assert (
        manifest.sources["trivia"].records_selected
        == manifest.sources["quiz"].records_selected
        == 3
    )


@pytest.mark.parametrize(
    ("hub", "read"),
    [
        ("{id: x/y, splits: [train, validation, test]}", ["train"]),
        ("{id: x/y, splits: [full]}", ["full"]),
        ("{id: x/y, splits: [train, test], read: [train, test]}", ["train", "test"]),
    ],
)
def test_hub_mode_reads_the_train_split_unless_the_spec_says(hub: str, read: list[str]) -> None:
    assert HubSpec.model_validate(yaml.safe_load(hub)).splits_read == read


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = tokens(text)
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_no_train_record_shares_a_13_gram_with_held_out_text_on_real_data(
    tmp_path: Path,
) -> None:
    """The bundled samples, with paraphrase held out as the eval split (FLAN's protocol):
    after decontamination, no train record shares a 13-gram with any validation or eval
    example's text, counted here by a plain set of word tuples, independent of the index."""
    recipe = write(
        tmp_path / "heldout.yaml",
        """
        name: heldout
        seed: 9
        clusters: [nli, paraphrase, sentiment]
        held_out_clusters: [paraphrase]
        mixing: {strategy: proportional, cap: 800}
        validation_fraction: 0.05
        variants: {zero_shot: 0.5, few_shot: 0.5}
        """,
    )
    out = tmp_path / "out"
    manifest = run_recipe(recipe, out)
    assert manifest.check() == []
    assert manifest.splits["eval"] > 0 and manifest.sources["paws"].role == "eval"
    assert assert_nothing_held_out_in_train(out) > 50
    held: set[tuple[str, ...]] = set()
    for row in _examples(out).values():
        if row["out_split"] in ("validation", "eval"):
            for text in _strings(json.loads(row["fields"])):
                held |= _ngrams(text, 13)
    train = _records(out, "train")
    shared = [
        r["id"]
        for r in train
        if _ngrams("\n".join(m["content"] for m in r["messages"]), 13) & held
    ]
    assert shared == []
    assert len(train) > 1000


def test_eval_records_pose_the_held_out_task_itself(tmp_path: Path, builtin_catalog) -> None:
    """FLAN evaluates a held-out task as posed: no inverted or other-task template makes an
    eval record (they would spend the eval split's budget on records no evaluator scores),
    unless the recipe says `eval_templates: all`."""
    posing = {
        t.id
        for t in builtin_catalog.templates_for("creak")
        if not t.spec.inverted and t.spec.metadata.original_task
    }
    assert posing and posing != {t.id for t in builtin_catalog.templates_for("creak")}
    seen = {}
    for choice in ("original_task", "all"):
        recipe = tmp_path / f"{choice}.yaml"
        recipe.write_text(
            "name: heldout\nsources: [poem_sentiment, creak]\neval_only: [creak]\n"
            f"eval_templates: {choice}\nmixing: {{cap: null}}\n",
            encoding="utf-8",
        )
        out = tmp_path / choice
        manifest = run_recipe(recipe, out, max_reject_share=0.5)
        assert manifest.check() == []
        rows = pq.read_table(out / "mixed" / "eval.parquet").to_pylist()
        assert rows and {r["source"] for r in rows} == {"creak"}
        seen[choice] = {r["template_id"] for r in rows}
    assert seen["original_task"] == posing
    assert seen["all"] > posing
