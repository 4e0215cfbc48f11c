"""The held-out eval split as lm-evaluation-harness tasks (``write_eval_harness``): the files,
what each task scores, the folder's safety rules, and lm-eval itself running the tasks with a
tiny model built here from a config (no downloads)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import run_recipe
from pipeline.errors import PipelineError, RunFolderError
from pipeline.eval_harness import MARKER, write_eval_harness

from .conftest import write

PREFIX = "instructmix_flan_style"

CLAIMS = [
    ("The sun rises in the east.", 1, "The earth turns toward the east, so the sun appears there."),
    ("Fish can live without water.", 0, "Fish breathe through gills that need water."),
    ("Ice is colder than steam.", 1, "Ice is frozen water and steam is boiling water."),
    ("A week has ten days.", 0, "A week has seven days."),
    ("Birds have feathers.", 1, "Feathers are what every bird has."),
    ("Paris is in Spain.", 0, "Paris is the capital of France."),
    ("Cats are mammals.", 1, "Cats feed their young with milk."),
    ("The moon is made of cheese.", 0, "The moon is made of rock."),
    ("Water boils when heated enough.", 1, "Heat turns water into steam."),
    ("Snow is usually hot.", 0, "Snow is frozen water and cold."),
    ("Trees grow from seeds.", 1, "A seed sprouts and becomes a tree."),
    ("Humans have three arms.", 0, "Humans have two arms."),
]
QUESTIONS = [
    ("What color is the sky?", ["blue", "light blue"]),
    ("How many legs does a spider have?", ["eight", "8"]),
    ("What do bees make?", ["honey"]),
    ("Which animal says moo?", ["cow", "a cow"]),
    ("What is frozen water called?", ["ice"]),
    ("What do you use to write on paper?", ["pen", "pencil"]),
    ("Which season is the coldest?", ["winter"]),
    ("What is the opposite of up?", ["down"]),
]
TOPICS = [
    ("The team won the cup final.", "sport"),
    ("The bank raised interest rates.", "money"),
    ("A striker scored twice.", "sport"),
    ("Stocks fell on Monday.", "money"),
    ("The coach picked a new captain.", "sport"),
    ("Prices of bread went up.", "money"),
]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def flan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's catalog and the FLAN protocol: train on topics, hold the `toy_facts` cluster
    out. Its records come in every form (zero-shot, few-shot, chain-of-thought, inverted)."""
    root = tmp_path_factory.mktemp("catalog")
    _jsonl(
        root / "data" / "claims.jsonl",
        [{"id": i, "claim": c, "label": y, "why": w} for i, (c, y, w) in enumerate(CLAIMS)],
    )
    _jsonl(
        root / "data" / "qa.jsonl",
        [{"id": i, "q": q, "a": a} for i, (q, a) in enumerate(QUESTIONS)],
    )
    _jsonl(
        root / "data" / "topics.jsonl",
        [{"id": i, "text": t, "topic": y} for i, (t, y) in enumerate(TOPICS)],
    )
    write(
        root / "sources" / "toy_claims.yaml",
        """
        name: toy_claims
        task: toy claim verification
        cluster: toy_facts
        license: CC0-1.0
        rationale: why
        hub: {id: someone/toy_claims, splits: [train]}
        features:
          claim: string
          why: string
          label: {names: ["false", "true"]}
        sample: {file: claims.jsonl, split: train, id_field: id}
        """,
    )
    write(
        root / "sources" / "toy_qa.yaml",
        """
        name: toy_qa
        task: toy closed-book questions
        cluster: toy_facts
        license: CC0-1.0
        hub: {id: someone/toy_qa, splits: [train]}
        features: {question: string, answers: "list[string]"}
        sample: {file: qa.jsonl, split: train, id_field: id, fields: {question: q, answers: a}}
        """,
    )
    write(
        root / "sources" / "toy_topics.yaml",
        """
        name: toy_topics
        task: toy topic classification
        cluster: toy_topics
        license: CC0-1.0
        hub: {id: someone/toy_topics, splits: [train]}
        features: {text: string, topic: {names: [sport, money]}}
        sample: {file: topics.jsonl, split: train, id_field: id}
        """,
    )
    write(
        root / "templates" / "toy_claims.yaml",
        """
        source: toy_claims
        templates:
          - id: true-or-false
            system: You check facts.
            instruction: "Is this claim true or false? {{ claim }}"
            output: "{{ answer_choices[label] }}"
            answer_choices: ["false", "true"]
            cot: true
            metadata: {metrics: [accuracy]}
          - id: explain
            instruction: "Explain why this claim is {{ names.label }}: {{ claim }}"
            output: "{{ why }}"
            metadata: {metrics: [rouge]}
          - id: reworded-yes-no
            instruction: "Would a careful reader accept \\"{{ claim }}\\"?"
            output: "{{ answer_choices[label] }}"
            answer_choices: ["no", "yes"]
            metadata: {original_task: false, metrics: [accuracy]}
          - id: write-claim
            inverted: true
            instruction: "Write a claim that is {{ names.label }}."
            output: "{{ claim }}"
            metadata: {metrics: [bleu]}
        """,
    )
    write(
        root / "templates" / "toy_qa.yaml",
        """
        source: toy_qa
        templates:
          - id: answer
            instruction: "Answer in a word or two: {{ question }}"
            output: "{{ gold_answer }}"
            gold_answers: "{{ answers | join(' ||| ') }}"
            metadata: {metrics: [exact_match, f1]}
        """,
    )
    write(
        root / "templates" / "toy_topics.yaml",
        """
        source: toy_topics
        templates:
          - id: topic
            instruction: "Sport or money? {{ text }}"
            output: "{{ answer_choices[topic] }}"
            answer_choices: [sport, money]
            metadata: {metrics: [accuracy]}
        """,
    )
    recipe = write(
        root / "recipes" / "flan_style.yaml",
        """
        name: flan_style
        seed: 3
        sources: [toy_topics]
        held_out_clusters: [toy_facts]
        # Every template makes eval records here (the default keeps only those that pose the
        # task), so that the harness's own choice of what to score is exercised.
        eval_templates: all
        eval_exemplar_fraction: 0.25
        mixing: {cap: null}
        variants: {zero_shot: 0.6, few_shot: 0.2, cot: 0.2}
        few_shot: {k: 1}
        catalog: {sources: [../sources], templates: [../templates]}
        """,
    )
    out = tmp_path_factory.mktemp("run")
    run_recipe(recipe, out)
    return out


@pytest.fixture(scope="module")
def harness(flan_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    target = tmp_path_factory.mktemp("eval") / "harness"
    return target, write_eval_harness(flan_run, target)


def _yaml(path: Path) -> dict[str, Any]:
    # lm-eval's own tag; the safe loader reads it as the text it names.
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: f"!function {node.value}")
    with open(path, encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=Loader)  # the subclass above is a SafeLoader
    assert isinstance(data, dict)
    return data


def _docs(config: dict[str, Any]) -> list[dict[str, Any]]:
    path = Path(config["dataset_kwargs"]["data_files"]["test"])
    assert path.is_absolute(), "lm-eval reads relative data_files from its working directory"
    return pq.read_table(path).to_pylist()


def test_one_task_per_template_and_a_group_per_cluster(harness: tuple[Path, list[Path]]) -> None:
    target, files = harness
    names = sorted(p.relative_to(target).as_posix() for p in files)
    assert names == [
        "README.md",
        f"_{PREFIX}.toy_facts.yaml",
        f"_{PREFIX}.yaml",
        "data/toy_claims.explain.parquet",
        "data/toy_claims.true-or-false.parquet",
        "data/toy_qa.answer.parquet",
        "instructmix_metrics.py",
        "toy_claims.explain.yaml",
        "toy_claims.true-or-false.yaml",
        "toy_qa.answer.yaml",
    ]
    # Everything in the folder is listed, the marker aside.
    on_disk = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert on_disk == sorted([*names, MARKER])

    group = _yaml(target / f"_{PREFIX}.toy_facts.yaml")
    assert group["group"] == f"{PREFIX}.toy_facts"
    assert group["task"] == [
        f"{PREFIX}.toy_claims.explain",
        f"{PREFIX}.toy_claims.true-or-false",
        f"{PREFIX}.toy_qa.answer",
    ]
    assert [m["metric"] for m in group["aggregate_metric_list"]] == [
        "rouge1", "rouge2", "rougeL", "acc", "acc_norm", "exact_match",
    ]  # fmt: skip
    assert all(not m["weight_by_size"] for m in group["aggregate_metric_list"])
    top = _yaml(target / f"_{PREFIX}.yaml")
    assert top["group"] == PREFIX and top["task"] == [f"{PREFIX}.toy_facts"]


def test_multiple_choice_task_scores_the_choices_by_likelihood(
    harness: tuple[Path, list[Path]], flan_run: Path
) -> None:
    config = _yaml(harness[0] / "toy_claims.true-or-false.yaml")
    assert config["output_type"] == "multiple_choice"
    assert config["dataset_path"] == "parquet" and config["test_split"] == "test"
    assert (config["doc_to_text"], config["doc_to_choice"], config["doc_to_target"]) == (
        "prompt", "choices", "label",
    )  # fmt: skip
    assert [m["metric"] for m in config["metric_list"]] == ["acc", "acc_norm"]
    # The template's system turn reaches lm-eval as the task description.
    assert "{{ system }}" in config["description"]
    docs = _docs(config)
    eval_rows = {r["id"]: r for r in pq.read_table(flan_run / "mixed" / "eval.parquet").to_pylist()}
    assert docs and {d["variant"] for d in docs} <= {"zero_shot_opt", "zero_shot_noopt"}
    for doc in docs:
        record = eval_rows[doc["id"]]
        system, user, assistant = (m["content"] for m in record["messages"])
        assert (doc["system"], doc["prompt"], doc["target"]) == (system, user, assistant)
        assert doc["choices"] == record["answer_choices"]
        assert doc["choices"][doc["label"]] == assistant


def test_generation_tasks_score_as_the_template_metrics_say(
    harness: tuple[Path, list[Path]],
) -> None:
    target = harness[0]
    qa = _yaml(target / "toy_qa.answer.yaml")
    assert qa["output_type"] == "generate_until"
    # exact_match, lm-eval's own, against every gold answer (a list target: any one counts).
    assert qa["doc_to_target"] == "gold_answers" and "process_results" not in qa
    (metric,) = qa["metric_list"]
    assert metric["metric"] == "exact_match"
    assert metric["ignore_case"] and metric["ignore_punctuation"]
    answers = {q: a for q, a in QUESTIONS}
    for doc in _docs(qa):
        question = doc["prompt"].removeprefix("Answer in a word or two: ")
        assert doc["gold_answers"] == answers[question]
        assert doc["target"] in answers[question]
    # A one-line answer is the first line the model writes.
    assert qa["filter_list"][0]["name"] == "first_line"
    assert qa["generation_kwargs"]["do_sample"] is False

    explain = _yaml(target / "toy_claims.explain.yaml")
    # ROUGE is not lm-eval's: the folder's metrics module scores it.
    assert explain["process_results"] == "!function instructmix_metrics.rouge"
    assert [m["metric"] for m in explain["metric_list"]] == ["rouge1", "rouge2", "rougeL"]
    assert (target / "instructmix_metrics.py").is_file()


def test_only_zero_shot_records_of_the_original_task_are_evaluated(
    harness: tuple[Path, list[Path]], flan_run: Path
) -> None:
    rows = pq.read_table(flan_run / "mixed" / "eval.parquet").to_pylist()
    expected = Counter[str]()
    kept = 0
    for r in rows:
        if r["variant"].startswith("few_shot"):
            expected["few-shot"] += 1
        elif r["variant"] == "cot":
            expected["chain-of-thought"] += 1
        elif r["variant"] == "inverted":
            expected["inverted"] += 1
        elif r["template_id"] == "reworded-yes-no":
            expected["not the original task"] += 1
        else:
            kept += 1
    # The recipe makes every form, so each rule is exercised.
    assert set(expected) == {"few-shot", "chain-of-thought", "inverted", "not the original task"}
    readme = (harness[0] / "README.md").read_text("utf-8")
    for reason, n in expected.items():
        assert f"| {reason} | {n} |" in readme
    docs = sum(
        len(_docs(_yaml(p))) for p in harness[0].glob("*.yaml") if not p.name.startswith("_")
    )
    assert docs == kept
    assert f"--include_path {harness[0]}" in readme and f"--tasks {PREFIX}" in readme


def test_lm_eval_runs_the_held_out_cluster_with_a_tiny_local_model(
    harness: tuple[Path, list[Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lm_eval = pytest.importorskip("lm_eval")
    pytest.importorskip("transformers")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    target = harness[0]
    model_dir = _tiny_model(target, tmp_path / "model")
    # From another directory: the tasks name their data by absolute path.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    manager = TaskManager(include_path=str(target), include_defaults=False)
    assert {PREFIX, f"{PREFIX}.toy_facts"} <= set(manager.all_groups)
    lm = HFLM(pretrained=str(model_dir), device="cpu", batch_size=8, max_length=256)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=[f"{PREFIX}.toy_facts"],
        task_manager=manager,
        bootstrap_iters=0,
        gen_kwargs={"max_gen_toks": 6},
        log_samples=False,
    )
    assert out is not None
    results = out["results"]
    reported = {
        "toy_claims.true-or-false": ("acc,none", "acc_norm,none"),
        "toy_qa.answer": ("exact_match,first_line",),
        "toy_claims.explain": ("rouge1,first_line", "rougeL,first_line"),
    }
    for task, keys in reported.items():
        result = results[f"{PREFIX}.{task}"]
        n = len(_docs(_yaml(target / f"{task}.yaml")))
        assert result["sample_len"] == n > 0
        for key in keys:
            assert isinstance(result[key], float) and 0.0 <= result[key] <= 1.0, (task, key)
    cluster = results[f"{PREFIX}.toy_facts"]
    for key in ("acc,none", "exact_match,first_line", "rougeL,first_line"):
        assert 0.0 <= cluster[key] <= 1.0


def _tiny_model(harness: Path, where: Path) -> Path:
    """A 2-layer Llama with a word-level vocabulary of the harness's own words, saved with its
    tokenizer: lm-eval loads it from disk like any model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words: set[str] = set()
    for path in (harness / "data").glob("*.parquet"):
        for doc in pq.read_table(path).to_pylist():
            texts = [doc["prompt"], doc["target"], doc["system"] or "", *(doc["choices"] or [])]
            for text in texts + doc["gold_answers"]:
                words.update(re.findall(r"\w+|[^\w\s]", text))
    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2} | {w: i + 3 for i, w in enumerate(sorted(words))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece()  # joins words with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="[UNK]",
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(where)
    fast.save_pretrained(where)
    return where


def test_writing_again_replaces_its_own_harness_byte_for_byte(
    flan_run: Path, tmp_path: Path
) -> None:
    target = tmp_path / "harness"
    first = write_eval_harness(flan_run, target)
    before = {p: p.read_bytes() for p in first}
    second = write_eval_harness(flan_run, target)
    assert second == first
    assert {p: p.read_bytes() for p in second} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["harness"]  # nothing left beside


def test_a_folder_it_did_not_write_is_refused_then_moved_aside_with_force(
    flan_run: Path, tmp_path: Path
) -> None:
    target = tmp_path / "harness"
    write_eval_harness(flan_run, target)
    (target / "my_notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(PipelineError, match=r"my_notes\.txt.*--force"):
        write_eval_harness(flan_run, target)
    assert (target / "my_notes.txt").read_text("utf-8") == "mine"

    files = write_eval_harness(flan_run, target, force=True)
    assert (tmp_path / "harness.bak-1" / "my_notes.txt").read_text("utf-8") == "mine"
    assert all(p.is_file() for p in files) and not (target / "my_notes.txt").exists()


def test_bad_runs_and_targets_are_one_line_errors(
    flan_run: Path, user_catalog: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "plain-run"
    run_recipe(user_catalog / "recipes" / "mini.yaml", plain)
    with pytest.raises(RunFolderError, match=r"no eval split.*held_out_clusters") as no_eval:
        write_eval_harness(plain, tmp_path / "h1")
    assert "\n" not in str(no_eval.value) and not (tmp_path / "h1").exists()
    with pytest.raises(RunFolderError, match="no run folder here"):
        write_eval_harness(tmp_path / "h1", tmp_path / "h2")
    with pytest.raises(PipelineError, match="part of the run folder"):
        write_eval_harness(flan_run, flan_run / "mixed" / "harness")
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    with pytest.raises(PipelineError, match="is a file"):
        write_eval_harness(flan_run, tmp_path / "a-file")


def test_built_in_held_out_clusters_load_as_lm_eval_tasks(tmp_path: Path) -> None:
    """The bundled catalog, FLAN's protocol: train on sentiment, hold commonsense out and keep
    WebQuestions for eval; lm-eval builds every task of the harness (data, prompts, targets)."""
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    recipe = write(
        tmp_path / "heldout.yaml",
        """
        name: heldout
        seed: 3
        clusters: [sentiment, commonsense]
        held_out_clusters: [commonsense]
        eval_only: [web_questions]
        mixing: {cap: 40}
        """,
    )
    run_recipe(recipe, tmp_path / "run")
    target = tmp_path / "harness"
    write_eval_harness(tmp_path / "run", target)
    manager = TaskManager(include_path=str(target), include_defaults=False)
    loaded = manager.load(["instructmix_heldout"])
    assert set(loaded["groups"]) == {
        "instructmix_heldout",
        "instructmix_heldout.closed_book_qa",
        "instructmix_heldout.commonsense",
    }
    kinds = Counter[str]()
    for name, task in loaded["tasks"].items():
        config = _yaml(target / f"{name.removeprefix('instructmix_heldout.')}.yaml")
        docs = _docs(config)
        assert len(task.eval_docs) == len(docs) > 0
        first = task.eval_docs[0]
        assert task.doc_to_text(first) == docs[0]["prompt"]
        if config["output_type"] == "multiple_choice":
            kinds["choice"] += 1
            assert task.doc_to_choice(first)[task.doc_to_target(first)] == docs[0]["target"]
        elif "process_results" in config:
            kinds["rouge"] += 1
        else:
            kinds["exact"] += 1
            assert docs[0]["target"] in task.doc_to_target(first)
    assert set(kinds) == {"choice", "rouge", "exact"}, kinds
