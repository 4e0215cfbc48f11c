"""Read user-written YAML into pydantic models, with errors that point at file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import CatalogError

M = TypeVar("M", bound=BaseModel)


def load_model(path: Path, model: type[M]) -> M:
    """Parse ``path`` and validate it as ``model``; any problem raises a one-line CatalogError."""
    text = _read_text(path)
    loader = _Loader(text)
    try:
        # One parse gives both the node tree (for line numbers) and the data.
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise CatalogError(yaml_error(path, exc)) from None
    if data is None:
        raise CatalogError(f"{path}: file is empty")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # A misspelt key also makes the real key "missing"; the misspelling is the cause.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        error = errors[0]
        loc = tuple(error["loc"])
        msg = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        line = _line_of(node, loc) if node is not None else None
        where = f"{path}:{line}" if line else str(path)
        field = ".".join(str(p) for p in loc) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise CatalogError(f"{where}: {field}: {msg}{more}") from None


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed: ~10x faster


def yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """``file:line: invalid YAML: problem`` for a parse error."""
    mark = getattr(exc, "problem_mark", None)
    at = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{path}{at}: invalid YAML: {problem}"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read: {exc.strerror}") from None


def _line_of(node: yaml.Node, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest node along ``loc`` that exists in the document."""
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child = value
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line
