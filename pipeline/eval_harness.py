"""The held-out eval split as lm-evaluation-harness tasks: train on some clusters, then
``lm_eval --include_path DIR --tasks instructmix_<recipe>`` evaluates zero-shot on the rest.

    DIR/README.md                              what is here, how to run it, what was left out
    DIR/_instructmix_<recipe>.yaml             group: every held-out cluster
    DIR/_instructmix_<recipe>.<cluster>.yaml   group: one cluster's tasks
    DIR/<source>.<template>.yaml               task: one (source, template)
    DIR/data/<source>.<template>.parquet       its documents: prompt, target, choices, answers
    DIR/instructmix_metrics.py                 ROUGE and BLEU, when a task asks for them
    DIR/.instructmix-eval-harness.json         marker: this is a harness, and the files it wrote

Only zero-shot records of a template's original task are tasks (FLAN evaluates a held-out
cluster zero-shot, on the task itself): few-shot, chain-of-thought and inverted records, and
templates whose ``metadata.original_task`` is false, are left out and counted in the README.
A record with ``answer_choices`` is a ``multiple_choice`` task, scored by the log-likelihood of
each choice (``acc``, ``acc_norm``); any other is a ``generate_until`` task scored as the
template's ``metadata.metrics`` say: ``exact_match`` against every gold answer, or ROUGE/BLEU
against the target (ROUGE against every gold answer).

The task files name their data by absolute path: lm-eval hands ``data_files`` to
``datasets.load_dataset``, which reads a relative path from the directory lm-eval runs in, not
from the YAML's. So the folder works from any directory, and is written again after a move.

Writing is the export's transaction (``pipeline.transaction``): the folder is built beside the
target and renamed into place; an earlier harness is renamed aside and removed file by file once
the new one is in; a folder holding anything a harness did not write is refused, or with
``force`` renamed to ``<target>.bak-N``, never deleted.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import yaml

from .catalog import Catalog, recipe_context
from .errors import PipelineError, RunFolderError, os_cause, os_filename
from .models import Manifest, Recipe, TemplateSpec
from .runfolder import ParquetSink, RunFolder, atomic_text, read_batches
from .transaction import FolderKind, Words, target_path, write_folder, write_marker

MARKER = ".instructmix-eval-harness.json"
METRICS_MODULE = "instructmix_metrics"
ZERO_SHOT = ("zero_shot_opt", "zero_shot_noopt")
# Template metrics scored by exact match (lm-eval has no generation F1 or SQuAD metric: those
# templates are scored by exact match only, and the README says so).
_EXACT = frozenset({"exact_match", "em", "accuracy", "acc", "f1", "squad"})
_ROUGE = frozenset({"rouge", "rouge1", "rouge2", "rougel", "rouge_l", "rougelsum"})
_BLEU = frozenset({"bleu", "sacrebleu"})
ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")
# The first line with text in it: what a plain (non-chat) model's answer is, when the target
# itself is one line. lm-eval's regex filter strips it.
FIRST_LINE = {
    "name": "first_line",
    "filter": [
        {"function": "regex", "regex_pattern": r"[^\n]*\S[^\n]*", "group_select": 0,
         "fallback": ""},
        {"function": "take_first"},
    ],
}  # fmt: skip
_ROW_GROUP = 2000  # rows a task holds before writing them
_MAX_GEN_TOKS = 1024
_MIN_GEN_TOKS = 32

HARNESS = FolderKind(
    marker=MARKER,
    marker_key="instructmix_eval_harness",
    levels=("", "data/", "__pycache__/"),
    # Every name a harness writes in its folder, temporaries included (a leftover build folder
    # of a killed write holds nothing else).
    layout=re.compile(
        rf"README\.md|[^/]+\.yaml|{METRICS_MODULE}\.py|data/[^/]+\.parquet|(data/)?\.[^/]+\.tmp"
    ),
    # The bytecode Python caches beside the metrics module when lm-eval imports it.
    derived=re.compile(r"__pycache__/" + METRICS_MODULE + r"\.[^/]+\.pyc"),
    build="harness-",
    aside="harness-old-",
    lock="harness.lock",
    # Entries of a run folder the stages read, and its export's: a harness there would pull
    # them out from under them.
    run_entries=frozenset(
        {"manifest.json", ".lock", "examples", "rendered", "valid", "mixed", "rejects", "dataset"}
    ),
    words=Words(
        tool="eval harness",
        writer="eval-harness write",
        write_to="write to",
        at_root="write a harness to",
        under_file="write",
        own_folder="write the harness to a folder of its own",
        is_folder="the harness is a folder of its own",
        elsewhere="write the harness elsewhere",
        nothing_done="no harness written",
        done="written",
    ),
)


@dataclass
class _Task:
    """One (source, template) of the eval split: its documents and what the YAML needs."""

    source: str
    template: str
    cluster: str
    kind: Literal["multiple_choice", "generate_until"]
    metrics: list[str]
    asked: list[str]
    sink: ParquetSink | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    system: bool = False
    longest: int = 0
    multiline: bool = False
    blank_line: bool = False

    @property
    def stem(self) -> str:
        return f"{self.source}.{self.template}"


DOC_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("cluster", pa.string()),
        ("template_id", pa.string()),
        ("variant", pa.string()),
        ("example_id", pa.string()),
        ("split", pa.string()),
        ("language", pa.string()),
        ("license", pa.string()),
        ("system", pa.string()),
        ("prompt", pa.string()),
        ("target", pa.string()),
        ("choices", pa.list_(pa.string())),
        ("label", pa.int64()),
        ("gold_answers", pa.list_(pa.string())),
    ]
)


def write_eval_harness(run_dir: Path, target: Path, *, force: bool = False) -> list[Path]:
    """Write the run's eval split (its held-out clusters) as lm-evaluation-harness tasks into
    ``target``; returns the files written (the marker aside), sorted.

    The run must have been mixed and hold an ``eval`` split with zero-shot records. The target
    must be new, empty or an earlier harness; a folder holding anything else is refused, or
    with ``force=True`` renamed to ``<target>.bak-N``. A failure leaves the target as it was.
    """
    folder = RunFolder(Path(run_dir))
    try:
        with folder.lock():
            return _write(folder, Path(target), force)
    except OSError as exc:
        raise PipelineError(f"{os_filename(exc) or folder.root}: {os_cause(exc)}") from None


def _write(folder: RunFolder, to: Path, force: bool) -> list[Path]:
    manifest = folder.read_manifest(needs="mix")
    if not manifest.splits.get("eval"):
        raise RunFolderError(
            f"{folder.root}: the run has no eval split (its recipe holds nothing out); add "
            "`held_out_clusters: [CLUSTER]` (or `eval_only`) to the recipe and run it again"
        )
    recipe, catalog = recipe_context(manifest)
    target = target_path(HARNESS, folder, to)
    final = target.parent.resolve() / target.name  # what the YAMLs name, after the rename
    written, _ = write_folder(
        HARNESS,
        target,
        lambda build: _build(build, final, folder, manifest, recipe, catalog),
        force=force,
    )
    return [target / name for name in written]


# --------------------------------------------------------------------------- building


def _build(
    build: Path,
    final: Path,
    folder: RunFolder,
    manifest: Manifest,
    recipe: Recipe,
    catalog: Catalog,
) -> list[str]:
    """Write data, task and group YAMLs, the metrics module and the README into ``build``,
    the marker first (so a killed write's folder is recognisably ours) and last."""
    write_marker(HARNESS, build, manifest, None)
    tasks, skipped = _split_tasks(build, folder, catalog)
    if not tasks:
        shown = ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items()))
        raise RunFolderError(
            f"{folder.root}: the eval split holds no zero-shot record of an original task "
            f"({shown}); give the recipe a zero_shot share and run it again"
        )
    prefix = f"instructmix_{recipe.name}"
    clusters: dict[str, list[_Task]] = {}
    for task in sorted(tasks.values(), key=lambda t: (t.cluster, t.source, t.template)):
        clusters.setdefault(task.cluster, []).append(task)
    files: list[str] = [f"data/{t.stem}.parquet" for t in tasks.values()]
    for task in tasks.values():
        name = f"{task.stem}.yaml"
        _write_yaml(build / name, _task_config(task, prefix, final, manifest, recipe))
        files.append(name)
    for cluster, members in clusters.items():
        name = f"_{prefix}.{cluster}.yaml"
        group = {
            "group": f"{prefix}.{cluster}",
            "group_alias": f"{cluster} (held out)",
            "task": [f"{prefix}.{t.stem}" for t in members],
            "aggregate_metric_list": _aggregates(members),
            "metadata": {"version": 1.0},
        }
        _write_yaml(build / name, group)
        files.append(name)
    everything = [t for members in clusters.values() for t in members]
    top = {
        "group": prefix,
        "group_alias": f"{recipe.name}: held-out clusters",
        "task": [f"{prefix}.{c}" for c in clusters],
        "aggregate_metric_list": _aggregates(everything),
        "metadata": {"version": 1.0},
    }
    _write_yaml(build / f"_{prefix}.yaml", top)
    files.append(f"_{prefix}.yaml")
    if any(t.kind == "generate_until" and t.metrics != ["exact_match"] for t in everything):
        with atomic_text(build / f"{METRICS_MODULE}.py") as fh:
            fh.write(METRICS_SOURCE)
        files.append(f"{METRICS_MODULE}.py")
    with atomic_text(build / "README.md") as fh:
        fh.write(_readme(prefix, final, recipe, manifest, clusters, skipped))
    files.append("README.md")
    files.sort()
    write_marker(HARNESS, build, manifest, {name: (build / name).stat().st_size for name in files})
    return files


def _split_tasks(
    build: Path, folder: RunFolder, catalog: Catalog
) -> tuple[dict[str, _Task], Counter[str]]:
    """Stream the eval split into one data file per (source, template); count what is left
    out, by reason."""
    tasks: dict[str, _Task] = {}
    skipped = Counter[str]()
    specs = {
        (name, t.id): t.spec for name in catalog.templates for t in catalog.templates_for(name)
    }
    try:
        for batch in read_batches(folder.mixed("eval")):
            for row in batch.to_pylist():
                reason = _add(row, tasks, specs, build)
                if reason is not None:
                    skipped[reason] += 1
        for task in tasks.values():
            _flush(task)
    except BaseException:
        for task in tasks.values():
            if task.sink is not None:
                task.sink.abort()
        raise
    for key, task in list(tasks.items()):
        assert task.sink is not None
        task.sink.close()
        if not task.rows:  # every record of it was left out: no task of no documents
            task.sink.path.unlink()
            del tasks[key]
    return tasks, skipped


def _flush(task: _Task) -> None:
    assert task.sink is not None
    task.sink.write_rows(task.pending)
    task.pending = []


def _add(
    row: dict[str, Any],
    tasks: dict[str, _Task],
    specs: dict[tuple[str, str], TemplateSpec],
    build: Path,
) -> str | None:
    """File one eval record under its task; the reason it is left out, or None."""
    variant = row["variant"]
    if variant in ("few_shot_opt", "few_shot_noopt"):
        return "few-shot"
    if variant in ("cot", "few_shot_cot"):
        return "chain-of-thought"
    if variant == "inverted":
        return "inverted"
    spec = specs.get((row["source"], row["template_id"]))
    if spec is not None and not spec.poses_task:
        return "not the original task"
    messages = row["messages"]
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    if [m["role"] for m in turns] != ["user", "assistant"]:
        return "not one user turn"
    prompt, answer = turns[0]["content"], turns[1]["content"]
    choices = row["answer_choices"]
    key = f"{row['source']}.{row['template_id']}"
    task = tasks.get(key)
    if task is None:
        asked = list(spec.metadata.metrics) if spec is not None else []
        kind: Literal["multiple_choice", "generate_until"] = (
            "multiple_choice" if choices is not None else "generate_until"
        )
        task = _Task(
            source=row["source"],
            template=row["template_id"],
            cluster=row["cluster"],
            kind=kind,
            metrics=_scored(kind, asked),
            asked=asked,
        )
        task.sink = ParquetSink(build / "data" / f"{key}.parquet", DOC_SCHEMA, _ROW_GROUP)
        tasks[key] = task
    if (choices is not None) != (task.kind == "multiple_choice"):
        return "choices unlike its template's other records"
    label = None
    if choices is not None:
        if answer not in choices:
            return "target not among its choices"
        label = choices.index(answer)
    gold = row["gold_answers"] or [answer]
    task.pending.append(
        {
            "id": row["id"],
            "source": row["source"],
            "cluster": row["cluster"],
            "template_id": row["template_id"],
            "variant": variant,
            "example_id": row["example_id"],
            "split": row["split"],
            "language": row["language"],
            "license": row["license"],
            "system": system,
            "prompt": prompt,
            "target": answer,
            "choices": choices,
            "label": label,
            "gold_answers": gold,
        }
    )
    if len(task.pending) >= _ROW_GROUP:
        _flush(task)
    task.rows += 1
    task.system = task.system or system is not None
    for text in (answer, *gold):
        task.longest = max(task.longest, len(text))
        task.multiline = task.multiline or "\n" in text
        task.blank_line = task.blank_line or "\n\n" in text
    return None


def _scored(kind: str, asked: list[str]) -> list[str]:
    """The lm-eval metrics a task reports, from the template's ``metadata.metrics``."""
    if kind == "multiple_choice":
        return ["acc", "acc_norm"]
    names = {m.lower() for m in asked}
    out = []
    if names & _EXACT or not names & (_ROUGE | _BLEU):
        out.append("exact_match")
    if names & _BLEU:
        out.append("bleu")
    if names & _ROUGE:
        out += ROUGE_KEYS
    return out


class _Function(str):
    """A value written as lm-eval's ``!function module.name`` tag."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Function, lambda dumper, value: dumper.represent_scalar("!function", str(value))
)


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    with atomic_text(path) as fh:
        yaml.dump(data, fh, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _task_config(
    task: _Task, prefix: str, final: Path, manifest: Manifest, recipe: Recipe
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "task": f"{prefix}.{task.stem}",
        "task_alias": f"{task.source} / {task.template}",
        "dataset_path": "parquet",
        "dataset_kwargs": {"data_files": {"test": str(final / "data" / f"{task.stem}.parquet")}},
        "test_split": "test",
        "output_type": task.kind,
    }
    if task.system:
        # lm-eval's description: the system turn with a chat template, a prefix without one.
        config["description"] = "{% if system %}{{ system }}\n\n{% endif %}"
    config["doc_to_text"] = "prompt"
    if task.kind == "multiple_choice":
        config["doc_to_choice"] = "choices"
        config["doc_to_target"] = "label"
        config["metric_list"] = [
            {"metric": m, "aggregation": "mean", "higher_is_better": True} for m in task.metrics
        ]
    else:
        exact = task.metrics == ["exact_match"]
        # Every gold answer is accepted by exact match; ROUGE and BLEU read the doc themselves.
        config["doc_to_target"] = "gold_answers" if exact else "target"
        until = [] if task.blank_line else ["\n\n"]
        tokens = min(_MAX_GEN_TOKS, max(_MIN_GEN_TOKS, 2 * task.longest))
        config["generation_kwargs"] = {
            "until": until,
            "do_sample": False,
            "temperature": 0.0,
            "max_gen_toks": tokens,
        }
        if not task.multiline:
            config["filter_list"] = [FIRST_LINE]
        if exact:
            config["metric_list"] = [
                {
                    "metric": "exact_match",
                    "aggregation": "mean",
                    "higher_is_better": True,
                    "ignore_case": True,
                    "ignore_punctuation": True,
                    "regexes_to_ignore": [r"^\s+", r"\s+$"],
                }
            ]
        else:
            # lm-eval has no ROUGE of its own: the metrics module scores the whole document.
            parts = [
                part
                for part, on in (
                    ("exact", "exact_match" in task.metrics),
                    ("bleu", "bleu" in task.metrics),
                    ("rouge", "rougeL" in task.metrics),
                )
                if on
            ]
            config["process_results"] = _Function(f"{METRICS_MODULE}.{'_'.join(parts)}")
            config["metric_list"] = [
                {
                    "metric": m,
                    "aggregation": "bleu" if m == "bleu" else "mean",
                    "higher_is_better": True,
                }
                for m in task.metrics
            ]
    config["metadata"] = {
        "version": 1.0,
        "recipe": recipe.name,
        "recipe_fingerprint": manifest.recipe_fingerprint,
        "source": task.source,
        "template": task.template,
        "cluster": task.cluster,
    }
    return config


def _aggregates(tasks: list[_Task]) -> list[dict[str, Any]]:
    """One mean per metric its tasks report, each task (template) weighing the same, as FLAN
    averages over templates; filters (``none``, ``first_line``) are found by lm-eval."""
    seen: list[str] = []
    for task in tasks:
        seen += [m for m in task.metrics if m not in seen]
    return [{"metric": m, "aggregation": "mean", "weight_by_size": False} for m in seen]


def _readme(
    prefix: str,
    final: Path,
    recipe: Recipe,
    manifest: Manifest,
    clusters: dict[str, list[_Task]],
    skipped: Counter[str],
) -> str:
    total = sum(t.rows for members in clusters.values() for t in members)
    lines = [
        f"# {prefix}: lm-evaluation-harness tasks for the held-out clusters",
        "",
        f"Written by instructmix {manifest.instructmix_version} from recipe `{recipe.name}` "
        f"(fingerprint `{manifest.recipe_fingerprint}`): the run's `eval` split, "
        f"{total} zero-shot documents in {sum(len(m) for m in clusters.values())} tasks, one per "
        "(source, template), and one group per held-out cluster.",
        "",
        "```sh",
        f"lm_eval --model hf --model_args pretrained=MODEL --include_path {final} \\",
        f"    --tasks {prefix} --apply_chat_template",
        "```",
        "",
        f"- `--tasks`: the group `{prefix}` runs every cluster; "
        f"{', '.join(f'`{prefix}.{c}`' for c in clusters)} run one; a task name runs one "
        "(source, template).",
        "- `--apply_chat_template` for a model tuned on this recipe's `messages`: it learnt "
        "the prompts as user turns. Without it the prompt is plain text, the answer follows "
        "after a space (multiple choice) or is the first line generated.",
        "- Zero-shot by design: pass no `--num_fewshot` (the tasks have no few-shot split; "
        "lm-eval would draw exemplars from these documents).",
        "- The task files name their data by absolute path (lm-eval reads `data_files` "
        "relative to the directory it runs in): after moving this folder, write it again "
        "with `instructmix export --eval-harness DIR`.",
        "",
        "## Scoring",
        "",
        "- **multiple choice** (records with `answer_choices`): the log-likelihood of each "
        "choice after the prompt; `acc`, and `acc_norm` (normalised by the choice's length). "
        "When the prompt lists lettered or numbered options, the choices are the markers.",
        "- **generation**: greedy decoding, then `exact_match` (case and punctuation ignored) "
        "against every gold answer, as the template's `metrics` ask; or ROUGE-1/2/L "
        "(F-measure, best over the gold answers) and BLEU (sacrebleu, 0 to 100, against "
        "the target). Token F1 and SQuAD's metric have no lm-eval counterpart and are scored "
        "by exact match. ROUGE tokenises as rouge-score does (ASCII letters and digits "
        "only): accented and non-Latin words count for nothing.",
        "- **groups** average each metric over the tasks that report it, each task weighing "
        "the same (`weight_by_size: false`), as FLAN averages over templates; lm-eval warns "
        "that a metric is missing in some tasks when a cluster mixes both kinds.",
        "",
        "## Tasks",
        "",
        "| task | cluster | kind | metrics | template asks | documents |",
        "|---|---|---|---|---|---|",
    ]
    for cluster, members in clusters.items():
        for t in members:
            kind = "multiple choice" if t.kind == "multiple_choice" else "generation"
            lines.append(
                f"| `{prefix}.{t.stem}` | {cluster} | {kind} | {', '.join(t.metrics)} | "
                f"{', '.join(t.asked) or '-'} | {t.rows} |"
            )
    lines += [
        "",
        "## Left out",
        "",
        "Only zero-shot records of a template's original task are evaluated (the FLAN "
        "protocol). Few-shot records are lm-eval's to build; chain-of-thought records answer "
        "after a rationale; inverted templates, and templates whose `metadata.original_task` "
        "is false, are not the held-out task itself. The recipe's `variants` shares apply to "
        "the eval split too: `zero_shot: 1` keeps every held-out example.",
        "",
    ]
    if skipped:
        lines += ["| reason | records |", "|---|---|"]
        lines += [f"| {reason} | {n} |" for reason, n in sorted(skipped.items())]
    else:
        lines.append("Nothing was left out.")
    lines.append("")
    return "\n".join(lines)


# The module the generation tasks' `process_results` names. It runs inside lm-eval, which
# depends on rouge-score and sacrebleu; it is a copy so the folder needs no instructmix.
METRICS_SOURCE = '''\
"""Scores for instructmix's generation tasks, called by lm-evaluation-harness as
`process_results(doc, results)`. Written by `instructmix export --eval-harness`.

ROUGE-1/2/L: F-measure of the answer against each gold answer, the best one counting.
BLEU: (target, answer) pairs, scored over the whole task by lm-eval's `bleu` aggregation.
exact_match: the answer equals a gold answer, case, punctuation and surrounding space aside.
"""

import string

_SCORER = None
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _scorer():
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    return _SCORER


def _golds(doc):
    return list(doc["gold_answers"] or [doc["target"]])


def _rouge(doc, answer):
    best = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for gold in _golds(doc):
        scores = _scorer().score(gold, answer)
        for key in best:
            best[key] = max(best[key], scores[key].fmeasure)
    return best


def _plain(text):
    return text.strip().lower().translate(_PUNCTUATION).strip()


def _exact(doc, answer):
    return {"exact_match": float(any(_plain(g) == _plain(answer) for g in _golds(doc)))}


def rouge(doc, results):
    return _rouge(doc, results[0].strip())


def bleu(doc, results):
    return {"bleu": (doc["target"], results[0].strip())}


def bleu_rouge(doc, results):
    return {**bleu(doc, results), **rouge(doc, results)}


def exact_rouge(doc, results):
    return {**_exact(doc, results[0].strip()), **rouge(doc, results)}


def exact_bleu(doc, results):
    return {**_exact(doc, results[0].strip()), **bleu(doc, results)}


def exact_bleu_rouge(doc, results):
    return {**_exact(doc, results[0].strip()), **bleu(doc, results), **rouge(doc, results)}
'''
