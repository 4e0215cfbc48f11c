"""Crash safety: a run killed with SIGKILL anywhere leaves no file that looks complete but is
not, and running again resumes to exactly the bytes of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import Manifest
from pipeline.runfolder import RunFolder


def _dataset_bytes(out: Path) -> dict[str, bytes]:
    root = out / "dataset"
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _start(out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "--out", str(out), "-w", "1", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _has(pattern: str) -> Callable[[Path], bool]:
    return lambda out: any(out.glob(pattern))


# Kill points: early (opening sources / load), then once each stage has begun writing.
KILL_WHEN: list[tuple[str, Callable[[Path], bool]]] = [
    ("load", lambda out: (out / "manifest.json").exists()),
    ("render", _has("rendered/*/part-*.parquet")),
    ("validate", _has("valid/*/part-*.parquet")),
    ("mix", _has("mixed/*")),
    # Export builds beside its target and renames it in: kill it while it writes shards there.
    ("export", _has(".dataset.export-*/data/*")),
]


def _every_final_file_is_whole(out: Path) -> None:
    for path in out.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue  # temporaries and the lock file never carry a final name
        if path.suffix == ".parquet":
            pq.read_metadata(path)  # raises on a truncated file
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)


@pytest.mark.parametrize(("stage", "condition"), KILL_WHEN, ids=[k for k, _ in KILL_WHEN])
def test_sigkill_then_resume_gives_the_uninterrupted_bytes(
    default_run: tuple[Path, Manifest],
    tmp_path: Path,
    stage: str,
    condition: Callable[[Path], bool],
) -> None:
    reference, manifest = default_run
    out = tmp_path / "killed"
    proc = _start(out)
    deadline = time.monotonic() + 120
    while proc.poll() is None and not condition(out) and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _every_final_file_is_whole(out)
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/*/part-*.parquet")}

    resumed = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--out", str(out), "-w", "1", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert _dataset_bytes(out) == _dataset_bytes(reference)
    final = Manifest.model_validate_json(resumed.stdout)
    assert final.sources == manifest.sources and final.check() == []
    # Only unfinished work was redone: parts that survived the kill were not rewritten
    # (unless load itself had not finished, which restarts the folder).
    if "load" in Manifest.model_validate_json((out / "manifest.json").read_text()).stages_done:
        kept = [p for p, mtime in before.items() if p.exists() and p.stat().st_mtime_ns == mtime]
        if stage in ("validate", "mix", "export"):
            assert kept, "a resume after render rewrote every rendered part"


def test_a_second_run_on_the_same_folder_stops_with_a_clear_message(tmp_path: Path) -> None:
    out = tmp_path / "busy"
    with RunFolder(out).lock(create=True):
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", "run", "--out", str(out), "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {out}: in use by another instructmix process (pid {os.getpid()}); "
        "wait for it to finish or use another --out"
    )
    assert not (out / "manifest.json").exists()


def test_a_finished_run_is_not_redone(tmp_path: Path, user_catalog: Path) -> None:
    from pipeline import run_recipe

    recipe = user_catalog / "recipes" / "mini.yaml"
    run_recipe(recipe, tmp_path / "o")
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "o").rglob("*.parquet")}
    run_recipe(recipe, tmp_path / "o")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "o").rglob("*.parquet")} == stamps
    # A changed template is a different run: everything is rebuilt.
    tpl = user_catalog / "templates" / "mini_nli.yaml"
    tpl.write_text(tpl.read_text().replace("Write a claim", "Write one claim"))
    again = run_recipe(recipe, tmp_path / "o")
    assert again.check() == []
    assert (tmp_path / "o" / "dataset").exists()
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "o").rglob("*.parquet")} != stamps
