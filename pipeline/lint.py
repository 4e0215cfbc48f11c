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

The catalog rules check what a record teaches, on the same renders (their exact criteria and
thresholds are in the functions and constants of the "catalog rules" section; all are errors):

- ``choices_not_in_prompt``: ``choices_in_prompt: true`` and a choice is not a word of the
  template's own text (inside "nobody", or only in the example's passage, does not count);
- ``copy_task``: the output is the prompt, or inside it, for most rows (extractive templates
  that say so with ``metrics: [squad]`` are exempt);
- ``label_leak``: a short categorical field shown in a classification prompt predicts the answer
  on the sample (Breaking NLI's change category);
- ``degenerate_inverted``: an inverted template with fewer distinct prompts than a tenth of its
  examples;
- ``doubled_punctuation``: '..', '.".', '?.', ' ,' and the like that the template or the options
  block makes and the example's own text does not have; ``plural_hack``: a template's "(s)";
- ``no_answer_form``: a classification prompt with its options hidden that names neither its
  choices nor asks a yes/no question (``names_answer_form``);
- ``data_artefact``: calculator annotations, '####', PTB tokenisation, corpus markers in outputs
  and in the rationales chain-of-thought records carry;
- ``option_target_mismatch`` / ``numbering_clash``: lettered or numbered options where the
  prompt does not say (once) whether to answer with the marker or the text, or the target
  disobeys; numbered options among the template's own numbered lines.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
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
from .locales import all_locales, has_locale, locale_for
from .models import RESERVED_CONTEXT_NAMES, ClassLabel, Recipe, SequenceOfClassLabel
from .options import letter_marker
from .options import names_choice as _named  # lint's names_choice folds the text first
from .render import (
    CompiledTemplate,
    Draw,
    Renderer,
    RenderError,
    compile_problem,
    make_environment,
    printable,
    rationale_text,
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
# The catalog rules (issue 11): what a record teaches, measured on the sample.
COPY_TASK = "copy_task"
LABEL_LEAK = "label_leak"
DEGENERATE_INVERTED = "degenerate_inverted"
DOUBLED_PUNCTUATION = "doubled_punctuation"
NO_ANSWER_FORM = "no_answer_form"
DATA_ARTEFACT = "data_artefact"
OPTION_TARGET = "option_target_mismatch"
NUMBERING_CLASH = "numbering_clash"
PLURAL_HACK = "plural_hack"
# Rules of run's validation that lint's own checks above do not already cover.
_ALREADY = frozenset({"empty_output", "empty_prompt", NOT_IN_CHOICES, LEFTOVER})

WARNING_RULES = frozenset({DOUBLE_SPACE, TRAILING_WS, CONSTANT, NO_SAMPLE, NO_LOCALE, UNTRANSLATED})

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
    rows = _row_languages(source)
    if len(rows) > 1:
        for template in templates:
            own = set(template.spec.metadata.languages)
            missing = [c for c in rows if c not in own and c not in template.spec.translations]
            if missing:
                report.add(
                    UNTRANSLATED,
                    template,
                    f"no phrasing for {missing} (add `translations:` entries, or list the "
                    "language in metadata.languages if the template's own text serves it)",
                )


def _row_languages(source: Source) -> list[str]:
    """The languages a row of the source can be in: every listed one where a field or the
    files say which, else only the first (NTREX lists [en, de] for its pairs, but a row has no
    language of its own, so no German row ever needs a German phrasing)."""
    spec = source.spec
    if spec.language_field is not None:
        return spec.languages
    files = spec.sample.files if spec.sample is not None and spec.sample.files else []
    listed = [f.language for f in files if f.language is not None]
    if listed:
        return [c for c in spec.languages if c in listed or c == spec.default_language]
    return [spec.default_language]


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
    kinds: dict[str, None] = field(default_factory=dict)  # kinds of defect seen, in order


@dataclass
class _Report:
    """Findings of one source, one per (template, rule): the first example and a count."""

    source: Source
    entries: dict[tuple[str | None, str], _Entry] = field(default_factory=dict)
    checked: dict[str, int] = field(default_factory=dict)  # template id -> examples tried
    # template id ("" for the rationale) -> (example id, message) of outputs with PTB spacing
    spacing: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def add(
        self,
        rule: str,
        template: Template | None,
        message: str,
        example_id: str | None = None,
        file: Path | None = None,
        kind: str | None = None,
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
        if kind is not None:
            entry.kinds[kind] = None

    def example_for(self, template_id: str, rule: str) -> str | None:
        entry = self.entries.get((template_id, rule))
        return entry.example_id if entry else None

    def findings(self) -> list[Finding]:
        out = []
        for e in self.entries.values():
            message = e.message
            total = self.checked.get(e.template_id or "", 0)
            if len(e.kinds) > 1:  # one finding per rule: say what else it found
                message += " (found: " + "; ".join(e.kinds) + ")"
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
    # template id -> every example's first form, for the rules measured over the sample
    seen: dict[str, list[_Seen]] = {c.id: [] for c in compiled}

    forms_of = {c.id: _forms(renderer, c, recipe) for c in compiled}
    for example in examples:
        strings = example_strings(example.fields)
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
                    seen[c.id].append(_Seen(example, user, output))
                _check_choices_shown(c, example, strings, user, choices, report)
                _check_record(renderer, example, c, rendered, shown, report)
                if base == "cot":
                    continue  # the text checks below are about the template's own answer
                _check_render(
                    renderer, example, c, draw, {"prompt": user, "output": output}, choices, report
                )
                _check_catalog_record(
                    renderer, example, strings, c, draw, user, output, choices, report
                )

    for c in compiled:
        report.checked[c.id] = len(examples)
        for rule in (UNDECLARED, STRAY):
            entry = report.entries.get((c.id, rule))
            if entry is not None and entry.example_id is None:
                entry.example_id = report.example_for(c.id, UNDEFINED) or first_ok.get(c.id)
        _check_catalog_template(renderer, c, seen[c.id], report)
        degenerate = (c.id, DEGENERATE_INVERTED) in report.entries
        if len(renders[c.id]) >= 2 and len(prompts[c.id]) == 1 and not degenerate:
            report.add(
                CONSTANT,
                c.template,
                f"renders the same prompt for all {len(renders[c.id])} examples: "
                "it ignores its inputs",
                first_ok.get(c.id),
            )
    _check_rationales(renderer, compiled, examples, report)
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
    strings: list[str],
    prompt: str,
    choices: list[str] | None,
    report: _Report,
) -> None:
    """``choices_in_prompt: true`` holds: the prompt shows every choice (else run labels its
    records ``_noopt`` and adds no options block: the model never sees the choices).

    A choice counts as shown when the template's own text writes it as a word: "no" inside
    "nobody", or "yes" in the example's own passage, does not show the choice ``no``."""
    spec = c.template.spec
    if not (spec.metadata.choices_in_prompt and choices) or c.uses_options:
        return
    missing = missing_choices(prompt, choices, strings)
    if not missing:
        return
    folded = prompt.casefold()
    where = (
        "only inside other words or the example's own text"
        if all(c.casefold() in folded for c in missing)
        else "nowhere"
    )
    report.add(
        CHOICES_NOT_SHOWN,
        c.template,
        f"choices_in_prompt: true, but the prompt shows the choice(s) "
        f"{_short(', '.join(repr(m) for m in missing))} {where} ({example.locator}): write "
        "them with {{ answer_choices }} (or {{ options }}), or drop the flag",
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
    # replace, not a new Example: the row's language (and so the prompt's) must stay the same
    return dataclasses.replace(example, fields={k: _clean(v) for k, v in example.fields.items()})


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


# --------------------------------------------------------------------------- catalog rules
#
# What a record teaches, measured on the sample through the real render path. Each rule's
# criterion is in its function's docstring; its numbers are these constants.

# copy_task: the output is the prompt, or is inside it, in more than this share of the sample;
# inside counts from COPY_MIN_WORDS words (a shorter span is an answer picked from the input:
# a name, a number, a date).
COPY_SHARE = 0.5
COPY_MIN_WORDS = 3
# A template that says it extracts a span is exempt: SQuAD's metric, or exact match over a
# passage the prompt shows.
EXTRACTIVE_METRICS = frozenset({"squad", "squad_v2"})
PASSAGE_FIELDS = frozenset({"context", "passage", "document", "article", "paragraph", "story"})
# label_leak: a shown field with at most LEAK_MAX_VALUES values (and at most a fifth as many as
# rows), LEAK_MAX_CHARS characters on average, that predicts LEAK_ACCURACY of the answers and
# makes at most LEAK_ERROR_SHARE of the errors of always answering the commonest label.
LEAK_MIN_ROWS = 20
LEAK_MAX_VALUES = 20
LEAK_MAX_CHARS = 40
LEAK_ACCURACY = 0.9
LEAK_ERROR_SHARE = 0.5
# degenerate_inverted: fewer distinct prompts than this share of the examples.
INVERTED_MIN_RECORDS = 10
INVERTED_MIN_SHARE = 0.1

# Answer choices a yes/no question asks for, in the languages we write.
POLAR_WORDS = frozenset(
    {"yes", "no", "maybe", "ja", "nein", "vielleicht", "kyllä", "ei", "ehkä", "oui", "non",
     "peut-être", "sí", "si", "quizás", "tal vez"}
)  # fmt: skip
_WHETHER = re.compile(r"\b(?:whether|ob)\b")


@dataclass(frozen=True)
class _Seen:
    """One example's first form (options hidden where the template can hide them)."""

    example: Example
    prompt: str
    output: str


# (group, what it is, pattern): data artefacts no target may carry. Groups: calculator,
# answer_marker, ptb, markup, plural_hack.
PTB_SPACING = "PTB spacing"
# A space before , . n't 's is a data artefact where the data is tokenised (e-SNLI: most rows),
# not in one sloppy comment: it is reported from this share of a template's sample rows.
PTB_SPACING_SHARE = 0.02
ARTEFACTS: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("calculator", "a calculator annotation", re.compile(r"<<[^<>\n]*>>")),
    ("answer_marker", "a '####' answer line", re.compile(r"####")),
    ("ptb", "PTB quotes", re.compile(r"``|''")),
    ("ptb", PTB_SPACING, re.compile(r"\w (?:[,.]|n't|'(?:s|re|ve|ll|d|m))(?=\s|$)")),
    ("ptb", "a PTB bracket token", re.compile(r"-[LR][RSC]B-")),
    # Structure markers of table and text corpora, not anonymisation placeholders such as
    # GoEmotions' [NAME] or XED's [PERSON], which are the data's own words.
    (
        "markup",
        "a markup token",
        re.compile(r"\[(?:TITLE|TABLECONTEXT|TABLE|SECTION|HEADER|SEP|CLS|PAD|UNK|EOS|BOS)\]"),
    ),
    # A count with a "(s)" plural is a generator's ("1 triple(s)"); an author's "task(s)" in an
    # abstract is the text's own.
    ("plural_hack", "an '(s)' plural after a count", re.compile(r"\b\d+ [A-Za-z]+\(s\)")),
)
_PLURAL_HACK = re.compile(r"[A-Za-z]\(s\)")

# (what it is, pattern, also in French): punctuation that a template or an options block
# doubles, and spaces before punctuation (French puts one before ; : ! ? by rule).
_DOUBLED: tuple[tuple[str, re.Pattern[str], bool], ...] = (
    ("a doubled '.'", re.compile(r"(?<![.])\.\.(?![.])"), True),
    ("a doubled ',' or ';'", re.compile(r",,|;;"), True),
    ("a '.' after a quote closing a sentence", re.compile(r"[.?!][\"'”’»)]\.(?![.])"), True),
    ("a '.' after '?' or '!'", re.compile(r"[?!]\.(?![.])"), True),
    ("a space before ','", re.compile(r"(?<=\S)[ \t]+,"), True),
    ("a space before '.'", re.compile(r"(?<=[^\s_…])[ \t]+\.(?=\s|$)"), True),
    ("a space before ';', ':', '!' or '?'", re.compile(r"(?<=[^\s_…])[ \t]+[;:!?](?=\s|$)"), False),
)


_ANY_ARTEFACT = re.compile("|".join(f"(?:{p.pattern})" for _, _, p in ARTEFACTS))
# Every _DOUBLED match holds one of these: a few substring tests skip the regexes (which
# were much of lint's time) for nearly every text.
_DOUBLED_TOKENS = (
    "..", ",,", ";;", '".', "'.", "”.", "’.", "».", ").", "?.", "!.",
    " ,", " .", " ;", " :", " !", " ?", "\t",
)  # fmt: skip
_DOUBLED_TOKEN = re.compile("|".join(re.escape(t) for t in _DOUBLED_TOKENS))


def data_artefacts(text: str) -> list[tuple[str, str, str]]:
    """(group, what, snippet) for each kind of data artefact in ``text``: GSM8K's calculator
    annotations and '####' lines, Penn Treebank tokenisation (`` '' quotes, a space before
    , . n't 's, -LRB-), markup tokens such as DART's [TITLE] and [TABLECONTEXT], and "(s)"
    plurals ("1 triple(s)")."""
    found: list[tuple[str, str, str]] = []
    if not _ANY_ARTEFACT.search(text):  # one pass for the common case: nothing
        return found
    for group, what, pattern in ARTEFACTS:
        m = pattern.search(text)
        if m:
            found.append((group, what, _snippet(text, m.start(), m.end(), 12)))
    return found


def doubled_punctuation(text: str, language: str = "en") -> list[tuple[str, re.Match[str]]]:
    """(what, match) for each kind of doubled punctuation or space before punctuation."""
    found: list[tuple[str, re.Match[str]]] = []
    # A regex is faster on a short text, substring tests on a long one.
    short = len(text) < 300
    if not (_DOUBLED_TOKEN.search(text) if short else any(t in text for t in _DOUBLED_TOKENS)):
        return found
    french = language.split("-")[0] == "fr"
    for what, pattern, everywhere in _DOUBLED:
        if french and not everywhere:
            continue
        m = pattern.search(text)
        if m:
            found.append((what, m))
    return found


def example_strings(fields: dict[str, Any]) -> list[str]:
    """Every text of an example (inside lists and mappings too) of 3 characters or more,
    longest first: what ``blank_data`` takes out of a prompt."""
    out: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            value = value.strip()
            if len(value) >= 3:
                out.add(value)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    walk(fields)
    return sorted(out, key=lambda v: (-len(v), v))


def blank_data(
    text: str, strings: Sequence[str], keep: Iterable[str] = (), containing: Iterable[str] = ()
) -> str:
    """``text`` with the example's own texts (``example_strings``) blanked out where they
    stand as words of their own (the pronoun "her" goes, "neither" stays), except those that
    are one of ``keep`` (choices that are data, as COPA's alternatives): what is left is the
    template's own words and the renderer's. With ``containing``, only texts that hold one of
    those words are blanked (the others cannot matter to a search for them)."""
    kept = {k.strip().casefold() for k in keep}
    wanted = [w.strip().casefold() for w in containing if w.strip()]
    for value in strings:
        if value not in text:
            continue
        folded = value.casefold()
        if folded in kept or (wanted and not any(w in folded for w in wanted)):
            continue
        text = _blank_words(text, value)
    return text


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _blank_words(text: str, value: str) -> str:
    """``text`` with each occurrence of ``value`` that is not part of a longer word blanked."""
    left, right = _is_word(value[0]), _is_word(value[-1])
    out, i, n = [], 0, len(value)
    while (j := text.find(value, i)) >= 0:
        if (not left or j == 0 or not _is_word(text[j - 1])) and (
            not right or j + n == len(text) or not _is_word(text[j + n])
        ):
            out += [text[i:j], "\x00"]
            i = j + n
        else:
            out.append(text[i : j + 1])
            i = j + 1
    out.append(text[i:])
    return "".join(out)


def _in_data(text: str, at: int, fields: dict[str, Any]) -> bool:
    """Whether character ``at`` of ``text`` lies inside a copy of one of the example's texts
    (of any length: a sentence that is only "." counts)."""
    values: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if value:
                values.append(value)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    walk(fields)
    for value in values:
        start = max(0, at - len(value) + 1)
        j = text.find(value, start)
        while 0 <= j <= at:
            if j + len(value) > at:
                return True
            j = text.find(value, j + 1)
    return False


def names_choice(text: str, choice: str) -> bool:
    """Whether ``text`` writes ``choice`` as a word or phrase of its own (case aside)."""
    return _named(text.casefold(), choice)


def missing_choices(prompt: str, choices: Sequence[str], strings: Sequence[str] = ()) -> list[str]:
    """The choices that ``prompt`` does not name in its own words: not as a word of their own
    (case aside), or only inside the example's texts ``strings`` (a review that says
    "positive" does not show the choice)."""
    folded = prompt.casefold()
    missing = [c for c in choices if not _named(folded, c)]
    named = [c for c in choices if c not in missing]
    if strings and named:
        own = blank_data(prompt, strings, keep=choices, containing=named)
        if own != prompt:  # no text of the example held a choice: nothing changes
            folded = own.casefold()
            missing = [c for c in choices if c in missing or not _named(folded, c)]
    return missing


def names_answer_form(prompt: str, choices: Sequence[str], strings: Sequence[str] = ()) -> bool:
    """Whether a prompt with its options hidden says what the answer is, as no_answer_form
    requires: it names every choice in its own words (``missing_choices``: "Reply with
    entailment, neutral or contradiction."); or it asks a yes/no question (a '?' or
    "whether") and every choice is yes, no or maybe (in any of our languages); or the choices
    are whole numbers and it names the lowest and the highest ("from 1 to 5").

    Words such as "which", "choose" or "option" do not count: with the options hidden they
    point at nothing, and "Which emotion is it?" does not give the 28 label strings."""
    polar = [c.strip().strip(".!?").casefold() for c in choices]
    if all(p in POLAR_WORDS for p in polar) and (
        "?" in prompt or _WHETHER.search(prompt.casefold())
    ):
        return True
    missing = missing_choices(prompt, choices, strings)
    numbers = [c.strip() for c in choices]
    if missing and numbers and all(n.lstrip("-").isdigit() for n in numbers):
        ordered = sorted(numbers, key=int)
        return ordered[0] not in missing and ordered[-1] not in missing
    return not missing


@dataclass(frozen=True)
class OptionList:
    """A lettered or numbered list of the record's choices found in a prompt."""

    style: Literal["letters", "numbers"]
    markers: list[str]  # A, B, ... or 1, 2, ...
    texts: list[str]  # the option texts
    lines: list[str]  # the whole lines ("(A) yes")
    start: int  # line index of the first option
    end: int  # line index after the last

    @property
    def noun(self) -> str:
        return "letter" if self.style == "letters" else "number"


_LETTER_FORMS = ("({m}) ", "{m}) ", "{m}. ", "{m}: ")
_NUMBER_FORMS = ("{m}. ", "{m}) ", "({m}) ")
_FIRST_OPTION = re.compile(r"^(?:\(A\) |A\) |A\. |A: |1\. |1\) |\(1\) )", re.MULTILINE)


def find_option_list(prompt: str, choices: Sequence[str]) -> OptionList | None:
    """The last list in ``prompt`` whose lines are lettered ("(A) x", "A) x", "A. x") or
    numbered ("1. x", "1) x") in order, one per choice, and whose texts, markers or whole lines
    are ``choices`` (a record's ``answer_choices``: the texts, or the markers or lines when the
    target is the marker or both)."""
    n = len(choices)
    if n == 0 or not _FIRST_OPTION.search(prompt):
        return None
    lines = prompt.split("\n")
    wanted = [c.strip() for c in choices]
    found = None
    for start in _FIRST_OPTION.finditer(prompt):
        i = prompt.count("\n", 0, start.start())
        if i + n > len(lines):
            break
        first = lines[i]
        for style, forms, marker in (
            ("letters", _LETTER_FORMS, letter_marker),
            ("numbers", _NUMBER_FORMS, lambda j: str(j + 1)),
        ):
            form = next((f for f in forms if first.startswith(f.format(m=marker(0)))), None)
            if form is None:
                continue
            markers = [marker(j) for j in range(n)]
            prefixes = [form.format(m=m) for m in markers]
            run = lines[i : i + n]
            if not all(line.startswith(p) for line, p in zip(run, prefixes, strict=True)):
                continue
            texts = [line[len(p) :].strip() for line, p in zip(run, prefixes, strict=True)]
            whole = [line.strip() for line in run]
            if wanted in (texts, markers, whole):
                found = OptionList(style, markers, texts, whole, i, i + n)  # type: ignore[arg-type]
    return found


def target_kinds(target: str, found: OptionList) -> set[str]:
    """What the target of a record with ``found`` options is: "marker", "text", "both" (one
    or more when a text equals its marker), or "other"."""
    target = target.strip()
    kinds = set()
    if target in found.markers:
        kinds.add("marker")
    if target in found.texts:
        kinds.add("text")
    if target in found.lines or any(
        target == f"{m} {t}" or target == f"({m}) {t}" or target == f"{m}. {t}"
        for m, t in zip(found.markers, found.texts, strict=True)
    ):
        kinds.add("both")
    return kinds or {"other"}


_ASK_BOTH = re.compile(
    r"\b(?:letter|number|marker)s?\b.{0,40}\b(?:and|followed by|plus|then)\b.{0,30}"
    r"\b(?:text|words|wording)\b"
)
_ASK_TEXT = re.compile(
    r"\bnot (?:its|the|their|a|just the) (?:letter|number)"
    r"|\b(?:text|words|wording) of the (?:option|choice|answer)"
    r"|\boption'?s (?:text|words)"
)
_ASK_MARKER = re.compile(
    r"\b(?:letter|number)s? only\b|\b(?:only|just) (?:the|its|a|one) (?:letter|number)\b"
    r"|\b(?:answer|reply|respond|give|write)\b.{0,30}\b(?:letter|number)\b"
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n")


@functools.cache
def _locale_forms() -> dict[str, str]:
    """Every answer-form line of the renderer (locales.yaml), in every language -> target."""
    out: dict[str, str] = {}
    for loc in all_locales():
        for forms in loc.answer_forms.values():
            for target, phrases in forms.items():
                for phrase in phrases:
                    out[phrase] = target
    return out


def asked_forms(text: str, markers: Sequence[str] = ()) -> set[str]:
    """What ``text`` (a prompt without its option lines) asks the answer to be: "marker",
    "text" and/or "both"; empty when it does not say. The renderer's own answer-form lines are
    read in every language; a template's own sentences in English ("Answer with the letter
    only.", "... not its number.", "Reply A or B.")."""
    found = set()
    for phrase, target in _locale_forms().items():
        if phrase in text:
            found.add(target)
            text = text.replace(phrase, "\n")
    for sentence in _SENTENCE.split(text.casefold()):
        if _ASK_BOTH.search(sentence):
            found.add("both")
        elif _ASK_TEXT.search(sentence):
            found.add("text")
        elif _ASK_MARKER.search(sentence):
            found.add("marker")
    if markers and len(markers) >= 2 and "marker" not in found:
        listed = ", ".join(markers[:-1])
        for last in (f" or {markers[-1]}", f", or {markers[-1]}"):
            if listed + last in text or f"({markers[0]}) or ({markers[1]})" in text:
                found.add("marker")
    return found


_OWN_NUMBERING = re.compile(r"\s*\(?\d{1,2}[.)]\s")


def _check_catalog_record(
    renderer: Renderer,
    example: Example,
    strings: list[str],
    c: CompiledTemplate,
    draw: Draw,
    prompt: str,
    output: str,
    choices: list[str] | None,
    report: _Report,
) -> None:
    """The per-record catalog rules: data artefacts in the output, doubled punctuation the
    template or its options block makes, a classification prompt that does not say what to
    answer, and lettered/numbered options whose target disagrees with the prompt."""
    template, eid, form = c.template, example.example_id, _form(draw.options_shown)
    for _, what, snippet in data_artefacts(output):
        message = (
            f"{form}: the output has {what} ({snippet!r}) at {example.locator}: clean the data "
            "with a transform in the source spec (strip_calculator_annotations, text_before/"
            "text_after '####', detokenize, replace), not in the template"
        )
        if what == PTB_SPACING:
            report.spacing.setdefault(c.id, []).append((eid, message))
        else:
            report.add(DATA_ARTEFACT, template, message, eid, kind=what)
    _check_punctuation(renderer, example, strings, c, draw, prompt, output, report)
    spec = template.spec
    if (
        choices
        and not draw.options_shown
        and not spec.inverted
        and not names_answer_form(prompt, choices, strings)
    ):
        missing = missing_choices(prompt, choices, strings)
        named = len(choices) - len(missing)
        report.add(
            NO_ANSWER_FORM,
            template,
            f"options hidden: the prompt does not say what to answer: it names {named} of "
            f"its {len(choices)} choices (not {_short(', '.join(map(repr, missing)), 60)}) "
            f"and asks no yes/no question ({example.locator}). Say the answer form in the "
            "instruction ('Answer yes or no.', 'Reply with positive or negative.'); for "
            "many labels set choices_in_prompt: true and list them with {{ options }}",
            eid,
        )
    if choices and draw.options_shown:
        _check_option_list(example, strings, c, prompt, output, choices, report)


def _check_punctuation(
    renderer: Renderer,
    example: Example,
    strings: list[str],
    c: CompiledTemplate,
    draw: Draw,
    prompt: str,
    output: str,
    report: _Report,
) -> None:
    """Doubled punctuation and spaces before punctuation that the example's own text does not
    have: the template (a '.' after a field that ends in one) or the options block made them."""
    language = renderer.prompt_language(c, example)
    for name, text in (("prompt", prompt), ("output", output)):
        hack = _PLURAL_HACK.search(text) if "(s)" in text else None
        if hack and not any(hack.group(0).casefold() in v.casefold() for v in strings):
            report.add(
                PLURAL_HACK,
                c.template,
                f"{_form(draw.options_shown)}: {name} line {_line(text, hack.start())} has an "
                f"'(s)' plural ({_snippet(text, hack.start(), hack.end())!r}) that the template "
                f"writes ({example.locator}): pick the word's form with Jinja "
                "({% if n == 1 %}triple{% else %}triples{% endif %}) or rephrase",
                example.example_id,
            )
        for what, m in doubled_punctuation(text, language):
            if any(m.group(0) in value for value in strings):
                continue  # the data's own (PTB text, "..")
            if what.startswith("a space") and _in_data(text, m.end() - 1, example.fields):
                continue  # the data's punctuation after a space of the template ("Text: !ok")
            block = -1
            if name == "prompt" and draw.options_shown:
                opening = text.rfind(draw.opening) if draw.opening else -1
                block = max(opening, text.rfind("OPTIONS:"))
            if 0 <= block <= m.start():
                by = "the options block adds it (a choice ending in punctuation in this style)"
            else:
                by = "the template adds it (a field that ends in '.' needs none after it)"
            report.add(
                DOUBLED_PUNCTUATION,
                c.template,
                f"{_form(draw.options_shown)}: {name} line {_line(text, m.start())} has {what} "
                f"({_snippet(text, m.start(), m.end())!r}), which the example's own text does "
                f"not have: {by} ({example.locator})",
                example.example_id,
                kind=what,
            )


_KIND_WORDS = {
    "marker": "the {noun} only",
    "text": "the option's text",
    "both": "the {noun} and the text",
    "other": "neither the option's {noun} nor its text",
}


def _check_option_list(
    example: Example,
    strings: list[str],
    c: CompiledTemplate,
    prompt: str,
    output: str,
    choices: list[str],
    report: _Report,
) -> None:
    """With lettered or numbered options, the prompt says once whether to answer with the
    marker, the text or both, and the target obeys it; a numbered block does not sit among
    the template's own numbered lines."""
    found = find_option_list(prompt, choices)
    if found is None:
        return
    lines = prompt.split("\n")
    rest = "\n".join(lines[: found.start] + lines[found.end :])
    asked = asked_forms(rest, found.markers)
    kinds = target_kinds(output, found)
    noun = found.noun
    problem = None
    if not asked:
        problem = f"the prompt never says whether to answer with the {noun} or the text"
    elif len(asked) > 1:
        problem = "the prompt asks for " + " and for ".join(
            _KIND_WORDS[a].format(noun=noun) for a in sorted(asked)
        )
    elif not asked & kinds:
        (only,) = asked
        problem = (
            f"the prompt asks for {_KIND_WORDS[only].format(noun=noun)}, but the target "
            f"{_short(output, 40)!r} is {_KIND_WORDS[min(kinds)].format(noun=noun)}"
        )
    if problem is not None:
        report.add(
            OPTION_TARGET,
            c.template,
            f"options shown ({found.style}): {problem} ({example.locator}). With the "
            "renderer's block, leave the answer form to option_target and do not state it in "
            "the template; a template that writes its own lettered list must say how to answer, "
            "and its output must obey it",
            example.example_id,
        )
    if found.style == "numbers":
        for line in lines[: found.start] + lines[found.end :]:
            if _OWN_NUMBERING.match(line) and not any(line.strip() in v for v in strings):
                report.add(
                    NUMBERING_CLASH,
                    c.template,
                    f"options shown (numbers): the prompt numbers lines of its own "
                    f"({_short(line.strip(), 40)!r}) besides the numbered options "
                    f"({example.locator}): set option_styles without numbers",
                    example.example_id,
                )
                break


def _check_catalog_template(
    renderer: Renderer, c: CompiledTemplate, seen: list[_Seen], report: _Report
) -> None:
    """The catalog rules measured over the whole sample: copies, label leaks, degenerate
    inversions."""
    if not seen:
        return
    _report_spacing(c.template, c.id, len(seen), report)
    spec = c.template.spec
    if not c.has_choices:
        _check_copy(renderer, c, seen, report)
        if not spec.inverted:
            _check_label_output(renderer, c, seen, report)
    elif not spec.inverted:
        _check_label_leak(renderer, c, seen, report)
    if spec.inverted and len(seen) >= INVERTED_MIN_RECORDS:
        distinct = len({s.prompt for s in seen})
        if distinct < len(seen) * INVERTED_MIN_SHARE:
            report.add(
                DEGENERATE_INVERTED,
                c.template,
                f"an inverted template with {distinct} distinct prompt(s) for {len(seen)} "
                f"examples (fewer than a tenth; e.g. {seen[0].example.locator}): one prompt then "
                "stands for many different targets. Condition it on the input too: give the "
                "first words, a topic, a title, the entity or the answer",
                seen[0].example.example_id,
            )


def _report_spacing(template: Template | None, key: str, rows: int, report: _Report) -> None:
    """PTB spacing in outputs, once it is the data's habit (PTB_SPACING_SHARE of the rows)."""
    found = report.spacing.get(key, [])
    if not found or len({eid for eid, _ in found}) < PTB_SPACING_SHARE * rows:
        return
    for eid, message in found:
        file = report.source.path if template is None else None
        report.add(DATA_ARTEFACT, template, message, eid, file=file, kind=PTB_SPACING)


def _is_copy(prompt: str, output: str) -> bool:
    out = " ".join(output.split())
    if not out:
        return False
    whole = " ".join(prompt.split())
    return out == whole or (len(out.split()) >= COPY_MIN_WORDS and out in whole)


def _check_copy(
    renderer: Renderer, c: CompiledTemplate, seen: list[_Seen], report: _Report
) -> None:
    """copy_task: the output equals the prompt, or appears in it verbatim (from
    COPY_MIN_WORDS words), in most of the sample's examples; unless the template says it
    extracts a span (metrics squad, or exact_match with a passage field in the prompt)."""
    spec = c.template.spec
    metrics = {m.casefold() for m in spec.metadata.metrics}
    if metrics & EXTRACTIVE_METRICS:
        return
    if "exact_match" in metrics and (
        _prompt_fields(renderer.env, renderer.source, c.template) & PASSAGE_FIELDS
    ):
        return
    copies = [s for s in seen if _is_copy(s.prompt, s.output)]
    if len(copies) <= COPY_SHARE * len(seen):
        return
    first = copies[0]
    how = "is" if " ".join(first.output.split()) == " ".join(first.prompt.split()) else "is in"
    report.add(
        COPY_TASK,
        c.template,
        f"the output is copied from the prompt in {len(copies)} of {len(seen)} examples (at "
        f"{first.example.locator} it {how} the prompt: {_short(first.output, 50)!r}): a copy "
        "teaches nothing. Ask for something the prompt does not hold; if the answer is a span "
        "of a passage on purpose (extractive QA), say so with metadata.metrics: [squad]",
        first.example.example_id,
    )


def _check_label_output(
    renderer: Renderer, c: CompiledTemplate, seen: list[_Seen], report: _Report
) -> None:
    """no_answer_form for a classification template without answer_choices: its output is
    made from a label feature (``{{ names.label }}``, joined label lists) and takes few values
    on the sample (at most a fifth as many as rows), so those values are its choices, and
    every prompt must say them as ``names_answer_form`` asks (BANKING77's 77 intent strings,
    an emotion list)."""
    features = renderer.source.spec.features
    labels = {
        name
        for name, kind in features.items()
        if isinstance(kind, (ClassLabel, SequenceOfClassLabel))
    }
    used = _fields_in(renderer.env, renderer.source, _output_texts(c.template)) & labels
    if not used or len(seen) < 2:
        return
    multi = any(isinstance(features[name], SequenceOfClassLabel) for name in used)
    values: set[str] = set()
    for s in seen:
        parts = _LIST_SPLIT.split(s.output) if multi else [s.output]
        values.update(p.strip() for p in parts if p.strip())
    if not 2 <= len(values) <= len(seen) / 5:
        return
    choices = sorted(values)
    for s in seen:
        if names_answer_form(s.prompt, choices, example_strings(s.example.fields)):
            continue
        missing = missing_choices(s.prompt, choices, example_strings(s.example.fields))
        report.add(
            NO_ANSWER_FORM,
            c.template,
            f"the output is made from the label field {', '.join(map(repr, sorted(used)))} "
            f"({len(choices)} values on the sample), but the template has no answer_choices "
            f"and its prompt names "
            f"{len(choices) - len(missing)} of them ({s.example.locator}): the exact label "
            "strings are never shown. Declare answer_choices and show them (choices_in_prompt: "
            "true with {{ options }}), or say the labels in the instruction",
            s.example.example_id,
        )


# A multi-label output lists its labels with commas, semicolons or one per line.
_LIST_SPLIT = re.compile(r"[,;\n]")


def _output_texts(template: Template) -> list[str | None]:
    spec = template.spec
    texts = [spec.output, spec.jinja.split("|||", 1)[-1] if spec.jinja else None]
    for tr in spec.translations.values():
        texts += [tr.output, tr.jinja.split("|||", 1)[-1] if tr.jinja else None]
    return texts


def _prompt_fields(env: jinja2.Environment, source: Source, template: Template) -> set[str]:
    """The fields a template's prompt shows (by name, ``names.x``, ``example.x`` or
    ``example['x']``), in every translation; for promptsource's ``jinja``, the part before
    '|||'."""
    spec = template.spec
    texts = [spec.instruction, spec.input, spec.jinja.split("|||")[0] if spec.jinja else None]
    for tr in spec.translations.values():
        texts += [tr.instruction, tr.input, tr.jinja.split("|||")[0] if tr.jinja else None]
    return _fields_in(env, source, texts)


def _fields_in(env: jinja2.Environment, source: Source, texts: Sequence[str | None]) -> set[str]:
    """The source's fields that ``texts`` use (by name, ``names.x``, ``example.x``, ...)."""
    known = set(source.spec.field_names)
    found: set[str] = set()
    for text in texts:
        if not text:
            continue
        try:
            ast = env.parse(text)
        except Exception:  # the static checks report it
            continue
        for node in ast.find_all((nodes.Name, nodes.Getattr, nodes.Getitem)):
            name: Any = None
            if isinstance(node, nodes.Name) and node.ctx == "load":
                name = node.name
            elif isinstance(node, (nodes.Getattr, nodes.Getitem)) and (
                isinstance(node.node, nodes.Name) and node.node.name in ("names", "example")
            ):
                if isinstance(node, nodes.Getattr):
                    name = node.attr
                elif isinstance(node.arg, nodes.Const):
                    name = node.arg.value
            if isinstance(name, str) and name in known:
                found.add(name)
    return found


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _loo_accuracy(values: Sequence[Any], targets: Sequence[str]) -> float:
    """How often the commonest target among the OTHER rows with the same value is the row's
    own (ties count as misses): leave-one-out, so a value seen once predicts nothing."""
    groups: dict[Any, Counter[str]] = defaultdict(Counter)
    for v, t in zip(values, targets, strict=True):
        groups[v][t] += 1
    tops = {}
    for v, counts in groups.items():
        common = counts.most_common(2)
        tops[v] = (common[0][1], common[1][1] if len(common) > 1 else 0)
    correct = 0
    for v, t in zip(values, targets, strict=True):
        first, second = tops[v]
        if groups[v][t] == first and first - 1 > second:
            correct += 1
    return correct / len(targets)


def _check_label_leak(
    renderer: Renderer, c: CompiledTemplate, seen: list[_Seen], report: _Report
) -> None:
    """label_leak: a field the prompt shows besides the main text, with few short values on
    the sample, from which the answer can be read off: the commonest answer per value
    (leave-one-out) is right for LEAK_ACCURACY of the rows and makes at most LEAK_ERROR_SHARE
    of the errors of always giving the commonest answer (Breaking NLI's change category: 98%
    against 87%)."""
    n = len(seen)
    if n < LEAK_MIN_ROWS:
        return
    targets = [s.output for s in seen]
    baseline = _loo_accuracy([None] * n, targets)
    if baseline >= 1:
        return
    majority = Counter(targets).most_common(1)[0][0]
    for name in sorted(_prompt_fields(renderer.env, renderer.source, c.template)):
        values = [_hashable(s.example.fields.get(name)) for s in seen]
        distinct = set(values)
        if not 2 <= len(distinct) <= min(LEAK_MAX_VALUES, n // 5):
            continue
        if sum(len(str(v)) for v in values) / n > LEAK_MAX_CHARS:
            continue
        accuracy = _loo_accuracy(values, targets)
        if accuracy < LEAK_ACCURACY or (1 - accuracy) > LEAK_ERROR_SHARE * (1 - baseline):
            continue
        report.add(
            LABEL_LEAK,
            c.template,
            f"the prompt shows {name!r} ({len(distinct)} values on the sample), and its value "
            f"alone gives the answer for {accuracy:.0%} of the {n} sample rows (always "
            f"answering {_short(majority, 30)!r}: {baseline:.0%}): a model can learn the label "
            f"from it without reading the text (e.g. {seen[0].example.locator}). Leave "
            f"{name!r} out of this template's prompt",
            seen[0].example.example_id,
            kind=name,
        )


def _check_rationales(
    renderer: Renderer, compiled: list[CompiledTemplate], examples: list[Example], report: _Report
) -> None:
    """Data artefacts in the source's rationales, as chain-of-thought records carry them
    (after the source's transforms and rationale_rules), once per example."""
    if not renderer.has_rationale:
        return
    cot = [c for c in compiled if c.template.spec.cot and not c.template.spec.inverted]
    if not cot:
        return  # no chain-of-thought record is ever made
    c = cot[0]
    checked = 0
    for example in examples:
        try:
            rendered = renderer.render_with(example, c, Draw("cot", False, 0, "", ""))
        except Exception:  # kept out of the CoT pool by a rule, or the template's own error
            continue
        checked += 1
        output = rendered.turns[-1][1]
        prefix = locale_for(renderer.prompt_language(c, example)).cot_answer_prefix
        cut = output.rfind(prefix)
        rationale = output[:cut] if cut >= 0 else output
        for _, what, snippet in data_artefacts(rationale):
            message = (
                f"the rationale of chain-of-thought records has {what} ({snippet!r}) at "
                f"{example.locator}: clean it with a transform in the source spec, or keep "
                "such rows out of the chain-of-thought pool with rationale_rules"
            )
            if what == PTB_SPACING:
                report.spacing.setdefault("", []).append((example.example_id, message))
                continue
            report.add(
                DATA_ARTEFACT,
                None,
                message,
                example.example_id,
                file=renderer.source.path,
                kind=what,
            )
    report.checked[""] = checked
    _report_spacing(None, "", checked, report)


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
