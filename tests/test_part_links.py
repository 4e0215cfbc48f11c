"""A validated part that lost no record is the rendered part itself, hard-linked.

Validation keeps every record of most parts; writing the same table again cost a parquet encode
per part and as many bytes on disk again. Now such a part is a second name for the rendered
file, and a part that lost records is written on its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.run import run_recipe
from tests.conftest import write


def test_valid_parts_link_to_rendered_ones_unless_records_were_rejected(
    user_catalog: Path, tmp_path: Path
) -> None:
    recipe = user_catalog / "recipes" / "mini.yaml"
    out = tmp_path / "run"
    run_recipe(recipe, out)
    rendered = out / "rendered" / "mini_nli" / "part-00000.parquet"
    valid = out / "valid" / "mini_nli" / "part-00000.parquet"
    assert os.path.samefile(rendered, valid)
    assert pq.read_table(valid).num_rows == pq.read_table(rendered).num_rows > 0

    # A record rule that rejects one template's records: the valid part is a file of its own,
    # holding fewer rows, and the rendered part is untouched.
    spec = user_catalog / "sources" / "mini_nli.yaml"
    text = spec.read_text(encoding="utf-8")
    write(
        spec,
        text
        + "record_rules:\n"
        + "  - name: no_claims\n"
        + "    check: \"{{ template_id != 'write-claim' }}\"\n",
    )
    out2 = tmp_path / "run2"
    run_recipe(recipe, out2)
    rendered2 = out2 / "rendered" / "mini_nli" / "part-00000.parquet"
    valid2 = out2 / "valid" / "mini_nli" / "part-00000.parquet"
    assert not os.path.samefile(rendered2, valid2)
    kept = pq.read_table(valid2).column("template_id").to_pylist()
    assert kept and "write-claim" not in kept
    assert "write-claim" in pq.read_table(rendered2).column("template_id").to_pylist()
    rejects = (out2 / "rejects" / "validate" / "mini_nli" / "part-00000.jsonl").read_text()
    assert {json.loads(line)["rule"] for line in rejects.splitlines()} == {"no_claims"}


def test_dropping_the_rendered_parts_leaves_the_valid_ones(
    user_catalog: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    run_recipe(user_catalog / "recipes" / "mini.yaml", out, keep="resume")
    assert not (out / "rendered" / "mini_nli").exists() or not any(
        (out / "rendered" / "mini_nli").glob("*.parquet")
    )
    assert any((out / "dataset").rglob("*.parquet"))
