"""`run --keep` and `--compression`: a run folder keeps only what its mode says, resumes after a
kill anywhere, and ships the same dataset bytes in every mode and codec; a command that needs
what a mode dropped says so in one line."""

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

from pipeline import Manifest, run_recipe
from pipeline.errors import PipelineError, RunFolderError
from pipeline.models import KeepMode
from pipeline.retention import apply_keep, kept
from pipeline.runfolder import RunFolder
from pipeline.stages import render_stage

BENCH = Path(__file__).parent.parent / "benchmarks" / "bench_disk.py"
STAGE_DIRS = ("examples", "rendered", "valid", "mixed", "dataset")
# What a finished folder holds, by mode (the manifest, rejects and mixed/conflicts.jsonl are
# always there).
HOLDS: dict[str, set[str]] = {
    "all": set(STAGE_DIRS),
    "resume": {"examples", "mixed", "dataset"},
    "dataset": {"dataset"},
}


def _dataset_bytes(out: Path) -> dict[str, bytes]:
    root = out / "dataset"
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _data_folders(out: Path) -> set[str]:
    """Stage folders that hold data (a part, a split file or a shard)."""
    return {
        name
        for name in STAGE_DIRS
        if any(p.is_file() and p.name != "conflicts.jsonl" for p in (out / name).rglob("*"))
    }


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=300
    )


def _manifest(out: Path) -> Manifest:
    return Manifest.model_validate_json((out / "manifest.json").read_text())


def test_the_modes_say_what_they_keep() -> None:
    for mode, folders in HOLDS.items():
        assert kept(mode) == folders, mode  # type: ignore[arg-type]


@pytest.mark.parametrize("keep", ["resume", "dataset"])
def test_every_mode_ships_the_bytes_of_keep_all_and_holds_only_what_it_says(
    default_run: tuple[Path, Manifest], tmp_path: Path, keep: KeepMode
) -> None:
    reference, manifest = default_run
    out = tmp_path / keep
    result = run_recipe(None, out, keep=keep)
    assert _dataset_bytes(out) == _dataset_bytes(reference)
    assert result.sources == manifest.sources and result.check() == []
    assert _data_folders(out) == HOLDS[keep]
    assert result.storage.keep == keep
    assert set(result.storage.dropped) == set(STAGE_DIRS) - HOLDS[keep]
    assert result == _manifest(out)
    # What every mode keeps for inspection: the rejects and the mix's conflict report.
    assert (out / "mixed" / "conflicts.jsonl").read_bytes() == (
        reference / "mixed" / "conflicts.jsonl"
    ).read_bytes()
    assert sorted(p.name for p in (out / "rejects").rglob("*.jsonl")) == sorted(
        p.name for p in (reference / "rejects").rglob("*.jsonl")
    )
    # A finished run is not redone, and its folder stays as the mode left it.
    again = run_recipe(None, out, keep=keep)
    assert again == result
    assert _data_folders(out) == HOLDS[keep]


def _start(out: Path, keep: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            "--out",
            str(out),
            "-w",
            "1",
            "-q",
            "--keep",
            keep,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _has(pattern: str) -> Callable[[Path], bool]:
    return lambda out: any(out.glob(pattern))


def _dropping(out: Path) -> bool:
    """The manifest lists a dropped folder: its files are being deleted now, or are gone."""
    try:
        return bool(json.loads((out / "manifest.json").read_text())["storage"]["dropped"])
    except (OSError, ValueError, KeyError):
        return False


# Kill points: as the crash tests' (tests/test_crash_resume.py), and as the first drop starts.
KILL_WHEN: list[tuple[str, Callable[[Path], bool]]] = [
    ("load", lambda out: (out / "manifest.json").exists()),
    ("render", _has("rendered/*/part-*.parquet")),
    ("validate", _has("valid/*/part-*.parquet")),
    ("drop", _dropping),
    ("mix", _has("mixed/*.parquet")),
    ("export", _has(".dataset.export-*/data/*")),
]


@pytest.mark.parametrize("keep", ["resume", "dataset"])
@pytest.mark.parametrize(("stage", "condition"), KILL_WHEN, ids=[k for k, _ in KILL_WHEN])
def test_sigkill_anywhere_then_resume_in_the_same_mode_gives_the_same_dataset(
    default_run: tuple[Path, Manifest],
    tmp_path: Path,
    keep: str,
    stage: str,
    condition: Callable[[Path], bool],
) -> None:
    reference, manifest = default_run
    out = tmp_path / "killed"
    proc = _start(out, keep)
    deadline = time.monotonic() + 120
    while proc.poll() is None and not condition(out) and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = _cli("run", "--out", str(out), "-w", "1", "--json", "--keep", keep)
    assert resumed.returncode == 0, resumed.stderr
    assert _dataset_bytes(out) == _dataset_bytes(reference)
    final = Manifest.model_validate_json(resumed.stdout)
    assert final.sources == manifest.sources and final.check() == []
    assert _data_folders(out) == HOLDS[keep]
    assert not [p for p in out.rglob(".*.tmp")], "a temporary survived the resume"


def test_a_kill_between_recording_a_drop_and_deleting_is_finished_by_the_next_run(
    default_run: tuple[Path, Manifest], tmp_path: Path
) -> None:
    reference, _ = default_run
    out = tmp_path / "out"
    run_recipe(None, out)
    # As a kill right after the manifest said so would leave it: listed, files still there.
    folder = RunFolder(out)
    manifest = folder.read_manifest()
    manifest.storage.dropped = ["rendered", "valid"]
    manifest.storage.keep = "resume"
    folder.write_manifest(manifest)
    assert _data_folders(out) == set(STAGE_DIRS)
    # A stage that would read a listed folder refuses it, files or not: it may be half gone.
    with pytest.raises(RunFolderError, match="valid/ was removed by `run --keep resume`"):
        folder.read_manifest(needs="validate")
    run_recipe(None, out, keep="resume")
    assert _data_folders(out) == HOLDS["resume"]
    assert _dataset_bytes(out) == _dataset_bytes(reference)


def test_a_command_that_needs_a_dropped_folder_says_what_is_gone_and_how_to_get_it_back(
    tmp_path: Path, user_catalog: Path
) -> None:
    recipe = user_catalog / "recipes" / "mini.yaml"
    slim, middle = tmp_path / "slim", tmp_path / "middle"
    run_recipe(recipe, slim, keep="dataset")
    run_recipe(recipe, middle, keep="resume")
    cases = [
        (("export", "--out", str(slim)), slim, "mixed/", "dataset"),
        (("export", "--out", str(slim), "--eval-harness", str(tmp_path / "h")), slim, "mixed/",
         "dataset"),
        (("render", "--out", str(slim)), slim, "examples/", "dataset"),
        (("mix", "--out", str(middle)), middle, "valid/", "resume"),
        (("validate", "--out", str(middle)), middle, "rendered/", "resume"),
    ]  # fmt: skip
    for args, out, folder, mode in cases:
        result = _cli(*args, "-q")
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.splitlines() == [
            f"error: {out}: {folder} was removed by `run --keep {mode}` once every stage "
            f"reading it had run; rebuild with `instructmix run {recipe} --out {out} --keep "
            "all` (the same recipe and catalog options: it rebuilds what is gone, and the "
            "dataset comes out the same)"
        ], args
    assert not (tmp_path / "h").exists()
    # What the middle mode keeps still serves: the mixture exports again, anywhere.
    again = _cli("export", "--out", str(middle), "--to", str(tmp_path / "copy"), "-q")
    assert again.returncode == 0, again.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "copy" / "data").glob("*.parquet")} == {
        p.name: p.read_bytes() for p in (middle / "dataset" / "data").glob("*.parquet")
    }
    # And the rejects are all there to read.
    assert _cli("rejects", "--out", str(slim)).returncode == 0


def test_a_later_run_in_a_mode_that_keeps_more_rebuilds_only_what_is_gone(
    tmp_path: Path, user_catalog: Path
) -> None:
    recipe = user_catalog / "recipes" / "mini.yaml"
    reference = tmp_path / "all"
    run_recipe(recipe, reference)
    out = tmp_path / "out"
    run_recipe(recipe, out, keep="resume")
    examples = {p: p.stat().st_mtime_ns for p in (out / "examples").rglob("*.parquet")}
    rebuilt = run_recipe(recipe, out, keep="all")
    assert _data_folders(out) == set(STAGE_DIRS) and rebuilt.storage.dropped == []
    for stage in ("examples", "rendered", "valid", "mixed"):
        assert {p.name: p.read_bytes() for p in (out / stage).rglob("*.parquet")} == {
            p.name: p.read_bytes() for p in (reference / stage).rglob("*.parquet")
        }, stage
    assert _dataset_bytes(out) == _dataset_bytes(reference)
    # The examples were kept, so load was not redone.
    assert {p: p.stat().st_mtime_ns for p in (out / "examples").rglob("*.parquet")} == examples
    # From the slimmest mode, everything is rebuilt from the sources.
    run_recipe(recipe, out, keep="dataset")
    assert _data_folders(out) == HOLDS["dataset"]
    run_recipe(recipe, out, keep="resume")
    assert _data_folders(out) == HOLDS["resume"]
    assert _dataset_bytes(out) == _dataset_bytes(reference)


def test_a_stage_run_by_hand_brings_its_folder_back(tmp_path: Path, user_catalog: Path) -> None:
    """`render` on a folder whose rendered parts were dropped writes them again, and the
    manifest stops calling them gone; validate then reads them."""
    out = tmp_path / "out"
    run_recipe(user_catalog / "recipes" / "mini.yaml", out, keep="resume")
    render_stage(out)
    manifest = _manifest(out)
    assert "rendered" not in manifest.storage.dropped
    assert manifest.stages_done == ["load", "render"]
    assert list((out / "rendered").rglob("part-*.parquet"))
    assert _cli("validate", "--out", str(out), "-q").returncode == 0


def test_dropping_leaves_a_users_files_alone(tmp_path: Path, user_catalog: Path) -> None:
    recipe = user_catalog / "recipes" / "mini.yaml"
    out = tmp_path / "out"
    run_recipe(recipe, out)
    mine = {
        out / "rendered" / "notes.txt": b"my notes\n",
        out / "valid" / "mini_nli" / "part-1.parquet": b"not a part of the tool's\n",
        out / "examples" / "mini_nli" / "keep.me": b"mine\n",
        out / "mixed" / "mine.csv": b"a,b\n",
    }
    for path, data in mine.items():
        path.write_bytes(data)
    run_recipe(recipe, out, keep="dataset")
    for path, data in mine.items():
        assert path.read_bytes() == data
    assert not list((out / "rendered").rglob("*.parquet"))
    assert [p.name for p in (out / "valid" / "mini_nli").iterdir()] == ["part-1.parquet"]
    assert not (out / "mixed" / "train.parquet").exists()


def test_the_reject_share_check_counts_records_without_the_rendered_parts(
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
        run_recipe(recipe, out, max_reject_share=0.5, keep="resume")
    assert "template 'does-it-follow' of 'mini_nli': 4 of 4 records rejected" in str(caught.value)
    assert _manifest(out).storage.dropped == ["rendered"]
    # The same stop on a resume, then going on as the message says.
    with pytest.raises(PipelineError, match="4 of 4 records rejected"):
        run_recipe(recipe, out, max_reject_share=0.5, keep="resume")
    manifest = run_recipe(recipe, out, max_reject_share=0, keep="resume")
    assert manifest.check() == [] and manifest.storage.dropped == ["rendered", "valid"]


def _codecs(out: Path, stage: str) -> set[str]:
    return {
        pq.ParquetFile(p).metadata.row_group(0).column(0).compression
        for p in (out / stage).rglob("part-*.parquet")
        if pq.ParquetFile(p).metadata.num_row_groups
    }


def _two_sources(catalog: Path) -> Path:
    """The user catalog with a second source (a renamed copy): two parts, so two workers."""
    for kind in ("sources", "templates"):
        text = (catalog / kind / "mini_nli.yaml").read_text(encoding="utf-8")
        first = text.replace("source: mini_nli", "source: mini_nli_b")
        (catalog / kind / "mini_nli_b.yaml").write_text(
            first.replace("name: mini_nli", "name: mini_nli_b"), encoding="utf-8"
        )
    recipe = catalog / "recipes" / "mini.yaml"
    recipe.write_text(
        recipe.read_text().replace("[mini_nli]", "[mini_nli, mini_nli_b]"), encoding="utf-8"
    )
    return recipe


def test_compression_is_the_parts_codec_and_never_changes_the_data(
    tmp_path: Path, user_catalog: Path
) -> None:
    recipe = _two_sources(user_catalog)
    reference = tmp_path / "zstd"
    run_recipe(recipe, reference)
    out = tmp_path / "lz4"
    # Two workers (two parts): spawned processes learn the codec from the manifest.
    manifest = run_recipe(recipe, out, compression="lz4", workers=2)
    assert set(manifest.sources) == {"mini_nli", "mini_nli_b"}
    for stage in ("examples", "rendered", "valid"):
        assert _codecs(out, stage) == {"LZ4"}, stage
        assert _codecs(reference, stage) == {"ZSTD"}, stage
        tables = [pq.read_table(p) for p in sorted((out / stage).rglob("part-*.parquet"))]
        assert tables == [pq.read_table(p) for p in sorted((reference / stage).rglob("part-*"))]
    assert manifest.storage.compression == "lz4"
    # The mixture is not a part: always zstd, as the export.
    mixed = pq.ParquetFile(out / "mixed" / "train.parquet").metadata.row_group(0).column(0)
    assert mixed.compression == "ZSTD"
    assert _dataset_bytes(out) == _dataset_bytes(reference)
    # Resuming with another codec keeps the parts written and writes new ones in it.
    render_stage(out)
    rerun = run_recipe(recipe, out, compression="zstd:9")
    assert rerun.storage.compression == "zstd:9"
    assert _codecs(out, "examples") == {"LZ4"} and _codecs(out, "valid") == {"ZSTD"}
    assert _dataset_bytes(out) == _dataset_bytes(reference)


def test_parts_are_written_plain_and_the_mixture_with_dictionaries_and_statistics(
    tmp_path: Path, user_catalog: Path
) -> None:
    # The run folder's parts are read whole, by this tool only: no dictionary pages (their ids
    # and texts are all distinct) and no statistics. What users read keeps both.
    out = tmp_path / "out"
    run_recipe(user_catalog / "recipes" / "mini.yaml", out)
    parts = sorted(p for stage in ("examples", "rendered", "valid")
                   for p in (out / stage).rglob("part-*.parquet"))  # fmt: skip
    assert parts
    for path in parts:
        meta = pq.ParquetFile(path).metadata
        for g in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                column = meta.row_group(g).column(c)
                assert not column.has_dictionary_page and not column.is_stats_set, (path, c)
    mixed = pq.ParquetFile(out / "mixed" / "train.parquet").metadata.row_group(0)
    names = [mixed.column(c).path_in_schema for c in range(mixed.num_columns)]
    source = mixed.column(names.index("source"))
    assert source.has_dictionary_page and source.is_stats_set
    shipped = sorted((out / "dataset").rglob("*.parquet"))
    assert shipped and pq.ParquetFile(shipped[0]).metadata.row_group(0).column(0).is_stats_set


def test_bad_keep_and_compression_values_are_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    bad_keep = _cli("run", "--out", str(out), "-q", "--keep", "some")
    assert bad_keep.returncode == 2
    assert bad_keep.stderr.strip() == (
        "error: --keep must be one of all, resume, dataset, not 'some'"
    )
    bad_codec = _cli("run", "--out", str(out), "-q", "--compression", "zstd:99")
    assert bad_codec.returncode == 1
    assert bad_codec.stderr.strip() == (
        "error: compression 'zstd:99': use one of zstd, zstd:N, lz4, snappy, gzip, brotli, "
        "none (N: a level, 1-22)"
    )
    assert not (out / "manifest.json").exists()


def test_bench_disk_reads_a_run_folder(tmp_path: Path, user_catalog: Path) -> None:
    out = tmp_path / "out"
    manifest = run_recipe(user_catalog / "recipes" / "mini.yaml", out, keep="resume")
    result = subprocess.run(
        [sys.executable, str(BENCH), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    usage = json.loads(result.stdout)
    counts = manifest.sources["mini_nli"]
    stages = usage["stages"]
    assert stages["examples"]["rows"] == counts.examples_rendered
    assert stages["rendered"] == stages["valid"] == {
        "files": 0, "bytes": 0, "rows": 0, "bytes_per_row": None, "bytes_per_record": 0.0
    }  # fmt: skip
    assert stages["mixed"]["rows"] == stages["dataset"]["rows"] == sum(manifest.splits.values())
    assert usage["records"] == sum(manifest.splits.values())
    assert usage["total"]["bytes"] == sum(
        p.stat().st_size
        for p in out.rglob("*")
        if p.is_file() and p.name != ".lock" and p.parts[len(out.parts)] in (
            *STAGE_DIRS, "rejects", "manifest.json"
        )
    )  # fmt: skip
    assert usage["storage"]["dropped"] == ["rendered", "valid"]
    apply_keep(RunFolder(out), "resume")  # idempotent: nothing more to drop
    assert (
        json.loads(
            subprocess.run(
                [sys.executable, str(BENCH), "--out", str(out), "--json"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )["total"]
        == usage["total"]
    )
