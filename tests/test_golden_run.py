"""The default build's records, held to digests of a golden run.

The hot path (``columns.RecordColumns``, ``validate.check_table``, the renderer's cached draws)
was rewritten for speed with the promise that every record stays as it was. The golden digests
in ``tests/golden/default_run.json`` were taken from the default build of commit 6c00463, the
last one before that rewrite (``INSTRUCTMIX_UPDATE_GOLDEN=1 pytest tests/test_golden_run.py``
writes them afresh: do that only for a change that is meant to change records, and say so).

A digest covers each record's every column, in the order the part holds them, so a changed
word, id, draw, order or reject shows; it does not cover parquet's own bytes (another pyarrow
writes other metadata for the same records).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.models import Manifest

GOLDEN = Path(__file__).parent / "golden" / "default_run.json"


def _digest_tables(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        table = pq.read_table(path)
        h.update(str(table.schema.remove_metadata()).encode())
        for row in table.to_pylist():
            h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()[:20]


def run_digests(out: Path) -> dict[str, str]:
    """Per source: the rendered and the valid records, and the reject rules by stage; and the
    dataset's records, split by split."""
    digests: dict[str, str] = {}
    for stage in ("rendered", "valid"):
        for folder in sorted((out / stage).iterdir()):
            digests[f"{stage}/{folder.name}"] = _digest_tables(sorted(folder.glob("*.parquet")))
    for path in sorted((out / "rejects").rglob("*.jsonl")):
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        # File paths in messages depend on where the catalog lies; rules and ids do not.
        keyed = [[r["rule"], r["example_id"], r["template_id"], r["split"]] for r in lines]
        name = str(path.relative_to(out / "rejects"))
        digests[f"rejects/{name}"] = hashlib.sha256(json.dumps(keyed).encode()).hexdigest()[:20]
    for path in sorted((out / "dataset").rglob("*.parquet")):
        digests[f"dataset/{path.relative_to(out / 'dataset')}"] = _digest_tables([path])
    return digests


def test_default_build_makes_the_golden_records(default_run: tuple[Path, Manifest]) -> None:
    out, _ = default_run
    got = run_digests(out)
    if os.environ.get("INSTRUCTMIX_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    want = json.loads(GOLDEN.read_text(encoding="utf-8"))
    changed = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
    assert not changed, f"records differ from the golden run in: {changed}"
