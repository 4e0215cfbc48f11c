"""Export: the mixture as one Hub-style dataset folder, in the formats trainers read (each a
config of the folder), with its dataset card, LLaMA-Factory's dataset_info.json, and a push
to the Hub. The transaction that writes the folder is in ``stage``."""

from __future__ import annotations

from .card import Composition, ExportedConfig, dataset_card
from .formats import DEFAULT_FORMATS, FORMATS, Format, parse_formats
from .hub import TOKEN_VARIABLES, push_to_hub, redact_secrets
from .licenses import HUB_LICENSE_IDS, hub_license_id, license_terms
from .llamafactory import llamafactory_info
from .stage import MARKER, export_stage

__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "HUB_LICENSE_IDS",
    "MARKER",
    "TOKEN_VARIABLES",
    "Composition",
    "ExportedConfig",
    "Format",
    "dataset_card",
    "export_stage",
    "hub_license_id",
    "license_terms",
    "llamafactory_info",
    "parse_formats",
    "push_to_hub",
    "redact_secrets",
]
