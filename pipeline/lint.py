"""Template lint: find template defects before a run, on every template and sample example.

``lint_catalog`` checks each template statically (Jinja syntax and every other compile error,
fields the source does not declare, Python internals the sandbox blocks, letters glued after a
field, functions or loops printed as text) and the source's rationale, and then renders it
on the examples of the source's bundled sample, zero-shot with the options hidden and shown, the
way the pipeline renders records, and checks each record with run's own validation rules (its
limits included). Each finding names the file, the template, the rule and one example that
shows it.

With a recipe (``templates lint --recipe``) the records are the forms that recipe draws: its
option styles, system prompt and limits; options hidden only if it ever hides them and shown
only if it ever shows them; chain-of-thought too where it gives it a share. A template the
recipe renders cleanly lints clean. Every sample row is still checked (not only those the
recipe's caps keep): the full data holds rows like them.

Whitespace and leftover Jinja delimiters are only blamed on a template when they survive a
second render of the same example with its data cleaned (runs of spaces collapsed, line ends and
value ends stripped, delimiters removed): GSM8K's questions, say, carry doubled spaces of their
own, and those are the data's, not the template's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
from jinja2 import nodes

from . import helpers
from .catalog import Catalog, Source, Template
from .errors import PipelineError
from .load import Example, iter_rows, open_source
from .locales import has_locale
from .models import RESERVED_CONTEXT_NAMES, Recipe
from .render import (
    CompiledTemplate,
    Draw,
    Renderer,
    RenderError,
    compile_problem,
    make_environment,
    printable,
    rationale_text,
    shows_all,
    to_record,
)
from .seeding import stable_key
from .validate import TEMPLATE_SYNTAX, check_record, has_template_syntax

Severity = Literal["error", "warning"]

# Rule names; the render-time ones match the rejects the pipeline writes.
SYNTAX = "template_syntax"
UNDEFINED = "undefined"
UNDECLARED = "undeclared_field"
SANDBOX = "sandbox"
OBJECT_REPR = "object_repr"
RENDER_ERROR = "render_error"
EMPTY_PROMPT = "empty_prompt"
EMPTY_OUTPUT = "empty_output"
NOT_IN_CHOICES = "output_not_in_choices"
DUPLICATE = "duplicate_template"
LEFTOVER = "leftover_template_syntax"
STRAY = "stray_after_field"
DOUBLE_SPACE = "double_space"
TRAILING_WS = "trailing_whitespace"
CONSTANT = "constant_render"
NO_SAMPLE = "no_sample"
BAD_SAMPLE = "sample_unreadable"
CHOICES_NOT_SHOWN = "choices_not_in_prompt"
NO_LOCALE = "no_locale"
UNTRANSLATED = "untranslated_template"
# Rules of run's validation that lint's own checks above do not already cover.
_ALREADY = frozenset({"empty_output", "empty_prompt", NOT_IN_CHOICES, LEFTOVER})

WARNING_RULES = frozenset(
    {DOUBLE_SPACE, TRAILING_WS, CONSTANT, NO_SAMPLE, NO_LOCALE, UNTRANSLATED}
)

# Letters glued right after ``}}`` (FLAN's ``{hypothesis}n``), then a space, punctuation or the
# end. English suffixes that a template may glue on purpose (``{{ n }}th``, ``{{ noun }}s``)
# are allowed.
_GLUED = re.compile(r"\}\}([A-Za-z]+)(?![A-Za-z0-9_])")
_SUFFIXES = frozenset({"s", "es", "th", "st", "nd", "rd"})
_DOUBLE_SPACE = re.compile(r"(?<=\S) {2,}(?=\S)")
_TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)
_SPACE_RUN = re.compile(r"[ \t]{2,}")
_LINE_END_SPACE = re.compile(r"[ \t]+(?=\n)")


@dataclass(frozen=True)
class Finding:
    """One defect: where it is (file, source, template), which rule, and one example."""

    severity: Severity
    rule: str
    source: str
    template_id: str | None
    file: str
    message: str
    example_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}/{self.template_id}" if self.template_id else self.source
        example = f" (example {self.example_id})" if self.example_id is not None else ""
        return f"{_display_path(self.file)}: {where}: {self.severity} {self.rule}: " + (
            f"{self.message}{example}"
        )


def lint_catalog(
    catalog: Catalog,
    sources: list[str] | None = None,
    max_examples: int | None = None,
    recipe: Recipe | None = None,
) -> list[Finding]:
    """Lint the templates of ``sources`` (default: every source with templates).

    Every example of each bundled sample is rendered, or ``max_examples`` of them per source
    (a subset drawn by a stable hash of the example ids, so the same subset every time), in
    the forms ``recipe`` draws (default: zero-shot, options hidden and shown, every style).
    Findings come errors first, then by file, template and rule.
    """
    names = sources if sources is not None else sorted(catalog.templates)
    findings: list[Finding] = []
    for name in names:
        findings += lint_source(
            catalog.source(name), catalog.templates_for(name), max_examples, recipe
        )
    return sorted(findings, key=lambda f: (f.severity != "error", f.file, f.source, _tid(f)))


def _tid(f: Finding) -> tuple[str, str]:
    return (f.template_id or "", f.rule)


def lint_source(
    source: Source,
    templates: Sequence[Template],
    max_examples: int | None = None,
    recipe: Recipe | None = None,
) -> list[Finding]:
    """Lint one source's templates: statically, then on (up to ``max_examples``) examples."""
    if not templates:
        return []
    report = _Report(source)
    env = make_environment()
    _language_checks(source, templates, report)
    _rationale_check(env, source, report)
    broken = {t.id for t in templates if not _static_checks(env, source, t, report)}
    if source.spec.sample is None:
        report.add(
            NO_SAMPLE,
            None,
            "the source has no sample; only the static checks ran",
            file=source.path,
        )
        return report.findings()
    try:
        examples = load_examples(source, max_examples)
    except PipelineError as exc:  # a missing or unreadable sample file
        report.add(BAD_SAMPLE, None, str(exc), file=source.path)
        return report.findings()
    _render_checks(source, [t for t in templates if t.id not in broken], examples, report, recipe)
    return report.findings()


def _language_checks(source: Source, templates: Sequence[Template], report: _Report) -> None:
    """Warn where a language of the source would fall back to English: the renderer's own
    sentences (``locales.yaml``), and templates of a multilingual source with no phrasing for
    one of its languages."""
    codes = source.spec.languages
    for code in codes:
        if not has_locale(code):
            report.add(
                NO_LOCALE,
                None,
                f"language {code!r} has no option openings or chain-of-thought lines in "
                "pipeline/locales.yaml; its records get the English ones",
                file=source.path,
            )
    if len(codes) > 1:
        for template in templates:
            own = set(template.spec.metadata.languages)
            missing = [c for c in codes if c not in own and c not in template.spec.translations]
            if missing:
                report.add(
                    UNTRANSLATED,
                    template,
                    f"no phrasing for {missing} (add `translations:` entries, or list the "
                    "language in metadata.languages if the template's own text serves it)",
                )


def load_examples(source: Source, max_examples: int | None = None) -> list[Example]:
    """The sample's good rows in file order (bad rows are the load stage's business).

    With ``max_examples``, the ones whose stable hash of source and id sorts first.
    """
    examples = [
        row
        for split in open_source(source, "sample")
        for batch in iter_rows(source, split, "sample")
        for row in batch
        if isinstance(row, Example)
    ]
    if max_examples is not None and len(examples) > max_examples:
        keep = set(
            sorted(
                range(len(examples)),
                key=lambda i: stable_key("lint", source.name, examples[i].example_id),
            )[:max_examples]
        )
        examples = [ex for i, ex in enumerate(examples) if i in keep]
    return examples


# --------------------------------------------------------------------------- bookkeeping


@dataclass
class _Entry:
    rule: str
    template_id: str | None
    file: str
    message: str
    example_id: str | None
    examples: set[str] = field(default_factory=set)


@dataclass
class _Report:
    """Findings of one source, one per (template, rule): the first example and a count."""

    source: Source
    entries: dict[tuple[str | None, str], _Entry] = field(default_factory=dict)
    checked: dict[str, int] = field(default_factory=dict)  # template id -> examples tried

    def add(
        self,
        rule: str,
        template: Template | None,
        message: str,
        example_id: str | None = None,
        file: Path | None = None,
    ) -> None:
        tid = template.id if template is not None else None
        message = printable(message)  # template text may hold lone surrogates: print safely
        entry = self.entries.get((tid, rule))
        if entry is None:
            path = file if file is not None else template.path if template else self.source.path
            entry = self.entries[(tid, rule)] = _Entry(rule, tid, str(path), message, example_id)
        elif entry.example_id is None:
            entry.example_id = example_id
        if example_id is not None:
            entry.examples.add(example_id)

    def example_for(self, template_id: str, rule: str) -> str | None:
        entry = self.entries.get((template_id, rule))
        return entry.example_id if entry else None

    def findings(self) -> list[Finding]:
        out = []
        for e in self.entries.values():
            message = e.message
            total = self.checked.get(e.template_id or "", 0)
            if e.examples and total > 1:
                message += f" [{len(e.examples)} of {total} examples]"
            severity: Severity = "warning" if e.rule in WARNING_RULES else "error"
            out.append(
                Finding(
                    severity, e.rule, self.source.name, e.template_id, e.file, message, e.example_id
                )
            )
        return out


# --------------------------------------------------------------------------- static checks


def _texts(template: Template) -> Iterator[tuple[str, str]]:
    """(part name, Jinja text) for every text of a template that is rendered."""
    spec = template.spec
    for part in ("instruction", "input", "output", "jinja", "system"):
        text = getattr(spec, part)
        if text is not None:
            yield part, text
    if isinstance(spec.answer_choices, str):
        yield "answer_choices", spec.answer_choices
    elif spec.answer_choices is not None:
        for i, choice in enumerate(spec.answer_choices):
            yield f"answer_choices[{i}]", choice


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _syntax_message(part: str, exc: jinja2.TemplateSyntaxError) -> str:
    if exc.lineno:
        return f"{part}: line {exc.lineno}: {exc.message}"
    return f"{part}: {exc.message}"


def _rationale_check(env: jinja2.Environment, source: Source, report: _Report) -> None:
    """The source's rationale compiles (else every chain-of-thought record is a reject)."""
    text = rationale_text(source.spec)
    problem = compile_problem(env, text) if text is not None else None
    if problem is not None:
        report.add(SYNTAX, None, _syntax_message("rationale", problem), file=source.path)


def _static_checks(
    env: jinja2.Environment, source: Source, template: Template, report: _Report
) -> bool:
    """Checks that need no example; False when the template does not even compile."""
    parses = True
    for part, text in _texts(template):
        problem = compile_problem(env, text)
        if problem is not None:
            report.add(SYNTAX, template, _syntax_message(part, problem))
            parses = False
            continue
        try:
            _tree_checks(env, source, template, part, env.parse(text), report)
        except RecursionError:  # it compiled, with a few frames of stack this walk lacks
            report.add(SYNTAX, template, f"{part}: nested too deeply to check")
            parses = False
            continue
        for m in _GLUED.finditer(text):
            if m.group(1) in _SUFFIXES:
                continue
            report.add(
                STRAY,
                template,
                f"{part}: line {_line(text, m.start())}: {m.group(1)!r} is glued right after "
                f"a field ({_snippet(text, m.start(), m.end())!r}); a missing space or '\\n'?",
            )
    return parses


def _tree_checks(
    env: jinja2.Environment,
    source: Source,
    template: Template,
    part: str,
    ast: nodes.Template,
    report: _Report,
) -> None:
    """Fields the source does not declare, Python internals, objects printed as text."""
    known = set(source.spec.field_names) | RESERVED_CONTEXT_NAMES | set(env.globals)
    unknown = sorted(jinja2.meta.find_undeclared_variables(ast) - known)
    if unknown:
        report.add(
            UNDECLARED,
            template,
            f"{part}: uses {', '.join(unknown)}, which source {source.name!r} does not "
            f"declare (features: {', '.join(source.spec.features)})",
        )
    private = sorted(_private_access(ast))
    if private:
        reached = ", ".join(sorted({repr(name) for _, name in private}))
        report.add(
            SANDBOX,
            template,
            f"{part}: line {private[0][0]}: reaches {reached}, which the sandbox blocks",
        )
    printed = sorted(_printed_objects(ast, env))
    if printed:
        line, name = printed[0]
        report.add(
            OBJECT_REPR,
            template,
            f"{part}: line {line}: prints {name!r}, a function or object: its text would be "
            "a Python repr (a memory address that changes every run); call it instead",
        )


def _printed_objects(ast: nodes.Template, env: jinja2.Environment) -> Iterator[tuple[int, str]]:
    """``{{ name }}`` where the name is a global function (``shuffle``, ``range``, ``cycler``),
    a macro, ``loop`` or ``caller``, and the template does not assign it a value of its own."""
    assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    objects = set(env.globals) | helpers.SEEDED_NAMES | {"loop", "caller", "self"}
    objects |= {m.name for m in ast.find_all(nodes.Macro)}
    for output in ast.find_all(nodes.Output):
        for child in output.nodes:
            if (
                isinstance(child, nodes.Name)
                and child.name in objects
                and child.name not in assigned
            ):
                yield child.lineno, child.name


def _private_access(ast: nodes.Template) -> Iterator[tuple[int, str]]:
    """Attribute and item names starting with '_' (``__class__``, ``_private``)."""
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        name: Any = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
            arg = node.args[0]
            name = arg.value if isinstance(arg, nodes.Const) else None
        if isinstance(name, str) and name.startswith("_"):
            yield node.lineno, name


# --------------------------------------------------------------------------- render checks


def _forms(
    renderer: Renderer, c: CompiledTemplate, recipe: Recipe | None
) -> list[tuple[str, bool]]:
    """(form, options shown) pairs to render: every form ``recipe`` can draw for ``c``
    (without a recipe: zero-shot, options hidden and shown)."""
    spec = c.template.spec
    if spec.inverted:
        return [("inverted", c.has_choices and spec.metadata.choices_in_prompt)]
    if not c.has_choices or spec.metadata.choices_in_prompt:
        shown: list[bool] = [c.has_choices]
    elif recipe is None:
        shown = [False, True]
    else:
        share = recipe.variants.options_shown
        shown = [s for s, ok in ((False, share < 1), (True, share > 0)) if ok]
    forms = [("zero_shot", s) for s in shown]
    if recipe is not None and recipe.variants.cot > 0 and spec.cot and renderer.has_rationale:
        forms += [("cot", s) for s in shown]
    return forms


def _render_checks(
    source: Source,
    templates: list[Template],
    examples: list[Example],
    report: _Report,
    recipe: Recipe | None = None,
) -> None:
    if not templates:
        return
    renderer = Renderer(source, templates, recipe or Recipe(name="lint", sources=[source.name]))
    by_id = {c.id: c for c in renderer.templates}
    compiled = [by_id[t.id] for t in templates]  # file order
    # template id -> example id -> hash of (prompt, output), options hidden
    renders: dict[str, dict[str, int]] = {c.id: {} for c in compiled}
    prompts: dict[str, set[int]] = {c.id: set() for c in compiled}
    first_ok: dict[str, str] = {}

    forms_of = {c.id: _forms(renderer, c, recipe) for c in compiled}
    for example in examples:
        for c in compiled:
            forms = forms_of[c.id]
            drawn = renderer.draw(example, c)
            for base, shown in forms:
                draw = Draw(base, shown, drawn.style_key, drawn.opening, drawn.trigger)
                try:
                    rendered = renderer.render_with(example, c, draw)
                except RenderError as exc:
                    report.add(exc.rule, c.template, _strip_prefix(exc, c), example.example_id)
                    break
                except Exception as exc:  # a crash the pipeline would not turn into a reject
                    report.add(
                        RENDER_ERROR,
                        c.template,
                        f"{_form(shown)}: {type(exc).__name__}: {exc}",
                        example.example_id,
                    )
                    break
                user, output = rendered.turns[-1]
                choices = rendered.answer_choices
                first_ok.setdefault(c.id, example.example_id)
                if (base, shown) == forms[0]:
                    renders[c.id][example.example_id] = hash((user, output))
                    prompts[c.id].add(hash(user))
                _check_choices_shown(c, example, user, choices, report)
                _check_record(renderer, example, c, rendered, shown, report)
                if base == "cot":
                    continue  # the text checks below are about the template's own answer
                _check_render(
                    renderer, example, c, draw, {"prompt": user, "output": output}, choices, report
                )

    for c in compiled:
        report.checked[c.id] = len(examples)
        for rule in (UNDECLARED, STRAY):
            entry = report.entries.get((c.id, rule))
            if entry is not None and entry.example_id is None:
                entry.example_id = report.example_for(c.id, UNDEFINED) or first_ok.get(c.id)
        if len(renders[c.id]) >= 2 and len(prompts[c.id]) == 1:
            report.add(
                CONSTANT,
                c.template,
                f"renders the same prompt for all {len(renders[c.id])} examples: "
                "it ignores its inputs",
                first_ok.get(c.id),
            )
    for i, b in enumerate(compiled):
        for a in compiled[:i]:
            if renders[b.id] and renders[a.id] == renders[b.id]:
                report.add(
                    DUPLICATE,
                    b.template,
                    f"renders exactly like template {a.id!r} (prompt and output) on all "
                    f"{len(renders[b.id])} examples",
                    next(iter(renders[b.id])),
                )
                break


def _check_choices_shown(
    c: CompiledTemplate,
    example: Example,
    prompt: str,
    choices: list[str] | None,
    report: _Report,
) -> None:
    """``choices_in_prompt: true`` holds: the prompt shows every choice (else run labels its
    records ``_noopt`` and adds no options block: the model never sees the choices)."""
    spec = c.template.spec
    if not (spec.metadata.choices_in_prompt and choices) or c.uses_options:
        return
    if shows_all(prompt, choices):
        return
    missing = [x for x in choices if x.casefold() not in prompt.casefold()]
    report.add(
        CHOICES_NOT_SHOWN,
        c.template,
        f"choices_in_prompt: true, but the prompt does not show the choice(s) "
        f"{_short(', '.join(repr(m) for m in missing))}: write them with "
        "{{ answer_choices }} (or {{ options }}), or drop the flag",
        example.example_id,
    )


def _check_record(
    renderer: Renderer,
    example: Example,
    c: CompiledTemplate,
    rendered: Any,
    shown: bool,
    report: _Report,
) -> None:
    """Run's validation rules (its limits, the chain-of-thought shape, empty choices) on the
    record, as run would reject it."""
    row = to_record(renderer.source, example, rendered)
    problem = check_record(
        row, renderer.recipe.limits, has_template_syntax(example.fields.values())
    )
    if problem is not None and problem[0] not in _ALREADY:
        report.add(problem[0], c.template, f"{rendered.variant}: {problem[1]}", example.example_id)


def _render(
    renderer: Renderer, example: Example, compiled: CompiledTemplate, draw: Draw
) -> tuple[str, str, list[str] | None]:
    rendered = renderer.render_with(example, compiled, draw)
    user, output = rendered.turns[-1]
    return user, output, rendered.answer_choices


def _form(shown: bool) -> str:
    return "options shown" if shown else "options hidden"


def _strip_prefix(exc: RenderError, compiled: CompiledTemplate) -> str:
    """The render error's message without the file and template our finding names already."""
    message = str(exc)
    prefix = f"{compiled.template.path}: template {compiled.id!r}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _check_render(
    renderer: Renderer,
    example: Example,
    compiled: CompiledTemplate,
    draw: Draw,
    texts: dict[str, str],
    choices: list[str] | None,
    report: _Report,
) -> None:
    template, eid, form = compiled.template, example.example_id, _form(draw.options_shown)
    if not texts["prompt"].strip():
        report.add(EMPTY_PROMPT, template, f"{form}: the prompt renders empty", eid)
    if not texts["output"].strip():
        report.add(EMPTY_OUTPUT, template, f"{form}: the output renders empty", eid)
    if choices is not None and texts["output"] not in choices:
        report.add(
            NOT_IN_CHOICES,
            template,
            f"{form}: output {_short(texts['output'])!r} is not one of {_short(str(choices))}",
            eid,
        )
    suspects = _text_issues(texts)
    if not suspects:
        return
    # Blame the template only for what survives a render with the data cleaned.
    try:
        clean = _render(renderer, _cleaned(example), compiled, draw)
    except Exception:
        return
    for rule, message in _text_issues({"prompt": clean[0], "output": clean[1]}):
        report.add(rule, template, f"{form}: {message}", eid)


def _text_issues(texts: dict[str, str]) -> list[tuple[str, str]]:
    """(rule, message) for leftover delimiters and stray whitespace, one per rule."""
    found: dict[str, str] = {}
    for name, text in texts.items():
        for tok in TEMPLATE_SYNTAX:
            at = text.find(tok)
            if at >= 0 and LEFTOVER not in found:
                found[LEFTOVER] = (
                    f"{name} line {_line(text, at)} contains {tok!r}: "
                    f"{_snippet(text, at, at + len(tok))!r}"
                )
        m = _DOUBLE_SPACE.search(text)
        if m and DOUBLE_SPACE not in found:
            found[DOUBLE_SPACE] = (
                f"{name} line {_line(text, m.start())} has a doubled space: "
                f"{_snippet(text, m.start(), m.end())!r}"
            )
        m = _TRAILING.search(text)
        if m and TRAILING_WS not in found:
            found[TRAILING_WS] = (
                f"{name} line {_line(text, m.start())} ends in whitespace: "
                f"{_snippet(text, m.start(), m.end())!r}"
            )
    return list(found.items())


def _cleaned(example: Example) -> Example:
    """The example with its text tidied: what a template cannot blame on the data."""
    return Example(
        example.example_id,
        example.split,
        {k: _clean(v) for k, v in example.fields.items()},
        example.locator,
    )


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        for tok in TEMPLATE_SYNTAX:
            value = value.replace(tok, "")
        value = _LINE_END_SPACE.sub("", _SPACE_RUN.sub(" ", value))
        return value.strip()
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- formatting


def _snippet(text: str, start: int, end: int, width: int = 20) -> str:
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    left = max(line_start, start - width)
    right = min(line_end, end + width)
    return (
        ("..." if left > line_start else "")
        + text[left:right]
        + ("..." if right < line_end else "")
    )


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _display_path(path: str) -> str:
    """The path relative to the working directory when it lies below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if rel.startswith("..") else rel
