"""Turn one example into records: sandboxed Jinja, compiled once, seeded template choice.

Templates are user input. They are rendered in an immutable sandbox with strict undefined, so a
misspelled field is an error (promptsource renders it as empty text) and a template cannot reach
Python internals. Any failure becomes a reject for that one record, never a crashed run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .catalog import Source, Template
from .load import Example
from .models import ClassLabel, Recipe, SequenceOfClassLabel
from .seeding import stable_id, stable_rng

CHOICE_SEPARATOR = "|||"


def make_environment() -> jinja2.Environment:
    """The one Jinja environment templates run in."""
    return ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )


@dataclass(frozen=True)
class Rendered:
    """What one template made of one example, before validation."""

    template_id: str
    variant: str
    system: str | None
    instruction: str
    input: str | None
    output: str
    answer_choices: list[str] | None


class RenderError(Exception):
    def __init__(self, rule: str, message: str, template_id: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.template_id = template_id


class CompiledTemplate:
    """A template's Jinja, compiled once per process.

    A syntax error is kept and reported on every record the template would have made.
    """

    def __init__(self, env: jinja2.Environment, template: Template) -> None:
        self.template = template
        self.error: RenderError | None = None
        spec = template.spec
        self._parts: dict[str, Callable[[dict[str, Any]], str] | None] = {}
        self._choices: (
            list[Callable[[dict[str, Any]], str]] | Callable[[dict[str, Any]], str] | None
        )
        try:
            self._parts = {
                "instruction": self._compile(env, spec.instruction),
                "input": self._compile(env, spec.input) if spec.input is not None else None,
                "output": self._compile(env, spec.output),
                "system": self._compile(env, spec.system) if spec.system is not None else None,
            }
            if spec.answer_choices is None:
                self._choices = None
            elif isinstance(spec.answer_choices, str):
                self._choices = self._compile(env, spec.answer_choices)
            else:
                self._choices = [self._compile(env, c) for c in spec.answer_choices]
        except jinja2.TemplateSyntaxError as exc:
            self.error = RenderError(
                "template_syntax",
                f"{template.path}: template {spec.id!r}: "
                f"line {exc.lineno} of its Jinja: {exc.message}",
                spec.id,
            )

    @staticmethod
    def _compile(env: jinja2.Environment, source: str) -> Callable[[dict[str, Any]], str]:
        return env.from_string(source).render

    @property
    def id(self) -> str:
        return self.template.spec.id

    def render(self, context: dict[str, Any], recipe_system: str | None) -> Rendered:
        if self.error is not None:
            raise self.error
        spec = self.template.spec
        part = "answer_choices"
        try:
            choices = self._render_choices(context)
            ctx = {**context, "answer_choices": choices}
            part = "instruction"
            instruction = self._part("instruction", ctx)
            part = "input"
            input_text = self._part("input", ctx) if self._parts["input"] else None
            part = "output"
            output = self._part("output", ctx)
            part = "system"
            system = self._part("system", ctx) if self._parts["system"] else recipe_system
        except jinja2.UndefinedError as exc:
            raise self._fail("undefined", part, exc) from None
        except SecurityError as exc:
            raise self._fail("sandbox", part, exc) from None
        except Exception as exc:  # data the template did not expect: a bad record, not a crash
            raise self._fail("render_error", part, exc) from None
        return Rendered(
            template_id=spec.id,
            variant="inverted" if spec.inverted else "zero_shot",
            system=system or None,
            instruction=instruction,
            input=input_text or None,
            output=output,
            answer_choices=choices,
        )

    def _part(self, name: str, ctx: dict[str, Any]) -> str:
        fn = self._parts[name]
        assert fn is not None
        return fn(ctx).strip()

    def _render_choices(self, context: dict[str, Any]) -> list[str] | None:
        if self._choices is None:
            return None
        if isinstance(self._choices, list):
            return [c(context).strip() for c in self._choices]
        return [c.strip() for c in self._choices(context).split(CHOICE_SEPARATOR)]

    def _fail(self, rule: str, part: str, exc: Exception) -> RenderError:
        t = self.template
        return RenderError(
            rule,
            f"{t.path}: template {t.spec.id!r}: {part}: {type(exc).__name__}: {exc}",
            t.spec.id,
        )


def template_context(source: Source, example: Example) -> dict[str, Any]:
    """What a template sees: the features by name (Hub types), ``names`` for ClassLabel
    features, and ``example``, the same fields as one mapping (for names like ``A-coref`` that
    are not Jinja identifiers)."""
    names: dict[str, Any] = {}
    for fname, ftype in source.spec.features.items():
        value: Any = example.fields.get(fname)
        if isinstance(ftype, ClassLabel):
            names[fname] = ftype.names[value]
        elif isinstance(ftype, SequenceOfClassLabel):
            names[fname] = [ftype.sequence.names[v] for v in value]
    return {**example.fields, "names": names, "example": example.fields}


class Renderer:
    """Renders examples of one source with its templates under one recipe."""

    def __init__(self, source: Source, templates: Sequence[Template], recipe: Recipe) -> None:
        env = make_environment()
        self.source = source
        self.recipe = recipe
        self.templates = sorted((CompiledTemplate(env, t) for t in templates), key=lambda c: c.id)
        per = recipe.templates_per_example
        self.k = len(self.templates) if per == "all" else min(per, len(self.templates))

    def choose(self, example: Example) -> list[CompiledTemplate]:
        """All templates, or k drawn from (seed, source, example id): never from arrival order."""
        if self.k == len(self.templates):
            return list(self.templates)
        rng = stable_rng(self.recipe.seed, "templates", self.source.name, example.example_id)
        return sorted(rng.sample(self.templates, self.k), key=lambda c: c.id)

    def render(self, example: Example) -> list[Rendered | RenderError]:
        context = template_context(self.source, example)
        out: list[Rendered | RenderError] = []
        for compiled in self.choose(example):
            try:
                out.append(compiled.render(context, self.recipe.system))
            except RenderError as exc:
                out.append(exc)
        return out


def record_id(source: str, split: str, example_id: str, template_id: str, variant: str) -> str:
    return stable_id("record", source, split, example_id, template_id, variant)


def to_record(source: Source, example: Example, rendered: Rendered) -> dict[str, Any]:
    """The export row for one rendered example (validated later, in ``validate.py``)."""
    spec = source.spec
    user = (
        rendered.instruction
        if not rendered.input
        else f"{rendered.instruction}\n\n{rendered.input}"
    )
    messages = [
        {"role": "user", "content": user},
        {"role": "assistant", "content": rendered.output},
    ]
    if rendered.system:
        messages.insert(0, {"role": "system", "content": rendered.system})
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
        "example_id": example.example_id,
        "split": example.split,
        "language": spec.language,
        "license": spec.license,
    }


def render_one(
    source: Source,
    template: Template,
    fields: dict[str, Any],
    *,
    example_id: str = "example",
    split: str = "sample",
    system: str | None = None,
) -> dict[str, Any]:
    """Render one example (already in the source's Hub schema) with one template.

    Returns the export row (``messages`` and provenance). Raises ``RenderError`` with the rule
    and a message naming the template file when the template fails on this example.
    """
    example = Example(example_id, split, fields, locator="(given)")
    compiled = CompiledTemplate(make_environment(), template)
    rendered = compiled.render(template_context(source, example), system)
    return to_record(source, example, rendered)
