"""Import promptsource templates (``templates.yaml``) into instructmix template files.

promptsource (bigscience-workshop/promptsource, the templates behind P3 and T0) keeps one
``templates.yaml`` per dataset (and per subset)::

    dataset: paws
    subset: labeled_final
    templates:
      0a3c9e5e-...: !Template
        answer_choices: No ||| Yes
        id: 0a3c9e5e-...
        jinja: "Sentence 1: {{sentence1}} ... ||| {{answer_choices[label]}}"
        metadata: !TemplateMetadata
          choices_in_prompt: true
          languages: [en]
          metrics: [Accuracy]
          original_task: true
        name: Meaning
        reference: ''

This module reads that format without importing promptsource (a ``yaml.SafeLoader`` subclass
that knows the ``!Template`` and ``!TemplateMetadata`` tags) and turns each template into one of
ours in the ``jinja:`` form, which has promptsource's semantics: the whole text is rendered, then
split on ``|||`` into prompt and target, both stripped; ``answer_choices`` stays one Jinja string
that is rendered and split on ``|||``.

Conversion:

- ``id``: a slug of the promptsource name (lowercase, every run of non-alphanumerics becomes
  ``-``, trimmed, at most 64 characters); a clash gets ``-2``, ``-3``...; ``name`` is kept as is.
- ``jinja``/``answer_choices``: kept character for character (the written YAML uses block
  scalars and is checked by reading it back), except that promptsource's ``choice`` *filter*
  (``xs | choice``, drawn from the process-wide ``random``) becomes our seeded ``choice(xs)``
  global, so a template that picks one of several references renders the same text on every run.
- metadata: ``choices_in_prompt`` None -> False, ``metrics`` None -> [], ``languages`` None ->
  ["en"], ``original_task`` None -> True. None means "never annotated": promptsource added the
  field after most templates were written, T0 trained on every template whatever its value, and
  True is our own default. ``original_task: false`` does **not** make a template ``inverted``:
  promptsource uses it for any other task on the data (e.g. "which of these is an area?"), not
  only for the FLAN-style turned-around task.
- ``reference`` and promptsource's uuid have no field of ours; they are kept as YAML comments.
- A template that cannot run in our environment (a filter we do not have, such as
  ``most_frequent`` or ``highlight``; a call of a mutating method such as
  ``{% set _ = vars.update({...}) %}``, which the immutable sandbox refuses; a syntax error) is
  left out and listed, with the reason, in a comment at the top of the written file (and
  returned by ``convert``).

Differences that remain between promptsource's ``Template.apply`` and our rendering of the
imported template (``promptsource_apply`` below reproduces promptsource exactly, for parity
checks; ``benchmarks/promptsource_parity.py`` runs it against the real package):

1. Undefined names. promptsource renders a missing field as empty text (Jinja's default
   ``Undefined``); we use ``StrictUndefined``, so a field that the source spec does not declare
   (say esnli's ``explanation_2``) rejects the record with rule ``undefined`` instead of
   producing a prompt with a hole in it.
2. Truncation. promptsource rewrites every ``}}`` into ``| string | truncate(2048) }}`` before
   rendering: each substituted value longer than 2048 (+5 leeway) characters is cut at a word
   boundary with ``...``. We render values whole (the recipe's ``limits`` reject over-long
   records instead). The rewrite also applies filters to the last operand only (``a ~ b`` cuts
   ``b``) and corrupts a ``}}`` inside a string literal; neither happens here.
3. Randomness. promptsource's ``choice`` uses the process-wide ``random`` (a P3 record depends
   on how many draws came before it); ours is drawn from a generator seeded by the recipe seed,
   source, example id and template id, so it differs from promptsource's draw but is
   reproducible.
4. Label -1. On the Hub, unlabeled rows carry ``label == -1``, and ``answer_choices[label]``
   then silently picks the *last* choice; our loader rejects such rows (rule ``unlabeled``).
5. ``|||`` inside field values. promptsource hides them behind a placeholder while splitting;
   we split the rendered text as is, so a value holding ``|||`` fails the record
   ("rendered N '|||' separators").
6. Sandbox. Templates run in Jinja's immutable sandbox: calling a mutating method
   (``dict.update``, ``list.append``) or reaching Python internals fails the record, where
   promptsource allows it. The import leaves such templates out (promptsource 0.2.3 has 8 of
   them for e2e_nlg_cleaned, which fill a dict with ``vars.update``) rather than importing
   templates that would reject most of their records.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.lexer
import jinja2.nodes
import yaml

from .errors import CatalogError
from .models import TemplateFile, TemplateMetadata, TemplateSpec
from .yamlfile import StrictConstruction, yaml_error

TEMPLATES_FILENAME = "templates.yaml"
SEPARATOR = "|||"
# promptsource.templates.TEXT_VAR_LENGTH: every substituted value is truncated to this.
TEXT_VAR_LENGTH = 2048
# promptsource.templates.Template.pipe_protector
PIPE_PROTECTOR = "3ed2dface8203c4c9dfb1a5dc58e41e0"
MAX_ID_CHARS = 64


class PromptsourceError(CatalogError, ValueError):
    """A promptsource file that cannot be read or converted; the message names the file."""


@dataclass(frozen=True)
class PromptsourceTemplate:
    """One ``!Template`` of a promptsource ``templates.yaml``, as written there."""

    uuid: str
    name: str
    jinja: str
    answer_choices: str | None
    reference: str
    original_task: bool | None
    choices_in_prompt: bool | None
    metrics: list[str] | None
    languages: list[str] | None
    dataset: str
    subset: str | None


@dataclass(frozen=True)
class Skipped:
    """A promptsource template that was left out of the import, and why."""

    name: str
    uuid: str
    reason: str


@dataclass(frozen=True)
class Conversion:
    templates: list[TemplateSpec]
    skipped: list[Skipped] = field(default_factory=list)
    # promptsource uuid and reference of each converted template, by our template id.
    provenance: dict[str, tuple[str, str]] = field(default_factory=dict)


# --------------------------------------------------------------------------- reading


class _Tagged(dict[str, Any]):
    """The mapping under a promptsource tag, remembering which tag it was."""

    def __init__(self, tag: str, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.tag = tag


class PromptsourceLoader(StrictConstruction, yaml.SafeLoader):
    """``yaml.SafeLoader`` plus promptsource's two tags; builds plain mappings, runs no code.
    A key given twice (say, one template uuid) is an error naming both lines."""


def _construct_tagged(loader: yaml.SafeLoader, node: yaml.Node) -> _Tagged:
    if not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(
            None, None, f"expected a mapping after {node.tag}", node.start_mark
        )
    mapping = loader.construct_mapping(node, deep=True)
    return _Tagged(str(node.tag), {str(k): v for k, v in mapping.items()})


for _tag in ("!Template", "!TemplateMetadata"):
    PromptsourceLoader.add_constructor(_tag, _construct_tagged)


def templates_file(path: Path) -> Path:
    """``path`` itself, or the ``templates.yaml`` inside the folder ``path``."""
    path = Path(path)
    if path.is_dir():
        path = path / TEMPLATES_FILENAME
    if not path.is_file():
        raise PromptsourceError(f"{path}: no such file")
    return path


def read_promptsource(path: Path | str) -> list[PromptsourceTemplate]:
    """Every template of one promptsource ``templates.yaml`` (or a folder holding one), in
    file order."""
    file = templates_file(Path(path))
    try:
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=PromptsourceLoader)
    except yaml.YAMLError as exc:
        raise PromptsourceError(yaml_error(file, exc)) from None
    except UnicodeDecodeError as exc:
        raise PromptsourceError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    if not isinstance(data, dict) or not isinstance(data.get("templates"), dict):
        raise PromptsourceError(f"{file}: not a promptsource file (no 'templates:' mapping)")
    dataset = str(data.get("dataset") or "")
    subset = data.get("subset")
    out = []
    for key, raw in data["templates"].items():
        where = f"{file}: template {key}"
        if not isinstance(raw, dict):
            raise PromptsourceError(f"{where}: expected a !Template mapping")
        meta = raw.get("metadata") or {}
        if not isinstance(meta, dict):
            raise PromptsourceError(f"{where}: metadata must be a !TemplateMetadata mapping")
        jinja = raw.get("jinja")
        if not isinstance(jinja, str):
            raise PromptsourceError(f"{where}: 'jinja' must be a string")
        choices = raw.get("answer_choices")
        if choices is not None and not isinstance(choices, str):
            raise PromptsourceError(f"{where}: 'answer_choices' must be a string")
        out.append(
            PromptsourceTemplate(
                uuid=str(raw.get("id") or key),
                name=str(raw.get("name") or key),
                jinja=jinja,
                answer_choices=choices,
                reference=str(raw.get("reference") or ""),
                original_task=_opt_bool(meta.get("original_task"), where),
                choices_in_prompt=_opt_bool(meta.get("choices_in_prompt"), where),
                metrics=_opt_list(meta.get("metrics"), where),
                languages=_opt_list(meta.get("languages"), where),
                dataset=dataset,
                subset=str(subset) if subset is not None else None,
            )
        )
    return out


def _opt_bool(value: Any, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise PromptsourceError(f"{where}: expected true/false, got {value!r}")


def _opt_list(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    raise PromptsourceError(f"{where}: expected a list, got {value!r}")


# --------------------------------------------------------------------------- converting


def slugify(name: str) -> str:
    """promptsource name -> template id: lowercase, non-alphanumeric runs -> '-', trimmed."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:MAX_ID_CHARS].rstrip("-") or "template"


def _unique(slug: str, taken: set[str]) -> str:
    candidate, n = slug, 1
    while candidate in taken:
        n += 1
        suffix = f"-{n}"
        candidate = slug[: MAX_ID_CHARS - len(suffix)].rstrip("-") + suffix
    taken.add(candidate)
    return candidate


def uses_randomness(jinja: str, answer_choices: str | None = None) -> bool:
    """Whether a promptsource template draws from ``random`` (its ``choice`` filter)."""
    env = _promptsource_env()
    for text in (jinja, answer_choices):
        if text is None:
            continue
        try:
            tree = env.parse(text)
        except jinja2.TemplateSyntaxError:
            return False
        if any(f.name == "choice" for f in tree.find_all(jinja2.nodes.Filter)):
            return True
    return False


def rewrite_choice_filter(text: str) -> str:
    """``EXPR | choice`` -> ``choice(EXPR)``: promptsource's filter as our seeded global.

    Jinja binds a filter to the postfix expression on its left together with any filters
    already applied to it (``answer_choices | select("!=", "") | list | choice``), which is what
    the operand found here spans. Everything else in the text is kept byte for byte.
    """
    for _ in range(text.count("choice") + 1):
        rewritten = _rewrite_first_choice(text)
        if rewritten is None:
            return text
        text = rewritten
    return text


_OPEN = {"rparen": "lparen", "rbracket": "lbracket", "rbrace": "lbrace"}
_ATOMS = {"name", "string", "integer", "float"}


@dataclass
class _Tok:
    kind: str
    value: str
    start: int


def _tokens(text: str) -> list[_Tok] | None:
    env = _promptsource_env()
    out: list[_Tok] = []
    pos = 0
    try:
        for _, kind, value in env.lex(text):
            if text[pos : pos + len(value)] != value:
                return None  # line endings normalised by the lexer: offsets unknown
            if kind == "operator":
                kind = jinja2.lexer.operators.get(value, kind)
            out.append(_Tok(kind, value, pos))
            pos += len(value)
    except jinja2.TemplateSyntaxError:
        return None
    return out


def _rewrite_first_choice(text: str) -> str | None:
    toks = _tokens(text)
    if toks is None:
        return None
    code = [i for i, t in enumerate(toks) if t.kind != "whitespace"]
    for n, i in enumerate(code):
        if toks[i].kind != "pipe" or n + 1 >= len(code):
            continue
        name = toks[code[n + 1]]
        if name.kind != "name" or name.value != "choice":
            continue
        start = _operand_start(toks, code, n - 1)
        if start is None:
            continue
        end = name.start + len(name.value)
        operand = text[toks[code[start]].start : toks[i].start].rstrip()
        return text[: toks[code[start]].start] + f"choice({operand})" + text[end:]
    return None


def _operand_start(toks: list[_Tok], code: list[int], n: int) -> int | None:
    """Index (into ``code``) of the first token of the filter operand ending at ``code[n]``."""
    while True:
        start = _postfix_start(toks, code, n)
        if start is None:
            return None
        # A filter earlier in the chain: ``| name`` or ``| dotted.name``.
        if start >= 1 and toks[code[start - 1]].kind == "pipe" and toks[code[start]].kind == "name":
            n = start - 2
            continue
        return start


def _postfix_start(toks: list[_Tok], code: list[int], n: int) -> int | None:
    """Walk left over one primary with its postfixes (``a.b[c](d)``)."""
    while n >= 0:
        tok = toks[code[n]]
        if tok.kind in _OPEN:
            depth, m = 0, n
            while m >= 0:
                kind = toks[code[m]].kind
                if kind in _OPEN:
                    depth += 1
                elif kind in _OPEN.values():
                    depth -= 1
                    if depth == 0:
                        break
                m -= 1
            if m < 0:
                return None
            before = toks[code[m - 1]] if m >= 1 else None
            if before is not None and (before.kind in _ATOMS or before.kind in _OPEN):
                if before.kind == "name" and before.value in _KEYWORDS:
                    return m
                n = m - 1  # a call or subscript: keep walking to its callee
                continue
            return m
        if tok.kind in _ATOMS:
            if n >= 2 and toks[code[n - 1]].kind == "dot":
                n -= 2  # attribute access: continue with the object
                continue
            return n
        return None
    return None


_KEYWORDS = frozenset({"in", "not", "and", "or", "if", "else", "is", "for", "recursive"})


# Methods of list, dict, set and deque that Jinja's immutable sandbox refuses to call.
MUTATING_METHODS = frozenset(
    {
        "add", "append", "appendleft", "clear", "difference_update", "discard", "extend",
        "extendleft", "insert", "intersection_update", "pop", "popitem", "popleft", "remove",
        "reverse", "rotate", "setdefault", "sort", "symmetric_difference_update", "update",
    }
)  # fmt: skip


def _check(spec: TemplateSpec) -> str | None:
    """Why our environment cannot run ``spec`` (unknown filter, syntax error, a call of a
    mutating method such as ``vars.update(...)``), or None."""
    from .render import make_environment

    env = make_environment()
    for label, text in (("jinja", spec.jinja), ("answer_choices", spec.answer_choices)):
        if not isinstance(text, str):
            continue
        try:
            env.from_string(text)
            tree = env.parse(text)
        except jinja2.TemplateSyntaxError as exc:
            return f"{label}: line {exc.lineno}: {exc.message}"
        for call in tree.find_all(jinja2.nodes.Call):
            target = call.node
            if isinstance(target, jinja2.nodes.Getattr) and target.attr in MUTATING_METHODS:
                return (
                    f"{label}: line {call.lineno}: calls .{target.attr}(), which mutates a "
                    "value; templates run in Jinja's immutable sandbox"
                )
    return None


def convert(
    templates: Sequence[PromptsourceTemplate],
    *,
    id_prefix: str = "",
    reserved_ids: Iterable[str] = (),
) -> Conversion:
    """Our template specs for ``templates``, and the ones left out with the reason."""
    taken = set(reserved_ids)
    specs: list[TemplateSpec] = []
    skipped: list[Skipped] = []
    provenance: dict[str, tuple[str, str]] = {}
    for t in templates:
        if not t.jinja.strip():
            skipped.append(Skipped(t.name, t.uuid, "empty jinja"))
            continue
        choices = t.answer_choices
        spec_id = _unique(slugify(id_prefix + t.name), taken)
        spec = TemplateSpec(
            id=spec_id,
            name=t.name,
            jinja=rewrite_choice_filter(t.jinja),
            answer_choices=rewrite_choice_filter(choices) if choices is not None else None,
            metadata=TemplateMetadata(
                original_task=True if t.original_task is None else t.original_task,
                choices_in_prompt=bool(t.choices_in_prompt),
                metrics=list(t.metrics or []),
                languages=list(t.languages) if t.languages else ["en"],
            ),
        )
        problem = _check(spec)
        if problem is not None:
            taken.discard(spec_id)
            skipped.append(Skipped(t.name, t.uuid, problem))
            continue
        specs.append(spec)
        provenance[spec_id] = (t.uuid, t.reference)
    return Conversion(specs, skipped, provenance)


def to_template_file(
    templates: Sequence[PromptsourceTemplate],
    source: str,
    *,
    id_prefix: str = "",
    reserved_ids: Iterable[str] = (),
) -> TemplateFile:
    """An instructmix ``TemplateFile`` for source ``source`` (templates our environment cannot
    run are left out; see ``convert``)."""
    conversion = convert(templates, id_prefix=id_prefix, reserved_ids=reserved_ids)
    if not conversion.templates:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in conversion.skipped) or "none given"
        raise PromptsourceError(f"no template could be converted ({reasons})")
    return TemplateFile(source=source, templates=conversion.templates)


def import_promptsource(
    path: Path | str,
    source: str,
    out: Path | str,
    *,
    id_prefix: str = "",
    reserved_ids: Iterable[str] = (),
) -> Path:
    """Convert promptsource's ``path`` into our template file ``out`` (a file, or a folder that
    gets ``<source>.yaml``) for source ``source``. Returns the written path."""
    file = templates_file(Path(path))
    templates = read_promptsource(file)
    conversion = convert(templates, id_prefix=id_prefix, reserved_ids=reserved_ids)
    if not conversion.templates:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in conversion.skipped) or "none given"
        raise PromptsourceError(f"{file}: no template could be converted ({reasons})")
    tfile = TemplateFile(source=source, templates=conversion.templates)
    target = Path(out)
    if target.is_dir() or not target.suffix:
        target = target / f"{source}.yaml"
    first = templates[0] if templates else None
    origin = file.as_posix()
    if first is not None and first.dataset:
        origin = first.dataset + (f"/{first.subset}" if first.subset else "")
    header = [
        f"Imported from promptsource templates of {origin} ({file.name}).",
        "Rendered as promptsource does: the jinja text is split on '|||' into prompt and target.",
    ]
    if conversion.skipped:
        header.append("Left out (cannot run in instructmix's template environment):")
        header += [f"  {s.name} ({s.uuid}): {s.reason}" for s in conversion.skipped]
    text = dump_template_file(tfile, header=header, provenance=conversion.provenance)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


# --------------------------------------------------------------------------- writing


def dump_template_file(
    tfile: TemplateFile,
    *,
    header: Sequence[str] = (),
    provenance: dict[str, tuple[str, str]] | None = None,
) -> str:
    """YAML for ``tfile`` with multi-line Jinja as block scalars, verified by reading it back
    (falling back to PyYAML's own quoting for anything the block form cannot hold exactly)."""
    data = tfile.model_dump(mode="json", exclude_defaults=True)
    data["source"] = tfile.source
    for spec, item in zip(tfile.templates, data["templates"], strict=True):
        item["metadata"] = spec.metadata.model_dump(mode="json")  # written in full
    header = [_LINE_BREAKS.sub(" ", h) for h in header]
    lines = [f"# {h}".rstrip() for h in header]
    lines += [f"source: {_inline(tfile.source)}", "templates:"]
    for spec, item in zip(tfile.templates, data["templates"], strict=True):
        uuid, reference = (provenance or {}).get(spec.id, ("", ""))
        if uuid:
            lines.append(f"  # promptsource id: {uuid}")
        if reference:
            lines += [f"  # reference: {_LINE_BREAKS.sub(' ', reference)}".rstrip()]
        first = True
        for key, value in item.items():
            lead = "  - " if first else "    "
            first = False
            lines += _field(lead, key, value)
    text = "\n".join(lines) + "\n"
    comments = "".join(f"# {h}".rstrip() + "\n" for h in header)
    for allow_unicode in (True, False):  # escaped ASCII for characters like NEL, last
        if _loads(text) == data:
            break
        text = comments + yaml.safe_dump(
            data, sort_keys=False, allow_unicode=allow_unicode, width=100
        )
    if _loads(text) != data:  # pragma: no cover - PyYAML round-trips its own output
        raise PromptsourceError("the template file does not read back as written")
    return text


def _loads(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _field(lead: str, key: str, value: Any) -> list[str]:
    indent = " " * len(lead)
    if isinstance(value, str) and "\n" in value:
        block = _block(value, indent + "  ")
        if block is not None:
            return [f"{lead}{key}: {block[0]}", *block[1:]]
    if isinstance(value, dict):
        inner = ", ".join(f"{k}: {_inline(v)}" for k, v in value.items())
        return [f"{lead}{key}: {{{inner}}}"]
    return [f"{lead}{key}: {_inline(value)}"]


def _inline(value: Any) -> str:
    """One value as flow YAML on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1 << 30)
    text = text.removesuffix("\n").removesuffix("\n...").rstrip("\n")
    if "\n" in text:  # PyYAML folded a long quoted scalar anyway: use JSON-compatible quoting
        text = yaml.safe_dump(value, default_style='"', allow_unicode=True, width=1 << 30)
        text = text.removesuffix("\n").removesuffix("\n...").rstrip("\n")
    return text


_LINE_BREAKS = re.compile("[\n\r\x85\u2028\u2029]")
_UNSAFE = re.compile("[\r\x85\u2028\u2029\ufeff\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _block(value: str, indent: str) -> list[str] | None:
    """A literal block scalar (``|``, ``|-`` or ``|+``, with an explicit indentation indicator)
    holding ``value`` exactly, or None where YAML's block form cannot."""
    if _UNSAFE.search(value):
        return None
    body = value.rstrip("\n")
    trailing = len(value) - len(body)
    chomp = "-" if trailing == 0 else ("" if trailing == 1 else "+")
    lines = body.split("\n") + [""] * (trailing - 1 if trailing > 1 else 0)
    # Explicit indentation (counted from the parent mapping's) where the first line could not
    # tell it: a first line that is empty or starts with a space.
    indicator = "2" if lines and lines[0][:1] in (" ", "") else ""
    out = [f"|{indicator}{chomp}"]
    out += [indent + line if line else "" for line in lines]
    return out


# --------------------------------------------------------------------------- promptsource


def _ps_choice(choices: Any) -> Any:
    return random.choice(choices)


def _ps_most_frequent(items: Any) -> list[Any] | None:
    if not items:
        return None
    counts = Counter(items).most_common()
    top = counts[0][1]
    return [c[0] for c in counts if c[1] == top]


def _ps_highlight(text: str) -> str:
    return "<span style='color: #F08080'>" + text + "</span>"


@lru_cache(maxsize=1)
def _promptsource_env() -> jinja2.Environment:
    """promptsource.templates.env: a plain Environment (silent Undefined, no sandbox)."""
    env = jinja2.Environment(loader=jinja2.BaseLoader())
    env.globals.update(zip=zip)
    env.filters["highlight"] = _ps_highlight
    env.filters["choice"] = _ps_choice
    env.filters["most_frequent"] = _ps_most_frequent
    return env


def _ps_compile(text: str) -> jinja2.Template:
    # Compiled on every call, as promptsource does: Jinja folds a filter over constants at
    # compile time (``["a", "b"] | choice``), so a cached template would repeat one draw.
    return _promptsource_env().from_string(text)


def _escape_pipe(example: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v.replace(SEPARATOR, PIPE_PROTECTOR) if isinstance(v, str) else v
        for k, v in example.items()
    }


def _unescape_pipe(text: str) -> str:
    return text.replace(PIPE_PROTECTOR, SEPARATOR)


def promptsource_answer_choices(answer_choices: str | None, example: dict[str, Any]) -> Any:
    """promptsource's ``Template.get_answer_choices_list(example)``."""
    if answer_choices is None:
        return None
    rendered = _ps_compile(answer_choices).render(**_escape_pipe(example))
    return [_unescape_pipe(c.strip()) for c in rendered.split(SEPARATOR)]


def promptsource_apply(
    jinja: str,
    answer_choices: str | None,
    example: dict[str, Any],
    *,
    truncate: bool = True,
    highlight_variables: bool = False,
) -> list[str]:
    """promptsource's ``Template.apply(example)`` (0.2.3), re-implemented for parity checks.

    Same environment (default ``Undefined``, ``zip`` global, ``choice``/``most_frequent``/
    ``highlight`` filters, ``choice`` drawing from the process-wide ``random``), the same
    ``}}`` -> ``| string | truncate(2048) }}`` rewrite, ``|||`` in string fields protected
    while splitting, and every part stripped. Returns [prompt, target] (one part when the
    template has no ``|||``, more when a rendered value adds some).
    """
    if truncate:
        jinja = jinja.replace("}}", f" | string | truncate({TEXT_VAR_LENGTH}) }}}}")
    if highlight_variables:
        jinja = jinja.replace("}}", " | highlight }}")
    template = _ps_compile(jinja)
    protected = _escape_pipe(example)
    if "answer_choices" in protected:
        raise ValueError("Example contains the restricted key 'answer_choices'.")
    protected["answer_choices"] = promptsource_answer_choices(answer_choices, example)
    rendered = template.render(**protected)
    return [_unescape_pipe(part).strip() for part in rendered.split(SEPARATOR)]


def iter_templates_files(root: Path) -> Iterator[Path]:
    """Every ``templates.yaml`` under ``root`` (promptsource's ``templates/`` folder layout)."""
    yield from sorted(Path(root).rglob(TEMPLATES_FILENAME))
