"""Every export format is a config of the one folder that `load_dataset(folder, config)` reads:
the same rows with the same provenance, each in its trainer's layout, as parquet (in row groups
the Hub's viewer can read) and as JSON lines on request, under the export's transaction."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

import pipeline.export.formats as formats
from pipeline import PipelineError, export_stage, run_recipe
from pipeline.cli import app
from pipeline.export import FORMATS, MARKER, parse_formats
from pipeline.export.formats import Shard, conversation

from .conftest import write

runner = CliRunner()

# A mixture with every shape a record takes: a system turn, multi-turn few-shot (exemplars as
# earlier user/assistant turns), chain of thought, and a validation split.
RECIPE = """
name: formats
seed: 5
sources: [esnli, gsm8k]
mixing: {strategy: proportional, cap: 40}
variants: {zero_shot: 0.4, few_shot: 0.4, cot: 0.2}
few_shot: {k: 2, format: multi_turn}
system: "You are a careful assistant."
validation_fraction: 0.1
"""
PROVENANCE = [
    "source", "task", "cluster", "template_id", "variant", "answer_choices", "gold_answers",
    "example_id", "split", "language", "license",
]  # fmt: skip
LAYOUTS = {
    "default": ["messages"],
    "prompt_completion": ["prompt", "completion"],
    "alpaca": ["instruction", "input", "output", "system", "history"],
    "sharegpt": ["conversations"],
    "flan": ["inputs", "targets"],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("formats")
    out = root / "run"
    run_recipe(write(root / "formats.yaml", RECIPE), out)
    export_stage(out, formats=["all"], jsonl=True)
    return out


def _card_header(folder: Path) -> dict[str, object]:
    text = (folder / "README.md").read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    assert isinstance(header, dict)
    return header


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def test_every_format_is_a_config_with_the_same_rows_and_provenance(run: Path) -> None:
    folder = run / "dataset"
    header = _card_header(folder)
    assert [c["config_name"] for c in header["configs"]] == list(LAYOUTS)  # type: ignore[index]
    messages = datasets.load_dataset(str(folder))  # the default config
    assert set(messages) == {"train", "validation"}
    infos = {i["config_name"]: i for i in header["dataset_info"]}  # type: ignore[index, union-attr]
    for config, columns in LAYOUTS.items():
        ds = datasets.load_dataset(str(folder), config)
        assert set(ds) == {"train", "validation"}
        for split in ds:
            part = ds[split]
            assert part.column_names == ["id", *columns, *PROVENANCE]
            assert part["id"] == messages[split]["id"]
            for column in PROVENANCE:
                assert part[column] == messages[split][column], (config, column)
        # The card's features are the data's (datasets reads them from the card).
        card_features = datasets.Features._from_yaml_list(infos[config]["features"])
        assert ds["train"].features == card_features
        split_rows = {s["name"]: s["num_examples"] for s in infos[config]["splits"]}
        assert split_rows == {s: ds[s].num_rows for s in ds}


def test_each_layout_of_a_few_shot_record_with_a_system_turn(run: Path) -> None:
    folder = run / "dataset"
    train = {c: datasets.load_dataset(str(folder), c, split="train") for c in LAYOUTS}
    rows = train["default"]["messages"]
    # A multi-turn few-shot record: system, two exemplar exchanges, then the query.
    i = next(i for i, m in enumerate(rows) if m[0]["role"] == "system" and len(m) == 7)
    messages = rows[i]
    system, query, answer = messages[0]["content"], messages[-2]["content"], messages[-1]
    exemplars = [[messages[j]["content"], messages[j + 1]["content"]] for j in (1, 3)]

    pc = train["prompt_completion"][i]
    assert pc["prompt"] == messages[:-1] and pc["completion"] == [answer]

    alpaca = train["alpaca"][i]
    assert (alpaca["instruction"], alpaca["input"], alpaca["output"]) == (
        query,
        "",
        answer["content"],
    )
    assert alpaca["system"] == system and alpaca["history"] == exemplars

    roles = {"system": "system", "user": "human", "assistant": "gpt"}
    assert train["sharegpt"][i]["conversations"] == [
        {"from": roles[m["role"]], "value": m["content"]} for m in messages
    ]

    flan = train["flan"][i]
    assert flan["inputs"] == "\n\n".join([system, *exemplars[0], *exemplars[1], query])
    assert flan["targets"] == answer["content"]

    # A zero-shot record: no exemplars.
    j = next(j for j, m in enumerate(rows) if len(m) == 3)
    assert train["alpaca"][j]["history"] == []
    assert train["flan"][j]["inputs"] == f"{rows[j][0]['content']}\n\n{rows[j][1]['content']}"


def test_a_record_without_a_system_turn_has_an_empty_one() -> None:
    row = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    alpaca = FORMATS["alpaca"].convert
    flan = FORMATS["flan"].convert
    assert alpaca is not None and flan is not None
    assert alpaca([row]) == {
        "instruction": ["2+2?"],
        "input": [""],
        "output": ["4"],
        "system": [""],
        "history": [[]],
    }
    assert flan([row]) == {"inputs": ["2+2?"], "targets": ["4"]}


def test_a_record_that_breaks_the_turn_contract_is_refused() -> None:
    with pytest.raises(ValueError, match="ending on the assistant"):
        conversation([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(ValueError, match="roles are"):
        conversation([{"role": "system", "content": "s"}])


def test_format_names_repeated_comma_listed_or_all() -> None:
    assert parse_formats([]) == ("messages",)
    assert parse_formats(["flan,alpaca", "messages", "alpaca"]) == ("messages", "alpaca", "flan")
    assert parse_formats(["all"]) == tuple(FORMATS)
    with pytest.raises(PipelineError) as err:
        parse_formats(["messages,chatml"])
    assert str(err.value) == (
        "unknown export format 'chatml' (known: messages, prompt_completion, alpaca, sharegpt, "
        "flan, all)"
    )


def test_cli_format_option_and_a_bad_name(run: Path, tmp_path: Path) -> None:
    target = tmp_path / "two"
    result = runner.invoke(
        app, ["export", "--out", str(run), "--to", str(target), "-f", "sharegpt,flan", "-q"]
    )
    assert result.exit_code == 0, result.output
    header = _card_header(target)
    # No `default` config: the first one is marked default, so load_dataset(folder) works.
    assert header["configs"][0] == {  # type: ignore[index]
        "config_name": "sharegpt",
        "data_files": [
            {"split": "train", "path": "data/sharegpt/train-*.parquet"},
            {"split": "validation", "path": "data/sharegpt/validation-*.parquet"},
        ],
        "default": True,
    }
    assert datasets.load_dataset(str(target), split="train").column_names[1] == "conversations"
    assert sorted(p.name for p in (target / "data").iterdir()) == ["flan", "sharegpt"]
    bad = runner.invoke(app, ["export", "--out", str(run), "--to", str(target), "-f", "chat"])
    assert bad.exit_code == 1
    assert bad.stderr.strip().startswith("error: unknown export format 'chat' (known: ")


def test_jsonl_beside_each_shard_holds_the_same_rows(run: Path) -> None:
    folder = run / "dataset"
    shards = sorted(folder.glob("data/**/*.parquet"))
    assert len(shards) == 2 * len(FORMATS)
    for shard in shards:
        lines = shard.with_suffix(".jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == pq.read_table(shard).to_pylist()
    # JSON lines load on their own, as any JSON reader takes them.
    flan = datasets.load_dataset(
        "json", data_files=str(folder / "data/flan/train-00000-of-00001.jsonl"), split="train"
    )
    assert flan["targets"] == datasets.load_dataset(str(folder), "flan", split="train")["targets"]


def test_row_groups_stay_under_the_byte_bound_whatever_the_batches(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = pq.read_table(run / "mixed" / "train.parquet")
    fmt = FORMATS["sharegpt"]
    sizes = formats.row_bytes(fmt.table(records))
    bound = int(np.percentile(sizes, 90)) * 3  # a few rows a group
    monkeypatch.setattr(formats, "ROW_GROUP_BYTES", bound)

    def write(path: Path, pieces: list[pa.Table]) -> bytes:
        shard = Shard(path, fmt, max_rows=1000, jsonl=False)
        for piece in pieces:
            shard.add(piece)
        shard.close()
        return path.read_bytes()

    whole = write(tmp_path / "whole.parquet", [records])
    one_by_one = [records.slice(i, 1) for i in range(records.num_rows)]
    assert write(tmp_path / "rows.parquet", one_by_one) == whole
    meta = pq.read_metadata(tmp_path / "whole.parquet")
    assert meta.num_row_groups > 3
    start = 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        group = int(sizes[start : start + n].sum())
        assert group <= bound or n == 1  # a row larger than the bound is a group alone
        if start + n < len(sizes):
            assert group + int(sizes[start + n]) > bound  # and groups are filled
        start += n
    assert start == records.num_rows
    # The recipe's row_group_rows still caps the rows of a group.
    monkeypatch.setattr(formats, "ROW_GROUP_BYTES", 1 << 40)
    capped = Shard(tmp_path / "capped.parquet", fmt, max_rows=7, jsonl=False)
    capped.add(records)
    capped.close()
    groups = pq.read_metadata(tmp_path / "capped.parquet")
    assert {groups.row_group(g).num_rows for g in range(groups.num_row_groups - 1)} == {7}


def test_every_format_is_under_the_export_transaction(run: Path, tmp_path: Path) -> None:
    target = tmp_path / "export"
    export_stage(run, to=target, formats=["all"], jsonl=True)
    marker = json.loads((target / MARKER).read_text())
    assert marker["formats"] == list(FORMATS)
    assert len(marker["files"]) == 2 + 4 * len(FORMATS)  # card, info, 2 splits x parquet+jsonl
    # A file of the user's in a format's folder makes the folder theirs: refused, untouched.
    (target / "data" / "alpaca" / "notes.txt").write_text("mine")
    before = _tree(target)
    with pytest.raises(PipelineError, match=r"\(data/alpaca/notes\.txt\); refusing to replace"):
        export_stage(run, to=target)
    assert _tree(target) == before
    # --force moves it aside whole; the new export has only the formats asked for.
    manifest = export_stage(run, to=target, force=True)
    assert _tree(Path(manifest.export["moved_aside"])) == before
    assert sorted(p.name for p in (target / "data").iterdir()) == [
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ]
    # Re-exporting an export with every format replaces its format folders, leaving nothing.
    export_stage(run, to=target, formats=["all"])
    export_stage(run, to=target, formats=["flan"])
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == [
        ".instructmix-export.json",
        "README.md",
        "data",
        "data/flan",
        "data/flan/train-00000-of-00001.parquet",
        "data/flan/validation-00000-of-00001.parquet",
        "dataset_info.json",
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".export.")] == []


KILLED = """
import os, signal, sys
from pathlib import Path
import pipeline.export.stage as export

write_shards = export._write_shards

def killing(*args, **kwargs):
    write_shards(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

export._write_shards = killing
export.export_stage(Path(sys.argv[1]), to=Path(sys.argv[2]), formats=["all"], jsonl=True)
"""


def test_a_killed_export_of_every_format_is_cleaned_up_by_the_next(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "export"
    export_stage(run, to=target, formats=["alpaca"])
    before = _tree(target)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED, str(run), str(target)], capture_output=True, text=True
    )
    assert killed.returncode == -9, killed.stderr
    (build,) = [p for p in tmp_path.iterdir() if re.fullmatch(r"\.export\.export-\w{8}", p.name)]
    assert (build / "data" / "flan").is_dir()  # killed with format folders half built
    assert _tree(target) == before
    # A disk error in a format's shard fails the next export, which still cleans up first.
    write_table = pq.ParquetWriter.write_table

    def failing(self: pq.ParquetWriter, table: object, *args: object, **kwargs: object) -> None:
        if "/data/flan/" in str(self.where):
            raise OSError(28, "No space left on device")
        write_table(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)
    with pytest.raises(PipelineError, match=r"/data/flan/train-00000-of-00001\.parquet: cannot"):
        export_stage(run, to=target, formats=["all"], jsonl=True)
    assert _tree(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


# LLaMA-Factory's loader, as read in hiyouga/LLaMA-Factory at commit ff6d4d12eeb0 (2026-08-18):
# src/llamafactory/data/parser.py, DatasetAttr.join: the entry keys it reads, and the names
# under "columns" and "tags" (a "columns" mapping sets every column attribute, absent ones to
# None); src/llamafactory/extras/constants.py FILEEXT2TYPE: the file types it loads;
# src/llamafactory/data/converter.py: what its converters read from a row.
LF_FORMATTING = {"alpaca", "sharegpt", "openai"}
LF_ENTRY = {"file_name", "formatting", "ranking", "subset", "split", "folder", "num_samples"}
LF_COLUMNS = {
    "prompt", "query", "response", "history", "messages", "system", "tools", "images",
    "videos", "audios", "chosen", "rejected", "kto_tag",
}  # fmt: skip
LF_TAGS = {
    "role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag",
    "system_tag",
}  # fmt: skip
LF_FILE_TYPES = {"arrow", "csv", "json", "jsonl", "parquet", "txt"}


def _lf_sharegpt_keeps(row: dict[str, object], entry: dict[str, object]) -> bool:
    """SharegptDatasetConverter: an optional first system turn, then user tags at even and
    assistant tags at odd positions, an even count; anything else it drops with a warning."""
    columns, tags = entry["columns"], entry["tags"]
    assert isinstance(columns, dict) and isinstance(tags, dict)
    turns = row[columns["messages"]]
    assert isinstance(turns, list)
    if turns and turns[0][tags["role_tag"]] == tags["system_tag"]:
        turns = turns[1:]
    expected = [tags["user_tag"], tags["assistant_tag"]] * (len(turns) // 2)
    return len(turns) % 2 == 0 and [t[tags["role_tag"]] for t in turns] == expected


def _lf_alpaca_keeps(row: dict[str, object], entry: dict[str, object]) -> bool:
    """AlpacaDatasetConverter: history as [prompt, response] pairs, a string response."""
    columns = entry["columns"]
    assert isinstance(columns, dict)
    history = row[columns["history"]] if "history" in columns else []
    assert isinstance(history, list)
    return isinstance(row[columns["response"]], str) and all(len(p) == 2 for p in history)


def test_llamafactory_entries_read_as_its_loader_reads_them(run: Path) -> None:
    folder = run / "dataset"
    info = json.loads((folder / "dataset_info.json").read_text())
    assert sorted(info) == sorted(
        f"formats_{stem}{split}"
        for stem in ("", "alpaca_", "flan_", "sharegpt_")
        for split in ("train", "validation")
    )
    for name, entry in info.items():
        assert set(entry) <= LF_ENTRY | {"columns", "tags"}, name
        assert entry["formatting"] in LF_FORMATTING
        assert set(entry["columns"]) <= LF_COLUMNS and set(entry.get("tags", {})) <= LF_TAGS
        path = folder / entry["file_name"]
        assert path.is_file() and path.suffix[1:] in LF_FILE_TYPES
        rows = pq.read_table(path).to_pylist()
        assert set(entry["columns"].values()) <= set(rows[0])
        keeps = _lf_sharegpt_keeps if entry["formatting"] == "sharegpt" else _lf_alpaca_keeps
        assert all(keeps(row, entry) for row in rows), name  # LLaMA-Factory drops no row
    assert info["formats_train"]["tags"]["role_tag"] == "role"
    assert info["formats_sharegpt_train"]["tags"] == {
        "role_tag": "from",
        "content_tag": "value",
        "user_tag": "human",
        "assistant_tag": "gpt",
        "system_tag": "system",
    }


def test_cli_eval_harness_writes_the_tasks_instead_of_the_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.eval_harness as eval_harness

    calls: list[tuple[Path, Path, bool]] = []

    def writing(run_dir: Path, target: Path, *, force: bool = False) -> list[Path]:
        calls.append((run_dir, target, force))
        return [target / "README.md", target / "task.yaml"]

    monkeypatch.setattr(eval_harness, "write_eval_harness", writing)
    run, tasks = tmp_path / "run", tmp_path / "tasks"
    args = ["export", "--out", str(run), "--eval-harness", str(tasks)]
    result = runner.invoke(app, [*args, "--force", "--json"])
    assert result.exit_code == 0, result.output
    assert calls == [(run, tasks, True)]
    assert json.loads(result.stdout) == [str(tasks / "README.md"), str(tasks / "task.yaml")]
    result = runner.invoke(app, args)
    assert result.stderr.strip() == f"wrote 2 files for lm-evaluation-harness into {tasks}"
    assert not (run / "dataset").exists()


def test_a_recipe_chooses_its_export_formats_and_the_cli_overrides_them(tmp_path: Path) -> None:
    recipe = write(
        tmp_path / "r.yaml",
        """
        name: r
        sources: [poem_sentiment]
        mixing: {cap: 60}
        export: {formats: [messages, flan], jsonl: true}
        """,
    )
    out = tmp_path / "out"
    run_recipe(recipe, out)
    dataset = out / "dataset"
    assert datasets.load_dataset(str(dataset), "flan")["train"].column_names[:3] == [
        "id",
        "inputs",
        "targets",
    ]
    assert list((dataset / "data" / "flan").glob("*.jsonl"))
    assert not (dataset / "data" / "alpaca").exists()
    result = CliRunner().invoke(app, ["export", "--out", str(out), "-f", "alpaca", "-q"])
    assert result.exit_code == 0, result.output
    assert (dataset / "data" / "alpaca").is_dir() and not (dataset / "data" / "flan").exists()
