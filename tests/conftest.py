"""Shared fixtures: the built-in catalog, a tiny user catalog per test, one default run."""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
from pathlib import Path

import pytest

from pipeline import Manifest, load_catalog, run_recipe

# Tests never touch the network: local files go through the same load_dataset path as the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# A private datasets cache: tmp folders are reused across sessions, and a cached table for a
# reused path would hide what this session wrote.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="instructmix-test-cache-")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def builtin_catalog():  # type: ignore[no-untyped-def]
    return load_catalog()


@pytest.fixture(scope="session")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    out = tmp_path_factory.mktemp("default-run")
    return out, run_recipe(None, out)


@pytest.fixture
def user_catalog(tmp_path: Path) -> Path:
    """A user's own catalog folder: one NLI-like source with real-looking rows the test owns."""
    root = tmp_path / "mycat"
    rows = [
        {
            "id": 1,
            "p": "A dog runs in the park.",
            "h": "An animal is outside.",
            "gold": "entailment",
        },
        {"id": 2, "p": "A man reads a book.", "h": "A man is asleep.", "gold": "contradiction"},
        {"id": 3, "p": "Two kids play chess.", "h": "The kids are brothers.", "gold": "neutral"},
        {"id": 4, "p": "A woman sings.", "h": "Someone makes music.", "gold": "entailment"},
    ]
    (root / "data").mkdir(parents=True)
    with open(root / "data" / "mini_nli.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    write(
        root / "sources" / "mini_nli.yaml",
        """
        name: mini_nli
        task: toy natural language inference
        cluster: nli
        license: CC0-1.0
        hub: {id: someone/mini_nli, splits: [train]}
        features:
          premise: string
          hypothesis: string
          label: {names: [entailment, neutral, contradiction]}
        sample:
          file: mini_nli.jsonl
          split: train
          id_field: id
          fields: {premise: p, hypothesis: h, label: gold}
        """,
    )
    write(
        root / "templates" / "mini_nli.yaml",
        """
        source: mini_nli
        templates:
          - id: does-it-follow
            instruction: "Does \\"{{ hypothesis }}\\" follow from \\"{{ premise }}\\"?"
            output: "{{ answer_choices[label] }}"
            answer_choices: ["yes", "maybe", "no"]
          - id: write-claim
            inverted: true
            instruction: "Write a claim that is {{ names.label }} given: {{ premise }}"
            output: "{{ hypothesis }}"
        """,
    )
    write(
        root / "recipes" / "mini.yaml",
        """
        name: mini
        seed: 7
        sources: [mini_nli]
        mixing: {strategy: proportional, cap: null}
        catalog:
          sources: [../sources]
          templates: [../templates]
        """,
    )
    return root
