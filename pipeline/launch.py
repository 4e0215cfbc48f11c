"""The console script's first step: the workers' fork server starts before the CLI is imported.

A stage command that runs on local worker processes forks them from a fork server, a fresh
interpreter that imports the stage modules (``executor.PRELOAD``, half a second of a core)
before it can fork the first one. Started from here, before this process imports the CLI and
what it needs (typer, rich, the pipeline: about as long again), the two imports run side by
side on two cores instead of one after the other; the workers are up when the first task
comes. A command line that will start no worker (another command, ``--help``, one worker, Ray)
starts nothing. And since each forked worker re-runs the main script's imports (multiprocessing
does so for a script run as ``__main__``), the console script that imports only this module
costs a worker nothing, where one importing ``pipeline.cli`` cost it a third of a second.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# The commands whose stages run on an executor's workers (``load`` runs in this process).
POOL_COMMANDS = frozenset({"run", "render", "validate"})


def starts_workers(argv: Sequence[str], cores: int) -> bool:
    """Whether the command line ``argv`` (without the program name) will start local worker
    processes on a machine with ``cores`` cores: a command of ``POOL_COMMANDS``, not asking
    for help, without ``--executor`` other than ``local``, and with more than one worker
    (``--workers``/``-w``; none or 0: every core). A guess is harmless either way: a server
    started for nothing idles until the process exits, and a pool finds none started and
    starts it."""
    if not argv or argv[0] not in POOL_COMMANDS:
        return False
    args = list(argv[1:])
    workers: str | None = None
    for i, arg in enumerate(args):
        value = args[i + 1] if i + 1 < len(args) else ""
        if arg in ("--help", "-h"):
            return False
        if arg == "--executor" and value != "local":
            return False
        if arg.startswith("--executor=") and arg.split("=", 1)[1] != "local":
            return False
        if arg in ("--workers", "-w"):
            workers = value
        elif arg.startswith("--workers="):
            workers = arg.split("=", 1)[1]
        elif arg.startswith("-w") and arg[2:].isdigit():
            workers = arg[2:]
    if workers is None or workers == "0":
        return cores > 1
    return workers.isdigit() and int(workers) > 1


def main() -> None:
    from .executor import default_workers, start_fork_server

    if starts_workers(sys.argv[1:], default_workers()):
        start_fork_server()
    from .cli import main as cli_main

    cli_main()
