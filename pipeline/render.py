"""Turn one example into records: sandboxed Jinja, compiled once, every choice seeded.

Templates are user input. They are rendered in an immutable sandbox with strict undefined, so a
misspelled field is an error (promptsource renders it as empty text) and a template cannot reach
Python internals. Any failure becomes a reject for that one record, never a crashed run.

For each (example, template) pair the renderer draws, from the recipe seed and stable ids only:
the variant (zero-shot, few-shot, chain-of-thought; inverted templates stay inverted), whether
the options are shown and in which style, the few-shot exemplars, and the generator behind the
template helpers ``choice``/``shuffle``. The same ids give the same record on any worker.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.meta
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context

from . import fastpath, helpers
from .catalog import Source, Template
from .errors import CatalogError
from .load import Example
from .locales import Locale, locale_for
from .models import (
    VARIANTS,
    ClassLabel,
    OptionStyle,
    Recipe,
    RecordRule,
    SequenceOfClassLabel,
    SourceSpec,
    TemplateSpec,
)
from .options import OptionsBlock, format_options, names_choice, names_within, styles_for
from .sandbox import (
    Deadline,
    ObjectRendered,
    RenderLimit,
    Sandbox,
    install_limits,
    render_output,
)
from .seeding import Prefix, words
from .validate import has_template_syntax

if TYPE_CHECKING:
    from .columns import RecordColumns  # which imports this module

CHOICE_SEPARATOR = "|||"
# Rendered exemplar texts kept per renderer (see ``Renderer._exemplar_parts``).
EXEMPLAR_CACHE = 50_000
# Options blocks kept per renderer; past it the cache starts again (choices that differ per row).
BLOCK_CACHE = 4_096
# Chain-of-thought records end with this line (in the example's language: ``locales.yaml``);
# validation reads the answer after it. The English one, for English-only callers.
COT_ANSWER_PREFIX = "So the answer is: "
Renderable = Callable[[dict[str, Any]], str]
# Half of a UTF-16 pair on its own: Python holds it, no UTF-8 file or Arrow column can.
_SURROGATE = re.compile("[\ud800-\udfff]")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def make_environment() -> jinja2.Environment:
    """The one Jinja environment templates run in: sandboxed, strict, with our helpers."""
    env = Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    helpers.install(env)
    install_limits(env)  # after the helpers: their filters are wrapped too
    return env


class _Leave(Exception):
    """A record leaving ``Renderer.render_many``'s loop for ``render_with``'s path."""


class RenderError(Exception):
    def __init__(self, rule: str, message: str, template_id: str) -> None:
        # The message may quote template text or data: lone surrogates are written as escapes,
        # so it prints on any terminal and goes into the UTF-8 rejects file.
        super().__init__(printable(message))
        self.rule = rule
        self.template_id = template_id


def printable(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udXXX`` escapes, and memory addresses
    (``<function shuffle at 0x7f...>`` in an error about a key) left out: a reject's message is
    output too, the same on every run."""
    text = _ADDRESS.sub(" at 0x...", text)
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def rule_of(exc: Exception) -> str:
    """The reject rule for an exception raised while rendering."""
    if isinstance(exc, (RenderLimit, ObjectRendered)):
        return exc.rule
    if isinstance(exc, jinja2.UndefinedError):
        return "undefined"
    if isinstance(exc, SecurityError):
        return "sandbox"
    return "render_error"


def syntax_problem(exc: Exception, part: str | None = None) -> str:
    """Why a Jinja text does not compile: ``line N of its Jinja (part): message``, without the
    line when none is known (a nesting too deep for Python has none)."""
    what = f"its Jinja ({part})" if part else "its Jinja"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        if exc.lineno:
            return f"line {exc.lineno} of {what}: {exc.message}"
        return f"{what}: {exc.message}"
    return f"{what} cannot be compiled ({type(exc).__name__}: {exc})"


def compile_problem(env: jinja2.Environment, source: str) -> jinja2.TemplateSyntaxError | None:
    """The error compiling ``source`` raises, as a syntax error (any kind: Jinja syntax,
    nesting too deep for Python, a number literal too long), or None when it compiles."""
    try:
        compile_text(env, source)
    except jinja2.TemplateSyntaxError as exc:
        return exc
    except Exception as exc:  # the sandbox turns compile errors into syntax errors; belt and braces
        return jinja2.TemplateSyntaxError(f"cannot be compiled ({type(exc).__name__}: {exc})", 0)
    return None


def rationale_text(spec: SourceSpec) -> str | None:
    """A source's rationale as Jinja: a bare feature name becomes ``{{ name }}``."""
    rationale = spec.rationale
    if rationale is None:
        return None
    return rationale if "{" in rationale else "{{ " + rationale + " }}"


@dataclass(slots=True)  # not frozen: built for every record, and frozen init is 3x slower
class Parts:
    """A template's texts for one example, before variants are applied."""

    instruction: str
    input: str | None
    output: str
    system: str | None
    choices: list[str] | None


@dataclass(slots=True)
class Rendered:
    """One finished record's content: turns of (user, assistant), the last one the target."""

    template_id: str
    variant: str
    system: str | None
    turns: list[tuple[str, str]]
    answer_choices: list[str] | None
    gold_answers: list[str] | None = None


@dataclass(slots=True)
class _Plan:
    """What every zero-shot record of one template shares, worked out once per renderer: the
    constants ``Renderer.render_many``'s loop would otherwise look up for each record."""

    compiled: CompiledTemplate
    id: str
    base: str | None  # "zero_shot" or "inverted" when no record can draw another form
    variants: tuple[str, str]  # the variant without and with the options shown
    instruction: Renderable | None
    input: Renderable | None
    output: Renderable | None
    system: Renderable | None
    jinja: Renderable | None
    literal_choices: list[str] | None  # shared by the records that show no block: never edited
    literal_ascii: bool
    has_choices: bool
    has_gold: bool
    choices_in_prompt: bool
    uses_options: bool
    uses_rng: bool


@dataclass(slots=True)
class Draw:
    """Every per-record decision, drawn from the seed and stable ids."""

    base: str  # zero_shot | few_shot | cot | inverted
    options_shown: bool
    style_key: int  # picks the style among those that suit the record (``options.styles_for``)
    opening: str
    trigger: str
    style: OptionStyle | None = None  # a style forced by the caller (lint), else drawn


class CompiledTemplate:
    """A template's Jinja, compiled once per process.

    A syntax error is kept and reported on every record the template would have made.
    """

    def __init__(self, env: jinja2.Environment, template: Template) -> None:
        self.template = template
        # Plain attributes, not properties: read for every record.
        self.id: str = template.spec.id
        self.has_choices = template.spec.answer_choices is not None
        # Answer choices that are literal text (most are): stripped once, copied per record.
        self._literal_choices: list[str] | None = None
        self.error: RenderError | None = None
        self.uses_options = False
        self.uses_rng = False
        # Whether every text is literal or pure substitution (``fastpath``): such a render
        # has no loop to run away in, so it needs no timer (two system calls per record).
        self.bounded = False
        self._literals: list[str] = []
        self._named: dict[tuple[str, ...], bool] = {}
        self._parts: dict[str, Renderable | None] = {}
        self._trees: dict[str, jinja2.nodes.Template] = {}
        self._choices: list[Renderable] | Renderable | None = None
        self._gold: list[Renderable] | Renderable | None = None
        spec = template.spec
        texts = {
            "instruction": spec.instruction,
            "input": spec.input,
            "output": spec.output,
            "system": spec.system,
            "jinja": spec.jinja,
        }
        part = "instruction"
        try:
            parts: dict[str, Renderable | None] = {}
            for part, text in texts.items():
                parts[part] = self._compile(env, text) if text is not None else None
            self._parts = parts
            part = "answer_choices"
            self._choices = self._compile_list(env, spec.answer_choices)
            if isinstance(spec.answer_choices, list) and all(
                is_literal(c) for c in spec.answer_choices
            ):
                self._literal_choices = [c.strip() for c in spec.answer_choices]
            part = "gold_answers"
            self._gold = self._compile_list(env, spec.gold_answers)
            part = "the template"
            all_texts = [t for t in texts.values() if t]
            all_texts += _list_texts(spec.answer_choices) + _list_texts(spec.gold_answers)
            # What each text names (literal text names nothing), from its parsed tree.
            trees = {t: self._trees[t] for t in all_texts if not is_literal(t)}
            names = {t: jinja2.meta.find_undeclared_variables(tree) for t, tree in trees.items()}
            self.uses_options = any(
                "options" in names.get(t, ())
                for k, t in texts.items()
                if t and k in ("instruction", "input", "jinja")
            )
            used = set().union(*names.values())
            # What the prompt prints whatever the data: top-level literal text of the
            # instruction and input (not inside a condition or loop), casefolded.
            self._literals = [
                node.data.casefold()
                for key in ("instruction", "input")
                if texts[key]
                for node in _top_level_text(trees.get(texts[key] or ""), texts[key] or "")
            ]
            # The per-record generator is built only for templates that draw from it.
            self.uses_rng = helpers.draws_randomness(used, all_texts)
            self.bounded = all(is_bounded(env, t, tree) for t, tree in trees.items())
        except Exception as exc:  # every compile error, whatever its class, is this template's
            self.error = RenderError(
                "template_syntax",
                f"{template.path}: template {spec.id!r}: {syntax_problem(exc, part)}",
                spec.id,
            )

    def _compile(self, env: jinja2.Environment, source: str) -> Renderable:
        # Parsed once: the tree serves the fast path here and what the template names below.
        if is_literal(source):
            return compile_text(env, source)
        tree = self._trees.get(source)
        if tree is None:
            tree = self._trees[source] = env.parse(source)
        return compile_text(env, source, tree=tree)

    def _compile_list(
        self, env: jinja2.Environment, value: str | list[str] | None
    ) -> list[Renderable] | Renderable | None:
        """A list field (answer_choices, gold_answers): one text split on '|||' after it
        renders, or a list of texts."""
        if value is None:
            return None
        if isinstance(value, str):
            return self._compile(env, value)
        return [self._compile(env, v) for v in value]


    def always_names(self, choices: Sequence[str]) -> bool:
        """Whether the template's own literal text names every choice, so ``shows_all`` holds
        for every prompt it makes (checked once per choice list, not once per record)."""
        key = tuple(choices)
        found = self._named.get(key)
        if found is None:
            found = self._named[key] = all(
                any(names_within(lit, c) for lit in self._literals) for c in choices
            )
        return found

    def render_choices(self, context: dict[str, Any]) -> list[str] | None:
        if self._literal_choices is not None and self.error is None:
            return list(self._literal_choices)
        return self._render_list("answer_choices", self._choices, context)

    def render_gold(self, context: dict[str, Any]) -> list[str] | None:
        """The template's gold answers for this example: each stripped, empty ones and repeats
        left out (a question with answers "Paris" and "Paris" has one); None without any."""
        texts = self._render_list("gold_answers", self._gold, context)
        return None if texts is None else list(dict.fromkeys(t for t in texts if t))

    def _render_list(
        self, part: str, compiled: list[Renderable] | Renderable | None, context: dict[str, Any]
    ) -> list[str] | None:
        if self.error is not None:
            raise self.error
        try:
            if compiled is None:
                return None
            if isinstance(compiled, list):
                return [c(context).strip() for c in compiled]
            return [c.strip() for c in compiled(context).split(CHOICE_SEPARATOR)]
        except Exception as exc:
            raise self._fail(part, exc) from None

    def render_parts(self, context: dict[str, Any]) -> Parts:
        """Render the texts against a context that already holds ``answer_choices``/``options``."""
        if self.error is not None:
            raise self.error
        fns = self._parts
        part = "jinja"
        try:
            fn = fns["jinja"]
            if fn is not None:
                instruction, output = self._split_jinja(fn(context).strip())
                input_text = None
            else:
                part = "instruction"
                instruction = fns["instruction"](context).strip()  # type: ignore[misc]
                part = "input"
                fn = fns["input"]
                input_text = fn(context).strip() if fn is not None else None
                part = "output"
                output = fns["output"](context).strip()  # type: ignore[misc]
            part = "system"
            fn = fns["system"]
            system = fn(context).strip() if fn is not None else None
        except RenderError:
            raise
        except Exception as exc:
            raise self._fail(part, exc) from None
        return Parts(instruction, input_text or None, output, system, context["answer_choices"])

    def _split_jinja(self, text: str) -> tuple[str, str]:
        # promptsource's contract: the rendered text is prompt ||| target.
        pieces = [p.strip() for p in text.split(CHOICE_SEPARATOR)]
        if len(pieces) > 2:
            raise RenderError(
                "render_error",
                f"{self.template.path}: template {self.id!r}: jinja: rendered "
                f"{len(pieces) - 1} '|||' separators, expected one",
                self.id,
            )
        return pieces[0], pieces[1] if len(pieces) == 2 else ""

    def _fail(self, part: str, exc: Exception) -> RenderError:
        if isinstance(exc, RenderError):
            return exc
        t = self.template
        return RenderError(
            rule_of(exc),
            f"{t.path}: template {t.spec.id!r}: {part}: {type(exc).__name__}: {exc}",
            t.spec.id,
        )


def _top_level_text(tree: jinja2.nodes.Template | None, text: str) -> list[Any]:
    """The literal pieces a text always prints: all of a literal text, else the TemplateData
    of its top-level output nodes."""
    if tree is None:
        return [jinja2.nodes.TemplateData(text)]
    return [
        child
        for node in tree.body
        if isinstance(node, jinja2.nodes.Output)
        for child in node.nodes
        if isinstance(child, jinja2.nodes.TemplateData)
    ]


def _list_texts(value: str | list[str] | None) -> list[str]:
    """The Jinja texts of a list field: one '|||' text, or each item."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def is_literal(source: str) -> bool:
    """Whether ``source`` has no Jinja syntax at all (``compile_text`` returns it as it is)."""
    return not any(token in source for token in ("{{", "{%", "{#"))


def is_bounded(
    env: jinja2.Environment, source: str, tree: jinja2.nodes.Template | None = None
) -> bool:
    """Whether ``compile_text`` renders ``source`` without Jinja (a literal, or substitution
    only): its time is then bounded by its output's, which the budget bounds. ``tree``: the
    text already parsed by ``env``."""
    if is_literal(source):
        return True
    return fastpath.plan(env, source, dict(env.globals), tree) is not None


def compile_text(
    env: jinja2.Environment,
    source: str,
    *,
    fast: bool = True,
    tree: jinja2.nodes.Template | None = None,
) -> Renderable:
    """One Jinja text as a function of a context dict.

    Literal text (no Jinja syntax: most answer choices) skips Jinja entirely. A text that is
    pure substitution (names, ``a.b``, ``a[k]``, context-free filters, conditions:
    ``fastpath.plan``) is rendered as plain string building with the sandbox's own lookups,
    filters and budget, so its output and errors are Jinja's (``fast=False``: always Jinja, the
    reference the tests compare against); Jinja compiles it only if a caller hands it a context
    that is not a plain dict. Otherwise the globals are merged into the context in one dict and
    handed to Jinja as a shared context, which skips ``Template.render``'s per-call copy of the
    globals through a ChainMap: that copy was most of the render time in profiles.
    ``tree``: the text already parsed by ``env`` (parsing raises the syntax errors Jinja's
    compile would).
    """
    if is_literal(source):
        return lambda context: source
    if fast:
        if tree is None:
            tree = env.parse(source)
        program = fastpath.plan(env, source, dict(env.globals), tree)
        if program is not None:
            # Jinja's code generation and Python's compile of the fast path's subset cannot
            # fail once the text has parsed: the subset has no tests, unknown filters, blocks
            # or assignments, and is at most fastpath's depth deep. So they wait until needed.
            return fastpath.compile_program(env, program, _when_needed(env, source))
    return _jinja(env, source)


def _jinja(env: jinja2.Environment, source: str) -> Renderable:
    template = env.from_string(source)
    global_vars = dict(template.globals)
    root = template.root_render_func
    name, blocks = template.name, template.blocks

    def render(context: dict[str, Any]) -> str:
        # The Context is built directly: Template.new_context would turn the globals ChainMap
        # into a set on every call, and they are already merged into the context dict here.
        ctx = Context(env, {**global_vars, **context}, name, blocks)
        # Counted as it is produced: a runaway loop stops at the limit, not at memory's end;
        # and everything the render builds on the way counts against one budget.
        return render_output(root(ctx))

    return render


def _when_needed(env: jinja2.Environment, source: str) -> Renderable:
    compiled: list[Renderable] = []

    def render(context: dict[str, Any]) -> str:
        if not compiled:
            compiled.append(_jinja(env, source))
        return compiled[0](context)

    return render


def template_context(source: Source, example: Example) -> dict[str, Any]:
    """What a template sees: the features by name (Hub types), ``names`` for ClassLabel
    features, and ``example``, the same fields as one mapping (for names like ``A-coref`` that
    are not Jinja identifiers)."""
    names: dict[str, Any] = {}
    for fname, ftype in source.spec.features.items():
        value: Any = example.fields.get(fname)
        # Loaded examples always hold valid label ints; examples given to render_one may not,
        # and then `names.<feature>` is simply undefined (a reject, if a template uses it).
        if isinstance(ftype, ClassLabel) and _is_index(value, ftype.names):
            names[fname] = ftype.names[value]
        elif (
            isinstance(ftype, SequenceOfClassLabel)
            and isinstance(value, list)
            and all(_is_index(v, ftype.sequence.names) for v in value)
        ):
            names[fname] = [ftype.sequence.names[v] for v in value]
    return {**example.fields, "names": names, "example": example.fields}


def _prompt_language(spec: TemplateSpec, language: str) -> str:
    if language in spec.translations or language.split("-")[0] in spec.translations:
        return language
    languages = spec.metadata.languages
    if not languages or language in languages or language.split("-")[0] in languages:
        return language
    return languages[0]


def _is_index(value: Any, names: list[str]) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names)


class Renderer:
    """Renders examples of one source with its templates under one recipe.

    ``pool`` holds the examples few-shot exemplars are drawn from: the source's loaded train
    examples (or an eval source's exemplar pool).
    """

    def __init__(
        self,
        source: Source,
        templates: Sequence[Template],
        recipe: Recipe,
        pool: Sequence[Example] = (),
    ) -> None:
        self.env = make_environment()
        self.source = source
        self.recipe = recipe
        self.seed = recipe.seed
        # Every draw hashes (seed, purpose, source, ...ids): the fixed head is hashed once.
        self._keys = {
            purpose: Prefix(self.seed, purpose, source.name)
            for purpose in (
                "templates", "draw", "template-rng", "gold", "rationale-rng", "fewshot",
                "fewshot-pattern",
            )
        }  # fmt: skip
        self._draw_keys = self._keys["draw"]
        v = recipe.variants
        self._zero_shot_only = v.few_shot <= 0 and v.cot <= 0 and v.few_shot_cot <= 0
        self._deadline = Deadline(recipe.limits.max_render_seconds)
        # (template, row language) -> the prompt's language and its locale: fixed per pair.
        self._languages: dict[tuple[int, str], str] = {}
        self._locales: dict[tuple[int, str], Locale] = {}
        # (template, number of choices, language) -> the styles its records draw from; and the
        # options blocks built so far, by everything a block depends on (bounded).
        self._styles: dict[tuple[int, int, str], list[OptionStyle]] = {}
        self._blocks: dict[tuple[Any, ...], OptionsBlock] = {}
        self.templates = sorted(
            (CompiledTemplate(self.env, t) for t in templates), key=lambda c: c.id
        )
        # Per-language phrasings of a template, compiled when first needed.
        self._translated: dict[tuple[str, str], CompiledTemplate] = {}
        per = recipe.templates_per_example
        self.k = len(self.templates) if per == "all" else min(per, len(self.templates))
        # What an eval example is rendered with (FLAN evaluates a held-out task as posed).
        self._task_templates = [c for c in self.templates if c.template.spec.poses_task]
        # What ``render_many`` builds each template's records from, by ``id(compiled)``.
        self._plans = {id(c): self._plan(c) for c in self.templates}
        # Sorted by id, so exemplar draws depend on which examples are in the pool, not on the
        # order they arrived in. The pool holds train examples only (or an eval source's own
        # exemplar pool), whatever the query's split: no held-out answer reaches a prompt.
        # Exemplars are of the query's language: one pool per language, each sorted by id.
        self._pools: dict[str, list[Example]] = {}
        self._contexts: dict[str, dict[str, Any]] = {}
        # An exemplar's texts through a template that does not place {{ options }} depend on
        # the exemplar and the template alone (its draws are keyed by their ids): kept, as one
        # exemplar serves many queries. Bounded: cleared when full.
        self._exemplar_parts: dict[tuple[str, int], Parts] = {}
        # Whether an exemplar's own data may put Jinja delimiters into a few-shot prompt
        # (validation then takes them for data, not for a template left unrendered).
        self.pool_has_template_syntax = any(has_template_syntax(e.fields.values()) for e in pool)
        for ex in sorted(pool, key=lambda e: e.example_id):
            self._pools.setdefault(self.language_of(ex), []).append(ex)
        text = rationale_text(source.spec)
        self.has_rationale = text is not None
        self.rationale: Renderable | None = None
        # A rationale that does not compile is reported on every chain-of-thought record it
        # would have made (like a broken template), not raised here, where it would stop a run.
        self.rationale_error: str | None = None
        self.rationale_rng = False
        self._rationale_bounded = True
        if text is not None:
            try:
                self._rationale_bounded = is_bounded(self.env, text)
                self.rationale = compile_text(self.env, text)
                used = jinja2.meta.find_undeclared_variables(self.env.parse(text))
                self.rationale_rng = helpers.draws_randomness(used, [text])
            except Exception as exc:
                self.rationale_error = (
                    f"{source.path}: rationale of source {source.name!r}: {syntax_problem(exc)}"
                )
        # Rules on the rationale (junk annotator notes out of the CoT pool), compiled once; a
        # broken one is reported like a broken rationale.
        self.rationale_rules: list[tuple[RecordRule, Renderable]] = []
        for i, rule in enumerate(source.spec.rationale_rules):
            try:
                self.rationale_rules.append((rule, compile_text(self.env, rule.check)))
                self._rationale_bounded &= is_bounded(self.env, rule.check)
            except Exception as exc:
                self.rationale_error = (
                    f"{source.path}: rationale_rules[{i}] ({rule.name}) of source "
                    f"{source.name!r}: {syntax_problem(exc)}"
                )

    # -- decisions ----------------------------------------------------------------------------

    def choose(self, example: Example) -> list[CompiledTemplate]:
        """All templates, or k drawn from (seed, source, example id): never from arrival order.
        An eval example draws from the templates that pose the task itself (``eval_templates``)."""
        templates = self.templates
        if example.out_split == "eval" and self.recipe.eval_templates == "original_task":
            templates = self._task_templates or self.templates
        k = min(self.k, len(templates))
        if k == len(templates):
            return list(templates)
        rng = self._keys["templates"].rng(example.example_id)
        return sorted(rng.sample(templates, k), key=lambda c: c.id)

    def draw(self, example: Example, compiled: CompiledTemplate) -> Draw:
        # Five decisions from one hash: variant, options shown, style, opening, CoT trigger.
        k_variant, k_options, k_style, k_opening, k_trigger = self._draw_keys.keys(
            5, example.example_id, compiled.id
        )
        v = self.recipe.variants
        spec = compiled.template.spec
        if spec.inverted:
            base = "inverted"
        elif self._zero_shot_only:
            base = "zero_shot"  # the only form with a share: what the draw below gives
        else:
            shares = [("zero_shot", v.zero_shot)]
            if v.few_shot > 0 and self._has_exemplars(example):
                shares.append(("few_shot", v.few_shot))
            if v.cot > 0 and spec.cot and self.has_rationale:
                shares.append(("cot", v.cot))
            cot_shots = v.few_shot_cot > 0 and spec.cot and self.has_rationale
            if cot_shots and self._has_exemplars(example):
                shares.append(("few_shot_cot", v.few_shot_cot))
            base = shares[0][0] if len(shares) == 1 else _weighted(shares, k_variant / 2**64)
        # A template that writes its choices into its prompt shows them on every record.
        shown = compiled.has_choices and (
            spec.metadata.choices_in_prompt or k_options / 2**64 < v.options_shown
        )
        # The renderer's own sentences, in the prompt's language.
        words = self._locale(compiled, example)
        opening = words.option_openings[k_opening % len(words.option_openings)]
        trigger = words.cot_triggers[k_trigger % len(words.cot_triggers)]
        return Draw(base, shown, k_style, opening, trigger)

    def _locale(self, compiled: CompiledTemplate, example: Example) -> Locale:
        key = (id(compiled), example.language or self.source.spec.default_language)
        found = self._locales.get(key)
        if found is None:
            found = self._locales[key] = locale_for(self.prompt_language(compiled, example))
        return found

    def prompt_language(self, compiled: CompiledTemplate, example: Example) -> str:
        """The language the record's prompt is written in, which the renderer's own sentences
        follow: the template's translation for the example's language where it has one, else
        the example's language if the template says it is written in it, else the template's
        first language (an English template over Finnish rows says "Options:", not
        "Vaihtoehdot:")."""
        language = self.language_of(example)
        key = (id(compiled), language)
        found = self._languages.get(key)
        if found is None:
            found = self._languages[key] = _prompt_language(compiled.template.spec, language)
        return found

    def language_of(self, example: Example) -> str:
        """The example's language: its own (a multilingual source sets one per row or file),
        else the source's."""
        return example.language or self.source.spec.default_language

    def style_for(
        self, compiled: CompiledTemplate, draw: Draw, n_choices: int, language: str = "en"
    ) -> OptionStyle:
        """The record's option style: forced, or drawn among those that suit its choices."""
        if draw.style is not None:
            return draw.style
        key = (id(compiled), n_choices, language)
        styles = self._styles.get(key)
        if styles is None:
            styles = self._styles[key] = styles_for(
                self.recipe.variants.option_styles,
                compiled.template.spec.option_styles,
                n_choices,
                language,
            )
        return styles[draw.style_key % len(styles)]

    # -- rendering ----------------------------------------------------------------------------

    def render(self, example: Example) -> list[Rendered | RenderError]:
        out: list[Rendered | RenderError] = []
        # What the templates see of the example is the same for each of them: built once.
        context = template_context(self.source, example)
        for compiled in self.choose(example):
            try:
                draw = self.draw(example, compiled)
                out.append(self.render_with(example, compiled, draw, context))
            except RenderError as exc:
                out.append(exc)
        return out

    def render_many(
        self, examples: Iterable[Example], sink: RecordColumns
    ) -> list[tuple[Example, RenderError]]:
        """Every example's records into ``sink``, in the order ``render`` gives them (example by
        example, templates by id); returns the failures, each with its example.

        The stage's loop. A zero-shot record of a template whose texts are pure substitution
        (``_plan``) is built here inline, its draws from one hash and its constants from the
        plan; anything else, and any record that leaves the common case on the way (an error, a
        lone surrogate, no gold answer), is redone by ``render_with``, so there is one
        implementation of every rule and error and this loop only skips the calls between them.
        The tests compare both on every shipped template and sample row."""
        failures: list[tuple[Example, RenderError]] = []
        plans = self._plans
        everyone = [plans[id(c)] for c in self.templates] if self.k == len(self.templates) else None
        source, recipe = self.source, self.recipe
        options_shown = recipe.variants.options_shown
        system_default = recipe.system
        unpack = words(5).unpack
        gold_keys = self._keys["gold"]
        draw_head = self._draw_keys.head(8 * 5)
        add = sink.add_turns

        def general(example: Example, compiled: CompiledTemplate, context: dict[str, Any],
                    draw: Draw | None = None) -> None:  # fmt: skip
            try:
                if draw is None:
                    draw = self.draw(example, compiled)
                sink.add(example, self.render_with(example, compiled, draw, context))
            except RenderError as exc:
                failures.append((example, exc))

        for example in examples:
            base_context = template_context(source, example)
            eid = example.example_id
            if everyone is not None and example.out_split != "eval":
                chosen = everyone
            else:
                chosen = [plans[id(c)] for c in self.choose(example)]
            for plan in chosen:
                if isinstance(plan, CompiledTemplate):
                    general(example, plan, base_context)
                    continue
                compiled = plan.compiled
                base = plan.base
                draw: Draw | None = None
                if base is None:
                    draw = self.draw(example, compiled)
                    if draw.base != "zero_shot":
                        general(example, compiled, base_context, draw)
                        continue
                    base, shown = draw.base, draw.options_shown
                else:
                    # ``draw``'s five keys; the opening and trigger are looked up if a block
                    # needs them.
                    h = draw_head.copy()
                    h.update(f"{eid}\x1f{plan.id}".encode())
                    _, k_options, k_style, k_opening, k_trigger = unpack(h.digest())
                    shown = plan.has_choices and (
                        plan.choices_in_prompt or k_options / 2**64 < options_shown
                    )
                try:
                    context = dict(base_context)
                    if plan.uses_rng:
                        rng = self._keys["template-rng"].rng(eid, plan.id)
                        context.update(helpers.seeded_helpers(rng))
                    choices = plan.literal_choices
                    if choices is None:
                        choices = compiled.render_choices(context)
                    gold = None
                    if plan.has_gold:
                        gold = compiled.render_gold(context)
                        if gold is not None:
                            if not gold:
                                raise _Leave
                            context["gold_answers"] = gold
                            context["gold_answer"] = gold[gold_keys.key(eid, plan.id) % len(gold)]
                    block = None
                    if choices and shown and (not plan.choices_in_prompt or plan.uses_options):
                        if draw is None:
                            said = self._locale(compiled, example)
                            openings, triggers = said.option_openings, said.cot_triggers
                            draw = Draw(
                                base,
                                shown,
                                k_style,
                                openings[k_opening % len(openings)],
                                triggers[k_trigger % len(triggers)],
                            )
                        block = self._options_block(compiled, example, draw, choices)
                        context["options"] = block.text
                    else:
                        context["options"] = ""
                    context["answer_choices"] = choices
                    if plan.jinja is not None:
                        instruction, output = compiled._split_jinja(plan.jinja(context).strip())
                        user = instruction
                    else:
                        user = plan.instruction(context).strip()  # type: ignore[misc]
                        if plan.input is not None:
                            text = plan.input(context).strip()
                            if text:
                                user = f"{user}\n\n{text}"
                        output = plan.output(context).strip()  # type: ignore[misc]
                    system = plan.system(context).strip() if plan.system is not None else None
                except Exception:
                    general(example, compiled, base_context)
                    continue
                if block is not None:
                    if not plan.uses_options:
                        user = f"{user}\n\n{block.text}"
                    if output in choices:  # type: ignore[operator]
                        output = block.targets[choices.index(output)]  # type: ignore[union-attr]
                    choices = list(block.targets)
                    variant = plan.variants[1]
                elif choices and plan.choices_in_prompt and (
                    compiled.always_names(choices) or shows_all(user, choices)
                ):
                    variant = plan.variants[1]
                else:
                    variant = plan.variants[0]
                system = system or system_default
                if not (
                    user.isascii()
                    and output.isascii()
                    and (system is None or system.isascii())
                    and (
                        choices is None
                        or (plan.literal_ascii and block is None)
                        or "".join(choices).isascii()
                    )
                ):
                    rendered = Rendered(plan.id, variant, system, [(user, output)], choices, gold)
                    if _bad_text(rendered) is not None:
                        general(example, compiled, base_context)
                        continue
                add(example, plan.id, variant, system, ((user, output),), choices, gold)
        return failures

    def _plan(self, c: CompiledTemplate) -> _Plan | CompiledTemplate:
        """The template's ``_Plan``, or the template itself where its records take
        ``render_with``'s path: a broken, translated or unbounded template (the loop runs no
        timer). Under a recipe with few-shot or chain-of-thought forms the plan has no fixed
        form: each record's is drawn, and those drawn zero-shot still take the loop."""
        spec = c.template.spec
        if c.error is not None or spec.translations or not c.bounded:
            return c
        base = "inverted" if spec.inverted else "zero_shot" if self._zero_shot_only else None
        fns = c._parts
        literal = c._literal_choices
        return _Plan(
            compiled=c,
            id=c.id,
            base=base,
            variants=("inverted", "inverted") if base == "inverted"
            else ("zero_shot_noopt", "zero_shot_opt"),
            instruction=fns["instruction"],
            input=fns["input"],
            output=fns["output"],
            system=fns["system"],
            jinja=fns["jinja"],
            literal_choices=list(literal) if literal is not None else None,
            literal_ascii=literal is not None and "".join(literal).isascii(),
            has_choices=c.has_choices,
            has_gold=c._gold is not None,
            choices_in_prompt=spec.metadata.choices_in_prompt,
            uses_options=c.uses_options,
            uses_rng=c.uses_rng,
        )  # fmt: skip

    def localized(self, compiled: CompiledTemplate, language: str) -> CompiledTemplate:
        """The template in ``language``: its ``translations`` entry for that language (or its
        base language) laid over its own fields; the template itself when it has none."""
        translations = compiled.template.spec.translations
        code = language if language in translations else language.split("-")[0]
        text = translations.get(code)
        if text is None:
            return compiled
        key = (compiled.id, code)
        if key not in self._translated:
            spec = compiled.template.spec.model_copy(
                update={k: v for k, v in text.model_dump().items() if v is not None}
            )
            template = Template(spec, compiled.template.source, compiled.template.path)
            self._translated[key] = CompiledTemplate(self.env, template)
        return self._translated[key]

    def render_with(
        self,
        example: Example,
        compiled: CompiledTemplate,
        draw: Draw,
        context: dict[str, Any] | None = None,
    ) -> Rendered:
        """One record, within the recipe's time limit; any failure is a RenderError.
        ``context``: the example's ``template_context``, where the caller has it already."""
        if compiled.template.spec.translations:
            compiled = self.localized(compiled, self.language_of(example))
        path = compiled.template.path
        timed = not compiled.bounded or (
            draw.base in ("cot", "few_shot_cot") and not self._rationale_bounded
        )
        try:
            if timed:
                with self._deadline:
                    rendered = self._render_with(example, compiled, draw, context)
            else:
                rendered = self._render_with(example, compiled, draw, context)
        except RenderLimit as exc:
            raise RenderError(
                exc.rule, f"{path}: template {compiled.id!r}: {exc}", compiled.id
            ) from None
        except RenderError:
            raise
        except Exception as exc:  # anything else (options, exemplars) is this record's reject
            raise RenderError(
                rule_of(exc),
                f"{path}: template {compiled.id!r}: {type(exc).__name__}: {exc}",
                compiled.id,
            ) from None
        problem = _bad_text(rendered)
        if problem is not None:
            raise RenderError(
                "bad_text", f"{path}: template {compiled.id!r}: {problem}", compiled.id
            )
        return rendered

    def _render_with(
        self,
        example: Example,
        compiled: CompiledTemplate,
        draw: Draw,
        context: dict[str, Any] | None,
    ) -> Rendered:
        user, output, choices, system, shown, gold = self._single(
            example, compiled, draw, context
        )
        base = draw.base
        turns = [(user, output)]
        if base in ("cot", "few_shot_cot"):
            query = self._cot_turn(example, compiled, draw, user, output)
            turns = [query]
            if base == "few_shot_cot":
                # Worked exemplars, each with its own reasoning, then the query (Flan 2022's
                # few-shot chain-of-thought); with none that fits, honestly zero-shot CoT.
                shots = self._exemplars(example, compiled, draw, *query, cot=True)
                if shots:
                    turns = self._few_shot_turns(example, compiled, shots, *query)
                else:
                    base = "cot"
        elif base == "few_shot":
            shots = self._exemplars(example, compiled, draw, user, output)
            if shots:
                turns = self._few_shot_turns(example, compiled, shots, user, output)
            else:
                base = "zero_shot"  # no exemplar fits the budget: honestly zero-shot
        if base in ("zero_shot", "few_shot"):
            variant = f"{base}_{'opt' if shown else 'noopt'}"
        else:
            variant = base
        return Rendered(compiled.id, variant, system or self.recipe.system, turns, choices, gold)

    def _single(
        self,
        example: Example,
        compiled: CompiledTemplate,
        draw: Draw,
        base: dict[str, Any] | None = None,
        exemplar: bool = False,
    ) -> tuple[str, str, list[str] | None, str | None, bool, list[str] | None]:
        """One example through one template in zero-shot form: (user, output, choices, system,
        whether the prompt shows the choices, gold answers). ``base``: the example's
        ``template_context``, copied here (each template adds its own names to it)."""
        spec = compiled.template.spec
        context = dict(base) if base is not None else template_context(self.source, example)
        if compiled.uses_rng:
            rng = self._keys["template-rng"].rng(example.example_id, compiled.id)
            context.update(helpers.seeded_helpers(rng))
        choices = compiled.render_choices(context)
        gold = compiled.render_gold(context)
        if gold is not None:
            if not gold:
                raise RenderError(
                    "no_gold_answer", "the example has no non-empty gold answer", compiled.id
                )
            pick = self._keys["gold"].key(example.example_id, compiled.id) % len(gold)
            context["gold_answers"] = gold
            context["gold_answer"] = gold[pick]
        block = None
        # A choices_in_prompt template gets a block only where it places one ({{ options }}).
        if (
            choices
            and draw.options_shown
            and (not spec.metadata.choices_in_prompt or compiled.uses_options)
        ):
            block = self._options_block(compiled, example, draw, choices)
        context["answer_choices"] = choices
        context["options"] = block.text if block else ""
        if exemplar and not compiled.uses_options:
            key = (example.example_id, id(compiled))
            parts = self._exemplar_parts.get(key)  # type: ignore[assignment]
            if parts is None:
                parts = compiled.render_parts(context)
                if len(self._exemplar_parts) >= EXEMPLAR_CACHE:
                    self._exemplar_parts.clear()
                self._exemplar_parts[key] = parts
        else:
            parts = compiled.render_parts(context)
        user = parts.instruction if not parts.input else f"{parts.instruction}\n\n{parts.input}"
        output = parts.output
        if block is not None:
            if not compiled.uses_options:
                user = f"{user}\n\n{block.text}"
            if choices and output in choices:
                output = block.targets[choices.index(output)]
            choices = list(block.targets)  # the block is shared by the records that drew it
        shown = block is not None or bool(
            choices
            and spec.metadata.choices_in_prompt
            and (compiled.always_names(choices) or shows_all(user, choices))
        )
        return user, output, choices, parts.system, shown, gold

    def _options_block(
        self, compiled: CompiledTemplate, example: Example, draw: Draw, choices: list[str]
    ) -> OptionsBlock:
        """The record's options block in its drawn style, opening and answer form. A block
        depends on nothing else, and a template's records share a few: each is built once."""
        spec = compiled.template.spec
        language = self.prompt_language(compiled, example)
        style = self.style_for(compiled, draw, len(choices), language)
        form = ""
        if style in ("letters", "numbers"):
            forms = locale_for(language).answer_forms[style][spec.option_target]
            form = forms[(draw.style_key >> 32) % len(forms)]
        key = (tuple(choices), style, draw.opening, spec.option_target, form)
        block = self._blocks.get(key)
        if block is None:
            if len(self._blocks) >= BLOCK_CACHE:
                self._blocks.clear()  # choices that differ per row: few blocks repeat
            block = format_options(choices, style, draw.opening, spec.option_target, form)
            self._blocks[key] = block
        return block

    def _cot_turn(
        self, example: Example, compiled: CompiledTemplate, draw: Draw, user: str, output: str
    ) -> tuple[str, str]:
        """The chain-of-thought form of one (user, output) pair: the request to reason first,
        then the rationale and the answer line, in the example's language."""
        rationale = self._rationale(example, compiled)
        prefix = locale_for(self.prompt_language(compiled, example)).cot_answer_prefix
        return f"{user}\n\n{draw.trigger}", f"{rationale}\n\n{prefix}{output}"

    def _rationale(self, example: Example, compiled: CompiledTemplate) -> str:
        if self.rationale_error is not None:
            raise RenderError("template_syntax", self.rationale_error, compiled.id)
        assert self.rationale is not None
        context = template_context(self.source, example)
        if self.rationale_rng:
            rng = self._keys["rationale-rng"].rng(example.example_id)
            context.update(helpers.seeded_helpers(rng))
        try:
            text = self.rationale(context).strip()
        except Exception as exc:
            raise RenderError(
                rule_of(exc),
                f"{self.source.path}: rationale of source {self.source.name!r}: {exc}",
                compiled.id,
            ) from None
        if not text:
            raise RenderError("empty_rationale", "the example has an empty rationale", compiled.id)
        for rule, check in self.rationale_rules:
            try:
                verdict = check({**context, "rationale": text}).strip()
            except Exception as exc:
                raise RenderError(
                    rule_of(exc),
                    f"{self.source.path}: rationale rule {rule.name!r}: {exc}",
                    compiled.id,
                ) from None
            if verdict != "True":
                message = rule.message or f"the rationale fails {rule.check!r}"
                raise RenderError(rule.name, f"{message}: {printable(text)[:80]!r}", compiled.id)
        return text

    def _pool_context(self, other: Example) -> dict[str, Any]:
        # An exemplar is a candidate for many queries: what templates see of it is built once.
        found = self._contexts.get(other.example_id)
        if found is None:
            found = self._contexts[other.example_id] = template_context(self.source, other)
        return found

    def _may_exemplify(self, other: Example, example: Example) -> bool:
        """An exemplar is never the query, nor of the query's split group (a sibling would
        hand the model the query's own input, or its answer), nor in another language."""
        if other.example_id == example.example_id:
            return False
        if self.language_of(other) != self.language_of(example):
            return False
        return not (other.group and other.group == example.group)

    def _has_exemplars(self, example: Example) -> bool:
        # The pool is sorted by id; two entries suffice to know one is not the query itself
        # (a pool of one group only is found out in _exemplars, and the record is zero-shot).
        pool = self._pools.get(self.language_of(example), [])
        return any(self._may_exemplify(other, example) for other in pool[:2])

    def _exemplars(
        self,
        example: Example,
        compiled: CompiledTemplate,
        draw: Draw,
        user: str,
        output: str,
        cot: bool = False,
    ) -> list[tuple[str, str]]:
        """Up to k (user, output) exemplars from the pool (train examples of the source):
        seeded, never the example itself, its split group, its prompt text, nor a duplicate of
        each other, within the character budget."""
        pool = self._pools.get(self.language_of(example), [])
        cfg = self.recipe.few_shot
        rng = self._keys["fewshot"].rng(example.example_id, compiled.id)
        candidates = rng.sample(range(len(pool)), min(len(pool), cfg.k * 4 + 1))
        seen = {(user, output)}
        budget = cfg.max_chars - len(user) - len(output)
        shots: list[tuple[str, str]] = []
        for index in candidates:
            other = pool[index]
            if not self._may_exemplify(other, example):
                continue
            try:
                shot = self._single(
                    other, compiled, draw, self._pool_context(other), exemplar=True
                )[:2]
                if cot:
                    shot = self._cot_turn(other, compiled, draw, *shot)
            except RenderError:
                continue  # a bad exemplar is skipped; it gets its own reject as a target
            cost = len(shot[0]) + len(shot[1]) + 4
            if shot in seen or shot[0] == user or cost > budget:
                continue
            seen.add(shot)
            shots.append(shot)
            budget -= cost
            if len(shots) == cfg.k:
                break
        return shots

    def _few_shot_turns(
        self,
        example: Example,
        compiled: CompiledTemplate,
        shots: list[tuple[str, str]],
        user: str,
        output: str,
    ) -> list[tuple[str, str]]:
        if self.recipe.few_shot.format == "multi_turn":
            return [*shots, (user, output)]
        # One turn: every exemplar's input and answer marked by a pattern drawn per record, the
        # query ending where its answer starts (without marks, "- yes\n- no\nyes" reads as one
        # more option). Its own key, so the record's other draws stay as they were.
        patterns = locale_for(self.prompt_language(compiled, example)).few_shot_patterns
        pattern = patterns[
            self._keys["fewshot-pattern"].key(example.example_id, compiled.id) % len(patterns)
        ]
        blocks = [f"{pattern.input}{u}\n{pattern.answer}{o}" for u, o in shots]
        query = f"{pattern.input}{user}\n{pattern.answer.rstrip()}"
        return [(pattern.separator.join([*blocks, query]), output)]


def _bad_text(rendered: Rendered) -> str | None:
    """Where the record's text holds a lone surrogate (from a template literal such as
    ``"\\ud800"``, ``'%c' % 55296`` or the data), or None."""
    turns = rendered.turns
    if (
        len(turns) == 1
        and turns[0][0].isascii()  # O(1) each: the common case costs nothing more
        and turns[0][1].isascii()
        and (rendered.system or "").isascii()
        and (rendered.answer_choices is None or "".join(rendered.answer_choices).isascii())
    ):
        return None
    texts = [rendered.system or "", *(t for turn in turns for t in turn)]
    texts += rendered.answer_choices or ()
    if all(t.isascii() for t in texts):
        return None
    for i, text in enumerate(texts):
        m = _SURROGATE.search(text)
        if m is None:
            continue
        if i == 0:
            where = "system prompt"
        elif i <= 2 * len(rendered.turns):
            where = f"{('user', 'assistant')[(i - 1) % 2]} turn {(i + 1) // 2}"
        else:
            where = f"answer choice {i - 2 * len(rendered.turns)}"
        return (
            f"{where}: character {m.start() + 1} is a lone surrogate "
            f"(U+{ord(m.group()):04X}), which is not Unicode text and cannot be written"
        )
    return None


def _weighted(shares: list[tuple[str, float]], u: float) -> str:
    total = sum(w for _, w in shares)
    if total <= 0:
        # Only forms this template cannot take have a share (cot: 1, zero_shot: 0, and no
        # rationale or cot flag): it takes the first form it can, zero-shot.
        return shares[0][0]
    acc = 0.0
    for name, weight in shares:
        acc += weight / total
        if u < acc:
            return name
    return shares[-1][0]


def shows_all(prompt: str, choices: Sequence[str]) -> bool:
    """Whether ``prompt`` holds every choice (case aside): what makes a ``choices_in_prompt``
    template's record ``_opt``. One that writes "Yes, no or maybe?" itself passes; one whose
    flag is set but whose prompt never lists them does not (and lint reports it)."""
    folded = prompt.casefold()
    return all(names_choice(folded, c) for c in choices)


def record_id(source: str, split: str, example_id: str, template_id: str, variant: str) -> str:
    return record_ids(source).id(split, example_id, template_id, variant)


@functools.lru_cache(maxsize=256)
def record_ids(source: str) -> Prefix:
    """The hash behind ``record_id`` with the source fixed (one per source, kept)."""
    return Prefix("record", source)


def to_record(source: Source, example: Example, rendered: Rendered) -> dict[str, Any]:
    """The export row for one rendered example (validated later, in ``validate.py``)."""
    spec = source.spec
    messages: list[dict[str, str]] = []
    if rendered.system:
        messages.append({"role": "system", "content": rendered.system})
    for user, assistant in rendered.turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {
        "id": record_id(
            spec.name, example.split, example.example_id, rendered.template_id, rendered.variant
        ),
        "messages": messages,
        "source": spec.name,
        "task": spec.task,
        "cluster": spec.cluster,
        "template_id": rendered.template_id,
        "variant": rendered.variant,
        "answer_choices": rendered.answer_choices,
        "gold_answers": rendered.gold_answers,
        "example_id": example.example_id,
        "split": example.split,
        "language": example.language or spec.default_language,
        "license": example.license or spec.license,
    }


class VariantUnavailable(CatalogError):
    """A forced form (``render_one(variant=...)``, ``templates preview --variant``) that the
    template cannot take, or that the recipe never draws: an error, never a record that
    pretends to be that form."""


def variant_problem(
    renderer: Renderer, compiled: CompiledTemplate, variant: str, *, recipe_shares: bool = False
) -> str | None:
    """Why ``compiled`` can never make a ``variant`` record, or None when it may (what only a
    render can tell, such as a few-shot record with no exemplar that fits, is
    ``unmade_variant``'s). ``recipe_shares``: also a form ``renderer``'s recipe gives no share
    (``cot: 0``, ``few_shot: 0``, ``options_shown: 0`` or ``1``)."""
    spec = compiled.template.spec
    name = f"template {compiled.id!r}"
    recipe = f"recipe {renderer.recipe.name!r}"
    v = renderer.recipe.variants
    if variant not in VARIANTS:
        return f"unknown variant {variant!r} (choose from {', '.join(VARIANTS)})"
    if spec.inverted:
        if variant != "inverted":
            return f"{name} is inverted (inverted: true): all its records are 'inverted'"
        return None
    if variant == "inverted":
        return f"{name} is not inverted (no 'inverted: true'): it never makes 'inverted' records"
    if variant in ("cot", "few_shot_cot"):
        if recipe_shares and variant == "few_shot_cot" and v.few_shot_cot <= 0:
            return f"{recipe} gives few-shot chain-of-thought no share (variants.few_shot_cot: 0)"
        if not spec.cot:
            return f"{name} is not marked 'cot: true': it never makes chain-of-thought records"
        if not renderer.has_rationale:
            return (
                f"source {renderer.source.name!r} has no 'rationale:': its templates never make "
                "chain-of-thought records"
            )
        if recipe_shares and variant == "cot" and v.cot <= 0:
            return f"{recipe} gives chain-of-thought no share (variants.cot: 0)"
        return None
    base, _, opt = variant.rpartition("_")
    if recipe_shares and base == "few_shot" and v.few_shot <= 0:
        return f"{recipe} gives few-shot no share (variants.few_shot: 0)"
    if opt == "opt" and not compiled.has_choices:
        return f"{name} has no answer_choices: it has no options to show"
    if opt == "noopt" and spec.metadata.choices_in_prompt and compiled.uses_options:
        # It places {{ options }} and always shows them: a prompt with the block left empty is
        # a record run never makes.
        return f"{name} places {{{{ options }}}} (choices_in_prompt): every record shows them"
    if recipe_shares and compiled.has_choices and not spec.metadata.choices_in_prompt:
        if opt == "opt" and v.options_shown <= 0:
            return f"{recipe} never shows options (variants.options_shown: 0)"
        if opt == "noopt" and v.options_shown >= 1:
            return f"{recipe} always shows options (variants.options_shown: 1)"
    return None


def unmade_variant(
    compiled: CompiledTemplate, recipe: Recipe, pool_size: int, asked: str, made: str
) -> str | None:
    """Why a record forced to ``asked`` came out ``made`` instead, or None when they agree."""
    if asked == made:
        return None
    name = f"template {compiled.id!r}"
    if _base(asked) != _base(made):
        return (
            f"{name}: no exemplar fits (a pool of {pool_size} example(s), few_shot.max_chars "
            f"{recipe.few_shot.max_chars}): run makes this record {made!r}, not {asked!r}"
        )
    if made.endswith("_noopt"):
        return (
            f"{name} says choices_in_prompt: true, but this prompt does not show all its "
            f"choices: run makes it {made!r} (lint reports it)"
        )
    return (
        f"{name} writes its choices into its prompt (choices_in_prompt: true): every record "
        f"shows them, so run makes it {made!r}"
    )


def forced_draw(draw: Draw, variant: str) -> Draw:
    """``draw`` with its form replaced by ``variant`` (one ``variant_problem`` accepts)."""
    if variant in ("cot", "few_shot_cot", "inverted"):
        return dataclasses.replace(draw, base=variant)
    base, _, opt = variant.rpartition("_")
    return dataclasses.replace(draw, base=base, options_shown=opt == "opt")


def render_one(
    source: Source,
    template: Template,
    fields: dict[str, Any],
    *,
    recipe: Recipe | None = None,
    variant: str | None = None,
    pool: Sequence[Example] = (),
    example_id: str = "example",
    split: str = "sample",
) -> dict[str, Any]:
    """Render one example (already in the source's Hub schema) with one template.

    ``variant`` forces a form (``zero_shot_opt``, ``zero_shot_noopt``, ``few_shot_opt``,
    ``few_shot_noopt``, ``cot``, ``inverted``); by default the recipe's draw decides (with no
    recipe: zero-shot, options shown). A form the template cannot take (``cot`` without
    ``cot: true`` or a source rationale, ``inverted`` on a template that is not, options on a
    template without choices, few-shot with no exemplar in ``pool`` that fits), or, when a
    ``recipe`` is given, one it gives no share, raises ``VariantUnavailable`` saying why.
    Returns the export row; raises ``RenderError`` with the rule and a message naming the
    template file when the template fails on this example.
    """
    recipe_given = recipe is not None
    recipe = recipe or Recipe(name="render-one", sources=[source.name])
    example = Example(example_id, split, fields, locator="(given)")
    renderer = Renderer(source, [template], recipe, pool)
    compiled = renderer.templates[0]
    if compiled.error is not None:
        raise compiled.error  # the template itself is broken, whatever the form
    draw = renderer.draw(example, compiled)
    if variant is not None:
        problem = variant_problem(renderer, compiled, variant, recipe_shares=recipe_given)
        if problem is not None:
            raise VariantUnavailable(problem)
        draw = forced_draw(draw, variant)
    rendered = renderer.render_with(example, compiled, draw)
    if variant is not None:
        # A template that writes its choices itself keeps them under a forced `_noopt`: no
        # block is added, and the record says `_opt`, as run would label it.
        lenient = variant.endswith("_noopt") and rendered.variant == variant[:-5] + "opt"
        problem = unmade_variant(compiled, recipe, len(pool), variant, rendered.variant)
        if problem is not None and not lenient:
            raise VariantUnavailable(problem)
    return to_record(source, example, rendered)


def _base(variant: str) -> str:
    return variant.rpartition("_")[0] if variant.endswith("opt") else variant
