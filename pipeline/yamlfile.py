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


class StrictConstruction:
    """Loader mixin: a key given twice in one mapping is an error naming both lines (YAML says
    keys are unique; PyYAML lets the last one win silently), and a value that Python cannot build
    (a 5,000-digit integer, the date 2020-13-45) is an error at its line, not a traceback.

    Mix it in before a PyYAML loader: ``class L(StrictConstruction, yaml.SafeLoader)``.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)  # type: ignore[misc]
        except (ValueError, OverflowError) as exc:
            if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":int"):
                problem = f"integer too long ({len(node.value)} characters)"
            else:
                problem = f"cannot read this value: {_first_line(exc)}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                # `<<` merges are YAML's own way to override keys: not duplicates.
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.get(key)
                except TypeError:  # unhashable: PyYAML reports it itself
                    continue
                if seen is not None:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key_node.value!r} (first at line "
                        f"{seen.start_mark.line + 1})",
                        key_node.start_mark,
                    )
                first[key] = key_node
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc, no-any-return]


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# libyaml when installed: ~10x faster
class _Loader(StrictConstruction, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    pass


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
