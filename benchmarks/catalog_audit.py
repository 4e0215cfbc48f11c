"""The catalog defects of issue 11, counted on a finished run folder.

    python benchmarks/catalog_audit.py --out RUN_DIR            # a report to read
    python benchmarks/catalog_audit.py --out RUN_DIR --json     # the same counts as JSON

Reads RUN_DIR/mixed/*.parquet (the selected records of every split), RUN_DIR/examples (each
record's example, for its gold answers and its own texts), RUN_DIR/manifest.json and
RUN_DIR/rejects, and counts, over the records:

- ``calculator`` / ``answer_marker``: targets holding ``<<`` or ``####`` (and prompts that do:
  one-turn few-shot exemplars carry their answers in the prompt);
- ``ptb``: targets with Penn Treebank artefacts (`` '' quotes, a space before , . n't 's, -LRB-);
- ``markers``: targets with corpus markers ([TITLE], [TABLECONTEXT]) or a count with an "(s)"
  plural, and prompts that show either;
- ``lettered``: records whose prompt lists the options with letters or numbers: what the target
  is (text, marker, both), what the prompt asks (nothing, text, marker, both, several), the
  records whose target contradicts what is asked, those where nothing is asked, and numbered
  options among the template's own numbered lines;
- ``few_shot``: one-turn few-shot records whose exemplars' answers follow with no answer mark
  (the prompt does not end on an answer prefix such as "A:" that also opens each exemplar's
  answer);
- ``inverted``: inverted templates with fewer distinct prompts than a tenth of their records;
- ``multi_answer``: NQ-open, WebQuestions and XQuAD records (answer records, not inverted): do
  they list every gold answer of their example in ``gold_answers`` (a run made before that
  column existed is reported as such), is the target one of them;
- ``answer_form``: classification records with the options hidden whose prompt names no answer
  form (``pipeline.lint.names_answer_form``, with the example's own texts blanked);
- distinct prompts per template, and per source: templates, inverted, chain-of-thought and
  choice templates (as the records show them), examples rejected and every reject reason.

The detectors are lint's (``pipeline.lint``), so the build and ``templates lint`` count the
same things; only reading the run folder is this script's own. A record's prompt is its last
user turn, its target its last assistant turn (for chain-of-thought, the answer after the
answer line).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.lint import (
    ARTEFACTS,
    INVERTED_MIN_SHARE,
    asked_forms,
    example_strings,
    find_option_list,
    names_answer_form,
    target_kinds,
)
from pipeline.locales import cot_answer_prefixes

# The multi-answer QA sources and the field holding every gold answer of an example.
MULTI_ANSWER = {"nq_open": "answer", "web_questions": "answers", "xquad": "answers"}
# How many example records each defect class keeps to show.
SHOWN = 3

_PLURAL_IN_PROMPT = re.compile(r"[A-Za-z]\(s\)")
_OWN_NUMBERING = re.compile(r"\s*\(?\d{1,2}[.)]\s")
# The last line of a marked one-turn few-shot prompt: an answer prefix ("A:", "Answer:").
_ANSWER_MARK = re.compile(r"^\S[^\n]{0,24}:$")


# Every language's line before a chain-of-thought answer ("So the answer is: ").
COT_PREFIXES = cot_answer_prefixes()


# --------------------------------------------------------------------------- reading


def read_records(out: Path) -> tuple[list[dict[str, Any]], bool]:
    """Every mixed record (with its split), and whether the run has a gold_answers column."""
    files = sorted(p for p in (out / "mixed").glob("*.parquet"))
    if not files:
        raise SystemExit(f"{out}: no mixed/*.parquet: is it a finished run folder?")
    records: list[dict[str, Any]] = []
    has_gold = True
    for path in files:
        table = pq.read_table(path)
        has_gold = has_gold and "gold_answers" in table.column_names
        for row in table.to_pylist():
            row["split"] = path.stem
            records.append(row)
    return records, has_gold


def read_examples(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((out / "examples").glob("*/part-*.parquet")):
        for row in pq.read_table(path, columns=["example_id", "fields"]).to_pylist():
            found[(path.parent.name, row["example_id"])] = json.loads(row["fields"])
    return found


def read_rejects(out: Path) -> dict[str, Counter[str]]:
    """source -> "stage/rule" -> count, from every rejects file."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for path in sorted((out / "rejects").glob("*/*/*.jsonl")):
        stage, source = path.parent.parent.name, path.parent.name
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    counts[source][f"{stage}/{json.loads(line)['rule']}"] += 1
    return counts


# --------------------------------------------------------------------------- one record


def prompt_of(record: dict[str, Any]) -> str:
    users = [m["content"] for m in record["messages"] if m["role"] == "user"]
    return users[-1] if users else ""


def target_of(record: dict[str, Any]) -> str:
    """The record's answer: its last assistant turn, after the answer line for CoT."""
    answers = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
    text = answers[-1] if answers else ""
    if record["variant"] in ("cot", "few_shot_cot"):
        cut = max((text.rfind(p), p) for p in COT_PREFIXES)
        if cut[0] >= 0:
            return text[cut[0] + len(cut[1]) :].strip()
    return text


def one_turn_few_shot(record: dict[str, Any]) -> bool:
    users = [m for m in record["messages"] if m["role"] == "user"]
    return record["variant"].startswith("few_shot") and len(users) == 1


def answer_mark(prompt: str) -> str | None:
    """The answer prefix a marked one-turn few-shot prompt ends on ("A:"), when the same
    prefix also opens an earlier line (an exemplar's answer); else None."""
    lines = prompt.split("\n")
    last = lines[-1].strip()
    if not _ANSWER_MARK.match(last):
        return None
    if any(line.startswith(last + " ") or line == last for line in lines[:-1]):
        return last
    return None


def query_part(record: dict[str, Any], prompt: str) -> str:
    """The query of a one-turn few-shot prompt (after the last exemplar's answer), or the
    whole prompt."""
    if not one_turn_few_shot(record):
        return prompt
    lines = prompt.split("\n")
    mark = answer_mark(prompt)
    targets = {t.strip() for t in record.get("answer_choices") or []}
    # An exemplar's answer is the line (the mark and its answer, or a bare choice) before the
    # separator; a template's own "A: ..." line is followed by more of its prompt.
    for i in range(len(lines) - 2, -1, -1):
        line = lines[i]
        if _is_separator(lines[i + 1]) and (
            (mark is not None and line.startswith(mark))
            or (mark is None and line.strip() in targets)
        ):
            return _without_separator(lines[i + 1 : -1] if mark is not None else lines[i + 1 :])
    return prompt


def _is_separator(line: str) -> bool:
    return not any(ch.isalnum() for ch in line)


def _without_separator(lines: list[str]) -> str:
    """The query's lines without the exemplar separator before them ("", "###", "----")."""
    while lines and _is_separator(lines[0]):
        lines = lines[1:]
    return "\n".join(lines)


def answer_strings(value: Any) -> list[str]:
    """Every gold answer held by a field: a list of strings, a struct with `text`, or a list
    of such structs."""
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, dict):
        return answer_strings(value.get("text", []))
    if isinstance(value, list):
        return list(dict.fromkeys(a for v in value for a in answer_strings(v)))
    return []


# --------------------------------------------------------------------------- the audit


class _Class:
    """One defect class: a count, per source, per kind, and a few records to show."""

    def __init__(self) -> None:
        self.count = 0
        self.by_source: Counter[str] = Counter()
        self.by_kind: Counter[str] = Counter()
        self.shown: list[dict[str, str]] = []

    def add(self, record: dict[str, Any], kinds: Sequence[str] = (), text: str = "") -> None:
        self.count += 1
        self.by_source[record["source"]] += 1
        self.by_kind.update(kinds)
        if len(self.shown) < SHOWN:
            self.shown.append(
                {
                    "id": record["id"],
                    "source": record["source"],
                    "template_id": record["template_id"],
                    "text": text[:160],
                }
            )

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "count": self.count,
            "by_source": dict(sorted(self.by_source.items())),
        }
        if self.by_kind:
            out["by_kind"] = dict(sorted(self.by_kind.items()))
        out["examples"] = self.shown
        return out


def audit(out: Path, multi_answer: dict[str, str] | None = None) -> dict[str, Any]:
    """Every count of the module docstring, as one JSON-ready mapping. ``multi_answer``:
    source -> the field with its gold answers (default ``MULTI_ANSWER``)."""
    multi_fields = MULTI_ANSWER if multi_answer is None else multi_answer
    records, has_gold = read_records(out)
    examples = read_examples(out)
    rejects = read_rejects(out)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}

    classes = {
        name: _Class()
        for name in (
            "calculator_in_targets",
            "answer_marker_in_targets",
            "calculator_or_marker_in_prompts",
            "ptb_in_targets",
            "markers_in_targets",
            "markers_in_prompts",
            "lettered_contradicting",
            "lettered_unspecified",
            "numbering_clash",
            "few_shot_unmarked",
            "no_answer_form",
            "multi_answer_not_all_listed",
            "multi_answer_target_outside",
        )
    }
    lettered_records = 0
    lettered_target: Counter[str] = Counter()
    lettered_asked: Counter[str] = Counter()
    few_shot_records = 0
    noopt_classification = 0
    prompts: dict[tuple[str, str], set[str]] = defaultdict(set)
    per_template: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    multi: dict[str, Counter[str]] = defaultdict(Counter)

    for r in records:
        source, tid, variant = r["source"], r["template_id"], r["variant"]
        prompt, target = prompt_of(r), target_of(r)
        choices = r.get("answer_choices")
        fields = examples.get((source, r["example_id"]), {})
        prompts[(source, tid)].add(prompt)
        per_template[(source, tid)][variant] += 1
        final = [m["content"] for m in r["messages"] if m["role"] == "assistant"][-1:]
        final_text = final[0] if final else ""

        if "<<" in final_text:
            classes["calculator_in_targets"].add(r, text=final_text)
        if "####" in final_text:
            classes["answer_marker_in_targets"].add(r, text=final_text)
        if "<<" in prompt or "####" in prompt:
            classes["calculator_or_marker_in_prompts"].add(r, text=prompt)
        found = [(g, what) for g, what, p in ARTEFACTS if p.search(final_text)]
        ptb = [what for g, what in found if g == "ptb"]
        if ptb:
            classes["ptb_in_targets"].add(r, ptb, final_text)
        marks = [what for g, what in found if g in ("markup", "plural_hack")]
        if marks:
            classes["markers_in_targets"].add(r, marks, final_text)
        markup = [w for g, w, p in ARTEFACTS if g == "markup" and p.search(prompt)]
        # A template's "(s)": in the query (exemplars are other examples), not from its data.
        query = query_part(r, prompt)
        plural = _PLURAL_IN_PROMPT.search(query)
        if plural and not any(
            plural.group(0).casefold() in v.casefold() for v in example_strings(fields)
        ):
            markup.append("an '(s)' plural")
        if markup:
            classes["markers_in_prompts"].add(r, markup, prompt)

        if one_turn_few_shot(r):
            few_shot_records += 1
            if answer_mark(prompt) is None:
                classes["few_shot_unmarked"].add(r, text=prompt[-200:])

        if choices:
            options = find_option_list(query, choices)
            if options is not None:
                lettered_records += 1
                kinds = target_kinds(target, options)
                kind = "/".join(sorted(kinds))
                lettered_target[kind] += 1
                lines = query.split("\n")
                rest = lines[: options.start] + lines[options.end :]
                asked = asked_forms("\n".join(rest), options.markers)
                said = "none" if not asked else "several" if len(asked) > 1 else next(iter(asked))
                lettered_asked[said] += 1
                if not asked:
                    classes["lettered_unspecified"].add(r, [kind], query)
                elif len(asked) > 1 or not asked & kinds:
                    classes["lettered_contradicting"].add(r, [f"asks {said}, gives {kind}"], query)
                strings = example_strings(fields)
                own = [x for x in rest if not any(x.strip() in v for v in strings)]
                if options.style == "numbers" and any(_OWN_NUMBERING.match(x) for x in own):
                    classes["numbering_clash"].add(r, text=query)
            if variant.endswith("_noopt"):
                noopt_classification += 1
                if not names_answer_form(query, choices, example_strings(fields)):
                    classes["no_answer_form"].add(r, [tid], query)

        if source in multi_fields and variant != "inverted" and not choices:
            gold = answer_strings(fields.get(multi_fields[source]))
            listed = r.get("gold_answers") if has_gold else None
            m = multi[source]
            m["records"] += 1
            m["examples_with_several_answers"] += len(gold) > 1
            if listed is None:
                m["records_without_gold_answers"] += 1
            # The record accepts its target and whatever it lists: every gold answer must be one.
            if not set(gold) <= set(listed or []) | {target.strip()}:
                classes["multi_answer_not_all_listed"].add(r, text=f"{target!r} of {gold}")
                m["records_not_listing_all"] += 1
            if target.strip() not in set(gold) | set(listed or []):
                classes["multi_answer_target_outside"].add(r, text=f"{target!r} of {gold}")
                m["records_target_outside"] += 1

    distinct: list[dict[str, Any]] = [
        {
            "source": s,
            "template_id": t,
            "records": sum(per_template[(s, t)].values()),
            "distinct_prompts": len(ps),
            "variants": dict(sorted(per_template[(s, t)].items())),
        }
        for (s, t), ps in sorted(prompts.items())
    ]
    degenerate = [
        d
        for d in distinct
        if "inverted" in d["variants"]
        and d["distinct_prompts"] < d["records"] * INVERTED_MIN_SHARE
    ]
    return {
        "run": str(out),
        "records": len(records),
        "splits": dict(sorted(Counter(r["split"] for r in records).items())),
        "gold_answers_column": (
            "present" if has_gold else "absent (a run made before records carried gold answers)"
        ),
        "defects": {
            **{name: c.report() for name, c in classes.items()},
            "lettered": {
                "records": lettered_records,
                "target": dict(sorted(lettered_target.items())),
                "asked": dict(sorted(lettered_asked.items())),
            },
            "few_shot_one_turn_records": few_shot_records,
            "noopt_classification_records": noopt_classification,
            "degenerate_inverted": degenerate,
            "multi_answer": {s: dict(sorted(c.items())) for s, c in sorted(multi.items())},
        },
        "distinct_prompts": distinct,
        "sources": _sources(records, manifest, rejects),
    }


def _sources(
    records: list[dict[str, Any]], manifest: dict[str, Any], rejects: dict[str, Counter[str]]
) -> dict[str, Any]:
    templates: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in records:
        t = templates[r["source"]]
        t["all"].add(r["template_id"])
        if r["variant"] == "inverted":
            t["inverted"].add(r["template_id"])
        if r["variant"] in ("cot", "few_shot_cot"):
            t["cot"].add(r["template_id"])
        if r.get("answer_choices"):
            t["choices"].add(r["template_id"])
    counts = manifest.get("sources", {})
    names = sorted(set(templates) | set(counts))
    out = {}
    for name in names:
        t, c = templates.get(name, {}), counts.get(name, {})
        out[name] = {
            "records": sum(1 for r in records if r["source"] == name),
            "templates": len(t.get("all", ())),
            "inverted": len(t.get("inverted", ())),
            "cot": len(t.get("cot", ())),
            "choices": len(t.get("choices", ())),
            "examples_in": c.get("examples_in"),
            "examples_rejected": c.get("examples_rejected"),
            "records_rejected": c.get("records_rejected"),
            "rejected_by_rule": c.get("rejected_by_rule", {}),
            "rejects": dict(sorted(rejects.get(name, Counter()).items())),
        }
    return out


# --------------------------------------------------------------------------- printing


def render_text(result: dict[str, Any]) -> str:
    d = result["defects"]
    lines = [
        f"run: {result['run']}",
        f"records: {result['records']} {result['splits']}",
        f"gold_answers column: {result['gold_answers_column']}",
        "",
        "defect class                                   records",
    ]

    def row(label: str, c: dict[str, Any]) -> None:
        lines.append(f"  {label:<45}{c['count']:>7}  {_short(c)}")

    row("targets containing '<<'", d["calculator_in_targets"])
    row("targets containing '####'", d["answer_marker_in_targets"])
    row("prompts containing '<<' or '####'", d["calculator_or_marker_in_prompts"])
    row("targets with PTB artefacts", d["ptb_in_targets"])
    row("targets with markers / count(s) plurals", d["markers_in_targets"])
    row("prompts with markers / (s) plurals", d["markers_in_prompts"])
    let = d["lettered"]
    lines.append(
        f"  {'lettered/numbered records':<45}{let['records']:>7}  target {let['target']}, "
        f"asked {let['asked']}"
    )
    row("  target contradicts what is asked", d["lettered_contradicting"])
    row("  prompt never says (letter or text)", d["lettered_unspecified"])
    row("  numbered options among own numbering", d["numbering_clash"])
    lines.append(f"  {'one-turn few-shot records':<45}{d['few_shot_one_turn_records']:>7}")
    row("  answers with no answer mark", d["few_shot_unmarked"])
    lines.append(f"  {'classification records, options hidden':<45}"
                 f"{d['noopt_classification_records']:>7}")  # fmt: skip
    row("  prompt names no answer form", d["no_answer_form"])
    row("multi-answer QA records not listing all gold", d["multi_answer_not_all_listed"])
    row("multi-answer QA records, target outside gold", d["multi_answer_target_outside"])
    for source, counts in d["multi_answer"].items():
        lines.append(f"    {source}: {counts}")
    lines.append("")
    degenerate = d["degenerate_inverted"]
    lines.append(f"inverted templates with distinct prompts < records/10: {len(degenerate)}")
    for t in degenerate:
        lines.append(
            f"  {t['source']}/{t['template_id']}: {t['distinct_prompts']} prompts, "
            f"{t['records']} records"
        )
    lines += ["", "distinct prompts per template (source/template: prompts / records)"]
    for t in result["distinct_prompts"]:
        name = f"{t['source']}/{t['template_id']}"
        lines.append(f"  {name}: {t['distinct_prompts']} / {t['records']}")
    lines += ["", "per source: records, templates (inverted, CoT, choices), examples rejected"]
    for name, s in result["sources"].items():
        lines.append(
            f"  {name}: {s['records']} records, {s['templates']} templates ({s['inverted']} "
            f"inverted, {s['cot']} CoT, {s['choices']} choices), {s['examples_rejected']} of "
            f"{s['examples_in']} examples rejected; rejects {s['rejects'] or '{}'}"
        )
    return "\n".join(lines)


def _short(c: dict[str, Any]) -> str:
    parts = [f"{k} {v}" for k, v in c["by_source"].items()]
    text = ", ".join(parts)
    return text if len(text) < 90 else text[:87] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="A finished run folder.")
    parser.add_argument("--json", action="store_true", help="Print the counts as JSON.")
    parser.add_argument(
        "--multi-answer",
        action="append",
        default=[],
        metavar="SOURCE=FIELD",
        help="A multi-answer QA source and its gold-answers field (repeatable; default: "
        + ", ".join(f"{k}={v}" for k, v in MULTI_ANSWER.items())
        + ")",
    )
    args = parser.parse_args(argv)
    multi = dict(item.split("=", 1) for item in args.multi_answer) or None
    result = audit(args.out, multi)
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else render_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
