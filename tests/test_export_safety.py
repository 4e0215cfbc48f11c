"""Export is a transaction: it replaces only an earlier export, never a user's folder; a failed
or killed export leaves the previous one loadable; two exports to one folder are locked out of
each other; environment failures are one line; Hub errors never show a token."""

from __future__ import annotations

import errno
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import Manifest, PipelineError, export_stage, push_to_hub, run_recipe
from pipeline.cli import app
from pipeline.export import MARKER, TOKEN_VARIABLES

runner = CliRunner()


# ------------------------------------------------------------------------------------ helpers


def _mini_run(user_catalog: Path, out: Path, *, seed: int = 7, shard_rows: int = 0) -> Path:
    """The user catalog's recipe built into ``out`` (``shard_rows`` > 0: that many per shard)."""
    recipe = user_catalog / "recipes" / "mini.yaml"
    text = re.sub(r"seed: \d+", f"seed: {seed}", recipe.read_text())
    text = re.sub(r"\nexport: .*\n", "\n", text)
    if shard_rows:
        text += f"export: {{shard_rows: {shard_rows}}}\n"
    recipe.write_text(text)
    run_recipe(recipe, out)
    return out


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root``, hidden ones too: folders as None, files as their bytes."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def _ids(folder: Path) -> list[str]:
    return list(datasets.load_dataset(str(folder))["train"]["id"])


def _beside(target: Path) -> list[str]:
    """What an export keeps beside its target while it runs: build, aside and lock."""
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def _users_folder(path: Path) -> Path:
    (path / "data" / "raw").mkdir(parents=True)
    (path / "data" / "raw" / "train.csv").write_text("text,label\nhello,1\n")
    (path / "README.md").write_text("# My project\n\nNotes I wrote.\n")
    return path


def _fail_on_second_shard(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Parquet writes raise ``error`` in the second shard (the first one is whole by then)."""
    write_table = pq.ParquetWriter.write_table

    def failing(self: pq.ParquetWriter, table: object, *args: object, **kwargs: object) -> None:
        if "-00001-of-" in str(self.where):
            raise error
        write_table(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: room for a small export, not for the default one (5 MB)."""
    where = tmp_path / "disk"
    where.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {exc}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


# ------------------------------------------------------------- a user's folder is never touched


def test_a_users_folder_given_as_to_is_refused_and_left_byte_identical(
    tmp_path: Path, user_catalog: Path
) -> None:
    out = _mini_run(user_catalog, tmp_path / "run")
    target = _users_folder(tmp_path / "mine")
    before = _tree(target)
    with pytest.raises(PipelineError) as err:
        export_stage(out, to=target)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{target}: holds files no instructmix export wrote (README.md, ")
    assert "data/raw/" in message and "--force" in message
    assert _tree(target) == before
    assert _beside(target) == []
    # The CLI says the same in one line and exits 1.
    result = runner.invoke(app, ["export", "--out", str(out), "--to", str(target), "-q"])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {message}"
    assert _tree(target) == before


def test_force_moves_a_users_folder_aside_intact(tmp_path: Path, user_catalog: Path) -> None:
    out = _mini_run(user_catalog, tmp_path / "run")
    target = _users_folder(tmp_path / "mine")
    before = _tree(target)
    # A backup the user already has keeps its name; the next free number is taken.
    (tmp_path / "mine.bak-1").mkdir()
    (tmp_path / "mine.bak-1" / "old.txt").write_text("older backup")
    manifest = export_stage(out, to=target, force=True)
    assert manifest.export["moved_aside"] == str(tmp_path / "mine.bak-2")
    assert _tree(tmp_path / "mine.bak-2") == before
    assert (tmp_path / "mine.bak-1" / "old.txt").read_text() == "older backup"
    assert _ids(target) == _ids(out / "dataset")
    assert _beside(target) == []


def test_a_reexport_replaces_an_earlier_export_and_its_old_shards(
    tmp_path: Path, user_catalog: Path
) -> None:
    three = _mini_run(user_catalog, tmp_path / "three", shard_rows=3)
    one = _mini_run(user_catalog, tmp_path / "one", seed=9)
    target = tmp_path / "export"
    target.mkdir()  # an empty folder is fine to export into
    export_stage(three, to=target)
    marker = json.loads((target / MARKER).read_text())
    assert marker["complete"] is True
    assert sorted(marker["files"]) == [
        "README.md",
        *[f"data/train-0000{i}-of-00003.parquet" for i in range(3)],
        "dataset_info.json",
    ]
    assert (
        marker["run_fingerprint"]
        == Manifest.model_validate_json((three / "manifest.json").read_text()).run_fingerprint
    )

    export_stage(one, to=target)
    assert sorted(p.name for p in (target / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    assert _ids(target) == _ids(one / "dataset") != _ids(three / "dataset")
    assert _beside(target) == []


def test_the_default_target_follows_the_same_rules(tmp_path: Path, user_catalog: Path) -> None:
    out = _mini_run(user_catalog, tmp_path / "run")
    dataset = out / "dataset"
    # A file the user put into the export is theirs: the next export will not delete it.
    (dataset / "data" / "mine.csv").write_text("a,b\n")
    with pytest.raises(PipelineError, match=r"\(data/mine\.csv\); refusing to replace it"):
        export_stage(out)
    assert (dataset / "data" / "mine.csv").read_text() == "a,b\n"
    (dataset / "data" / "mine.csv").unlink()
    # Nor a card the user edited.
    with open(dataset / "README.md", "a", encoding="utf-8") as fh:
        fh.write("\nMy notes on this mixture.\n")
    edited = _tree(dataset)
    with pytest.raises(PipelineError, match=r"README\.md \(changed since it was exported\)"):
        export_stage(out)
    assert _tree(dataset) == edited


def test_an_export_from_before_the_marker_is_still_replaced(
    tmp_path: Path, user_catalog: Path
) -> None:
    # Exports made before the marker existed are recognised by the run's own manifest.
    out = _mini_run(user_catalog, tmp_path / "run")
    (out / "dataset" / MARKER).unlink()
    export_stage(out)
    assert json.loads((out / "dataset" / MARKER).read_text())["complete"] is True
    # The same layout somewhere this run never exported is not taken for one.
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)
    (elsewhere / "README.md").write_text("card")
    (elsewhere / "data" / "train-00000-of-00001.parquet").write_bytes(b"not ours")
    with pytest.raises(PipelineError, match="refusing to replace it"):
        export_stage(out, to=elsewhere)
    assert (elsewhere / "data" / "train-00000-of-00001.parquet").read_bytes() == b"not ours"


def test_a_file_a_link_or_the_run_folder_is_never_a_target(
    tmp_path: Path, user_catalog: Path
) -> None:
    out = _mini_run(user_catalog, tmp_path / "run")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    link = tmp_path / "link"
    link.symlink_to(out / "dataset", target_is_directory=True)
    dataset_before = _tree(out / "dataset")
    cases = [
        (a_file, f"{a_file}: is a file, not a folder"),
        (a_file / "sub", f"{a_file}: is a file, not a folder; cannot export to {a_file / 'sub'}"),
        (link, f"{link}: is a symbolic link"),
        (out, f"{out}: holds the run folder"),
        (tmp_path, f"{tmp_path}: holds the run folder"),
        (out / "mixed", f"{out / 'mixed'}: is part of the run folder"),
    ]
    for target, start in cases:
        for force in ({}, {"force": True}):
            with pytest.raises(PipelineError) as err:
                export_stage(out, to=target, **force)
            assert str(err.value).startswith(start), (target, force, str(err.value))
            assert "\n" not in str(err.value)
    assert a_file.read_text() == "keep me"
    assert link.is_symlink() and _tree(out / "dataset") == dataset_before
    assert (out / "mixed" / "train.parquet").is_file()


# ------------------------------------------------------ a failed export leaves the previous one


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
    ids=["disk-full", "ctrl-c"],
)
def test_a_failed_export_leaves_the_previous_export_loadable(
    tmp_path: Path, user_catalog: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    first = _mini_run(user_catalog, tmp_path / "first")
    second = _mini_run(user_catalog, tmp_path / "second", seed=9, shard_rows=3)
    target = tmp_path / "export"
    export_stage(first, to=target)
    before = _tree(target)
    _fail_on_second_shard(monkeypatch, error)
    # A disk error is a one-line error; Ctrl-C stays Ctrl-C, after the cleanup.
    expected = PipelineError if isinstance(error, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as err:
        export_stage(second, to=target)
    assert _tree(target) == before
    assert _beside(target) == []
    assert _ids(target) == _ids(first / "dataset")
    if isinstance(error, OSError):
        assert str(err.value) == (
            f"{target}/data/train-00001-of-00003.parquet: cannot write: no space left on the "
            f"device; free some space and rerun (the run resumes); nothing exported, {target} "
            "is as it was"
        )


def test_a_full_disk_leaves_the_previous_export_loadable(
    default_run: tuple[Path, Manifest], tmp_path: Path, user_catalog: Path, small_disk: Path
) -> None:
    small = _mini_run(user_catalog, tmp_path / "small")
    target = small_disk / "export"
    export_stage(small, to=target)
    before = _tree(target)
    big, _ = default_run
    with pytest.raises(PipelineError) as err:
        export_stage(big, to=target)
    assert _tree(target) == before
    assert _beside(target) == []  # the half-written build is gone: the space is free again
    assert _ids(target) == _ids(small / "dataset")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{target}/")
    assert "no space left on the device" in message
    assert message.endswith(f"; nothing exported, {target} is as it was")


def test_a_read_only_parent_is_a_one_line_error(
    tmp_path: Path, user_catalog: Path, small_disk: Path
) -> None:
    # chmod does not stop root, who runs these tests: the folder is on a read-only mount.
    first = _mini_run(user_catalog, tmp_path / "first")
    second = _mini_run(user_catalog, tmp_path / "second", seed=9)
    target = small_disk / "export"
    export_stage(first, to=target)
    before = _tree(target)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for to in (target, small_disk / "new"):
        with pytest.raises(PipelineError) as err:
            export_stage(second, to=to)
        assert str(err.value) == (
            f"{small_disk}: Read-only file system; nothing exported, {to} is as it was"
        )
    assert _tree(target) == before
    assert _ids(target) == _ids(first / "dataset")


# ------------------------------------------------------------------------ exports run one at a time

PAUSED_EXPORT = """
import sys, time
from pathlib import Path
import pipeline.export.stage as export

out, target, ready, go = sys.argv[1:5]
write_shards = export._write_shards

def paused(*args, **kwargs):
    Path(ready).touch()
    deadline = time.monotonic() + 120
    while not Path(go).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return write_shards(*args, **kwargs)

export._write_shards = paused
export.export_stage(Path(out), to=Path(target))
"""


def test_a_second_export_to_the_same_target_is_refused_while_one_runs(
    tmp_path: Path, user_catalog: Path
) -> None:
    # Two run folders, so the run folder lock does not keep them apart: the target's lock does.
    first = _mini_run(user_catalog, tmp_path / "first")
    second = _mini_run(user_catalog, tmp_path / "second", seed=9)
    target, ready, go = tmp_path / "export", tmp_path / "ready", tmp_path / "go"
    child = subprocess.Popen(
        [sys.executable, "-c", PAUSED_EXPORT, str(first), str(target), str(ready), str(go)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready.exists(), child.stderr.read() if child.stderr else ""
        with pytest.raises(PipelineError) as err:
            export_stage(second, to=target)
        assert str(err.value) == (
            f"{target}: in use by another instructmix export (pid {child.pid}); "
            "wait for it to finish or export to another folder"
        )
    finally:
        go.touch()
        _, stderr = child.communicate(timeout=120)
    assert child.returncode == 0, stderr
    assert _ids(target) == _ids(first / "dataset")
    assert _beside(target) == []  # the lock file goes with the export that held it


# ---------------------------------------------------------------- a killed export is finished later

KILLED_EXPORT = """
import importlib, os, signal, sys
from pathlib import Path
import pipeline.export.stage as export

where, when, out, target = sys.argv[1:5]
module_name, name = where.split(":")
module = importlib.import_module(module_name)
original = getattr(module, name)

def killing(*args, **kwargs):
    if when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(module, name, killing)
export.export_stage(Path(out), to=Path(target))
"""

# Where the export is killed (module:function; the swap is the shared transaction's), and what
# it leaves beside the target for the next one.
KILL_POINTS = {
    "building": ("pipeline.export.stage:_write_shards", "after", ["export-", "lock"]),
    "between-the-renames": ("pipeline.transaction:_rename", "after", ["export-", "lock", "old-"]),
    "removing-the-old-export": ("pipeline.transaction:_remove_ours", "before", ["lock", "old-"]),
}


def _kill_export(point: str, out: Path, target: Path) -> list[str]:
    where, when, _ = KILL_POINTS[point]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_EXPORT, where, when, str(out), str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    kinds = {".export.lock": "lock", ".export-": "export-", ".old-": "old-"}
    return sorted(
        next(kind for mark, kind in kinds.items() if mark in left) for left in _beside(target)
    )


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_killed_export_is_cleaned_up_by_the_next_one(
    tmp_path: Path, user_catalog: Path, point: str
) -> None:
    old = _mini_run(user_catalog, tmp_path / "old", shard_rows=3)
    new = _mini_run(user_catalog, tmp_path / "new", seed=9)
    target = tmp_path / "export"
    export_stage(old, to=target)
    assert _kill_export(point, new, target) == KILL_POINTS[point][2]
    if point == "building":
        assert _ids(target) == _ids(old / "dataset")  # untouched until the swap
    export_stage(new, to=target)
    assert _beside(target) == []
    assert _ids(target) == _ids(new / "dataset")
    assert sorted(p.name for p in (target / "data").iterdir()) == ["train-00000-of-00001.parquet"]


def test_a_missing_target_with_its_earlier_export_aside_is_restored(
    tmp_path: Path, user_catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _mini_run(user_catalog, tmp_path / "old")
    new = _mini_run(user_catalog, tmp_path / "new", seed=9, shard_rows=3)
    target = tmp_path / "export"
    export_stage(old, to=target)
    before = _tree(target)
    _kill_export("between-the-renames", new, target)
    assert not target.exists()
    # The next export puts the earlier one back before it starts, so even when it fails too
    # the earlier export is where it was.
    _fail_on_second_shard(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(PipelineError, match="no space left on the device"):
        export_stage(new, to=target)
    assert _tree(target) == before
    assert _beside(target) == []
    assert _ids(target) == _ids(old / "dataset")


def test_leftovers_are_removed_only_when_they_are_ours(tmp_path: Path, user_catalog: Path) -> None:
    out = _mini_run(user_catalog, tmp_path / "run")
    target = tmp_path / "export"
    parent = tmp_path
    # Ours: a build killed after its marker and one shard temporary, an aside emptied but for
    # its folder, a build killed before its marker.
    building = parent / ".export.export-aaaaaaaa"
    (building / "data").mkdir(parents=True)
    marker = {"instructmix_export": 1, "complete": False, "files": {}}
    (building / MARKER).write_text(json.dumps(marker))
    (building / "data" / ".train-00000-of-00001.parquet.x1y2z3.tmp").write_bytes(b"half")
    (parent / ".export.old-bbbbbbbb").mkdir()
    (parent / ".export.export-cccccccc").mkdir()
    # Not ours: the same names holding something an export never writes, and a near miss.
    users = {
        ".export.export-dddddddd/notes.txt": b"mine",
        ".export.old-eeeeeeee/keep.txt": b"also mine",
        ".export.old-eeeeeeee/" + MARKER: json.dumps({**marker, "complete": True}).encode(),
        ".export.export-short/README.md": b"near miss",
    }
    for rel, data in users.items():
        (parent / rel).parent.mkdir(parents=True, exist_ok=True)
        (parent / rel).write_bytes(data)
    export_stage(out, to=target)
    assert _beside(target) == [
        ".export.export-dddddddd",
        ".export.export-short",
        ".export.old-eeeeeeee",
    ]
    for rel, data in users.items():
        assert (parent / rel).read_bytes() == data


# ------------------------------------------------------------------------ Hub tokens never shown


class FailingHub:
    """A Hub that refuses the upload and echoes what it was sent, as some errors do."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def create_repo(self, **kwargs: object) -> str:
        raise RuntimeError(
            f"401 Unauthorized: Bearer {self.secret.strip()} rejected\n{self.secret}"
        )

    def upload_folder(self, **kwargs: object) -> None:
        raise AssertionError("not reached")


@pytest.fixture
def no_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No token anywhere huggingface_hub looks: a fresh HF_HOME and no token variables."""
    for name in TOKEN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    return home


TOKEN_FORMS = {
    "underscores": "hf_" + "aB3dE5gH7j" * 2 + "_with_underscores",
    "dashes": "hf_" + "Kq9Wz2Lm4N" * 2 + "-with-dashes",
    "org": "api_org_" + "Xy7Pq1Rs3T" * 3,
    "any-shape": "s3cr3t-0123456789",
}
TOKEN_PLACES = [
    "argument-with-newline",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_OIDC_ID_TOKEN",
    "login-cache",
    "HF_TOKEN_PATH",
    "stored-tokens",
    "in-memory-oidc-token",
]


@pytest.mark.parametrize("form", list(TOKEN_FORMS))
@pytest.mark.parametrize("place", TOKEN_PLACES)
def test_push_errors_hide_every_token_by_value(
    default_run: tuple[Path, Manifest],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_tokens: Path,
    place: str,
    form: str,
) -> None:
    secret = TOKEN_FORMS[form]
    given = None
    if place == "argument-with-newline":
        given = secret + "\n"  # as read from a file: huggingface_hub strips it before sending
    elif place == "login-cache":
        (no_tokens / "token").write_text(secret + "\n")
    elif place == "HF_TOKEN_PATH":
        (tmp_path / "elsewhere").write_text(secret)
        monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "elsewhere"))
    elif place == "stored-tokens":
        (no_tokens / "stored_tokens").write_text(f"[work]\nhf_token = {secret}\n")
    elif place == "in-memory-oidc-token":
        from huggingface_hub.utils import _auth

        cache = {"resource": "me/x", "token": secret, "expires_at": 1e18}
        monkeypatch.setattr(_auth, "_OIDC_TOKEN_CACHE", cache)
    else:
        monkeypatch.setenv(place, secret)
    out, _ = default_run
    with pytest.raises(PipelineError) as err:
        push_to_hub(out / "dataset", "me/x", token=given, api=FailingHub(given or secret))
    assert str(err.value) == "push to hub 'me/x' failed: 401 Unauthorized: Bearer *** rejected"


@pytest.mark.parametrize("form", ["underscores", "dashes", "org"])
def test_push_errors_hide_token_shapes_nobody_named(
    default_run: tuple[Path, Manifest], no_tokens: Path, form: str
) -> None:
    prefix = "api_org" if form == "org" else "hf"
    out, _ = default_run
    with pytest.raises(PipelineError) as err:
        push_to_hub(out / "dataset", "me/x", api=FailingHub(TOKEN_FORMS[form]))
    assert str(err.value) == (
        f"push to hub 'me/x' failed: 401 Unauthorized: Bearer {prefix}_*** rejected"
    )


def test_push_uploads_only_an_export_folder(
    default_run: tuple[Path, Manifest], tmp_path: Path
) -> None:
    class RecordingHub:
        def __init__(self) -> None:
            self.uploads: list[dict[str, object]] = []

        def create_repo(self, **kwargs: object) -> str:
            return "https://huggingface.co/datasets/me/x"

        def upload_folder(self, **kwargs: object) -> None:
            self.uploads.append(kwargs)

    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "README.md").write_text("# my project")
    (folder / "secrets.env").write_text("PASSWORD=1")
    hub = RecordingHub()
    with pytest.raises(PipelineError) as err:
        push_to_hub(folder, "me/x", api=hub)
    assert str(err.value) == (
        f"{folder}: holds files no instructmix export wrote (secrets.env); "
        "push uploads only an export folder"
    )
    assert hub.uploads == []
    # An export goes up without the marker, which is bookkeeping for this machine.
    out, _ = default_run
    push_to_hub(out / "dataset", "me/x", api=hub)
    assert hub.uploads[0]["ignore_patterns"] == [MARKER]
