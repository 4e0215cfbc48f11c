"""Dedup and decontamination against the plain-Python way of doing the same, on real records.

    python benchmarks/bench_mix_checks.py [--repeat 5]

Builds the bundled default recipe into a temporary folder, then times, on its records:

- dedup: ``record_hashes`` (normalised conversation hashes, numpy) against a loop that
  normalises and blake2b-hashes each record's joined text in Python;
- decontamination: ``EvalIndex.match_many`` (13-grams only) over the exported records against a
  Python set of 13-gram tuples built from the same held-out texts, probed window by window; the
  two must flag exactly the same records. (The records include the validation split, which
  holds its own held-out texts, so there is something to find.)

Both sides run in this process on the same rows, so the ratios hold across machines; the
absolute rates are printed too. Each side must find the same duplicates / overlaps.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import run_recipe
from pipeline.decontam import EvalIndex, conversation_texts, tokens
from pipeline.dedup import normalize, record_hashes


def _best(fn: Any, repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def _held_out_texts(out: Path) -> list[tuple[str, str]]:
    items = []
    for path in sorted((out / "examples").glob("*/part-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            if row["out_split"] != "train":
                for value in json.loads(row["fields"]).values():
                    if isinstance(value, str):
                        items.append((row["example_id"], value))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="instructmix-bench-") as tmp:
        out = Path(tmp) / "run"
        run_recipe(None, out)
        records = pa.concat_tables(
            pq.read_table(p, columns=["messages"])
            for p in sorted((out / "dataset" / "data").glob("*.parquet"))
        )
        held = _held_out_texts(out)
    messages = records.column("messages")
    texts = conversation_texts(messages)
    n = len(texts)

    t_ours, hashes = _best(lambda: record_hashes(messages), args.repeat)

    def plain_dedup() -> list[bytes]:
        return [hashlib.blake2b(normalize(t).encode(), digest_size=8).digest() for t in texts]

    t_plain, plain = _best(plain_dedup, args.repeat)
    dups_ours = n - len(set(hashes.normalized.tolist()))
    dups_plain = n - len(set(plain))

    # 13-grams only (min_tokens=13), so both sides answer exactly the same question.
    index = EvalIndex(held, n=13, min_tokens=13)
    t_index, found = _best(lambda: index.match_many(texts), args.repeat)
    with_short = EvalIndex(held).match_many(texts)
    grams = set()
    for _, text in held:
        words = tokens(text)
        grams |= {tuple(words[i : i + 13]) for i in range(len(words) - 12)}

    def plain_decontam() -> list[bool]:
        hits = []
        for text in texts:
            words = tokens(text)
            hits.append(any(tuple(words[i : i + 13]) in grams for i in range(len(words) - 12)))
        return hits

    t_set, plain_hits = _best(plain_decontam, args.repeat)
    ours_hits = [o is not None for o in found]
    report = {
        "records": n,
        "held_out_texts": len(held),
        "dedup": {
            "ours_records_per_s": round(n / t_ours),
            "plain_records_per_s": round(n / t_plain),
            "ratio": round(t_plain / t_ours, 2),
            "duplicates_found": [dups_ours, dups_plain],
        },
        "decontamination": {
            "ours_records_per_s": round(n / t_index),
            "plain_records_per_s": round(n / t_set),
            "ratio": round(t_set / t_index, 2),
            "records_overlapping_13_grams": [sum(ours_hits), sum(plain_hits)],
            "records_that_disagree": sum(
                a != b for a, b in zip(ours_hits, plain_hits, strict=True)
            ),
            "records_overlapping_with_the_default_index": sum(o is not None for o in with_short),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
