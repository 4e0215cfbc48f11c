"""Errors the user can act on. Each prints as one line naming what is at fault."""

from __future__ import annotations

import os


class PipelineError(Exception):
    """A failure that stops a run. ``str()`` is the one-line cause shown by the CLI."""


class CatalogError(PipelineError):
    """A source, template or recipe file is malformed, or names something that does not exist."""


class SourceError(PipelineError):
    """A source cannot be read at all (missing file, unreadable format, Hub failure)."""


class RunFolderError(PipelineError):
    """A stage was asked to run on a folder that lacks the output of the stage before it."""


def os_cause(exc: OSError) -> str:
    """The operating system's one-line words for ``exc`` (pyarrow wraps the errno in prose;
    the OS's own words are clearer)."""
    if exc.errno:
        return os.strerror(exc.errno)
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def os_filename(exc: OSError) -> str | None:
    """The path an OSError names, as text (None when it names none)."""
    name = exc.filename
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    return name if isinstance(name, str) and name else None
