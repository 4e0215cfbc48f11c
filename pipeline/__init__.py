"""instructmix: build instruction-tuning mixtures from NLP tasks, templates and recipes.

The public API; the CLI (``instructmix``) is a thin layer over it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .catalog import Catalog, Source, Template, builtin_root, load_catalog
from .errors import CatalogError, PipelineError, RunFolderError, SourceError
from .export import export_stage, push_to_hub
from .mix import mix_stage
from .models import Manifest, Recipe, Record, Reject, SourceSpec, TemplateSpec
from .render import RenderError, render_one
from .run import run_recipe
from .stages import load_stage, render_stage, validate_stage

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
