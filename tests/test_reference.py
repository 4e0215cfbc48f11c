"""The key reference (docs/sources.md, templates.md, recipes.md) is generated from the models:
it cannot drift from the code, and every key has a description and a working example."""

from __future__ import annotations

import pytest
import yaml
from pydantic import BaseModel

from pipeline.models import Recipe, SourceSpec, TemplateFile
from pipeline.reference import (
    DESCRIPTIONS,
    REGENERATE,
    all_keys,
    documents,
    example_document,
    example_for,
    render_document,
)

MODELS = [SourceSpec, TemplateFile, Recipe]


def test_checked_in_reference_is_what_the_models_generate_now() -> None:
    for path, text in documents().items():
        assert path.exists(), f"{path} is missing: run `{REGENERATE}`"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path} is stale (the models changed): run `{REGENERATE}` and commit the result"
        )


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_key_has_a_description_and_an_example(model: type[BaseModel]) -> None:
    keys = all_keys(model)
    assert len(keys) > 15
    no_description = [k.path for k in keys if not k.description]
    no_example = [k.path for k in keys if example_for(model, k.path) is None]
    assert no_description == [], f"give these a Field(description=...): {no_description}"
    assert no_example == [], f"add an example to EXAMPLES in pipeline/reference.py: {no_example}"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_example_is_a_valid_file(model: type[BaseModel]) -> None:
    for key in all_keys(model):
        snippet = example_for(model, key.path)
        assert snippet is not None
        document = example_document(model, snippet)
        model.model_validate(document)  # raises, naming the key, if the example is wrong
        # The example shows the key it documents (a mapping key, or the item of a list).
        first = key.path.replace("[]", "").split(".")[0]
        assert first in yaml.safe_load(snippet), key.path


def test_kept_descriptions_are_only_for_fields_without_one() -> None:
    # Once models.py gives a field its own description, the copy here is stale.
    by_name = {m.__name__: m for k in MODELS for m in {k.owner for k in all_keys(k)}}
    stale = [
        (owner, name)
        for owner, name in DESCRIPTIONS
        if owner not in by_name or by_name[owner].model_fields[name].description
    ]
    assert stale == [], f"delete these from DESCRIPTIONS in pipeline/reference.py: {stale}"


def test_reference_names_reserved_context_names_defaults_and_nested_keys() -> None:
    sources = render_document(SourceSpec)
    assert "`answer_choices`" in sources and "`options`" in sources  # reserved names
    assert "### sample.csv.delimiter" in sources and 'delimiter: "\\t"' in sources
    assert "### sample.fields.<feature>.values" in sources
    assert "### features.<feature>.names" in sources
    assert "### hub\n\n*mapping (HubSpec) or null; default `null`" in sources
    templates = render_document(TemplateFile)
    assert "### templates[].metadata.choices_in_prompt" in templates
    recipes = render_document(Recipe)
    assert "### decontamination.against[].path" in recipes
    # Mixing is documented once, at the top level; a sub-mixture's points to it.
    assert "### mixing.cap" in recipes and "### mixtures[].mixing.cap" not in recipes
    assert "Its keys are those of [`mixing`](#mixing)." in recipes
