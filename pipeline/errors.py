"""Errors the user can act on. Each prints as one line naming what is at fault."""

from __future__ import annotations


class PipelineError(Exception):
    """A failure that stops a run. ``str()`` is the one-line cause shown by the CLI."""


class CatalogError(PipelineError):
    """A source, template or recipe file is malformed, or names something that does not exist."""


class SourceError(PipelineError):
    """A source cannot be read at all (missing file, unreadable format, Hub failure)."""


class RunFolderError(PipelineError):
    """A stage was asked to run on a folder that lacks the output of the stage before it."""
