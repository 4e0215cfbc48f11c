"""`--data hub` end to end, offline: every catalog source's Hub repo (or converted parquet
branch) laid out as a local folder from the source's features and sample rows, read through the
very `load_dataset` call `--data hub` makes (only the repo id resolves to the folder); and the
load side of the keys that make the Hub path work: revision / data_dir / data_files, nullable
features, per-row licences, struct features and nested sample records."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import ValidationError

from pipeline import load_catalog, run_recipe
from pipeline.catalog import Source
from pipeline.errors import CatalogError, SourceError
from pipeline.load import BadRow, Example, hub_load_arguments, iter_rows, open_source
from pipeline.models import (
    PARQUET_BRANCH,
    ClassLabel,
    FeatureType,
    HubSpec,
    SequenceOfClassLabel,
    SourceSpec,
    Struct,
)
from pipeline.runfolder import RunFolder

from .conftest import write

datasets.disable_progress_bars()


@pytest.fixture(autouse=True)
def own_datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # datasets keys a local folder's cache by its configs' file patterns, not by the folder:
    # two tests laying out `google/xquad` would otherwise read each other's cached table.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


# --------------------------------------------------------------------------- a Hub repo, laid out


def hub_feature(ftype: FeatureType, values: list[Any]) -> Any:
    """The datasets feature the Hub publishes for a declared type. An `any` feature has no
    Hub type of its own in the spec: it is laid out as its sample values are."""
    if isinstance(ftype, ClassLabel):
        return datasets.ClassLabel(names=ftype.names)
    if isinstance(ftype, SequenceOfClassLabel):
        return datasets.List(datasets.ClassLabel(names=ftype.sequence.names))
    if isinstance(ftype, Struct):
        # The Hub's Sequence({text, answer_start}) is this: an object of lists.
        return {
            key: hub_feature(sub, [v[key] for v in values if v is not None])
            for key, sub in ftype.struct.items()
        }
    scalars = {
        "string": datasets.Value("string"),
        "int": datasets.Value("int64"),
        "float": datasets.Value("float64"),
        "bool": datasets.Value("bool"),
        "list[string]": datasets.List(datasets.Value("string")),
        "list[int]": datasets.List(datasets.Value("int64")),
        "list[list[string]]": datasets.List(datasets.List(datasets.Value("string"))),
    }
    if ftype in scalars:
        return scalars[ftype]
    return datasets.Dataset.from_list([{"v": v} for v in values]).features["v"]


def write_split(path: Path, rows: list[dict[str, Any]], features: datasets.Features) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert path.suffix == ".parquet", f"{path}: only parquet Hub files are laid out here"
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))


def _a_file_matching(pattern: str) -> str:
    """A concrete file name that a data_files glob (`data/train-*.parquet`) matches."""
    name = pattern.replace("**/", "").replace("**", "x").replace("*", "0000").replace("?", "0")
    assert "[" not in name, f"lay out a file for the glob {pattern!r} by hand"
    return name


def lay_out_hub_repo(root: Path, hub: HubSpec, rows: list[dict[str, Any]], feats: Any) -> Path:
    """A folder shaped like the Hub repo (at ``hub.revision``) that the spec names, holding
    ``rows`` in every split: what the Hub's own tools write there.

    - ``data_files``: the files the globs name (under ``data_dir``, as load_dataset resolves
      them);
    - the converted ``refs/convert/parquet`` branch: ``<config folder>/<split>/0000.parquet``,
      no README, and a second config's folder beside it (so only ``data_dir`` picks the right
      one);
    - a named ``config``: ``<config>/<split>-00000-of-00001.parquet`` (or under ``data_dir``)
      with the README's ``configs:`` block listing it and a second config;
    - otherwise push_to_hub's ``data/<split>-00000-of-00001.parquet``.
    """
    repo = root / hub.id
    repo.mkdir(parents=True)
    features = datasets.Features(feats)
    base = repo / (hub.data_dir or "")
    other = rows[:1]  # another config's rows: read by mistake, they would show as extra rows
    if hub.data_files is not None:
        files = hub.data_files
        by_split = files if isinstance(files, dict) else {"train": files}
        for patterns in by_split.values():
            first = patterns if isinstance(patterns, str) else patterns[0]
            write_split(base / _a_file_matching(first), rows, features)
        return repo
    if hub.revision == PARQUET_BRANCH:
        folder = hub.data_dir or "default"
        for split in hub.splits:
            write_split(repo / folder / split / "0000.parquet", rows, features)
            if hub.data_dir is not None:
                write_split(repo / "another_config" / split / "0000.parquet", other, features)
        return repo
    if hub.config is not None:
        folder = hub.data_dir or hub.config
        configs: list[dict[str, Any]] = []
        for name, content in ((hub.config, rows), ("another_config", other)):
            where = folder if name == hub.config else name
            for split in hub.splits:
                write_split(repo / where / f"{split}-00000-of-00001.parquet", content, features)
            entry: dict[str, Any] = {"config_name": name}
            if name == hub.config and hub.data_dir is not None:
                entry["data_dir"] = hub.data_dir
            else:
                entry["data_files"] = [{"split": s, "path": f"{where}/{s}-*"} for s in hub.splits]
            configs.append(entry)
        card = yaml.safe_dump({"configs": configs}, sort_keys=False)
        (repo / "README.md").write_text(f"---\n{card}---\n# {hub.id}\n", encoding="utf-8")
        return repo
    for split in hub.splits:
        write_split(base / "data" / f"{split}-00000-of-00001.parquet", rows, features)
    return repo


def _items(source: Source, data: str) -> list[list[Example | BadRow]]:
    return [
        [item for batch in iter_rows(source, split, data) for item in batch]  # type: ignore[arg-type]
        for split in open_source(source, data)  # type: ignore[arg-type]
    ]


def _unfiltered(source: Source, **update: Any) -> Source:
    """The source without its sample's `filter` (a choice about the sample that `--data hub`
    does not make), and with ``update`` to its spec."""
    spec = source.spec
    assert spec.sample is not None
    sample = spec.sample.model_copy(update={"filter": None})
    return Source(spec.model_copy(update={"sample": sample, **update}), source.path)


def _as_published(source: Source) -> Source:
    """The sample's rows as the Hub holds them: converted to the declared features, before
    transforms and licence rules."""
    return _unfiltered(source, transforms=[], license_by=None, allow_noncommercial=True)


def _shown(item: Example | BadRow) -> tuple[Any, ...]:
    if isinstance(item, BadRow):
        return ("reject", item.rule)
    return ("example", item.fields, item.license, item.language)


CATALOG = load_catalog()
HUB_SOURCES = sorted(name for name, s in CATALOG.sources.items() if s.spec.hub is not None)


def test_the_catalog_has_hub_sources_to_check() -> None:
    assert len(HUB_SOURCES) >= 13


@pytest.mark.parametrize("name", HUB_SOURCES)
def test_hub_path_reads_a_hub_shaped_folder_as_the_sample(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = CATALOG.source(name)
    hub = source.spec.hub
    assert hub is not None
    if source.spec.sample is None:
        pytest.skip(f"{name} has no sample rows to lay out")
    raw = [i for split in _items(_as_published(source), "sample") for i in split]
    real = [i for split in _items(_unfiltered(source), "sample") for i in split]
    assert len(raw) == len(real)
    # Rows whose values do not convert are not Hub rows.
    pairs = [(r, e) for r, e in zip(raw, real, strict=True) if isinstance(r, Example)]
    assert pairs, f"{name}: no sample row converts"
    rows = [dict(r.fields) for r, _ in pairs]
    feats = {f: hub_feature(t, [row[f] for row in rows]) for f, t in source.spec.features.items()}
    if hub.id_field is not None and hub.id_field not in source.spec.features:
        feats[hub.id_field] = datasets.Value("string")
        for row, (_, expected) in zip(rows, pairs, strict=True):
            row[hub.id_field] = expected.example_id
    lay_out_hub_repo(tmp_path, hub, rows, feats)
    monkeypatch.chdir(tmp_path)  # the repo id now names the local folder, nothing else changes

    read = _items(source, "hub")

    assert len(read) == len(hub.splits_read)
    for split, items in zip(hub.splits_read, read, strict=True):
        assert [_shown(i) for i in items] == [_shown(e) for _, e in pairs], f"{name}[{split}]"
        assert all(i.split == split for i in items)
        if hub.id_field is not None:
            # The Hub's id column names each example (where a row has one).
            ids = [row[hub.id_field] for row in rows]
            assert [i.example_id for i, x in zip(items, ids, strict=True) if x] == [
                str(x) for x in ids if x
            ]


def test_hub_load_arguments_carry_revision_config_data_dir_and_the_split() -> None:
    parquet = HubSpec(
        id="esnli/esnli",
        revision=PARQUET_BRANCH,
        data_dir="plain_text",
        splits=["train", "validation", "test"],
    )
    assert hub_load_arguments(parquet, "train") == (
        "esnli/esnli",
        {"name": None, "split": "train", "revision": PARQUET_BRANCH, "data_dir": "plain_text"},
    )
    files = HubSpec(
        id="me/nli",
        config="plain",
        splits=["train", "test"],
        read=["test"],
        data_files={"train": "data/train-*.parquet", "test": ["data/test-*.parquet"]},
    )
    # Only the split read is named: load_dataset would otherwise fetch every split's files.
    assert hub_load_arguments(files, "test") == (
        "me/nli",
        {"name": "plain", "split": "test", "data_files": {"test": ["data/test-*.parquet"]}},
    )


# --------------------------------------------------------------------------- a user's catalog

HEAD = """
name: tiny
task: toy natural language inference
cluster: nli
license: CC BY 4.0
"""


def _source(tmp_path: Path, spec: str, files: dict[str, Any] | None = None) -> Source:
    root = tmp_path / "cat"
    for fname, content in (files or {}).items():
        path = root / "data" / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        text = (
            content if isinstance(content, str) else "".join(json.dumps(r) + "\n" for r in content)
        )
        path.write_text(text, encoding="utf-8")
    write(root / "sources" / "tiny.yaml", HEAD + textwrap.dedent(spec))
    return load_catalog([root / "sources"], builtin=False).source("tiny")


NLI_FEATURES = {
    "premise": datasets.Value("string"),
    "hypothesis": datasets.Value("string"),
    "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
    "explanation_2": datasets.Value("string"),
}


def test_a_converted_parquet_branch_is_read_from_the_config_folder_data_dir_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _source(
        tmp_path,
        """
        hub: {id: someone/esnli_like, revision: refs/convert/parquet, data_dir: plain_text,
              splits: [train, test]}
        features:
          premise: string
          hypothesis: string
          label: {names: [entailment, neutral, contradiction]}
        """,
    )
    row = {"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0}
    features = {k: v for k, v in NLI_FEATURES.items() if k != "explanation_2"}
    lay_out_hub_repo(tmp_path, source.spec.hub, [row], features)  # type: ignore[arg-type]
    monkeypatch.chdir(tmp_path)
    [items] = _items(source, "hub")
    assert [i.fields for i in items if isinstance(i, Example)] == [
        {"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0}
    ]
    assert items[0].locator == "hub:someone/esnli_like/plain_text[train] row 1"


def test_nullable_hub_values_load_as_none_and_other_nulls_are_rejects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # e-SNLI on the Hub: explanation_2 is null where the annotators gave one explanation.
    source = _source(
        tmp_path,
        """
        hub: {id: someone/nli_nulls, splits: [train]}
        features:
          premise: string
          hypothesis: string
          label: {names: [entailment, neutral, contradiction]}
          explanation_2: string
        nullable: [explanation_2]
        """,
    )
    rows = [
        {"premise": "A man sleeps.", "hypothesis": "A man rests.", "label": 0,
         "explanation_2": "Sleeping is resting."},
        {"premise": "A girl sings.", "hypothesis": "A girl is loud.", "label": 1,
         "explanation_2": None},
        {"premise": "Two cats nap.", "hypothesis": None, "label": 2, "explanation_2": None},
    ]  # fmt: skip
    lay_out_hub_repo(tmp_path, source.spec.hub, rows, NLI_FEATURES)  # type: ignore[arg-type]
    monkeypatch.chdir(tmp_path)
    [items] = _items(source, "hub")
    assert isinstance(items[0], Example) and items[0].fields["explanation_2"] == (
        "Sleeping is resting."
    )
    assert isinstance(items[1], Example) and items[1].fields["explanation_2"] is None
    assert isinstance(items[2], BadRow) and items[2].rule == "missing_field"
    assert "'hypothesis' is missing or null" in items[2].message


def test_a_nullable_feature_the_hub_table_lacks_loads_as_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NTREX on the Hub has no document ids: the column is absent, not null.
    source = _source(
        tmp_path,
        """
        hub: {id: someone/nli_no_column, splits: [train]}
        features:
          premise: string
          hypothesis: string
          label: {names: [entailment, neutral, contradiction]}
          explanation_2: string
        nullable: [explanation_2]
        """,
    )
    rows = [{"premise": "A man sleeps.", "hypothesis": "A man rests.", "label": 0}]
    features = {k: v for k, v in NLI_FEATURES.items() if k != "explanation_2"}
    lay_out_hub_repo(tmp_path, source.spec.hub, rows, features)  # type: ignore[arg-type]
    monkeypatch.chdir(tmp_path)
    [items] = _items(source, "hub")
    assert isinstance(items[0], Example) and items[0].fields["explanation_2"] is None


def test_a_feature_the_sample_lacks_is_mapped_null_and_loads_as_none(tmp_path: Path) -> None:
    rows = [{"s1": "A dog runs.", "s2": "An animal moves.", "gold": "entailment"}]
    source = _source(
        tmp_path,
        """
        hub: {id: someone/nli, splits: [train]}
        features:
          premise: string
          hypothesis: string
          label: {names: [entailment, neutral, contradiction]}
          explanation_2: string
        nullable: [explanation_2]
        sample:
          file: nli.jsonl
          split: validation
          fields: {premise: s1, hypothesis: s2, label: gold, explanation_2: null}
        """,
        {"nli.jsonl": rows},
    )
    [[example]] = _items(source, "sample")
    assert isinstance(example, Example)
    assert example.fields == {
        "premise": "A dog runs.",
        "hypothesis": "An animal moves.",
        "label": 0,
        "explanation_2": None,
    }


def test_only_a_nullable_feature_may_be_absent_from_the_sample(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as err:
        _source(
            tmp_path,
            """
            hub: {id: someone/nli}
            features: {premise: string, explanation_2: string}
            sample: {file: nli.jsonl, split: train, fields: {explanation_2: null}}
            """,
        )
    message = str(err.value)
    assert "tiny.yaml" in message and "\n" not in message.strip()
    assert "sample.fields.explanation_2 is null" in message and "not in 'nullable'" in message


def test_hub_specs_that_load_dataset_cannot_read_are_refused() -> None:
    with pytest.raises(ValidationError, match="name the config's folder instead: data_dir: en"):
        HubSpec(id="a/b", revision=PARQUET_BRANCH, config="en")
    with pytest.raises(ValidationError, match="is the split 'train' to load_dataset"):
        HubSpec(id="a/b", splits=["test"], data_files="data/*.parquet")
    with pytest.raises(
        ValidationError, match=r"names no files for the split\(s\) read \['train'\]"
    ):
        HubSpec(id="a/b", splits=["train", "test"], data_files={"test": "t.parquet"})
    with pytest.raises(ValidationError, match="data_dir must be a folder inside the Hub repo"):
        HubSpec(id="a/b", data_dir="../elsewhere")


def test_a_script_repo_error_says_to_read_the_converted_branch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _source(tmp_path, "hub: {id: someone/scripted}\nfeatures: {premise: string}\n")
    repo = tmp_path / "someone" / "scripted"
    repo.mkdir(parents=True)
    (repo / "scripted.py").write_text("import datasets\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError) as err:
        open_source(source, "hub")
    message = str(err.value)
    assert "scripts are no longer supported" in message and "\n" not in message
    assert "hub.revision: refs/convert/parquet with hub.data_dir: <config>" in message


# --------------------------------------------------------------------------- per-row licences

DART_ROWS = [
    {"tripleset": [["Aarhus", "cityServed", "Aarhus Airport"]],
     "annotations": [{"source": "webnlg", "text": "Aarhus Airport serves Aarhus."}]},
    {"tripleset": [["Alimentum", "food", "Italian"]],
     "annotations": [{"source": "e2e", "text": "Alimentum serves Italian food."}]},
    {"tripleset": [["Mars", "orbits", "Sun"]],
     "annotations": [{"source": "WikiSQL_lily", "text": "Mars orbits the Sun."}]},
    {"tripleset": [["Tom", "plays", "chess"]],
     "annotations": [{"source": "mystery", "text": "Tom plays chess."}]},
]  # fmt: skip

DART_SPEC = """
hub: {id: someone/dart, splits: [train]}
features:
  tripleset: list[list[string]]
  annotations:
    struct:
      source: list[string]
      text: list[string]
license_by:
  field: "{{ annotations.source | first }}"
  licenses: {webnlg: CC BY-NC-SA 4.0, e2e: CC BY-SA 4.0, WikiSQL_lily: MIT}
  default: %s
sample: {file: dart.jsonl, split: validation}
"""


def test_license_by_gives_each_row_its_licence_and_rejects_noncommercial_rows(
    tmp_path: Path,
) -> None:
    source = _source(tmp_path, DART_SPEC % "reject", {"dart.jsonl": DART_ROWS})
    [items] = _items(source, "sample")
    assert [_shown(i)[0::2] if isinstance(i, Example) else _shown(i) for i in items] == [
        ("reject", "noncommercial_license"),
        ("example", "CC BY-SA 4.0"),
        ("example", "MIT"),
        ("reject", "unknown_license"),
    ]
    assert "licence 'CC BY-NC-SA 4.0' (" in items[0].message  # type: ignore[union-attr]
    assert "allow_noncommercial: true" in items[0].message  # type: ignore[union-attr]
    assert "'mystery'" in items[3].message and "dart.jsonl row 4" in items[3].message  # type: ignore[union-attr]


def test_unlisted_values_take_the_default_and_noncommercial_rows_can_be_allowed(
    tmp_path: Path,
) -> None:
    spec = DART_SPEC % "cc-by-nc-4.0" + "allow_noncommercial: true\n"
    source = _source(tmp_path, spec, {"dart.jsonl": DART_ROWS})
    [items] = _items(source, "sample")
    assert [i.license for i in items if isinstance(i, Example)] == [
        "CC BY-NC-SA 4.0",
        "CC BY-SA 4.0",
        "MIT",
        "cc-by-nc-4.0",
    ]


def test_licence_rejects_are_counted_and_records_carry_their_rows_licence(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cat"
    _source(tmp_path, DART_SPEC % "CC BY 4.0", {"dart.jsonl": DART_ROWS})
    write(
        root / "templates" / "tiny.yaml",
        """
        source: tiny
        templates:
          - id: verbalise
            instruction: "Write one sentence stating: {{ tripleset[0] | join(' ') }}."
            output: "{{ annotations.text[0] }}"
        """,
    )
    recipe = write(
        root / "recipe.yaml",
        """
        name: licences
        sources: [tiny]
        catalog: {sources: [sources], templates: [templates]}
        decontamination: {enabled: false}
        """,
    )
    out = tmp_path / "run"
    manifest = run_recipe(recipe, out, max_reject_share=0)
    counts = manifest.sources["tiny"]
    assert manifest.check() == []
    assert counts.examples_in == 4 and counts.examples_rejected == 1
    assert counts.rejected_by_rule["noncommercial_license"] == 1
    licences = [
        license
        for path in RunFolder(out).parts("valid", "tiny")
        for license in pq.read_table(path, columns=["license"]).column("license").to_pylist()
    ]
    assert sorted(licences) == ["CC BY 4.0", "CC BY-SA 4.0", "MIT"]


def test_a_noncommercial_source_licence_is_refused_unless_allowed(tmp_path: Path) -> None:
    base = {
        "name": "nc",
        "task": "t",
        "cluster": "misc",
        "hub": {"id": "a/b"},
        "features": {"text": "string"},
    }
    with pytest.raises(ValidationError, match=r"'CC BY-NC-SA 4\.0' is NonCommercial"):
        SourceSpec.model_validate(base | {"license": "CC BY-NC-SA 4.0"})
    allowed = SourceSpec.model_validate(
        base | {"license": "CC BY-NC-SA 4.0", "allow_noncommercial": True}
    )
    assert allowed.allow_noncommercial
    for fine in ("CC BY-SA 4.0", "MIT", "NCSA Open Source License", "Apache-2.0"):
        SourceSpec.model_validate(base | {"license": fine})


def test_license_by_field_must_be_a_single_value_feature_or_jinja() -> None:
    base = {
        "name": "nc",
        "task": "t",
        "cluster": "misc",
        "license": "MIT",
        "hub": {"id": "a/b"},
        "features": {"text": "string", "origins": "list[string]"},
    }
    with pytest.raises(ValidationError, match="'origin' is not a feature"):
        SourceSpec.model_validate(
            base | {"license_by": {"field": "origin", "licenses": {"x": "MIT"}}}
        )
    with pytest.raises(ValidationError, match=r"\{\{ origins \| first \}\}"):
        SourceSpec.model_validate(
            base | {"license_by": {"field": "origins", "licenses": {"x": "MIT"}}}
        )


# --------------------------------------------------------------------------- nested records

# Two XQuAD articles as the SQuAD JSON writes them (the first questions of deepmind/xquad's
# xquad.en.json, paragraphs shortened).
SQUAD = {
    "version": "1.1",
    "data": [
        {
            "title": "Super_Bowl_50",
            "paragraphs": [
                {
                    "context": "The Panthers defense gave up just 308 points, ranking sixth.",
                    "qas": [
                        {
                            "answers": [{"answer_start": 34, "text": "308"}],
                            "id": "56beb4343aeaaa14008c925b",
                            "question": "How many points did the Panthers defense surrender?",
                        },
                        {
                            "answers": [
                                {"answer_start": 53, "text": "sixth"},
                                {"answer_start": 45, "text": "ranking sixth"},
                            ],
                            "id": "56beb4343aeaaa14008c925c",
                            "question": "Where did the defense rank?",
                        },
                    ],
                }
            ],
        },
        {
            "title": "Warsaw",
            "paragraphs": [
                {
                    "context": "Warsaw lies on the Vistula River.",
                    "qas": [
                        {
                            "answers": [{"answer_start": 19, "text": "Vistula River"}],
                            "id": "571a484210f8ca1400304fbc",
                            "question": "On which river does Warsaw lie?",
                        },
                        {"answers": "Vistula", "id": "bad1", "question": "A malformed one?"},
                        "not a question",
                    ],
                }
            ],
        },
    ],
}

XQUAD_SPEC = """
hub: {id: google/xquad, config: xquad.en, splits: [validation], id_field: id}
features:
  id: string
  context: string
  question: string
  answers: {struct: {text: "list[string]", answer_start: "list[int]"}}
sample:
  file: xquad.json
  split: validation
  records: "data[].paragraphs[].qas[]"
  id_field: id
"""


def test_nested_squad_records_map_onto_the_hubs_flat_features(tmp_path: Path) -> None:
    source = _source(tmp_path, XQUAD_SPEC, {"xquad.json": json.dumps(SQUAD)})
    [items] = _items(source, "sample")
    examples = [i for i in items if isinstance(i, Example)]
    assert [(e.example_id, e.fields) for e in examples] == [
        (
            "56beb4343aeaaa14008c925b",
            {
                "id": "56beb4343aeaaa14008c925b",
                "context": "The Panthers defense gave up just 308 points, ranking sixth.",
                "question": "How many points did the Panthers defense surrender?",
                "answers": {"text": ["308"], "answer_start": [34]},
            },
        ),
        (
            "56beb4343aeaaa14008c925c",
            {
                "id": "56beb4343aeaaa14008c925c",
                "context": "The Panthers defense gave up just 308 points, ranking sixth.",
                "question": "Where did the defense rank?",
                "answers": {"text": ["sixth", "ranking sixth"], "answer_start": [53, 45]},
            },
        ),
        (
            "571a484210f8ca1400304fbc",
            {
                "id": "571a484210f8ca1400304fbc",
                "context": "Warsaw lies on the Vistula River.",
                "question": "On which river does Warsaw lie?",
                "answers": {"text": ["Vistula River"], "answer_start": [19]},
            },
        ),
    ]
    assert examples[0].locator.endswith("xquad.json row 1 (data[0].paragraphs[0].qas[0])")
    bad = [i for i in items if isinstance(i, BadRow)]
    assert [(b.rule, b.locator.split(" (")[-1]) for b in bad] == [
        ("bad_type", "data[1].paragraphs[0].qas[1])"),
        ("bad_row", "data[1].paragraphs[0].qas[2])"),
    ]
    assert "field 'answers': expected an object with keys ['text', 'answer_start']" in (
        bad[0].message
    )


def test_nested_records_see_their_parents_keys(tmp_path: Path) -> None:
    spec = XQUAD_SPEC.replace("  question: string\n", "  question: string\n  title: string\n")
    source = _source(tmp_path, spec, {"xquad.json": json.dumps(SQUAD)})
    [items] = _items(source, "sample")
    assert [i.fields["title"] for i in items if isinstance(i, Example)] == [
        "Super_Bowl_50",
        "Super_Bowl_50",
        "Warsaw",
    ]


def test_a_document_not_shaped_as_the_records_path_is_one_line_naming_the_file(
    tmp_path: Path,
) -> None:
    source = _source(tmp_path, XQUAD_SPEC, {"xquad.json": json.dumps({"articles": []})})
    with pytest.raises(SourceError) as err:
        open_source(source, "sample")
    message = str(err.value)
    assert "xquad.json: sample.records 'data[].paragraphs[].qas[]'" in message
    assert "the document has no key 'data' (its keys: 'articles')" in message


def test_records_paths_are_checked_when_the_spec_is_read() -> None:
    from pipeline.models import SampleSpec

    with pytest.raises(ValidationError, match="must end with"):
        SampleSpec(file="x.json", split="train", records="data[].paragraphs")
    with pytest.raises(ValidationError, match="is not a key or key"):
        SampleSpec(file="x.json", split="train", records="data[].[x]")
    with pytest.raises(ValidationError, match="'json_field' or 'records', not both"):
        SampleSpec(file="x.json", split="train", records="data[]", json_field="data")


def test_struct_features_read_the_hubs_object_of_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _source(tmp_path, XQUAD_SPEC, {"xquad.json": json.dumps(SQUAD)})
    [sample] = _items(source, "sample")
    examples = [i for i in sample if isinstance(i, Example)]
    hub_rows = [e.fields for e in examples]
    feats = {
        "id": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        # google/xquad: answers = Sequence({text: string, answer_start: int32}).
        "answers": {
            "text": datasets.List(datasets.Value("string")),
            "answer_start": datasets.List(datasets.Value("int32")),
        },
    }
    lay_out_hub_repo(tmp_path, source.spec.hub, hub_rows, feats)  # type: ignore[arg-type]
    monkeypatch.chdir(tmp_path)
    [hub] = _items(source, "hub")
    assert [(i.example_id, i.fields) for i in hub] == [(e.example_id, e.fields) for e in examples]


def test_license_by_jinja_that_names_no_feature_stops_before_any_row_is_read(
    tmp_path: Path,
) -> None:
    spec = (DART_SPEC % "reject").replace("annotations.source | first", "origin | first")
    source = _source(tmp_path, spec, {"dart.jsonl": DART_ROWS})
    with pytest.raises(CatalogError) as err:
        open_source(source, "sample")
    message = str(err.value)
    assert "tiny.yaml: source 'tiny': license_by.field: unknown name(s) ['origin']" in message
