"""A user's files are never modified: `run` and the stages write only into a folder that is
new, empty, or an instructmix run folder, and inside one they delete only the files the tool
itself names."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import Manifest, run_recipe
from pipeline.errors import PipelineError, RunFolderError
from pipeline.mix import mix_stage
from pipeline.stages import load_stage, render_stage


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash (folders and all)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _users_project(root: Path) -> Path:
    """A folder that looks like a run folder's layout but is a user's project."""
    files = {
        "README.md": "# my project\n",
        "manifest.json": '{"name": "my-app", "version": "1.0"}\n',
        "examples/keep.txt": "my notes\n",
        "rendered/draft/part-00000.parquet": "not ours\n",
        "rejects/todo.jsonl": '{"todo": 1}\n',
        "data/raw/train.csv": "a,b\n1,2\n",
        "deep/nested/.cache.abcdefgh.tmp": "a user's temp file\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("manifest_text", [None, '{"name": "my-app"}\n', "{not json"])
def test_run_refuses_a_folder_that_is_not_a_run_folder(
    tmp_path: Path, manifest_text: str | None
) -> None:
    out = _users_project(tmp_path / "project")
    if manifest_text is None:
        (out / "manifest.json").unlink()
    else:
        (out / "manifest.json").write_text(manifest_text, encoding="utf-8")
    before = _snapshot(out)
    with pytest.raises(RunFolderError, match="project"):
        run_recipe(None, out)
    assert _snapshot(out) == before
    assert not (out / ".lock").exists()  # not even the lock file is left behind


def test_every_writing_stage_refuses_a_users_folder(tmp_path: Path) -> None:
    out = _users_project(tmp_path / "project")
    before = _snapshot(out)
    for stage in (lambda: load_stage(None, out), lambda: render_stage(out), lambda: mix_stage(out)):
        with pytest.raises(RunFolderError, match=r"not an instructmix run folder|manifest"):
            stage()
    assert _snapshot(out) == before


def test_the_cli_says_so_in_one_line_and_exits_1(tmp_path: Path) -> None:
    out = _users_project(tmp_path / "project")
    before = _snapshot(out)
    result = _cli("run", "--out", str(out), "-q", "-w", "1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}"), result.stderr
    assert _snapshot(out) == before


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "results.txt"
    out.write_text("keep me\n", encoding="utf-8")
    result = _cli("run", "--out", str(out), "-q", "-w", "1")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {out}: is a file, not a folder; pick another --out"
    assert out.read_text(encoding="utf-8") == "keep me\n"


def test_an_empty_folder_and_a_new_one_are_fine(tmp_path: Path, user_catalog: Path) -> None:
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "deeper"):
        manifest = run_recipe(user_catalog / "recipes" / "mini.yaml", out)
        assert "export" in manifest.stages_done


def test_inside_a_run_folder_only_the_tools_own_files_are_deleted(
    tmp_path: Path, user_catalog: Path
) -> None:
    recipe = user_catalog / "recipes" / "mini.yaml"
    out = tmp_path / "run"
    run_recipe(recipe, out)
    # A user drops files into the run folder, some with names close to the tool's own.
    strangers = {
        "notes.md": "mine\n",
        "examples/keep.txt": "mine\n",
        "examples/mini_nli/part-1.parquet": "mine\n",
        "examples/mini_nli/analysis.parquet": "mine\n",
        "rendered/mini_nli/old/part-00000.parquet": "mine\n",
        "rejects/notes.txt": "mine\n",
        "mixed/plots/train.png": "mine\n",
        "analysis/.draft.abcdefgh.tmp": "mine\n",
        "rendered/mini_nli/.keep.tmp": "mine\n",
    }
    for rel, text in strangers.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text, encoding="utf-8")
    # Killed-run leftovers with the tool's own temporary names do get cleaned.
    leftover = out / "valid" / "mini_nli" / ".part-00000.parquet.k3j9x0q_.tmp"
    leftover.write_bytes(b"half")
    manifest = run_recipe(recipe, out, resume=False)
    assert "export" in manifest.stages_done
    for rel, text in strangers.items():
        assert (out / rel).read_text(encoding="utf-8") == text, rel
    assert not leftover.exists()
    assert (out / "valid" / "mini_nli" / "part-00000.parquet").is_file()


def test_a_run_folder_with_a_hand_edited_manifest_fails_in_one_line(
    default_run: tuple[Path, Manifest], tmp_path: Path
) -> None:
    reference, _ = default_run
    edits = {
        "bad recipe seed": lambda m: m["recipe"].__setitem__("seed", "abc"),
        "counts as text": lambda m: m["sources"]["gsm8k"].__setitem__("examples_in", "many"),
        "unknown key": lambda m: m.__setitem__("extra", 1),
    }
    for what, edit in edits.items():
        out = tmp_path / what.replace(" ", "-")
        shutil.copytree(reference, out)
        manifest = json.loads((out / "manifest.json").read_text())
        edit(manifest)
        (out / "manifest.json").write_text(json.dumps(manifest))
        for stage in ("mix", "export", "render"):
            result = _cli(stage, "--out", str(out), "-q")
            assert result.returncode == 1, (what, stage, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, (what, stage, result.stderr)
            assert "manifest.json: unreadable manifest" in lines[0], (what, stage, lines)


def test_a_truncated_part_is_redone_on_resume_and_named_by_a_stage(
    tmp_path: Path, user_catalog: Path
) -> None:
    recipe = user_catalog / "recipes" / "mini.yaml"
    out = tmp_path / "run"
    run_recipe(recipe, out)
    dataset = _snapshot(out / "dataset")
    part = out / "valid" / "mini_nli" / "part-00000.parquet"
    part.write_bytes(part.read_bytes()[:100])
    # A stage that reads the part names it in one line ...
    result = _cli("mix", "--out", str(out), "-q")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {part}: written by another run (or truncated)")
    # ... and `run` redoes it and ends with the same bytes.
    run_recipe(recipe, out)
    assert _snapshot(out / "dataset") == dataset


def test_a_part_from_another_run_is_never_kept(tmp_path: Path, user_catalog: Path) -> None:
    """A part carries the fingerprint of the run that wrote it; one from a run of other
    templates (a worker that outlived its parent would write one) is redone, not exported."""
    recipe = user_catalog / "recipes" / "mini.yaml"
    templates = user_catalog / "templates" / "mini_nli.yaml"
    old_run = tmp_path / "old"
    run_recipe(recipe, old_run)
    templates.write_text(
        templates.read_text(encoding="utf-8").replace("follow from", "follow, NEW, from"),
        encoding="utf-8",
    )
    out = tmp_path / "new"
    run_recipe(recipe, out)
    expected = _snapshot(out / "dataset")
    # Plant the old run's parts where the new run's are, as a stale worker would.
    for stage in ("rendered", "valid"):
        shutil.copy(old_run / stage / "mini_nli" / "part-00000.parquet", out / stage / "mini_nli")
    run_recipe(recipe, out)
    assert _snapshot(out / "dataset") == expected
    rows = pq.read_table(out / "dataset" / "data").to_pylist()
    prompts = [r["messages"][0]["content"] for r in rows if r["template_id"] == "does-it-follow"]
    assert prompts and all("NEW" in p for p in prompts)


def test_a_later_stage_never_creates_a_missing_folder(tmp_path: Path) -> None:
    for stage in ("render", "validate", "mix", "export"):
        missing = tmp_path / f"typo-{stage}"
        result = _cli(stage, "--out", str(missing), "-q")
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"error: {missing}: no run folder here; run `instructmix load` (or `run`) first"
        )
        assert not missing.exists()


def test_a_template_that_rejects_most_of_its_records_stops_the_run(
    tmp_path: Path, user_catalog: Path
) -> None:
    templates = user_catalog / "templates" / "mini_nli.yaml"
    templates.write_text(
        templates.read_text(encoding="utf-8").replace(
            'from \\"{{ premise }}', 'from \\"{{ premsie }}'
        ),
        encoding="utf-8",
    )
    recipe = user_catalog / "recipes" / "mini.yaml"
    out = tmp_path / "out"
    with pytest.raises(PipelineError) as caught:
        run_recipe(recipe, out, max_reject_share=0.5)
    message = str(caught.value)
    assert "template 'does-it-follow' of 'mini_nli': 4 of 4 records rejected" in message
    assert "(mostly undefined:" in message and "premsie" in message
    assert "--max-reject-share 0 to go on" in message
    assert not (out / "dataset").exists()
    # Off, the same build goes on and ships the records that did render.
    manifest = run_recipe(recipe, out, max_reject_share=0)
    assert manifest.sources["mini_nli"].records_selected == 4


def test_a_source_whose_rows_all_fail_stops_the_run(tmp_path: Path, user_catalog: Path) -> None:
    # Labels from another label set: every row is a bad_label reject.
    data = user_catalog / "data" / "mini_nli.jsonl"
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    data.write_text(
        "".join(json.dumps({**r, "gold": "paraphrase"}) + "\n" for r in rows), encoding="utf-8"
    )
    with pytest.raises(PipelineError, match=r"source 'mini_nli': 4 of 4 examples rejected at load"):
        run_recipe(user_catalog / "recipes" / "mini.yaml", tmp_path / "out", max_reject_share=0.5)


def test_the_cli_stops_a_mostly_rejected_build_by_default(
    tmp_path: Path, user_catalog: Path
) -> None:
    data = user_catalog / "data" / "mini_nli.jsonl"
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    data.write_text("".join(json.dumps({**r, "gold": "x"}) + "\n" for r in rows), encoding="utf-8")
    recipe = str(user_catalog / "recipes" / "mini.yaml")
    stopped = _cli("run", recipe, "--out", str(tmp_path / "a"), "-q", "-w", "1")
    assert stopped.returncode == 1
    assert "rejects above --max-reject-share 0.5: source 'mini_nli'" in stopped.stderr
    going = _cli(
        "run", recipe, "--out", str(tmp_path / "b"), "-q", "-w", "1", "--max-reject-share", "0"
    )
    assert going.returncode == 0, going.stderr
