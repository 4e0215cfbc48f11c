"""Templates that are pure substitution, rendered without Jinja's per-call machinery.

Most template texts are literal text with ``{{ premise }}``, ``{{ names.label }}``,
``{{ answer_choices[label] }}`` or ``{{ answers | join(' ||| ') }}`` in it. Jinja renders each
of them by building a ``Context`` (and its ``EvalContext``), merging the globals into a new dict
and running a generator; for texts that short that costs more than the substitution itself.
Here such a text becomes a list of literal parts and getters, run in a plain loop.

Identical output is the contract, so a getter never reproduces Jinja: it makes the very calls
Jinja's generated code makes (``environment.getattr``, ``environment.getitem``, the filter
function with its pass argument, ``environment.undefined(name=...)``, the sandbox's finalize,
``render_output``'s budget), in the same order. The one shortcut taken is where the answer is
known without the call: a key present in a plain ``dict`` (and not shadowed by a dict attribute)
or an index inside a plain ``list``, which is what the sandbox returns itself, with no check to
make. Anything else (an attribute of a string, a missing key, a value of another type) goes
through the sandbox's own method, so what it refuses stays refused.

The subset (``plan`` returns None for anything else, and the caller keeps Jinja):

- literal text, comments, whitespace control (all already resolved in the parsed tree);
- ``{{ expr }}`` where ``expr`` is a name (not ``self``, which Jinja binds to the template), a
  constant, ``a.b``, ``a[key]`` (no slices: the sandbox charges those), or ``value | f(args)``
  with ``f`` a filter of the environment that takes no Jinja context (``random``, ``select``,
  ``map``... do: they stay with Jinja) and arguments of this same subset, no ``*args``;
- no tests, calls, operators, conditionals, loops or assignments;
- an environment exactly like ``make_environment``'s: the sandbox class itself, its finalize,
  no autoescape, not async.

Values that are not ``str`` (numbers, none, lists, undefined, Markup) and every text with a
filter are written under ``render_output``, through the sandbox's finalize, from the point where
they occur: what is charged to the render's budget, and where, is what Jinja would charge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import jinja2
from jinja2 import nodes
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.utils import _PassArg, missing

from . import sandbox
from .sandbox import MAX_TEXT, Sandbox, bounded_join, render_output

Renderable = Callable[[dict[str, Any]], str]
# A getter reads one value from the render's context. The eval context is the render's own (one
# per render, as Jinja's Context has) when it runs under render_output's budget, None when not.
Getter = Callable[[dict[str, Any], EvalContext | None], Any]

# Names Jinja's code generator binds itself instead of looking them up in the context.
_SPECIAL_NAMES: Final = frozenset({"self", "loop", "super", "caller", "varargs", "kwargs"})
# Constants a template may write as a key or filter argument (Jinja's literals).
_CONST_TYPES: Final = (str, int, float, bool, type(None))
# Deeper expressions go to Jinja: closures nest as deep as the expression does.
_MAX_DEPTH: Final = 24
_PASSES: Final = (None, _PassArg.environment, _PassArg.eval_context)
# (container, key) types whose lookup is looked up directly: ``obj[key]`` has no side effect
# there, and when it succeeds it is what the sandbox returns (it checks only attributes).
_PLAIN_LOOKUPS: Final = frozenset({(dict, str), (list, int)})


class _NeedsBudget(Exception):
    """A lookup the sandbox charges to the render's budget (a slice taken with a key from the
    context) was met outside ``render_output``: the render starts again under it."""


@dataclass(frozen=True)
class Program:
    """A text as ``(literal, getter)`` segments: the literal is written, then the getter's value
    (a trailing literal has no getter). ``filters``: whether any getter calls a filter, which
    may charge the render's budget and so runs under ``render_output`` from the start."""

    segments: tuple[tuple[str, Getter | None], ...]
    filters: bool


def eligible(env: jinja2.Environment) -> bool:
    """Whether ``env`` renders the way the getters assume: ``make_environment``'s settings."""
    return (
        type(env) is Sandbox
        and env.finalize is sandbox._finalize
        and env.autoescape is False
        and not env.is_async
    )


def plan(
    env: jinja2.Environment,
    source: str,
    global_vars: Mapping[str, Any] | None = None,
    tree: nodes.Template | None = None,
) -> Program | None:
    """The text as a program of literals and getters, or None when Jinja must render it.

    ``global_vars``: the globals the Jinja render merges under the context (the template's,
    which are the environment's unless given). ``tree``: the text already parsed by ``env``."""
    if not eligible(env):
        return None
    if tree is None:
        try:
            tree = env.parse(source)
        except Exception:  # the caller's Jinja compile reports it
            return None
    names = env.globals if global_vars is None else global_vars
    segments: list[tuple[str, Getter | None]] = []
    literal: list[str] = []
    filters = [False]
    for body in tree.body:
        if not isinstance(body, nodes.Output):
            return None
        for child in body.nodes:
            if isinstance(child, nodes.TemplateData):
                literal.append(child.data)
                continue
            getter = _expr(env, names, child, 0, filters)
            if getter is None:
                return None
            segments.append(("".join(literal), getter))
            literal = []
    if literal:
        segments.append(("".join(literal), None))
    return Program(tuple(segments), filters[0])


def _expr(
    env: jinja2.Environment,
    names: Mapping[str, Any],
    node: nodes.Node,
    depth: int,
    filters: list[bool],
) -> Getter | None:
    """A getter making the calls Jinja's generated code makes for ``node``, or None."""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(node, nodes.Name):
        if node.ctx != "load" or node.name in _SPECIAL_NAMES:
            return None
        return _name(env, names, node.name)
    if isinstance(node, nodes.Const):
        value = node.value
        if type(value) not in _CONST_TYPES:
            return None
        return lambda context, eval_ctx: value
    if isinstance(node, nodes.Getattr):
        if node.ctx != "load":
            return None
        obj = _expr(env, names, node.node, depth + 1, filters)
        return None if obj is None else _getattr(env, obj, node.attr)
    if isinstance(node, nodes.Getitem):
        if node.ctx != "load" or isinstance(node.arg, nodes.Slice):
            return None
        obj = _expr(env, names, node.node, depth + 1, filters)
        arg = _expr(env, names, node.arg, depth + 1, filters)
        return None if obj is None or arg is None else _getitem(env, obj, arg)
    if isinstance(node, nodes.Filter):
        return _filter(env, names, node, depth, filters)
    return None


def _name(env: jinja2.Environment, names: Mapping[str, Any], name: str) -> Getter:
    undefined = env.undefined
    # Jinja looks the name up in {**globals, **context}: the context first, then the globals.
    global_value = names.get(name, missing)

    def get(context: dict[str, Any], eval_ctx: EvalContext | None) -> Any:
        value = context.get(name, missing)
        if value is missing:
            # A context entry holding Jinja's own `missing` is undefined there, not the global.
            if global_value is missing or name in context:
                return undefined(name=name)
            return global_value
        return value

    return get


def _getattr(env: jinja2.Environment, obj: Getter, attr: str) -> Getter:
    # On a plain dict, Python's getattr() fails for every name that is not a dict attribute, and
    # the sandbox then returns the item: the shortcut returns it when it is there.
    item_first = not hasattr({}, attr)
    sandbox_getattr = env.getattr

    def get(context: dict[str, Any], eval_ctx: EvalContext | None) -> Any:
        value = obj(context, eval_ctx)
        if item_first and type(value) is dict:
            item = value.get(attr, missing)
            if item is not missing:
                return item
        return sandbox_getattr(value, attr)

    return get


def _getitem(env: jinja2.Environment, obj: Getter, arg: Getter) -> Getter:
    sandbox_getitem = env.getitem

    def get(context: dict[str, Any], eval_ctx: EvalContext | None) -> Any:
        value: Any = obj(context, eval_ctx)
        key: Any = arg(context, eval_ctx)
        # The sandbox returns obj[key] when it succeeds; a plain dict or list with a text or
        # integer key is looked up here without side effects, and a failure is the sandbox's
        # to resolve (an attribute of that name, refused or not, or undefined).
        if (type(value), type(key)) in _PLAIN_LOOKUPS:
            try:
                return value[key]
            except (LookupError, TypeError):
                pass
        elif eval_ctx is None and type(key) is slice:
            raise _NeedsBudget  # the sandbox charges the copy a slice makes
        return sandbox_getitem(value, key)

    return get


def _filter(
    env: jinja2.Environment,
    names: Mapping[str, Any],
    node: nodes.Filter,
    depth: int,
    filters: list[bool],
) -> Getter | None:
    if node.node is None or node.dyn_args is not None or node.dyn_kwargs is not None:
        return None
    fn = env.filters.get(node.name)
    if fn is None:
        return None  # Jinja's compile raises "No filter named ..."
    passed = _PassArg.from_obj(fn)
    if passed not in _PASSES:
        return None  # wants the render's Context: random (the record's generator), select, map...
    value = _expr(env, names, node.node, depth + 1, filters)
    args = [_expr(env, names, a, depth + 1, filters) for a in node.args]
    kwargs = [
        (cast(str, k.key), _expr(env, names, k.value, depth + 1, filters)) for k in node.kwargs
    ]
    if value is None or any(a is None for a in args) or any(g is None for _, g in kwargs):
        return None
    filters[0] = True
    arg_getters: Sequence[Getter] = [a for a in args if a is not None]
    kw_getters: Sequence[tuple[str, Getter]] = [(k, g) for k, g in kwargs if g is not None]

    def get(context: dict[str, Any], eval_ctx: EvalContext | None) -> Any:
        # Jinja's order: the filtered value, then the arguments, then the keywords.
        v = value(context, eval_ctx)
        a = [g(context, eval_ctx) for g in arg_getters]
        kw = {k: g(context, eval_ctx) for k, g in kw_getters}
        if passed is None:
            return fn(v, *a, **kw)
        if passed is _PassArg.environment:
            return fn(env, v, *a, **kw)
        return fn(eval_ctx, v, *a, **kw)

    return get


def compile_program(
    env: jinja2.Environment, program: Program, jinja_render: Renderable
) -> Renderable:
    """``program`` as a render function; ``jinja_render`` takes contexts that are not a plain
    dict (a mapping's lookups may be anything)."""
    segments = program.segments
    filtered = program.filters
    finalize = sandbox._finalize
    # The sandbox's finalize takes a Context and ignores it (eligible() checked it is that one).
    finalize_context = Context(env, {}, None, {})

    def text_of(value: Any) -> str:
        return value if type(value) is str else str(finalize(finalize_context, value))

    def metered(context: dict[str, Any], done: list[str], start: int, value: Any) -> Iterator[str]:
        """The rest of the render from segment ``start`` (whose getter gave ``value``; -1:
        from the beginning), for ``render_output`` to count and charge as Jinja's is."""
        yield from done
        # One per render, as Jinja's Context makes one (filters read it); never None here.
        eval_ctx = EvalContext(env, None)
        if start >= 0:
            yield text_of(value)
        for text, get in segments[start + 1 :]:
            yield text
            if get is not None:
                yield text_of(get(context, eval_ctx))

    if filtered:

        def render_filtered(context: dict[str, Any]) -> str:
            if type(context) is not dict:
                return jinja_render(context)
            return render_output(metered(context, [], -1, None))

        return render_filtered

    def render(context: dict[str, Any]) -> str:
        # Outside render_output: what runs here must charge nothing to a render's budget. Names
        # and lookups charge nothing (a slice does: _NeedsBudget), values other than text are
        # charged by finalize, and from the first of them the render runs under the budget.
        if type(context) is not dict:
            return jinja_render(context)
        out: list[str] = []
        total = 0
        for index, (text, get) in enumerate(segments):
            if text:
                total += len(text)
                if total > MAX_TEXT:
                    return bounded_join([*out, text], MAX_TEXT)  # raises render_too_large
                out.append(text)
            if get is None:
                continue
            try:
                value = get(context, None)
            except _NeedsBudget:
                return render_output(metered(context, [], -1, None))
            if type(value) is not str:
                # Finalize sizes it and charges the budget: the rest runs metered, as Jinja's.
                return render_output(metered(context, out, index, value))
            if value:
                total += len(value)
                if total > MAX_TEXT:
                    return bounded_join([*out, value], MAX_TEXT)
                out.append(value)
        return "".join(out)

    return render
