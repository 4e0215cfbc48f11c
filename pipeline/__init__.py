"""instructmix: build instruction-tuning mixtures from NLP tasks, templates and recipes.

The public API; the CLI (``instructmix``) is a thin layer over it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The public names, imported when first used: a worker process that runs a stage's tasks
# imports what those tasks need, not the export's and the Hub's libraries (a third of the
# package's import time).
_PUBLIC = {
    "Catalog": "catalog",
    "Source": "catalog",
    "Template": "catalog",
    "builtin_root": "catalog",
    "load_catalog": "catalog",
    "CatalogError": "errors",
    "PipelineError": "errors",
    "RunFolderError": "errors",
    "SourceError": "errors",
    "export_stage": "export",
    "push_to_hub": "export",
    "mix_stage": "mix",
    "Manifest": "models",
    "Recipe": "models",
    "Record": "models",
    "Reject": "models",
    "SourceSpec": "models",
    "TemplateSpec": "models",
    "RenderError": "render",
    "render_one": "render",
    "run_recipe": "run",
    "load_stage": "stages",
    "render_stage": "stages",
    "validate_stage": "stages",
}

if TYPE_CHECKING:
    from .catalog import Catalog, Source, Template, builtin_root, load_catalog
    from .errors import CatalogError, PipelineError, RunFolderError, SourceError
    from .export import export_stage, push_to_hub
    from .mix import mix_stage
    from .models import Manifest, Recipe, Record, Reject, SourceSpec, TemplateSpec
    from .render import RenderError, render_one
    from .run import run_recipe
    from .stages import load_stage, render_stage, validate_stage


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Catalog",
    "CatalogError",
    "Manifest",
    "PipelineError",
    "Recipe",
    "Record",
    "Reject",
    "RenderError",
    "RunFolderError",
    "Source",
    "SourceError",
    "SourceSpec",
    "Template",
    "TemplateSpec",
    "__version__",
    "builtin_root",
    "export_stage",
    "load_catalog",
    "load_stage",
    "mix_stage",
    "push_to_hub",
    "render_one",
    "render_stage",
    "run_recipe",
    "validate_stage",
]


def __dir__() -> list[str]:
    return sorted(__all__)
