"""`run` without a worker count: small builds stay in this process, big ones get every core.

Starting worker processes costs about a second each (they import the pipeline); the default
recipe's whole build is a few seconds, so there it runs in-process. The output is the same
bytes either way (tests/test_executors.py); this is only about who does the work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline import run as run_module
from pipeline.stages import prepare


def test_the_default_build_is_small(builtin_catalog: Any) -> None:
    assert run_module._small(prepare(None))


def test_a_source_of_many_rows_is_not_small(user_catalog: Path) -> None:
    with open(user_catalog / "data" / "mini_nli.jsonl", "a", encoding="utf-8") as fh:
        for i in range(run_module.SMALL_ROWS):
            row = {"id": 100 + i, "p": f"A cat sleeps ({i}).", "h": "A cat rests."}
            fh.write(json.dumps({**row, "gold": "entailment"}) + "\n")
    assert not run_module._small(prepare(user_catalog / "recipes" / "mini.yaml"))


def test_run_picks_one_worker_for_a_small_build_unless_asked(
    user_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int | None] = []
    real = run_module.make_executor

    def spy(name: Any = "local", workers: int | None = None, *args: Any, **kwargs: Any) -> Any:
        asked.append(workers)
        return real(name, workers, *args, **kwargs)

    monkeypatch.setattr(run_module, "make_executor", spy)
    recipe = user_catalog / "recipes" / "mini.yaml"
    run_module.run_recipe(recipe, tmp_path / "auto", workers=None)
    run_module.run_recipe(recipe, tmp_path / "two", workers=2)
    assert asked == [1, 2]
    one = (tmp_path / "auto" / "dataset").rglob("*.parquet")
    two = (tmp_path / "two" / "dataset").rglob("*.parquet")
    assert [p.read_bytes() for p in sorted(one)] == [p.read_bytes() for p in sorted(two)]
