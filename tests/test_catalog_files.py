"""User-written files: good ones load, bad ones fail with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import CatalogError, load_catalog
from pipeline.models import Recipe, SourceSpec, TemplateFile
from pipeline.yamlfile import load_model

from .conftest import write


def test_builtin_catalog_has_at_least_eight_sources_with_three_templates(builtin_catalog) -> None:
    wired = [n for n in builtin_catalog.sources if len(builtin_catalog.templates_for(n)) >= 3]
    assert len(wired) >= 8, wired
    for name in wired:
        assert builtin_catalog.source(name).sample_path().is_file()


# Tasks with no Hub dataset of their own columns: the spec says so, and where the data lives.
NOT_ON_THE_HUB = {"comve", "paraqa"}


def test_every_builtin_source_names_a_licence_and_a_hub_dataset(builtin_catalog) -> None:
    for source in builtin_catalog.sources.values():
        assert source.spec.license.strip()
        assert source.spec.sample is not None
        if source.name in NOT_ON_THE_HUB:
            assert source.spec.hub is None and source.spec.homepage.startswith("https://")
        else:
            assert source.spec.hub is not None and source.spec.hub.id, source.name


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "broken.yaml",
        """
        name: x
        task: [unclosed
        """,
    )
    with pytest.raises(CatalogError) as err:
        load_model(bad, SourceSpec)
    assert str(err.value).startswith(f"{bad}:")
    assert "invalid YAML" in str(err.value)


def test_unknown_key_names_file_line_and_field(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "t.yaml",
        """
        source: snli
        templates:
          - id: ok
            instruction: hi
            output: there
          - id: typo
            instruction: hi
            outptu: there
        """,
    )
    with pytest.raises(CatalogError) as err:
        load_model(bad, TemplateFile)
    message = str(err.value)
    assert message.startswith(f"{bad}:")
    assert message.startswith(f"{bad}:8: templates.1.outptu: unknown key")


def test_wrong_type_points_at_the_value_line(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "r.yaml",
        """
        name: r
        sources: [snli]
        mixing:
          strategy: proportional
          cap: lots
        """,
    )
    with pytest.raises(CatalogError) as err:
        load_model(bad, Recipe)
    assert f"{bad}:5: mixing.cap" in str(err.value)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    bad = write(tmp_path / "empty.yaml", "")
    with pytest.raises(CatalogError, match="empty"):
        load_model(bad, Recipe)


def test_sample_path_may_not_escape_the_catalog(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "sources" / "evil.yaml",
        """
        name: evil
        task: t
        cluster: misc
        license: MIT
        hub: {id: a/b}
        features: {text: string}
        sample: {file: ../../etc/passwd, split: train}
        """,
    )
    with pytest.raises(CatalogError, match="relative path inside the catalog"):
        load_model(bad, SourceSpec)


def test_user_catalog_adds_to_builtin(user_catalog: Path) -> None:
    catalog = load_catalog([user_catalog / "sources"], [user_catalog / "templates"])
    assert "mini_nli" in catalog.sources
    assert "esnli" in catalog.sources
    assert [t.id for t in catalog.templates_for("mini_nli")] == ["does-it-follow", "write-claim"]


def test_duplicate_source_name_is_an_error(user_catalog: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write(other / "copy.yaml", (user_catalog / "sources" / "mini_nli.yaml").read_text())
    with pytest.raises(CatalogError, match="already defined"):
        load_catalog([user_catalog / "sources", other], [])


def test_templates_for_unknown_source_name_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "tpl" / "ghost.yaml",
        """
        source: ghost
        templates:
          - {id: a, instruction: x, output: y}
        """,
    )
    with pytest.raises(CatalogError) as err:
        load_catalog([], [tmp_path / "tpl"])
    assert str(err.value) == f"{path}: templates for unknown source 'ghost'"


def test_recipe_must_select_something(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", "name: r\nseed: 1\n")
    with pytest.raises(CatalogError, match="must name 'sources' or 'clusters'"):
        load_model(path, Recipe)
