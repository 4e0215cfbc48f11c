"""Source adapters: sample and Hub paths through load_dataset, normalisation, bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import SourceError, load_catalog, run_recipe
from pipeline.load import BadRow, Example, RowError, convert_value, iter_rows, open_source
from pipeline.models import ClassLabel, FieldMap, SequenceOfClassLabel

from .conftest import write


def _examples(catalog, name: str, data: str = "sample") -> list[Example | BadRow]:  # type: ignore[no-untyped-def]
    source = catalog.source(name)
    return [
        item
        for split in open_source(source, data)
        for batch in iter_rows(source, split, data)
        for item in batch
    ]


def test_bundled_esnli_maps_onto_hub_features(builtin_catalog) -> None:
    items = _examples(builtin_catalog, "esnli")
    assert len(items) == 2000 and all(isinstance(i, Example) for i in items)
    first = items[0]
    assert isinstance(first, Example)
    # Line 1 of the e-SNLI dev files: a neutral pair (SNLI's ClassLabel index 1).
    assert first.example_id == "1"
    assert first.fields["premise"].startswith("Two women are embracing")
    assert first.fields["label"] == 1
    assert first.split == "validation"
    assert first.locator.endswith("esnli_snli.dev_subset.jsonl row 1")


def test_tsv_with_quotes_loses_no_rows(builtin_catalog) -> None:
    # Without QUOTE_NONE the csv reader swallows quoted verses and returns 749 of 892 rows.
    items = _examples(builtin_catalog, "poem_sentiment")
    assert len(items) == 892
    names = builtin_catalog.source("poem_sentiment").spec.features["label"].names
    labels = [names[i.fields["label"]] for i in items if isinstance(i, Example)]
    # MANIFEST: raw -1/0/1/2 = 155/555/133/49 -> negative/no_impact/positive/mixed.
    assert labels.count("negative") == 155
    assert labels.count("no_impact") == 555
    assert labels.count("positive") == 133
    assert labels.count("mixed") == 49


def test_multi_label_ids_split_into_label_lists(builtin_catalog) -> None:
    items = [i for i in _examples(builtin_catalog, "go_emotions") if isinstance(i, Example)]
    multi = [i for i in items if len(i.fields["labels"]) > 1]
    assert len(multi) == 334  # MANIFEST: 334 of the 2000 rows have more than one id


@pytest.mark.parametrize(
    ("value", "ftype", "mapping", "expected"),
    [
        ("neutral", ClassLabel(names=["entailment", "neutral", "contradiction"]), None, 1),
        (2, ClassLabel(names=["a", "b", "c"]), None, 2),
        (
            "-1",
            ClassLabel(names=["negative", "positive"]),
            FieldMap(column="x", values={"-1": "negative", "1": "positive"}),
            0,
        ),
        (
            "4,27",
            SequenceOfClassLabel(sequence=ClassLabel(names=[str(i) for i in range(28)])),
            FieldMap(column="x", split=","),
            [4, 27],
        ),
        ("TRUE", "bool", None, True),
        ("false", "bool", None, False),
        (3, "string", None, "3"),
        (["a", "b"], "list[string]", None, ["a", "b"]),
        ("7", "int", None, 7),
    ],
)
def test_convert_value(value, ftype, mapping, expected) -> None:  # type: ignore[no-untyped-def]
    assert convert_value("f", value, ftype, mapping) == expected


@pytest.mark.parametrize(
    ("value", "ftype", "rule"),
    [
        (None, "string", "missing_field"),
        ("maybe", ClassLabel(names=["yes", "no"]), "bad_label"),
        (-1, ClassLabel(names=["yes", "no"]), "unlabeled"),
        (5, ClassLabel(names=["yes", "no"]), "bad_label"),
        ({"a": 1}, "string", "bad_type"),
        ("x", "int", "bad_type"),
        ("perhaps", "bool", "bad_type"),
    ],
)
def test_bad_values_raise_with_a_rule(value, ftype, rule) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RowError) as err:
        convert_value("f", value, ftype, None)
    assert err.value.rule == rule


def test_bad_rows_become_rejects_with_locators(user_catalog: Path) -> None:
    data = user_catalog / "data" / "mini_nli.jsonl"
    with open(data, "a", encoding="utf-8") as fh:
        fh.write(
            json.dumps({"id": 5, "p": "A cat sleeps.", "h": "A cat naps.", "gold": "sure"}) + "\n"
        )
        fh.write(json.dumps({"id": 6, "p": None, "h": "Nothing.", "gold": "neutral"}) + "\n")
        fh.write(json.dumps({"id": 1, "p": "Dup.", "h": "Dup.", "gold": "neutral"}) + "\n")
    catalog = load_catalog([user_catalog / "sources"], [user_catalog / "templates"])
    items = _examples(catalog, "mini_nli")
    bad = [i for i in items if isinstance(i, BadRow)]
    assert [(b.rule, b.locator.rsplit(" ", 1)[-1]) for b in bad] == [
        ("bad_label", "5"),
        ("missing_field", "6"),
    ]
    assert "'sure' is not one of" in bad[0].message
    # Row 7 repeats id 1: iter_rows streams, the load stage finds duplicates over the source.
    assert isinstance(items[6], Example) and items[6].example_id == "1"


def test_rows_without_id_get_content_ids_independent_of_order(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    write(
        root / "sources" / "s.yaml",
        """
        name: s
        task: t
        cluster: misc
        license: MIT
        hub: {id: a/b}
        features: {text: string}
        sample: {file: s.jsonl, split: train}
        """,
    )
    (root / "data").mkdir()
    rows = ["alpha", "beta", "gamma"]
    (root / "data" / "s.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    ids1 = {
        i.fields["text"]: i.example_id for i in _examples(load_catalog([root / "sources"], []), "s")
    }
    (root / "data" / "s.jsonl").write_text(
        "".join(json.dumps({"text": r}) + "\n" for r in reversed(rows))
    )
    ids2 = {
        i.fields["text"]: i.example_id for i in _examples(load_catalog([root / "sources"], []), "s")
    }
    assert ids1 == ids2 and len(set(ids1.values())) == 3


def test_missing_column_fails_the_source_naming_the_file(user_catalog: Path) -> None:
    spec = user_catalog / "sources" / "mini_nli.yaml"
    spec.write_text(spec.read_text().replace("premise: p,", "premise: premise_text,"))
    catalog = load_catalog([user_catalog / "sources"], [user_catalog / "templates"])
    with pytest.raises(SourceError) as err:
        open_source(catalog.source("mini_nli"), "sample")
    assert "mini_nli.jsonl has no column(s) ['premise_text']" in str(err.value)


def test_hub_mode_uses_load_dataset_with_the_hub_id(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Up to the boundary: a local folder named like a Hub repo goes through the same
    # load_dataset(id, config, split=..., revision=...) call the Hub would.
    monkeypatch.chdir(tmp_path)
    hub_dir = tmp_path / "someone" / "tiny_nli"
    hub_dir.mkdir(parents=True)
    rows = [
        {"premise": "P one.", "hypothesis": "H one.", "label": 0},
        {"premise": "P two.", "hypothesis": "H two.", "label": -1},
    ]
    (hub_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write(
        tmp_path / "sources" / "tiny.yaml",
        """
        name: tiny
        task: t
        cluster: nli
        license: MIT
        hub: {id: someone/tiny_nli, splits: [train]}
        features:
          premise: string
          hypothesis: string
          label: {names: [entailment, neutral, contradiction]}
        """,
    )
    catalog = load_catalog([tmp_path / "sources"], [])
    items = _examples(catalog, "tiny", data="hub")
    assert isinstance(items[0], Example) and items[0].fields["label"] == 0
    assert items[0].locator == "hub:someone/tiny_nli[train] row 1"
    assert isinstance(items[1], BadRow) and items[1].rule == "unlabeled"


def test_hub_failure_is_one_line_naming_source(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "sources" / "gone.yaml",
        """
        name: gone
        task: t
        cluster: misc
        license: MIT
        hub: {id: nobody/does-not-exist-xyz}
        features: {text: string}
        """,
    )
    catalog = load_catalog([tmp_path / "sources"], [])
    with pytest.raises(SourceError) as err:
        open_source(catalog.source("gone"), "hub")
    assert "source 'gone': hub:nobody/does-not-exist-xyz[train]" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_local_only_source_needs_no_hub(tmp_path: Path, user_catalog: Path) -> None:
    spec = user_catalog / "sources" / "mini_nli.yaml"
    spec.write_text(
        spec.read_text(encoding="utf-8").replace(
            "hub: {id: someone/mini_nli, splits: [train]}\n", ""
        ),
        encoding="utf-8",
    )
    recipe = user_catalog / "recipes" / "mini.yaml"
    manifest = run_recipe(recipe, tmp_path / "out")
    assert manifest.sources["mini_nli"].records_selected > 0
    card = (tmp_path / "out" / "dataset" / "README.md").read_text(encoding="utf-8")
    assert "**mini_nli** (CC0-1.0; local data)" in card
    with pytest.raises(SourceError, match=r"has no .hub. .* build it with --data sample"):
        run_recipe(recipe, tmp_path / "hub", data="hub")
