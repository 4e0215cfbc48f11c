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
        raise CatalogError(validation_message(path, exc, data, node)) from None


def validation_message(path: Path, exc: ValidationError, data: Any, node: yaml.Node | None) -> str:
    """Every problem pydantic found, one ``file:line: field: reason`` line each.

    A misspelt key comes first: it also makes the real key "missing", and the misspelling is the
    cause. Where a value may take several forms (a feature type is a name or a mapping; a
    sample field a column name or a FieldMap), pydantic reports a failure for every form; only
    the form the value was written in is reported, so ``{nmes: [a, b]}`` reads as a ClassLabel
    with an unknown key, not also as a failed type name.
    """
    problems: list[tuple[bool, int, str]] = []
    for error in _one_form_per_union(exc.errors(), data):
        keys = error["keys"]
        extra = error["type"] == "extra_forbidden"
        msg = "unknown key" if extra else error["msg"]
        line = _line_of(node, tuple(keys)) if node is not None else 0
        where = f"{path}:{line}" if line else str(path)
        field = ".".join(str(p) for p in keys) or "(top level)"
        text = f"{where}: {field}: {msg}"
        if all(text != seen for _, _, seen in problems):
            problems.append((not extra, line, text))
    problems.sort(key=lambda p: (p[0], p[1]))
    return "\n".join(text for _, _, text in problems)


def _split_loc(loc: tuple[Any, ...], error_type: str, data: Any) -> tuple[list[Any], list[int]]:
    """The parts of ``loc`` that are keys or indexes of the document, and the positions of
    those that are pydantic's names for the forms of a union (``ClassLabel``, ``str``)."""
    keys: list[Any] = []
    tags: list[int] = []
    current: Any = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_list or (isinstance(current, dict) and part in current):
            keys.append(part)
            current = current[part]
        elif last and error_type == "missing":
            keys.append(part)  # the key the document lacks
        else:
            tags.append(i)
    return keys, tags


def _one_form_per_union(errors: list[Any], data: Any) -> list[dict[str, Any]]:
    """The errors with union form names left out of their paths; where every form of a union
    failed, only those of the form closest to what was written (see validation_message)."""
    split = []
    for error in errors:
        loc = tuple(error["loc"])
        keys, tags = _split_loc(loc, error["type"], data)
        split.append((error, loc, keys, tags))
    # Group the errors of one union by the path up to its first form name.
    unions: dict[tuple[Any, ...], dict[Any, list[int]]] = {}
    for n, (_, loc, _, tags) in enumerate(split):
        if tags:
            unions.setdefault(loc[: tags[0]], {}).setdefault(loc[tags[0]], []).append(n)
    dropped: set[int] = set()
    merged: dict[int, str] = {}
    for prefix, forms in unions.items():
        # A form whose errors lie inside the value (a mapping missing a key) matched the value's
        # shape; a form failing at the value itself (expected a string) did not.
        inside = {
            form: ns
            for form, ns in forms.items()
            if any(len(split[n][1]) > len(prefix) + 1 for n in ns)
        }
        if inside:
            best = min(inside, key=lambda form: len(inside[form]))
            dropped.update(n for form, ns in forms.items() if form != best for n in ns)
        else:
            ns = [n for form in forms for n in forms[form]]
            reasons = list(dict.fromkeys(_form_reason(split[n][0]) for n in ns))
            merged[ns[0]] = "; or ".join(reasons)
            dropped.update(ns[1:])
    out = []
    for n, (error, _, keys, _) in enumerate(split):
        if n in dropped:
            continue
        out.append({"type": error["type"], "msg": merged.get(n, error["msg"]), "keys": keys})
    return out


def _form_reason(error: Any) -> str:
    if error["type"] == "model_type":
        name = str(error["loc"][-1])
        return f"a mapping ({name})"
    return str(error["msg"])


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
