"""How much of the held-out data a build shows its train split: the leak counts of issue 9.

    python benchmarks/leakage.py --out output          # a finished run folder

For every example behind a validation or eval record of the export, each of its text fields
(strings of at least --min-chars characters, so labels and one-word answers do not count) is
searched for, verbatim, in the text of every train record. Printed, as JSON:

- held_out_examples / exposed: held-out examples with a field inside some train record;
- train_records_exposing: train records holding such a field;
- validation_records_inside_train: validation records whose final user turn and answer both
  occur inside one train record (the record word for word, answer included);
- group_overlap: per source, held-out examples whose split group value (the spec's
  `split_group`, else the raw field named by --group SOURCE=FIELD) also occurs in train.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

# Fields whose values repeat across examples by design (the groups the issue names).
DEFAULT_GROUPS = {
    "e2e_nlg": "meaning_representation",
    "esnli": "premise",
    "breaking_nli": "sentence1",
}


def _records(dataset: Path, split: str) -> list[dict[str, Any]]:
    files = sorted((dataset / "data").glob(f"{split}-*.parquet"))
    cols = ["source", "example_id", "messages"]
    return [row for f in files for row in pq.read_table(f, columns=cols).to_pylist()]


def _examples(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in sorted((out / "examples").glob("*/part-*.parquet")):
        for row in pq.read_table(path, columns=["example_id", "fields"]).to_pylist():
            found[(path.parent.name, row["example_id"])] = json.loads(row["fields"])
    return found


def _texts(value: Any, min_chars: int) -> list[str]:
    if isinstance(value, str):
        return [value] if len(value.strip()) >= min_chars else []
    if isinstance(value, list):
        return [t for v in value for t in _texts(v, min_chars)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v, min_chars)]
    return []


def measure(out: Path, min_chars: int, groups: dict[str, str]) -> dict[str, Any]:
    dataset = out / "dataset"
    train = _records(dataset, "train")
    held = _records(dataset, "validation") + _records(dataset, "eval")
    examples = _examples(out)
    train_texts = ["\n".join(m["content"] for m in r["messages"]) for r in train]
    blob = "\n\x00\n".join(train_texts)
    held_ids = sorted({(r["source"], r["example_id"]) for r in held})
    exposed_fields: dict[tuple[str, str], list[str]] = {}
    for key in held_ids:
        fields = examples.get(key, {})
        hits = [t for t in _texts(fields, min_chars) if t in blob]
        if hits:
            exposed_fields[key] = hits
    needles = {t for hits in exposed_fields.values() for t in hits}
    exposing = sum(any(n in text for n in needles) for text in train_texts)
    whole = 0
    for r in held:
        user = next(m["content"] for m in reversed(r["messages"]) if m["role"] == "user")
        answer = r["messages"][-1]["content"]
        if user in blob and any(user in t and answer in t for t in train_texts if user in t):
            whole += 1
    train_groups: dict[str, set[str]] = defaultdict(set)
    for r in train:
        field = groups.get(r["source"])
        if field is not None:
            value = examples.get((r["source"], r["example_id"]), {}).get(field)
            train_groups[r["source"]].add(json.dumps(value, sort_keys=True))
    overlap: Counter[str] = Counter()
    held_by_source: Counter[str] = Counter()
    for source, example_id in held_ids:
        field = groups.get(source)
        if field is None:
            continue
        held_by_source[source] += 1
        value = json.dumps(examples.get((source, example_id), {}).get(field), sort_keys=True)
        if value in train_groups[source]:
            overlap[source] += 1
    return {
        "train_records": len(train),
        "held_out_records": len(held),
        "held_out_examples": len(held_ids),
        "exposed": len(exposed_fields),
        "train_records_exposing": exposing,
        "validation_records_inside_train": whole,
        "group_overlap": {
            s: f"{overlap[s]} of {held_by_source[s]}" for s in sorted(held_by_source)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("output"))
    parser.add_argument("--min-chars", type=int, default=20)
    parser.add_argument("--group", action="append", default=[], help="SOURCE=FIELD")
    args = parser.parse_args()
    groups = dict(DEFAULT_GROUPS)
    groups.update(dict(g.split("=", 1) for g in args.group))
    print(json.dumps(measure(args.out, args.min_chars, groups), indent=2))


if __name__ == "__main__":
    main()
