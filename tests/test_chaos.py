"""Chaos: the operating system misbehaves under a run. A parent killed alone takes its workers
with it, a full or read-only disk ends in one line naming the file, and a rerun resumes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import Manifest

MARKER_TEMPLATE = """
source: banking77
templates:
  - id: chaos-marker
    instruction: >-
      {version}{{% for i in range(100000) %}}{{% endfor %}}: which banking intent is this?
      {{{{ text }}}}
    output: "{{{{ names.label }}}}"
"""


def _descendants(pid: int) -> set[int]:
    """Processes below ``pid``: the workers (children of the fork server, or of the run where
    they are spawned) and multiprocessing's helpers."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the fields after the last ')' don't.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _catalog(root: Path, version: str) -> tuple[Path, Path]:
    """A recipe over six bundled sources, uncapped, plus one template of ours whose text says
    which version rendered it. Its empty loop makes its part slow, so a worker is still on it
    when the parent dies and (unless the worker dies too) writes it after the rerun began."""
    templates = root / "templates"
    templates.mkdir(parents=True, exist_ok=True)
    (templates / "banking77-chaos.yaml").write_text(
        MARKER_TEMPLATE.format(version=version), encoding="utf-8"
    )
    recipe = root / "chaos.yaml"
    recipe.write_text(
        textwrap.dedent(
            """
            name: chaos
            seed: 5
            sources: [banking77, esnli, go_emotions, paws, breaking_nli, xed]
            templates_per_example: all
            mixing: {strategy: proportional, cap: null}
            catalog: {templates: [templates]}
            """
        ),
        encoding="utf-8",
    )
    return recipe, templates


def _run_cmd(recipe: Path, out: Path, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "pipeline", "run", str(recipe),
        "--out", str(out), "-w", str(workers), "-q",
    ]  # fmt: skip


def kill_parent_only_then_rerun(root: Path) -> tuple[int, int, set[int]]:
    """Start a 2-worker run, SIGKILL its parent alone once workers are writing parts, change
    the template at once and rerun. Returns (stale records, marker records, workers alive 5 s
    after the kill)."""
    recipe, _ = _catalog(root, "VERSION-A")
    out = root / "out"
    proc = subprocess.Popen(
        _run_cmd(recipe, out, 2), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    workers: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        workers |= _descendants(proc.pid)
        if any(out.glob("valid/*/part-*.parquet")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the kill point"
    workers |= _descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # the parent only: no process-group kill
    proc.wait()
    _catalog(root, "VERSION-B")
    # Rerun straight away, as a user pressing up-arrow would, while any survivor still writes.
    subprocess.run(_run_cmd(recipe, out, 1), check=True, timeout=600)
    until = time.monotonic() + 5
    while time.monotonic() < until and any(_alive(w) for w in workers):
        time.sleep(0.05)
    survivors = {w for w in workers if _alive(w)}
    for w in survivors:
        os.kill(w, signal.SIGKILL)
    rows = pq.read_table(out / "dataset" / "data", columns=["template_id", "messages"])
    prompts = [
        m[0]["content"]
        for t, m in zip(
            rows.column("template_id").to_pylist(), rows.column("messages").to_pylist(),
            strict=True,
        )
        if t == "chaos-marker"
    ]
    stale = sum("VERSION-A" in p for p in prompts)
    return stale, len(prompts), survivors


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find workers")
def test_killing_the_parent_alone_takes_its_workers_and_leaves_no_stale_record(
    tmp_path: Path,
) -> None:
    stale, marked, survivors = kill_parent_only_then_rerun(tmp_path)
    assert survivors == set()
    assert marked > 0
    assert stale == 0


# --------------------------------------------------------------------------- disks


@contextmanager
def _tmpfs(path: Path, size: str, *options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join([f"size={size}", *options])
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not permitted'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _remount(path: Path, *options: str) -> None:
    subprocess.run(["mount", "-o", ",".join(["remount", *options]), str(path)], check=True)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=600
    )


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_full_disk_stops_the_run_in_one_line_and_the_rerun_resumes(
    default_run: tuple[Path, Manifest], tmp_path: Path
) -> None:
    reference, _ = default_run
    with _tmpfs(tmp_path / "disk", "2m") as disk:
        out = disk / "run"
        result = _cli("run", "--out", str(out), "-q", "-w", "1")
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"error: {out}/"), lines
        assert "no space left on the device" in lines[0]
        # Nothing with a final name is partial: every parquet file left is whole.
        for path in out.rglob("*.parquet"):
            if not path.name.startswith("."):
                pq.read_metadata(path)
        _remount(disk, "size=256m")
        result = _cli("run", "--out", str(out), "-q", "-w", "1")
        assert result.returncode == 0, result.stderr
        assert _files(out / "dataset" / "data") == _files(reference / "dataset" / "data")


def test_a_read_only_disk_is_one_line(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", "16m") as disk:
        _remount(disk, "ro")
        out = disk / "run"
        result = _cli("run", "--out", str(out), "-q", "-w", "1")
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"error: {out}/.lock: cannot write: Read-only file system"
        ]


def test_a_folder_that_vanishes_under_a_stage_is_one_line(
    default_run: tuple[Path, Manifest], tmp_path: Path
) -> None:
    reference, _ = default_run
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    shutil.rmtree(out / "mixed")
    result = _cli("export", "--out", str(out), "-q")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "mixed" in lines[0] and "Traceback" not in result.stderr, lines
