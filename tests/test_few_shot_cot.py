"""Few-shot chain-of-thought (Flan 2022): worked exemplars, each with its reasoning and answer
line, then the query in chain-of-thought form."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from pipeline import run_recipe
from pipeline.locales import locale_for

from .test_multilingual import ROWS, _catalog


def _build(tmp_path: Path, few_shot: str) -> list[dict]:  # type: ignore[type-arg]
    recipe = _catalog(tmp_path)
    text = recipe.read_text(encoding="utf-8")
    text = text.replace(
        "variants: {zero_shot: 1, few_shot: 1, cot: 1, options_shown: 1.0}",
        "variants: {zero_shot: 0, few_shot_cot: 1, options_shown: 0.0}",
    ).replace("few_shot: {k: 1}", few_shot)
    recipe.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    manifest = run_recipe(recipe, out, max_reject_share=0.01)
    assert manifest.check() == []
    files = sorted((out / "dataset" / "data").glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def test_few_shot_cot_records_carry_worked_exemplars(tmp_path: Path) -> None:
    rows = _build(tmp_path, "few_shot: {k: 2}")
    assert {r["variant"] for r in rows} == {"few_shot_cot"}
    for row in rows:
        words = locale_for(row["language"])
        (user, answer) = [m["content"] for m in row["messages"]]
        # Two exemplars, each reasoned and answered, then the query's own request to reason.
        assert user.count(words.cot_answer_prefix) == 2, user
        assert sum(user.count(t) for t in words.cot_triggers) == 3, user
        assert answer.split("\n")[-1].startswith(words.cot_answer_prefix)
        query = ROWS[int(row["example_id"][1:])]
        assert query[3] in answer  # the query's own rationale
        # The query ends with the few-shot pattern's answer mark, right after its request.
        pattern = next(p for p in words.few_shot_patterns if user.endswith(p.answer.rstrip()))
        assert user.count(pattern.answer) == 2, user  # each exemplar's answer is marked
        query_part = user.removesuffix(pattern.answer.rstrip()).rstrip()
        assert query_part.endswith(tuple(words.cot_triggers))


def test_few_shot_cot_as_alternating_turns(tmp_path: Path) -> None:
    rows = _build(tmp_path, "few_shot: {k: 1, format: multi_turn}")
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant", "user", "assistant"]
        prefix = locale_for(row["language"]).cot_answer_prefix
        assert all(prefix in m["content"] for m in row["messages"] if m["role"] == "assistant")
