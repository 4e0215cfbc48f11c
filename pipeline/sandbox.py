"""The sandbox templates run in, with limits on the time and memory one render may take.

Jinja's immutable sandbox already blocks Python internals (``__class__``, ``__globals__``...),
unsafe callables and changes to lists and dicts, and bounds ``range()``. What it does not bound
is size and time. Here:

- every operation that can build a string or a list (``+ ~ * % **``, ``str.format``, the string
  methods, the built-in filters, slices, the buffers behind ``{% set %}`` blocks and macros) has
  its result size projected from its arguments *before* it runs, and is refused (``sandbox``)
  past ``MAX_TEXT`` characters or items;
- what a render builds is also charged, as an estimate of bytes, to a per-render budget
  (``MAX_RENDER_BYTES``, reject ``render_too_large``): a loop of individually small operations
  whose results are kept (in a namespace, a list, a ``{% set %}`` block) cannot pile up either;
- a value is turned into text only when it is text, a number, a boolean, none, or a list, tuple
  or dict of those: anything else would print a Python object's repr, with a memory address
  that differs from run to run (reject ``object_repr``);
- every render's output is counted as it is produced, and a render that runs past its time is
  stopped;
- compile errors of any kind (Jinja syntax, nesting too deep for Python, an integer literal too
  long to convert) surface as ``TemplateSyntaxError`` with the template line where known.

Constant folding at compile time is switched off (``optimized=False`` and a finalize that takes
the context), so no template code runs outside a render's limits.
"""

from __future__ import annotations

import functools
import math
import re
import signal
import string
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from itertools import islice
from types import FrameType, TracebackType
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.lexer import Token, TokenStream
from jinja2.parser import Parser
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import pass_context
from markupsafe import Markup

# Largest string or sequence one operation in a template may build.
MAX_TEXT = 1_000_000
# Estimated bytes one render (one text of a template, on one example) may build in all.
MAX_RENDER_BYTES = 32 * 2**20
# What the budget above guarantees, measured: no template makes one record's render allocate
# more than this (peak traced by tracemalloc, tests/test_hostile_templates.py), beyond the
# example's own data.
RECORD_MEMORY_BOUND = 64 * 2**20
# Largest integer (in bits) arithmetic may build: about 30,000 digits, beyond Python's own 4,300
# digit limit for turning it into text.
MAX_INT_BITS = 100_000
# Largest batch size (batch filter) or number of slices (slice filter).
MAX_PIECES = 100_000
# Width or precision digits beyond this many in a format spec would build huge strings.
_WIDE_PERCENT = re.compile(r"%[#0\- +]*(\d*\.)?\*|%[#0\- +]*\d{7,}|%[#0\- +]*\d*\.\d{7,}")
_WIDE_BRACE = re.compile(r"\{[^{}]*:[^{}]*(\d{7,}|\{)")
_PERCENT_SPEC = re.compile(r"%(?:\(([^)]*)\))?[#0\- +]*(\d*)(?:\.(\d*))?[hlL]?(.)", re.DOTALL)
_DIGITS = re.compile(r"\d+")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# Bytes of a str object beyond its characters, and of one list slot.
_STR_BYTES = 49
_SLOT_BYTES = 8


class RenderLimit(Exception):
    """A render went past a time or size limit; ``rule`` names which."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class ObjectRendered(SecurityError):
    """A template turned a value into text whose text would be a Python object's repr."""

    rule = "object_repr"


# --------------------------------------------------------------------------- the budget


class _Meter:
    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = 0


_local = threading.local()


def render_output(chunks: Iterable[str]) -> str:
    """Join one render's output (``chunks``: its root render function, still to run) within
    ``MAX_TEXT`` characters, with a fresh ``MAX_RENDER_BYTES`` budget for everything it builds.

    Not a context manager: this runs once per text of every record, and contextlib's
    generator machinery cost more than the render of a short template."""
    previous = getattr(_local, "meter", None)
    _local.meter = _Meter()
    try:
        return bounded_join(chunks, MAX_TEXT)
    finally:
        _local.meter = previous


def charge(nbytes: int) -> None:
    """Count ``nbytes`` against the current render's budget (none outside a render)."""
    meter: _Meter | None = getattr(_local, "meter", None)
    if meter is None:
        return
    meter.used += nbytes
    if meter.used > MAX_RENDER_BYTES:
        raise RenderLimit(
            "render_too_large",
            f"the template built more than {MAX_RENDER_BYTES // 2**20} MiB of text and lists "
            "in one render",
        )


def build_text(chars: int, wide: bool, what: str, existing: int = 0) -> None:
    """Allow an operation about to build a string of ``chars`` characters, or refuse it.

    ``existing``: the length of the text it works on, when the result cannot outgrow it in a
    way that matters (strip, case, a shrinking replace): a 3-million-character document may be
    trimmed, only not grown, even past MAX_TEXT."""
    if chars > max(MAX_TEXT, existing):
        raise SecurityError(
            f"{what} would build {chars:,} characters; one operation may build {MAX_TEXT:,}"
        )
    charge(_STR_BYTES + chars * (4 if wide else 1))


def build_items(n: int, what: str, per_item: int = _SLOT_BYTES, existing: int = 0) -> None:
    """Allow an operation about to build a sequence of ``n`` items, or refuse it (``existing``:
    as for ``build_text``, the length of the text split into them)."""
    if n > max(MAX_TEXT, existing):
        raise SecurityError(f"{what} would build {n:,} items; one operation may build {MAX_TEXT:,}")
    charge(56 + n * per_item)


def _fresh_cost(value: Any) -> int:
    """Bytes a just-built value holds itself (its items are counted where they were built; a
    tuple's may be new numbers, as zip's from ranges are)."""
    if isinstance(value, (str, bytes, list, dict)):
        return sys.getsizeof(value)
    if isinstance(value, tuple):
        return sys.getsizeof(value) + 24 * len(value)
    return 0


def _charged_items(items: Iterator[Any]) -> Iterator[Any]:
    """The items of a lazy filter or ``zip``, charged as they are built (in rounds of 64 KiB:
    one call per item would cost more than the item)."""
    pending = 0
    for item in items:
        pending += _fresh_cost(item) + _SLOT_BYTES
        if pending > 65536:
            charge(pending)
            pending = 0
        yield item
    charge(pending)


# --------------------------------------------------------------------------- text sizes


def _describe(value: Any) -> str:
    name = getattr(value, "__name__", None) or getattr(value, "name", None)
    kind = type(value).__name__
    return f"{kind} {name!r}" if callable(value) and isinstance(name, str) else kind


def _repr_len(s: str) -> int:
    # repr() escapes quotes and backslashes, and writes unprintable characters as \xNN..\UNNNNNNNN.
    if s.isprintable():
        return len(s) + 2 + s.count("\\") + s.count("'")
    return (4 if s.isascii() else 10) * len(s) + 2


def _int_len(value: int) -> int:
    return (value.bit_length() * 1233 >> 12) + 2  # log10(2) ~ 1233/4096


def text_len(value: Any, what: str = "output") -> tuple[int, bool]:
    """An upper bound on ``len(str(value))`` and whether that text may hold non-ASCII.

    Refuses (``ObjectRendered``) a value that is not text, a number, a boolean, none, or a list,
    tuple or dict of those: its text would be a repr such as ``<function shuffle at 0x7f...>``.
    An undefined value raises its own error. Stops counting past ``MAX_TEXT``.
    """
    if isinstance(value, str):
        return len(value), not value.isascii()
    total = 0
    wide = False
    stack = [value]
    top = True
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            # Nested strings are written as their repr; a top-level one was handled above.
            total += _repr_len(v) + (8 if isinstance(v, Markup) else 0)
            wide = wide or not v.isascii()
        elif v is None or isinstance(v, bool):
            total += 5
        elif isinstance(v, int):
            total += _int_len(v)
        elif isinstance(v, float):
            total += 24
        elif isinstance(v, (list, tuple)):
            # A named tuple (groupby's) adds its type and field names.
            total += 2 + 2 * len(v) + (0 if type(v) in (list, tuple) else 64)
            stack.extend(v)
        elif isinstance(v, dict):
            total += 2 + 4 * len(v)
            for key, item in v.items():
                stack.append(key)
                stack.append(item)
        elif isinstance(v, Undefined):
            str(v)  # StrictUndefined raises the undefined error here
            total += 9
        else:
            where = "" if top else " inside a list or dict"
            raise ObjectRendered(
                f"{what}: a {_describe(v)}{where} cannot be rendered as text (its text would be "
                "a Python object's repr); only text, numbers, booleans, none and lists or dicts "
                "of them render"
            )
        top = False
        if total > MAX_TEXT:
            break
    return total, wide


def _escaped_len(value: Any) -> int:
    """Upper bound on the length of ``escape(value)`` (each of ``&<>"'`` grows by at most 4)."""
    if isinstance(value, Markup):
        return len(value)
    if isinstance(value, str):
        return len(value) + 4 * sum(value.count(c) for c in "&<>\"'")
    return 5 * text_len(value)[0]


def materialize(value: Any, what: str) -> list[Any]:
    """``value`` as a list, built within the limits (an iterator is read at most MAX_TEXT + 1
    items far). Strings become their characters, dicts their keys."""
    if isinstance(value, (list, tuple, str, bytes, dict, range)):
        n = len(value)
        per = _SLOT_BYTES
        if isinstance(value, range):
            per += 32  # each item is a new int
        elif isinstance(value, str) and not value.isascii():
            per += 80  # characters beyond Latin-1 are new one-character strings
        build_items(n, what, per)
        return list(value)
    if isinstance(value, Undefined):
        return list(value)  # StrictUndefined raises the undefined error here
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        return list(value)  # small, or a TypeError of Python's own
    items = list(islice(value, MAX_TEXT + 1))
    build_items(len(items), what)
    return items


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], i: int, name: str, default: Any) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _is_wide(*values: Any) -> bool:
    return any(isinstance(v, str) and not v.isascii() for v in values)


# --------------------------------------------------------------------------- formats


def _check_wide_percent(fmt: str) -> None:
    if _WIDE_PERCENT.search(fmt):
        raise SecurityError("a %-format width or precision that large is not allowed")


def _percent_len(fmt: str, values: Any, escape: bool) -> tuple[int, bool]:
    """Upper bound on ``len(fmt % values)``: each conversion adds its width, its precision and
    the text of the value it takes."""
    _check_wide_percent(fmt)
    positional = list(values) if isinstance(values, tuple) else [values]
    mapping = values if isinstance(values, Mapping) else None
    total, wide = len(fmt), not fmt.isascii()
    index = 0
    for m in _PERCENT_SPEC.finditer(fmt):
        key, width, precision, conversion = m.groups()
        if conversion == "%":
            continue
        if key is not None:
            value = mapping.get(key) if mapping is not None else None
        else:
            value = positional[index] if index < len(positional) else None
            index += 1
        if conversion in "ra" and isinstance(value, str):
            n, w = _repr_len(value), not value.isascii()
        else:
            n, w = text_len(value, "a % format")
        if escape:
            n *= 5
        total += n + int(width or 0) + int(precision or 0) + 8
        wide = wide or w
    return total, wide


def _format_len(
    env: jinja2.Environment,
    fmt: str,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    escape: bool,
) -> tuple[int, bool]:
    """Upper bound on ``len(fmt.format(*args, **kwargs))``, each field resolved the way the
    sandbox's formatter resolves it."""
    if _WIDE_BRACE.search(fmt):
        raise SecurityError("a format width that large (or nested) is not allowed")
    formatter = SandboxedFormatter(env)
    total, wide = 0, not fmt.isascii()
    auto = 0
    for literal, field, spec, conversion in string.Formatter().parse(fmt):
        total += len(literal)
        if field is None:
            continue
        if field == "" or field[0] in ".[":
            field = f"{auto}{field}"
            auto += 1
        try:
            value = formatter.get_field(field, args, kwargs)[0]
        except Exception:
            continue  # the real call raises the same error
        if conversion in ("r", "a") and isinstance(value, str):
            n, w = _repr_len(value), not value.isascii()
        else:
            n, w = text_len(value, "a format field")
        if escape:
            n *= 5
        digits = sum(int(d) for d in _DIGITS.findall(spec or ""))
        total += n + n // 3 + digits + 8  # n // 3: digit grouping (',' or '_')
        wide = wide or w or _is_wide(spec)
    return total, wide


# --------------------------------------------------------------------------- str and bytes methods


def _sized(obj: str | bytes) -> tuple[int, bool]:
    return len(obj), isinstance(obj, str) and not obj.isascii()


def _width_rule(name: str) -> Callable[[Any, tuple[Any, ...], dict[str, Any]], None]:
    def rule(owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        width = _arg(args, kwargs, 0, "width", 0)
        if isinstance(width, int):
            n, wide = _sized(owner)
            build_text(max(n, width), wide or _is_wide(*args), f"{name}({width})", n)

    return rule


def _expandtabs(owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    tabsize = _arg(args, kwargs, 0, "tabsize", 8)
    if isinstance(tabsize, int):
        n, wide = _sized(owner)
        tabs = owner.count("\t" if isinstance(owner, str) else b"\t")
        build_text(n + tabs * max(tabsize, 0), wide, f"expandtabs({tabsize})")


def _replace_len(s: Any, old: Any, new: Any, count: Any, escaped: bool = False) -> int | None:
    """Upper bound on ``len(s.replace(old, new, count))``; None when the call will fail.

    ``escaped``: Markup's replace, which escapes ``old`` and ``new`` first (so the occurrences
    of the escaped ``old`` are bounded by its length, not counted)."""
    kind = str if isinstance(s, str) else bytes
    if not (isinstance(old, kind) and isinstance(new, kind)):
        return None
    if not old:
        n = len(s) + 1
    elif escaped:
        n = len(s) // len(old) + 1
    else:
        n = s.count(old)
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    grows = _escaped_len(new) if escaped else len(new) - len(old)
    return len(s) + n * max(grows, 0)


def _replace(owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    old, new = _arg(args, kwargs, 0, "old", None), _arg(args, kwargs, 1, "new", None)
    count = _arg(args, kwargs, 2, "count", -1)
    chars = _replace_len(owner, old, new, count, isinstance(owner, Markup))
    if chars is not None:
        build_text(chars, _is_wide(owner, new), "replace()", len(owner))


def _translate(owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    table = _arg(args, kwargs, 0, "table", None)
    widest = 1
    if isinstance(table, Mapping):
        for v in table.values():
            if isinstance(v, (str, bytes)):
                widest = max(widest, len(v))
    elif isinstance(table, (list, tuple)):
        widest = max([1, *(len(v) for v in table if isinstance(v, (str, bytes)))])
    n, wide = _sized(owner)
    build_text(n * widest, True if isinstance(owner, str) else wide, "translate()")


def _case(owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # Unicode case mappings can triple a character ('ŉ'.upper() is 'ʼN', 'ΐ' becomes three).
    n, wide = _sized(owner)
    build_text(3 * n if wide else n, wide, "changing case", n)


def _encode(owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # At most 10 bytes a character ('\U0001f600' with unicode_escape, '&#1114111;').
    build_text(10 * len(owner) + 8, False, "encode()")


def _decode(owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    build_text(4 * len(owner), True, "decode()")  # 'backslashreplace' writes \xNN a byte


def _hex(owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    build_text(3 * len(owner), False, "hex()")


def _split(owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    sep = _arg(args, kwargs, 0, "sep", None)
    maxsplit = _arg(args, kwargs, 1, "maxsplit", -1)
    n, wide = _sized(owner)
    parts = owner.count(sep) + 1 if isinstance(sep, type(owner)) and sep else n // 2 + 1
    if isinstance(maxsplit, int) and maxsplit >= 0:
        parts = min(parts, maxsplit + 1)
    build_items(parts, "split()", _SLOT_BYTES + _STR_BYTES, n)
    charge(n * (4 if wide else 1))


def _splitlines(owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    n, wide = _sized(owner)
    breaks = _line_breaks(owner)
    build_items(breaks + 1, "splitlines()", _SLOT_BYTES + _STR_BYTES, n + 1)
    charge(n * (4 if wide else 1))


def _line_breaks(s: Any) -> int:
    if isinstance(s, bytes):
        return s.count(b"\n") + s.count(b"\r")
    return sum(s.count(c) for c in _LINE_BREAKS) if isinstance(s, str) else 0


def _copy_of_self(owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    n, wide = _sized(owner)
    build_text(n, wide, "a string method", n)


_TEXT_METHODS: dict[str, Callable[[Any, tuple[Any, ...], dict[str, Any]], None]] = {
    "center": _width_rule("center"),
    "ljust": _width_rule("ljust"),
    "rjust": _width_rule("rjust"),
    "zfill": _width_rule("zfill"),
    "expandtabs": _expandtabs,
    "replace": _replace,
    "translate": _translate,
    "upper": _case,
    "lower": _case,
    "title": _case,
    "capitalize": _case,
    "swapcase": _case,
    "casefold": _case,
    "encode": _encode,
    "decode": _decode,
    "hex": _hex,
    "split": _split,
    "rsplit": _split,
    "splitlines": _splitlines,
    "partition": _copy_of_self,
    "rpartition": _copy_of_self,
    "strip": _copy_of_self,
    "lstrip": _copy_of_self,
    "rstrip": _copy_of_self,
    "removeprefix": _copy_of_self,
    "removesuffix": _copy_of_self,
}


# Methods and helpers that hand back a value that exists already (dict.get, loop.cycle,
# cycler.next, choice): nothing new to charge, however often a loop calls them.
_RETURNS_EXISTING = frozenset(
    {"get", "index", "count", "find", "rfind", "rindex", "startswith", "endswith", "next",
     "cycle", "changed", "choice", "letter", "randint"}
)  # fmt: skip


def _text_join(owner: Any, items: list[Any]) -> None:
    sep, wide = _sized(owner)
    chars = sep * max(len(items) - 1, 0)
    markup = isinstance(owner, Markup)
    for item in items:
        if isinstance(item, (str, bytes)):
            chars += _escaped_len(item) if markup else len(item)
            wide = wide or _is_wide(item)
        elif markup:  # Markup.join escapes, so writes as text, any item
            n, w = text_len(item, "join()")
            chars, wide = chars + 5 * n, wide or w
        if chars > MAX_TEXT:
            break
    build_text(chars, wide, f"joining {len(items):,} items")


# --------------------------------------------------------------------------- operators


def _check_add(left: Any, right: Any) -> None:
    if isinstance(left, str) and isinstance(right, str):
        markup = isinstance(left, Markup) != isinstance(right, Markup)
        extra = 4 * len(right if isinstance(left, Markup) else left) if markup else 0
        build_text(len(left) + len(right) + extra, _is_wide(left, right), "'+'")
    elif isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        build_items(len(left) + len(right), "'+'")
    elif isinstance(left, bytes) and isinstance(right, bytes):
        build_text(len(left) + len(right), False, "'+'")
    elif isinstance(left, int) and isinstance(right, int):
        _check_bits(max(left.bit_length(), right.bit_length()) + 1)


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise SecurityError(
            f"arithmetic would build an integer of {bits:,} bits; at most {MAX_INT_BITS:,}"
        )


def _check_mul(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int):
            if len(seq) * times > MAX_TEXT:
                raise SecurityError(
                    f"repeating a sequence {times} times would exceed {MAX_TEXT} items"
                )
            if isinstance(seq, str):
                build_text(len(seq) * max(times, 0), _is_wide(seq), "'*'")
            else:
                build_items(len(seq) * max(times, 0), "'*'")
            return
    if isinstance(left, int) and isinstance(right, int):
        _check_bits(left.bit_length() + right.bit_length())


def _check_pow(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        if right > MAX_INT_BITS:
            raise SecurityError(f"an exponent of {right:,} is too large")
        _check_bits(left.bit_length() * right)
    elif (
        isinstance(right, (int, float))
        and abs(right) > 1000
        and (not isinstance(left, (int, float)) or abs(left) > 1)
    ):
        raise SecurityError("exponents above 1000 are not allowed")


def _check_percent(left: Any, right: Any) -> None:
    if isinstance(left, str):
        chars, wide = _percent_len(left, right, isinstance(left, Markup))
        build_text(chars, wide, "a % format")


# --------------------------------------------------------------------------- code generation


class _Buffer(list[str]):
    """The output buffer of a macro, ``{% set %}`` block, filter or call block: the join at its
    end builds everything it holds at once, so it refuses to hold more than MAX_TEXT."""

    __slots__ = ("chars",)

    def __init__(self) -> None:
        super().__init__()
        self.chars = 0

    def append(self, item: str) -> None:
        self.chars += len(item) + 1  # + 1: an empty string still takes a slot
        if self.chars > MAX_TEXT:
            raise SecurityError(f"a block's text passed {MAX_TEXT:,} characters")
        super().append(item)

    def extend(self, items: Iterable[str]) -> None:
        for item in items:
            self.append(item)


class _Generator(CodeGenerator):
    """Jinja's code generator with ``~``, slices and block buffers routed through the sandbox."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.new_buffer()")

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        # Jinja writes slices as plain Python subscripts; through getitem they are charged.
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        self.write("environment.getitem(")
        self.visit(node.node, frame)
        self.write(", slice(")
        for i, part in enumerate((node.arg.start, node.arg.stop, node.arg.step)):
            self.write(", " if i else "")
            if part is None:
                self.write("None")
            else:
                self.visit(part, frame)
        self.write("))")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.join_values((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """Every ``{{ }}`` value before it becomes text: plain values only, sized first."""
    if isinstance(value, (str, Undefined)):
        return value  # text is itself; an undefined value raises its own error in str()
    chars, wide = text_len(value)
    build_text(chars, wide, "{{ }}")
    return value


def _line_in_traceback(tb: TracebackType | None) -> int:
    """The template line the parser or code generator was at when it gave up (0: unknown)."""
    line = 0
    while tb is not None:
        f_locals = tb.tb_frame.f_locals
        owner = f_locals.get("self")
        node = f_locals.get("node")
        if isinstance(owner, Parser):
            line = owner.stream.current.lineno or line
        elif isinstance(node, nodes.Node) and getattr(node, "lineno", None):
            line = node.lineno
        elif isinstance(owner, nodes.Node) and getattr(owner, "lineno", None):
            line = owner.lineno  # a tree walk (find, iter_child_nodes) of the node
        tb = tb.tb_next
    return line


def _template_line(python_source: str, python_line: int | None) -> int:
    """Map a line of Jinja's generated Python back to the template line (0: unknown)."""
    m = re.search(r"^debug_info = '([\d=&]*)'", python_source, re.MULTILINE)
    if m is None or not python_line or not m.group(1):
        return 0
    line = 0
    for pair in m.group(1).split("&"):
        template_line, code_line = (int(x) for x in pair.split("="))
        if code_line <= python_line:
            line = template_line
    return line


def _too_complex(exc: BaseException, line: int, name: str | None) -> TemplateSyntaxError:
    if isinstance(exc, (RecursionError, MemoryError)):
        why = f"nested too deeply to compile ({type(exc).__name__})"
    elif isinstance(exc, SyntaxError):
        why = f"nested too deeply to compile ({type(exc).__name__}: {exc.msg})"
    else:
        why = f"cannot be compiled ({type(exc).__name__}: {exc})"
    return TemplateSyntaxError(why, line, name)


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox plus size checks on every operation that builds text or lists,
    a check that values rendered as text are plain, and compile errors as syntax errors."""

    code_generator_class = _Generator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("optimized", False)
        kwargs.setdefault("finalize", _finalize)
        super().__init__(**kwargs)

    # -- compiling --------------------------------------------------------------------------

    def _tokenize(
        self, source: str, name: str | None, filename: str | None = None, state: str | None = None
    ) -> TokenStream:
        stream = super()._tokenize(source, name, filename, state)
        return TokenStream(_checked_tokens(stream, name, filename), name, filename)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        try:
            return super()._parse(source, name, filename)
        except TemplateSyntaxError:
            raise
        except Exception as exc:
            raise _too_complex(exc, _line_in_traceback(exc.__traceback__), name) from None

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        try:
            return super()._generate(source, name, filename, defer_init)
        except TemplateSyntaxError:
            raise
        except Exception as exc:
            raise _too_complex(exc, _line_in_traceback(exc.__traceback__), name) from None

    def _compile(self, source: str, filename: str) -> Any:
        try:
            return super()._compile(source, filename)
        except Exception as exc:
            line = exc.lineno if isinstance(exc, SyntaxError) else None
            raise _too_complex(exc, _template_line(source, line), None) from None

    # -- running ----------------------------------------------------------------------------

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "+":
            _check_add(left, right)
        elif operator == "*":
            _check_mul(left, right)
        elif operator == "**":
            _check_pow(left, right)
        elif operator == "%":
            _check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if not __self.is_safe_callable(__obj):
            raise SecurityError(f"{__obj!r} is not safely callable")
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (str, bytes)):
            name = getattr(__obj, "__name__", "")
            if name == "join" and args:
                items = materialize(args[0], "join()")
                _text_join(owner, items)
                return __context.call(__obj, items, *args[1:], **kwargs)
            rule = _TEXT_METHODS.get(name)
            if rule is not None:
                rule(owner, args, kwargs)
                return __context.call(__obj, *args, **kwargs)
        elif isinstance(owner, int) and getattr(__obj, "__name__", "") == "to_bytes":
            length = _arg(args, kwargs, 0, "length", 1)
            if isinstance(length, int):
                build_text(length, False, "to_bytes()")
        result = __context.call(__obj, *args, **kwargs)
        if getattr(__obj, "__name__", None) not in _RETURNS_EXISTING:
            charge(_fresh_cost(result))
        return result

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        if isinstance(argument, slice):
            charge(_fresh_cost(value))  # a slice copies, and a loop may keep every copy
        return value

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__
        is_map = value.__name__ == "format_map"
        escape = isinstance(fmt, Markup)
        format_call = wrapped

        def sized_format(*args: Any, **kwargs: Any) -> str:
            if is_map and len(args) == 1 and isinstance(args[0], Mapping):
                chars, wide = _format_len(self, fmt, (), args[0], escape)
            else:
                chars, wide = _format_len(self, fmt, args, kwargs, escape)
            build_text(chars, wide, "str.format()")
            return format_call(*args, **kwargs)

        return functools.update_wrapper(sized_format, value)

    def join_values(self, values: tuple[Any, ...]) -> str:
        """``a ~ b ~ c``: sized (and every operand plain) before anything is joined."""
        chars, wide = 0, False
        for v in values:
            n, w = text_len(v, "'~'")
            chars, wide = chars + n, wide or w
        build_text(chars, wide, "'~'")
        return "".join([str(v) for v in values])

    def new_buffer(self) -> _Buffer:
        return _Buffer()

    def concat(self, chunks: Iterable[str]) -> str:  # type: ignore[override]
        # A buffer counted its text as it grew; anything else is counted here.
        text = "".join(chunks) if isinstance(chunks, _Buffer) else bounded_join(chunks, MAX_TEXT)
        charge(_fresh_cost(text))
        return text


def _checked_tokens(stream: TokenStream, name: str | None, filename: str | None) -> Iterator[Token]:
    """The lexer's tokens, with literals Python cannot hold as syntax errors at their line."""
    while True:
        try:
            token = next(stream)
        except StopIteration:
            return
        except ValueError as exc:  # int(): "Exceeds the limit (4300 digits) for integer ..."
            raise TemplateSyntaxError(
                f"number literal too long: {exc}", stream.current.lineno, name, filename
            ) from None
        if token.type == "float" and not math.isfinite(float(token.value)):
            raise TemplateSyntaxError(
                f"number literal too large: {token.value}", token.lineno, name, filename
            )
        if token.type == "eof":
            return
        yield token


# --------------------------------------------------------------------------- filters


FilterRule = Callable[[Any, tuple[Any, ...], dict[str, Any], Any], Any]


def _f_width(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
    n, wide = text_len(value, "center")
    width = _arg(args, kwargs, 0, "width", 80)
    if isinstance(width, int):
        build_text(max(n, width), wide, f"center({width})", n)
    return value


def _f_indent(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
    width = _arg(args, kwargs, 0, "width", 4)
    if isinstance(value, str):
        indent = len(width) if isinstance(width, str) else width
        if isinstance(indent, int):
            lines = _line_breaks(value) + 2
            build_items(lines, "indent()", _SLOT_BYTES + _STR_BYTES)
            build_text(len(value) + lines * max(indent, 0), _is_wide(value, width), "indent()")
    return value


def _f_format(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
    if isinstance(value, str):
        chars, wide = _percent_len(value, kwargs or args, isinstance(value, Markup))
        build_text(chars, wide, "format")
    return value


def _f_pieces(name: str) -> FilterRule:
    def rule(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
        count = _arg(args, kwargs, 0, "linecount" if name == "batch" else "slices", 1)
        if isinstance(count, int) and count > MAX_PIECES:
            raise SecurityError(f"batch/slice() with {count} is larger than allowed ({MAX_PIECES})")
        return materialize(value, name)

    return rule


def _f_join(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], env: Any) -> Any:
    items = materialize(value, "join")
    attribute = _arg(args, kwargs, 1, "attribute", None)
    if attribute is not None:
        from jinja2.filters import make_attrgetter

        getter = make_attrgetter(env.environment, attribute)
        items = [getter(item) for item in items]
        kwargs.pop("attribute", None)
        args = args[:1]
    sep = str(_arg(args, kwargs, 0, "d", ""))
    chars, wide = len(sep) * max(len(items) - 1, 0), _is_wide(sep)
    if all(type(item) is str for item in items):  # the common case, counted in C
        chars += sum(map(len, items))
        wide = wide or not all(item.isascii() for item in items)
    else:
        for item in items:
            n, w = text_len(item, "join")
            chars, wide = chars + n, wide or w
            if chars > MAX_TEXT:
                break
    build_text(chars, wide, f"join of {len(items):,} items")
    return items


def _f_text_filter(growth: int = 1, per_word: int = 0) -> FilterRule:
    """A filter that writes its input as text, at most ``growth`` times as long (plus
    ``per_word`` bytes of working lists for each word)."""

    def rule(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
        n, wide = text_len(value, "a text filter")
        existing = n if isinstance(value, str) else 0
        if growth > 1 and isinstance(value, str) and value.isascii():
            build_text(n, wide, "a text filter", existing)
        else:
            build_text(n * growth, wide, "a text filter", existing)
        if per_word:
            charge(per_word * (n // 2 + 1))
        return value

    return rule


def _f_escape(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
    if not isinstance(value, str) and not hasattr(value, "__html__"):
        text_len(value, "escape")
    build_text(_escaped_len(value), _is_wide(value), "escape")
    return value


def _f_replace(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
    text_len(value, "replace")
    old, new = _arg(args, kwargs, 0, "old", ""), _arg(args, kwargs, 1, "new", "")
    count = _arg(args, kwargs, 2, "count", None)
    s = str(value)
    chars = _replace_len(s, str(old), str(new), -1 if count is None else count)
    if chars is not None:
        build_text(chars, _is_wide(s, new), "replace", len(s))
    return value


def _f_truncate(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
    length = _arg(args, kwargs, 0, "length", 255)
    end = _arg(args, kwargs, 2, "end", "...")
    # A text no longer than ``length`` comes back as it is; a cut one is at most ``length``
    # characters, ``end`` included.
    sized = isinstance(value, str) and isinstance(end, str) and isinstance(length, int)
    if sized and len(value) > length:
        build_text(max(length, len(end)), _is_wide(value, end), "truncate")
    return value


def _f_wordwrap(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
    if isinstance(value, str):
        wrap = _arg(args, kwargs, 2, "wrapstring", None)
        sep = len(wrap) if isinstance(wrap, str) else 1
        n = len(value)
        # Every line holds at least one character; textwrap keeps a list of every word.
        build_items(n + 1, "wordwrap", _SLOT_BYTES + _STR_BYTES)
        build_text(n + (n + 1) * sep, _is_wide(value, wrap), "wordwrap")
    return value


def _f_urlize(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
    n, wide = text_len(value, "urlize")
    target = _arg(args, kwargs, 2, "target", None)
    rel = _arg(args, kwargs, 3, "rel", None)
    extra = sum(len(str(x)) for x in (target, rel) if x is not None)
    # A link is at least 4 characters; each becomes <a href="..." rel=".." target="..">..</a>.
    links = n // 4 + 1
    build_items(n + 1, "urlize", _SLOT_BYTES + _STR_BYTES)
    build_text(12 * n + links * (64 + 6 * extra), wide, "urlize")
    return value


def _f_urlencode(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
    if not isinstance(value, (str, dict)) and isinstance(value, Iterable):
        value = materialize(value, "urlencode")
    n, wide = text_len(value, "urlencode")
    # UTF-8 percent-encoding: up to 12 characters for one (4 bytes, each %XX).
    build_text(n * (3 if not wide else 12) + 2 * n, False, "urlencode")
    return value


def _f_xmlattr(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
    if isinstance(value, Mapping):
        n = sum(5 * text_len(k, "xmlattr")[0] + _escaped_len(v) + 4 for k, v in value.items())
        build_text(n, True, "xmlattr")
    return value


def _f_tojson(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
    n, _wide = text_len(value, "tojson")  # refuses what is not plain
    indent = _arg(args, kwargs, 0, "indent", None)
    step = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
    nodes_, depth = _shape(value)
    # Indentation: a line per value, indented to its depth.
    build_text(_json_len(value, n) + nodes_ * (depth * max(step, 0) + 2), False, "tojson")
    return value


def _json_len(value: Any, repr_len: int) -> int:
    """Upper bound on the length of Jinja's JSON of a plain value: strings as JSON writes them
    (ASCII only: \\uXXXX for each other character, two for one beyond the BMP; HTML's <>&'
    escaped too), everything else no longer than its repr."""
    if not isinstance(value, str):
        strings = [v for v in _walk(value) if isinstance(v, str)]
        return repr_len + sum(_json_len(v, 0) for v in strings)
    ascii_chars = len(value.encode("ascii", "ignore"))
    others = len(value) - ascii_chars
    astral = len(_ASTRAL.findall(value)) if others else 0
    specials = sum(value.count(c) for c in "<>&'\"\\")
    return 2 + ascii_chars + 5 * specials + 6 * (others + astral)


def _walk(value: Any) -> Iterator[Any]:
    stack = [value]
    while stack:
        v = stack.pop()
        yield v
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(x for pair in v.items() for x in pair)


def _f_pprint(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
    n, wide = text_len(value, "pprint")
    nodes_, depth = _shape(value)
    build_text(n + nodes_ * (depth + 2), wide, "pprint")
    return value


def _shape(value: Any) -> tuple[int, int]:
    """(number of values, deepest nesting) of a plain value."""
    count, deepest = 0, 0
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        count += 1
        deepest = max(deepest, depth)
        if isinstance(v, (list, tuple)):
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, dict):
            stack.extend((x, depth + 1) for pair in v.items() for x in pair)
        if count > MAX_TEXT:
            break
    return count, deepest


def _f_list(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
    return materialize(value, "list")


def _f_sum(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], env: Any) -> Any:
    items = materialize(value, "sum")
    attribute = _arg(args, kwargs, 0, "attribute", None)
    start = _arg(args, kwargs, 1, "start", 0)
    if isinstance(start, (list, tuple, str)):
        parts = items
        if attribute is not None:
            from jinja2.filters import make_attrgetter

            getter = make_attrgetter(env, attribute)
            parts = [getter(x) for x in items]
        total = len(start) + sum(len(x) for x in parts if isinstance(x, (list, tuple, str)))
        build_items(total, "sum")
    return items


def _f_dictsort(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
    if isinstance(value, Mapping):
        build_items(len(value), "dictsort", _SLOT_BYTES + 64)
    return value


def _f_sequence(per_item: int) -> FilterRule:
    """sort, groupby, unique, reverse: a sorted, grouped or de-duplicated copy of the items
    (``per_item`` bytes each beyond the copy: groupby's tuples, unique's set of seen items)."""

    def rule(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
        if isinstance(value, str):
            build_text(len(value), _is_wide(value), "reversing", len(value))
            return value
        items = materialize(value, "a sequence filter")
        build_items(len(items), "a sequence filter", per_item)
        return items

    return rule


def _f_plain(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Any:
    """string, safe, striptags, wordcount, trim: the input as text, no longer than it."""
    n, wide = text_len(value, "a text filter")
    build_text(n, wide, "a text filter", n if isinstance(value, str) else 0)
    return value


_FILTER_RULES: dict[str, FilterRule] = {
    "center": _f_width,
    "indent": _f_indent,
    "format": _f_format,
    "batch": _f_pieces("batch"),
    "slice": _f_pieces("slice"),
    "join": _f_join,
    "upper": _f_text_filter(3),
    "lower": _f_text_filter(3),
    "title": _f_text_filter(3),
    "capitalize": _f_text_filter(3),
    "escape": _f_escape,
    "e": _f_escape,
    "forceescape": _f_escape,
    "replace": _f_replace,
    "truncate": _f_truncate,
    "wordwrap": _f_wordwrap,
    "urlize": _f_urlize,
    "urlencode": _f_urlencode,
    "xmlattr": _f_xmlattr,
    "tojson": _f_tojson,
    "pprint": _f_pprint,
    "list": _f_list,
    "sum": _f_sum,
    "dictsort": _f_dictsort,
    "sort": _f_sequence(_SLOT_BYTES),
    "groupby": _f_sequence(_SLOT_BYTES + 96),
    "unique": _f_sequence(_SLOT_BYTES + 64),
    "reverse": _f_sequence(_SLOT_BYTES),
    "string": _f_plain,
    "safe": _f_plain,
    "striptags": _f_text_filter(1, per_word=_SLOT_BYTES + _STR_BYTES),
    "wordcount": _f_text_filter(1, per_word=_SLOT_BYTES + _STR_BYTES),
    "trim": _f_plain,
}
# Filters that build nothing: they pick, test or count what exists already.
_PICKING = frozenset(
    {"attr", "count", "length", "d", "default", "first", "last", "max", "min", "random",
     "select", "reject", "selectattr", "rejectattr", "map", "int", "float", "round", "abs",
     "filesizeformat"}
)  # fmt: skip


def _guarded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its input sized first (by its rule) and what it builds charged."""
    rule = _FILTER_RULES.get(name)
    picks = name in _PICKING
    passed = jinja2.utils._PassArg.from_obj(fn) is not None
    skip = 1 if passed else 0

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if rule is not None and len(args) > skip:
            value = rule(args[skip], args[skip + 1 :], kwargs, args[0] if passed else None)
            if name == "join":  # its rule already applied the attribute
                args = (*args[:skip], value, *args[skip + 1 : skip + 2])
            elif value is not args[skip]:
                args = (*args[:skip], value, *args[skip + 1 :])
        result = fn(*args, **kwargs)
        if type(result) is str:
            if rule is None and not picks:
                charge(_fresh_cost(result))
            return result
        if isinstance(result, Iterator):
            return _charged_items(result) if not picks else result
        if rule is None and not picks:
            charge(_fresh_cost(result))
        return result

    return guarded


def install_limits(env: jinja2.Environment) -> None:
    """Wrap every filter in size checks; ``zip`` charges what it builds; no ``lipsum``."""
    for name, fn in list(env.filters.items()):
        env.filters[name] = _guarded_filter(name, fn)
    plain_zip: Any = env.globals.get("zip")
    if plain_zip is not None:
        env.globals["zip"] = lambda *its: _charged_items(iter(plain_zip(*its)))
    # lipsum(n) writes n paragraphs of filler from the global random: no template needs it.
    env.globals.pop("lipsum", None)


def bounded_join(chunks: Iterable[str], limit: int) -> str:
    """Join a render's output, stopping as soon as it passes ``limit`` characters."""
    out: list[str] = []
    total = 0
    for chunk in chunks:
        if not chunk:
            continue  # a loop of empty outputs must not grow the list until the time limit
        total += len(chunk)
        if total > limit:
            raise RenderLimit("render_too_large", f"rendered text passed {limit} characters")
        out.append(chunk)
    return "".join(out)


# --------------------------------------------------------------------------- time


class _Timeout(BaseException):
    # BaseException: a template's own error handling (there is none in Jinja) cannot swallow it.
    pass


_armed = threading.local()


def _expire(signum: int, frame: FrameType | None) -> None:
    if getattr(_armed, "on", False):
        raise _Timeout


class Deadline:
    """``deadline(seconds)`` as a reusable object: ``with limit:`` around each record of the hot
    path, without building a generator-based context manager per record."""

    __slots__ = ("armed", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.armed = False  # by this object: a limit it did not set is not its to lift

    def __enter__(self) -> None:
        if self.seconds <= 0 or threading.current_thread() is not threading.main_thread():
            return
        self.armed = True
        if not getattr(_armed, "installed", False):
            signal.signal(signal.SIGALRM, _expire)
            _armed.installed = True
        _armed.on = True
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.armed:
            return
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        _armed.on = False
        if exc_type is _Timeout:
            raise RenderLimit(
                "render_timeout", f"render took longer than {self.seconds} s"
            ) from None


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Stop the block after ``seconds`` of wall time (main thread of a process only: signals
    cannot interrupt other threads, where the block runs unbounded).

    The SIGALRM handler is installed once and left in place (it does nothing unless a deadline
    is armed), so a record costs two ``setitimer`` calls and nothing more.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    if not getattr(_armed, "installed", False):
        # Checked with a flag, not signal.getsignal(), which builds an Enum on every call.
        signal.signal(signal.SIGALRM, _expire)
        _armed.installed = True
    _armed.on = True
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Timeout:
        raise RenderLimit("render_timeout", f"render took longer than {seconds} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _armed.on = False
