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
  constant, ``a.b``, ``a[key]`` (no slices: the sandbox charges those), ``value | f(args)``
  with ``f`` a filter of the environment that takes no Jinja context (``random``, ``select``,
  ``map``... do: they stay with Jinja) and arguments of this same subset, no ``*args``; a
  comparison (``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``, ``not in``, chained as
  Python chains them), ``and``, ``or``, ``not``, ``a if test else b`` (with its ``else``), and
  list, tuple and dict displays, all of this same subset;
- ``{% if %}`` / ``{% elif %}`` / ``{% else %}`` around text of this same subset;
- no tests (``is defined``), calls, arithmetic, ``~``, loops or assignments;
- an environment exactly like ``make_environment``'s: the sandbox class itself, its finalize,
  no autoescape, not async.

Values that are not ``str`` (numbers, none, lists, undefined, Markup) and every text with a
filter are written under ``render_output``, through the sandbox's finalize, from the point where
they occur: what is charged to the render's budget, and where, is what Jinja would charge.
Comparisons, ``and``/``or``/``not``, conditionals and displays are plain Python in Jinja's
generated code too (the sandbox intercepts only ``+``, ``*``, ``**`` and ``%``): they charge
nothing, and they are evaluated here in Jinja's order, so an undefined name fails where it
fails there.
"""

from __future__ import annotations

import operator
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


# Jinja's comparison operators, as Python applies them (``in``: the right side contains the left).
_COMPARE: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lteq": operator.le,
    "gt": operator.gt,
    "gteq": operator.ge,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}


@dataclass(frozen=True)
class Branch:
    """An ``{% if %}`` with its ``{% elif %}`` arms: the first arm whose test holds writes its
    steps, else the ``{% else %}`` steps (maybe none)."""

    arms: tuple[tuple[Getter, Steps], ...]
    otherwise: Steps


# What a text writes, in order: literal text, a getter's value, or a branch's chosen steps.
Steps = tuple["str | Getter | Branch", ...]


@dataclass(frozen=True)
class Program:
    """A text as ``(literal, getter)`` segments: the literal is written, then the getter's value
    (a trailing literal has no getter). ``filters``: whether any getter calls a filter, which
    may charge the render's budget and so runs under ``render_output`` from the start.
    ``steps``: the text as nested steps when it has ``{% if %}`` blocks (``segments`` is then
    empty), None when it is flat."""

    segments: tuple[tuple[str, Getter | None], ...]
    filters: bool
    steps: Steps | None = None


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
    filters = [False]
    steps = _steps(env, names, tree.body, 0, filters)
    if steps is None:
        return None
    if any(isinstance(step, Branch) for step in steps):
        return Program((), filters[0], steps)
    segments: list[tuple[str, Getter | None]] = []
    literal: list[str] = []
    for step in steps:
        if isinstance(step, str):
            literal.append(step)
            continue
        segments.append(("".join(literal), cast(Getter, step)))
        literal = []
    if literal:
        segments.append(("".join(literal), None))
    return Program(tuple(segments), filters[0])


def _steps(
    env: jinja2.Environment,
    names: Mapping[str, Any],
    body: Sequence[nodes.Node],
    depth: int,
    filters: list[bool],
) -> Steps | None:
    """A template body (output and ``if`` nodes) as steps, or None when Jinja must render it."""
    if depth > _MAX_DEPTH:
        return None
    steps: list[str | Getter | Branch] = []
    for node in body:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                if isinstance(child, nodes.TemplateData):
                    if child.data:
                        steps.append(child.data)
                    continue
                getter = _expr(env, names, child, 0, filters)
                if getter is None:
                    return None
                steps.append(getter)
        elif isinstance(node, nodes.If):
            branch = _branch(env, names, node, depth + 1, filters)
            if branch is None:
                return None
            steps.append(branch)
        else:
            return None
    return tuple(steps)


def _branch(
    env: jinja2.Environment,
    names: Mapping[str, Any],
    node: nodes.If,
    depth: int,
    filters: list[bool],
) -> Branch | None:
    arms: list[tuple[Getter, Steps]] = []
    for arm in (node, *node.elif_):
        test = _expr(env, names, arm.test, depth, filters)
        steps = _steps(env, names, arm.body, depth, filters)
        if test is None or steps is None:
            return None
        arms.append((test, steps))
    otherwise = _steps(env, names, node.else_, depth, filters)
    return None if otherwise is None else Branch(tuple(arms), otherwise)


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
    if isinstance(node, nodes.Compare):
        return _compare(env, names, node, depth, filters)
    if isinstance(node, (nodes.And, nodes.Or)):
        left = _expr(env, names, node.left, depth + 1, filters)
        right = _expr(env, names, node.right, depth + 1, filters)
        if left is None or right is None:
            return None
        return _and(left, right) if isinstance(node, nodes.And) else _or(left, right)
    if isinstance(node, nodes.Not):
        value = _expr(env, names, node.node, depth + 1, filters)
        return None if value is None else (lambda context, eval_ctx: not value(context, eval_ctx))
    if isinstance(node, nodes.CondExpr):
        return _condition(env, names, node, depth, filters)
    if isinstance(node, (nodes.List, nodes.Tuple)):
        if isinstance(node, nodes.Tuple) and node.ctx != "load":
            return None
        items = [_expr(env, names, item, depth + 1, filters) for item in node.items]
        if any(item is None for item in items):
            return None
        return _display(cast(list[Getter], items), tuple if isinstance(node, nodes.Tuple) else list)
    if isinstance(node, nodes.Dict):
        pairs = [
            (
                _expr(env, names, p.key, depth + 1, filters),
                _expr(env, names, p.value, depth + 1, filters),
            )
            for p in node.items
        ]
        if any(k is None or v is None for k, v in pairs):
            return None
        return _dict(cast(list[tuple[Getter, Getter]], pairs))
    return None


def _compare(
    env: jinja2.Environment,
    names: Mapping[str, Any],
    node: nodes.Compare,
    depth: int,
    filters: list[bool],
) -> Getter | None:
    first = _expr(env, names, node.expr, depth + 1, filters)
    ops: list[tuple[Callable[[Any, Any], Any], Getter]] = []
    for operand in node.ops:
        op = _COMPARE.get(operand.op)
        right = _expr(env, names, operand.expr, depth + 1, filters)
        if first is None or op is None or right is None:
            return None
        ops.append((op, right))
    if first is None or not ops:
        return None
    head = first
    chain = tuple(ops)

    def get(context: dict[str, Any], eval_ctx: EvalContext | None) -> Any:
        # Python's chained comparison: each operand evaluated once, in order, and the chain
        # stops at the first comparison that does not hold.
        left = head(context, eval_ctx)
        result: Any = True
        for op, right_of in chain:
            right = right_of(context, eval_ctx)
            result = op(left, right)
            if not result:
                return result
            left = right
        return result

    return get


def _and(left: Getter, right: Getter) -> Getter:
    def get(context: dict[str, Any], eval_ctx: EvalContext | None) -> Any:
        value = left(context, eval_ctx)
        return right(context, eval_ctx) if value else value

    return get


def _or(left: Getter, right: Getter) -> Getter:
    def get(context: dict[str, Any], eval_ctx: EvalContext | None) -> Any:
        value = left(context, eval_ctx)
        return value if value else right(context, eval_ctx)

    return get


def _condition(
    env: jinja2.Environment,
    names: Mapping[str, Any],
    node: nodes.CondExpr,
    depth: int,
    filters: list[bool],
) -> Getter | None:
    if node.expr2 is None:
        return None  # without an else Jinja builds an undefined with its own hint
    test = _expr(env, names, node.test, depth + 1, filters)
    then = _expr(env, names, node.expr1, depth + 1, filters)
    other = _expr(env, names, node.expr2, depth + 1, filters)
    if test is None or then is None or other is None:
        return None

    def get(context: dict[str, Any], eval_ctx: EvalContext | None) -> Any:
        if test(context, eval_ctx):
            return then(context, eval_ctx)
        return other(context, eval_ctx)

    return get


def _display(items: list[Getter], kind: Callable[[list[Any]], Any]) -> Getter:
    return lambda context, eval_ctx: kind([item(context, eval_ctx) for item in items])


def _dict(pairs: list[tuple[Getter, Getter]]) -> Getter:
    # A dict display evaluates each key, then its value, in order: so does this.
    return lambda context, eval_ctx: {k(context, eval_ctx): v(context, eval_ctx) for k, v in pairs}


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

    if program.steps is not None:
        return _compile_steps(env, program.steps, filtered, text_of, jinja_render)

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


def _walk(
    steps: Steps, context: dict[str, Any], eval_ctx: list[EvalContext | None]
) -> Iterator[Any]:
    """What ``steps`` write, in order: literal text, and each getter's value as it is (the caller
    finalizes); a branch's tests are evaluated as the walk reaches them, as Jinja's code does.
    ``eval_ctx``: a cell holding the render's eval context, set by the caller when the render
    goes under the budget part way through."""
    for step in steps:
        if type(step) is str:
            yield step
        elif type(step) is Branch:
            for test, body in step.arms:
                if test(context, eval_ctx[0]):
                    yield from _walk(body, context, eval_ctx)
                    break
            else:
                yield from _walk(step.otherwise, context, eval_ctx)
        else:
            yield cast(Getter, step)(context, eval_ctx[0])


def _compile_steps(
    env: jinja2.Environment,
    steps: Steps,
    filtered: bool,
    text_of: Callable[[Any], str],
    jinja_render: Renderable,
) -> Renderable:
    """A text with ``{% if %}`` blocks as a render function: the flat render's rules (text
    joined outside the budget until a value is not text, a slice or a filter puts the whole
    render under it) over a walk of the steps."""

    def metered(done: list[str], value: Any, rest: Iterator[Any]) -> Iterator[str]:
        yield from done
        yield text_of(value)
        for item in rest:
            yield text_of(item)

    def under_budget(context: dict[str, Any]) -> str:
        cell: list[EvalContext | None] = [EvalContext(env, None)]
        return render_output(text_of(item) for item in _walk(steps, context, cell))

    def render(context: dict[str, Any]) -> str:
        if type(context) is not dict:
            return jinja_render(context)
        if filtered:
            return under_budget(context)
        cell: list[EvalContext | None] = [None]
        walk = _walk(steps, context, cell)
        out: list[str] = []
        total = 0
        try:
            for item in walk:
                if type(item) is not str:
                    cell[0] = EvalContext(env, None)  # one per render, from here on
                    return render_output(metered(out, item, walk))
                if item:
                    total += len(item)
                    if total > MAX_TEXT:
                        return bounded_join([*out, item], MAX_TEXT)
                    out.append(item)
        except _NeedsBudget:
            return under_budget(context)
        return "".join(out)

    return render
