"""The sandbox templates run in, with limits on the time and memory one render may take.

Jinja's immutable sandbox already blocks Python internals (``__class__``, ``__globals__``...),
unsafe callables and changes to lists and dicts, and bounds ``range()``. What it does not bound
is size and time: ``'x' * 10**9``, ``'%0999999999d' % 1``, ``'{:999999999}'.format(1)``,
``center(10**9)`` or nested loops. Here each of those is refused before it allocates, every
render's output is counted as it is produced, and a render that runs past its time is stopped.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import jinja2
from jinja2 import filters as jinja_filters
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Largest string or sequence one operation in a template may build.
MAX_TEXT = 1_000_000
# Width or precision digits beyond this many in a format spec would build huge strings.
_WIDE_PERCENT = re.compile(r"%[#0\- +]*(\d*\.)?\*|%[#0\- +]*\d{7,}|%[#0\- +]*\d*\.\d{7,}")
_WIDE_BRACE = re.compile(r"\{[^{}]*:[^{}]*(\d{7,}|\{)")


class RenderLimit(Exception):
    """A render went past a time or size limit; ``rule`` names which."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def _check_repeat(seq: Any, times: Any) -> None:
    sized = isinstance(seq, (str, list, tuple)) and isinstance(times, int)
    if sized and len(seq) * times > MAX_TEXT:
        raise SecurityError(f"repeating a sequence {times} times would exceed {MAX_TEXT} items")


def _check_percent(fmt: Any) -> None:
    if isinstance(fmt, str) and _WIDE_PERCENT.search(fmt):
        raise SecurityError("a %-format width or precision that large is not allowed")


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox plus size checks on operators and str.format."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
        elif operator == "**":
            if (
                isinstance(right, (int, float))
                and abs(right) > 1000
                and (not isinstance(left, (int, float)) or abs(left) > 1)
            ):
                raise SecurityError("exponents above 1000 are not allowed")
        elif operator == "%":
            _check_percent(left)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            fmt = getattr(value, "__self__", "")
            if isinstance(fmt, str) and _WIDE_BRACE.search(fmt):
                raise SecurityError("a format width that large (or nested) is not allowed")
        return wrapped


def _bounded(name: str, limit: int) -> Callable[[int], None]:
    def check(n: int) -> None:
        if isinstance(n, int) and n > limit:
            raise SecurityError(f"{name}() with {n} is larger than allowed ({limit})")

    return check


_center_check = _bounded("center", MAX_TEXT)
_count_check = _bounded("batch/slice", 100_000)


def _center(value: str, width: int = 80) -> str:
    _center_check(width)
    return str(jinja_filters.do_center(value, width))


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    if isinstance(width, int):
        _bounded("indent", 1000)(width)
    elif len(width) > 1000:
        raise SecurityError("indent() string longer than 1000 characters")
    return str(jinja_filters.do_indent(s, width, first, blank))


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_percent(value)
    return str(jinja_filters.do_format(value, *args, **kwargs))


def _batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _count_check(linecount)
    return iter(jinja_filters.do_batch(value, linecount, fill_with))


def _slice(value: Iterable[Any], slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _count_check(slices)
    return iter(jinja_filters.do_slice(value, slices, fill_with))


def install_limits(env: jinja2.Environment) -> None:
    """Replace the built-in filters that can allocate without bound by checked versions."""
    env.filters.update(
        {"center": _center, "indent": _indent, "format": _format, "batch": _batch, "slice": _slice}
    )
    # lipsum(n) writes n paragraphs of filler: no template needs it.
    env.globals.pop("lipsum", None)


def bounded_join(chunks: Iterable[str], limit: int) -> str:
    """Join a render's output, stopping as soon as it passes ``limit`` characters."""
    out: list[str] = []
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise RenderLimit("render_too_large", f"rendered text passed {limit} characters")
        out.append(chunk)
    return "".join(out)


class _Timeout(BaseException):
    # BaseException: a template's own error handling (there is none in Jinja) cannot swallow it.
    pass


_armed = threading.local()


def _expire(signum: int, frame: FrameType | None) -> None:
    if getattr(_armed, "on", False):
        raise _Timeout


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
