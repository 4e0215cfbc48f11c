"""The dataset card: it loads with huggingface_hub, its licence ids are the Hub's for every
source (bundled or a user's), it warns when licences put conditions on the mixture, and every
table in it is what the data files hold."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import DatasetCard, DatasetCardData

from pipeline import Manifest, export_stage, load_catalog, run_recipe
from pipeline.export import HUB_LICENSE_IDS, hub_license_id, license_terms

from .conftest import write

# Licence strings as people write them, and the Hub's id for each (hub-docs
# docs/hub/repositories-licenses.md); None: the Hub has no id, the card says `other`.
SPELLINGS = {
    "CC BY 4.0": "cc-by-4.0",
    "cc-by-4.0": "cc-by-4.0",
    "CC-BY-4.0": "cc-by-4.0",
    "Creative Commons Attribution 4.0 International": "cc-by-4.0",
    "CC BY 3.0": "cc-by-3.0",
    "cc-by-3.0": "cc-by-3.0",
    "CC BY-SA 3.0": "cc-by-sa-3.0",
    "CC BY-SA 4.0": "cc-by-sa-4.0",
    "CC-BY-SA-4.0": "cc-by-sa-4.0",
    "CC BY-NC 4.0": "cc-by-nc-4.0",
    "CC BY-NC-SA 4.0": "cc-by-nc-sa-4.0",
    "Creative Commons Attribution-NonCommercial-ShareAlike 4.0": "cc-by-nc-sa-4.0",
    "CC BY-NC-ND 4.0": "cc-by-nc-nd-4.0",
    "CC BY-ND 4.0": "cc-by-nd-4.0",
    "CC0": "cc0-1.0",
    "CC0-1.0": "cc0-1.0",
    "CC0 1.0 Universal": "cc0-1.0",
    "Apache 2.0": "apache-2.0",
    "Apache-2.0": "apache-2.0",
    "Apache License, Version 2.0": "apache-2.0",
    "MIT": "mit",
    "MIT License": "mit",
    "GPL-3.0": "gpl-3.0",
    "GPLv3": "gpl-3.0",
    "GNU General Public License v3.0 or later": "gpl-3.0",
    "GPL-2.0-only": "gpl-2.0",
    "LGPL-2.1": "lgpl-2.1",
    "AGPL-3.0": "agpl-3.0",
    "BSD-3-Clause": "bsd-3-clause",
    "BSD 2-Clause": "bsd-2-clause",
    "MPL-2.0": "mpl-2.0",
    "ODC-By": "odc-by",
    "ODbL-1.0": "odbl",
    "CDLA-Permissive-2.0": "cdla-permissive-2.0",
    "Unlicense": "unlicense",
    "unknown": "unknown",
    # No Hub id: `other`, with a license_name and license_link.
    "CC BY-SA 2.0": None,
    "MIT-0": None,
    "PAWS (free use; acknowledge Google LLC)": None,
}
# The bundled sources' licences as their specs write them (per-row licences included).
BUNDLED = {
    "CC BY 4.0": "cc-by-4.0",
    "CC BY-SA 3.0": "cc-by-sa-3.0",
    "CC BY-SA 4.0": "cc-by-sa-4.0",
    "CC BY-NC-SA 4.0": "cc-by-nc-sa-4.0",
    "MIT": "mit",
    "Apache-2.0": "apache-2.0",
    "PAWS (free use; acknowledge Google LLC)": None,
}


@pytest.mark.parametrize("text", list(SPELLINGS))
def test_licence_spellings_map_to_the_hubs_ids(text: str) -> None:
    assert hub_license_id(text) == SPELLINGS[text]
    assert hub_license_id(text) in HUB_LICENSE_IDS | {None}


def test_every_bundled_licence_has_its_hub_id() -> None:
    texts = set()
    for source in load_catalog().sources.values():
        texts.add(source.spec.license)
        if source.spec.license_by is not None:
            texts.update(source.spec.license_by.licenses.values())
    texts.discard("reject")
    unknown = texts - set(BUNDLED)
    # A source added to the catalog with a new licence string: it must map, or be `other`.
    assert all(hub_license_id(t) is not None for t in unknown), unknown
    for text in texts & set(BUNDLED):
        assert hub_license_id(text) == BUNDLED[text], text


def test_licence_conditions() -> None:
    sa_nc = license_terms("CC BY-NC-SA 4.0")
    assert sa_nc.share_alike and sa_nc.noncommercial and not sa_nc.no_derivatives
    assert license_terms("GPL-3.0").share_alike
    assert license_terms("CC BY-ND 4.0").no_derivatives
    assert license_terms("CC BY 4.0") == license_terms("MIT") == license_terms("Apache-2.0")
    assert not any(vars(license_terms("CC BY 4.0")).values())


# ------------------------------------------------------------------------- the card and its data


def _header(card: str) -> dict[str, object]:
    header = yaml.safe_load(card.split("---\n")[1])
    assert isinstance(header, dict)
    return header


def _table(card: str, heading: str) -> list[dict[str, str]]:
    """The first markdown table under ``## heading``, as rows keyed by its header."""
    section = card.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    names = [c.strip() for c in lines[0].strip("|").split("|")]
    return [
        dict(zip(names, (c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))), strict=True))
        for line in lines[2:]
    ]


@pytest.fixture(scope="module")
def all_formats(
    default_run: tuple[Path, Manifest], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out, _ = default_run
    target = tmp_path_factory.mktemp("card") / "dataset"
    export_stage(out, to=target, formats=["all"])
    return target


def test_the_card_loads_with_huggingface_hub(all_formats: Path) -> None:
    card = DatasetCard.load(all_formats / "README.md")
    data = card.data
    assert isinstance(data, DatasetCardData)
    # The Hub's own validation of the metadata's shape: a DatasetCardData round trip.
    assert DatasetCardData(**data.to_dict()).to_dict() == data.to_dict()
    assert [c["config_name"] for c in data.configs] == [
        "default",
        "prompt_completion",
        "alpaca",
        "sharegpt",
        "flan",
    ]
    assert [i["config_name"] for i in data.dataset_info] == [c["config_name"] for c in data.configs]
    assert all(i["features"] for i in data.dataset_info)
    licenses = data.license if isinstance(data.license, list) else [data.license]
    assert set(licenses) <= HUB_LICENSE_IDS
    # PAWS's own grant has no Hub id: `other`, named and linked.
    assert "other" in licenses
    assert data.license_name == "paws-free-use-acknowledge-google-llc"
    assert data.license_link == "https://github.com/google-research-datasets/paws"
    assert data.size_categories and data.task_categories == ["text-generation"]


def _data_counts(folder: Path, config_dir: str) -> dict[str, Counter[tuple[str, ...]]]:
    """Counts recomputed from one config's parquet files."""
    counts: dict[str, Counter[tuple[str, ...]]] = {}
    for path in sorted((folder / config_dir).glob("*.parquet")):
        split = path.name.split("-")[0]
        table = pq.read_table(path, columns=["source", "language", "license", "template_id"])
        rows = zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True)
        counts.setdefault(split, Counter()).update(rows)
    return counts


def test_the_cards_tables_are_what_the_data_holds(
    all_formats: Path, default_run: tuple[Path, Manifest]
) -> None:
    _, manifest = default_run
    card = (all_formats / "README.md").read_text()
    for config_dir in ("data", "data/alpaca", "data/flan"):
        counts = _data_counts(all_formats, config_dir)
        splits = list(counts)
        composition = _table(card, "Composition")
        for row in composition:
            source = row["source"]
            for split in splits:
                n = sum(c for key, c in counts[split].items() if key[0] == source)
                assert int(row[split]) == n, (config_dir, source, split)
            rows = [k for split in splits for k in counts[split] if k[0] == source]
            assert row["languages"] == ", ".join(sorted({k[1] for k in rows}))
            assert row["license"] == ", ".join(sorted({k[2] for k in rows}))
            assert row["task"] == load_catalog().source(source).spec.task
        every = {k[0] for split in splits for k in counts[split]}
        assert {row["source"] for row in composition} == every
    assert sum(int(r["records"]) for r in _table(card, "Splits")) == sum(manifest.splits.values())
    # Templates, per source, with their record counts.
    counts = _data_counts(all_formats, "data")
    templates = Counter[tuple[str, str]]()
    for split_counts in counts.values():
        for (source, _, _, template), n in split_counts.items():
            templates[(source, template)] += n
    shown = {(r["source"], r["template"]): int(r["records"]) for r in _table(card, "Templates")}
    assert shown == dict(templates)
    kinds = {r["kind"] for r in _table(card, "Templates")}
    assert {"original task", "inverted"} <= kinds
    # Variants, with what each means.
    variants = Counter[str]()
    for path in (all_formats / "data").glob("*.parquet"):
        variants.update(pq.read_table(path, columns=["variant"]).column(0).to_pylist())
    table = _table(card, "Variants")
    assert {r["variant"]: int(r["records"]) for r in table} == dict(variants)
    assert all(r["what it is"] for r in table)


def test_each_citation_once_and_the_recipe_that_built_it(
    all_formats: Path, default_run: tuple[Path, Manifest]
) -> None:
    _, manifest = default_run
    card = (all_formats / "README.md").read_text()
    catalog = load_catalog()
    citations = {" ".join(catalog.source(s).spec.citation.split()) for s in manifest.sources}
    for citation in citations - {""}:
        assert card.count(citation) == 1, citation
    recipe = card.split("\n## Recipe\n", 1)[1].split("```yaml\n", 1)[1].split("\n```", 1)[0]
    assert yaml.safe_load(recipe) == manifest.recipe
    licenses = _table(card, "Licences and attribution")
    assert {r["license"]: r["Hub id"] for r in licenses}["CC BY-SA 3.0"] == "cc-by-sa-3.0"
    # ShareAlike sources in the mix: the warning names each with its licence.
    warning = card.split("\n## Licence conditions\n", 1)[1].split("\n## ", 1)[0]
    assert "ShareAlike" in warning and "CC BY-SA 3.0: nq_open" in warning
    assert "NonCommercial" not in warning


def test_a_users_licences_get_hub_ids_a_name_and_a_warning(
    tmp_path: Path, user_catalog: Path
) -> None:
    spec = user_catalog / "sources" / "mini_nli.yaml"
    spec.write_text(
        spec.read_text().replace("license: CC0-1.0", "license: CC BY-NC-SA 4.0")
        + "allow_noncommercial: true\n"
    )
    write(
        user_catalog / "sources" / "acme.yaml",
        spec.read_text()
        .replace("name: mini_nli", "name: acme")
        .replace("CC BY-NC-SA 4.0", "Acme Data Licence 1.0")
        .replace("allow_noncommercial: true\n", "homepage: https://acme.example/data\n"),
    )
    write(
        user_catalog / "templates" / "acme.yaml",
        # Other wording, so dedup keeps both sources' records.
        (user_catalog / "templates" / "mini_nli.yaml")
        .read_text()
        .replace("mini_nli", "acme")
        .replace("follow from", "come from")
        .replace("Write a claim", "Write a statement"),
    )
    recipe = user_catalog / "recipes" / "mini.yaml"
    recipe.write_text(recipe.read_text().replace("[mini_nli]", "[mini_nli, acme]"))
    out = tmp_path / "run"
    run_recipe(recipe, out)
    card = DatasetCard.load(out / "dataset" / "README.md")
    assert card.data.license == ["cc-by-nc-sa-4.0", "other"]
    assert card.data.license_name == "acme-data-licence-1.0"
    assert card.data.license_link == "https://acme.example/data"
    warning = card.text.split("\n## Licence conditions\n", 1)[1].split("\n## ", 1)[0]
    assert "NonCommercial: these rows may not be used for commercial purposes" in warning
    assert "(CC BY-NC-SA 4.0: mini_nli)" in warning and "ShareAlike" in warning
    assert "acme" not in warning
    assert "`ds.filter(lambda row: row['license'] not in ['CC BY-NC-SA 4.0'])`" in warning
