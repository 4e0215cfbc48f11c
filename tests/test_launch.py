"""The console script starts the workers' fork server before it imports the CLI.

``pipeline.launch.main`` is what ``instructmix`` and ``python -m pipeline`` run: for a command
line that will start local workers it starts the fork server first, so the server's imports
and the CLI's run side by side; for any other it starts nothing.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from pipeline.launch import starts_workers


@pytest.mark.parametrize(
    ("argv", "cores", "expected"),
    [
        (["run"], 2, True),
        (["run", "recipes/default.yaml", "--out", "o"], 8, True),
        (["run"], 1, False),  # every core is one worker: nobody to fork
        (["run", "-w", "1"], 8, False),
        (["run", "-w1"], 8, False),
        (["run", "--workers=1"], 8, False),
        (["run", "--workers", "3"], 1, True),  # asked for: the pool starts them anyway
        (["run", "-w", "0"], 4, True),  # 0: every core
        (["render", "--out", "o"], 2, True),
        (["validate", "-w", "2"], 2, True),
        (["run", "--executor", "ray"], 8, False),
        (["run", "--executor=ray"], 8, False),
        (["run", "--executor", "local"], 8, True),
        (["run", "--help"], 8, False),
        (["load"], 8, False),  # load runs in the driver
        (["sources", "list"], 8, False),
        (["--version"], 8, False),
        ([], 8, False),
    ],
)
def test_which_command_lines_start_workers(argv: list[str], cores: int, expected: bool) -> None:
    assert starts_workers(argv, cores) is expected


def test_the_console_script_is_the_launcher() -> None:
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "instructmix"]
    assert script.value == "pipeline.launch:main"


# Runs launch.main with a stand-in CLI that prints, when it is called, whether the fork server
# runs and whether the heavy imports (Arrow, Jinja, the stages) have happened in this process.
PROBE = """
import sys, types
from multiprocessing import forkserver
cli = types.ModuleType("pipeline.cli")
cli.main = lambda: print(
    forkserver._forkserver._forkserver_pid is not None,
    any(m in sys.modules for m in ("pyarrow", "jinja2", "pipeline.stages")),
)
sys.modules["pipeline.cli"] = cli
sys.argv = ["instructmix", *sys.argv[1:]]
from pipeline.launch import main
main()
"""


@pytest.mark.parametrize(
    ("argv", "server"), [(["run", "-w", "2"], "True"), (["sources", "list"], "False")]
)
def test_the_fork_server_starts_before_the_cli_is_imported(argv: list[str], server: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == [server, "False"]
