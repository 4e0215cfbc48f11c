"""Progress reporting for long stages: rich bars in a terminal, nothing under --quiet/--json."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

Advance = Callable[[int], None]


class Progress(Protocol):
    def task(self, description: str, total: int | None) -> AbstractContextManager[Advance]: ...


class NullProgress:
    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        yield lambda n: None


class RichProgress:
    """One rich progress bar per task, with counts and a rate."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichBar

        columns = (
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("[cyan]{task.fields[rate]}"),
            TimeElapsedColumn(),
        )
        with RichBar(*columns, console=self.console, transient=False) as bar:
            task_id = bar.add_task(description, total=total, rate="")

            def advance(n: int) -> None:
                bar.advance(task_id, n)
                speed = bar.tasks[0].speed
                bar.update(task_id, rate=f"{speed:,.0f}/s" if speed else "")

            yield advance
