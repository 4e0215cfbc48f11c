"""The pipeline end to end, through the CLI and the API, on the bundled real samples."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import Manifest, push_to_hub, run_recipe
from pipeline.cli import app
from pipeline.runfolder import RunFolder, reject_lines

from .conftest import write

runner = CliRunner()


def _dataset_bytes(out: Path) -> dict[str, bytes]:
    root = out / "dataset"
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_default_run_counts_add_up(default_run: tuple[Path, Manifest]) -> None:
    out, manifest = default_run
    assert manifest.check() == []
    assert len(manifest.sources) >= 8
    for name, c in manifest.sources.items():
        assert c.examples_in == (
            c.examples_rejected + c.examples_capped + c.examples_exemplar_pool
            + c.examples_rendered
        )  # fmt: skip
        assert c.records_rendered == c.records_accepted + c.records_rejected
        assert c.records_accepted == (
            c.records_selected + c.records_dropped_by_mix + c.records_deduplicated
            + c.records_decontaminated
        )  # fmt: skip
        rejects = sum(
            len(reject_lines(RunFolder(out), s, name)) for s in ("load", "render", "validate")
        )
        assert rejects == c.examples_rejected + c.records_rejected
        mixed = len(reject_lines(RunFolder(out), "mix", name))
        assert mixed == c.records_deduplicated + c.records_decontaminated
        assert sum(c.rejected_by_rule.values()) == rejects + mixed
        valid = sum(pq.read_metadata(p).num_rows for p in RunFolder(out).parts("valid", name))
        assert valid == c.records_accepted
    exported = sum(
        pq.read_metadata(p).num_rows for p in (out / "dataset" / "data").glob("*.parquet")
    )
    assert exported == sum(c.records_selected for c in manifest.sources.values())
    assert exported == sum(manifest.splits.values())


def test_export_loads_with_datasets(default_run: tuple[Path, Manifest]) -> None:
    out, manifest = default_run
    ds = datasets.load_dataset(str(out / "dataset"))
    assert set(ds) == {"train", "validation"}
    train = ds["train"]
    assert train.num_rows == manifest.splits["train"]
    assert set(train.column_names) == {
        "id",
        "messages",
        "source",
        "task",
        "cluster",
        "template_id",
        "variant",
        "answer_choices",
        "gold_answers",
        "example_id",
        "split",
        "language",
        "license",
    }
    row = train[0]
    assert [m["role"] for m in row["messages"]][-1] == "assistant"
    # The default recipe makes every form Flan 2022 trains on.
    assert set(train.unique("variant")) == {
        "zero_shot_opt",
        "zero_shot_noopt",
        "few_shot_opt",
        "few_shot_noopt",
        "cot",
        "inverted",
    }
    assert len(set(train["id"])) == train.num_rows
    # No example is split across train and validation.
    val_examples = {(r["source"], r["example_id"]) for r in ds["validation"]}
    assert not val_examples & {
        (s, e) for s, e in zip(train["source"], train["example_id"], strict=True)
    }


def test_export_card_and_llamafactory_entries(default_run: tuple[Path, Manifest]) -> None:
    out, _ = default_run
    card = (out / "dataset" / "README.md").read_text()
    assert card.startswith("---\nconfigs:\n- config_name: default\n")
    assert "## Composition" in card and "| esnli | nli |" in card
    info = json.loads((out / "dataset" / "dataset_info.json").read_text())
    assert info["default_train"]["formatting"] == "sharegpt"
    assert info["default_train"]["tags"]["role_tag"] == "role"
    assert (out / "dataset" / info["default_train"]["file_name"]).is_file()


def test_stage_by_stage_gives_the_same_bytes_as_run(
    default_run: tuple[Path, Manifest], tmp_path: Path
) -> None:
    out, _ = default_run
    staged = tmp_path / "staged"
    for args in (["load"], ["render"], ["validate"], ["mix"], ["export"]):
        result = runner.invoke(app, [*args, "--out", str(staged), "--quiet"])
        assert result.exit_code == 0, result.output
    assert _dataset_bytes(staged) == _dataset_bytes(out)


def test_cli_run_from_any_directory_writes_output_and_prints_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_catalog: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", str(user_catalog / "recipes" / "mini.yaml")])
    assert result.exit_code == 0, result.output
    assert "mini_nli" in result.output and "total" in result.output
    assert (tmp_path / "output" / "dataset" / "data" / "train-00000-of-00001.parquet").is_file()


def test_json_output_is_the_manifest(tmp_path: Path, user_catalog: Path) -> None:
    result = runner.invoke(
        app,
        [
            "run",
            str(user_catalog / "recipes" / "mini.yaml"),
            "--out",
            str(tmp_path / "o"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = Manifest.model_validate_json(result.stdout)
    assert manifest.sources["mini_nli"].records_selected == 8
    assert manifest.check() == []


def test_planted_bad_row_lands_in_rejects_and_the_run_succeeds(
    tmp_path: Path, user_catalog: Path
) -> None:
    with open(user_catalog / "data" / "mini_nli.jsonl", "a", encoding="utf-8") as fh:
        fh.write(
            json.dumps({"id": 9, "p": "A bird sings.", "h": "A bird is loud.", "gold": "dunno"})
        )
        fh.write("\n")
    out = tmp_path / "o"
    manifest = run_recipe(user_catalog / "recipes" / "mini.yaml", out)
    counts = manifest.sources["mini_nli"]
    assert counts.examples_in == 5 and counts.examples_rejected == 1
    assert counts.rejected_by_rule == {"bad_label": 1}
    (reject,) = reject_lines(RunFolder(out), "load", "mini_nli")
    assert reject["rule"] == "bad_label" and reject["example_id"] == "9"
    assert reject["locator"].endswith("mini_nli.jsonl row 5")
    assert manifest.check() == []


def test_template_error_rejects_records_not_the_run(tmp_path: Path, user_catalog: Path) -> None:
    tpl = user_catalog / "templates" / "mini_nli.yaml"
    tpl.write_text(tpl.read_text().replace("{{ names.label }}", "{{ names.lable }}"))
    manifest = run_recipe(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    counts = manifest.sources["mini_nli"]
    assert counts.records_rendered == 8 and counts.records_rejected == 4
    assert counts.rejected_by_rule == {"undefined": 4}
    assert manifest.check() == []


def test_malformed_source_file_fails_with_one_line_naming_it(
    tmp_path: Path, user_catalog: Path
) -> None:
    bad = user_catalog / "sources" / "mini_nli.yaml"
    bad.write_text(bad.read_text().replace("cluster: nli", "cluster: [nli"))
    result = runner.invoke(
        app, ["run", str(user_catalog / "recipes" / "mini.yaml"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}:")


def test_malformed_template_file_fails_with_one_line_naming_it(
    tmp_path: Path, user_catalog: Path
) -> None:
    bad = write(
        user_catalog / "templates" / "extra.yaml",
        """
        source: mini_nli
        templates:
          - id: Bad Id
            instruction: x
            output: y
        """,
    )
    result = runner.invoke(
        app, ["run", str(user_catalog / "recipes" / "mini.yaml"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: {bad}:3: templates.0.id: "
        "String should match pattern '^[a-z0-9][a-z0-9_\\-]{0,63}$'"
    )


def test_unknown_source_in_recipe(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", "name: r\nsources: [snlii]\n")
    result = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "unknown source 'snlii'" in result.stderr


def test_stage_without_its_input_says_what_to_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "--out", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert "run `instructmix load` (or `run`) first" in result.stderr


def test_same_seed_same_bytes_other_seed_other_mix(tmp_path: Path, user_catalog: Path) -> None:
    recipe = user_catalog / "recipes" / "mini.yaml"
    run_recipe(recipe, tmp_path / "a")
    run_recipe(recipe, tmp_path / "b")
    assert _dataset_bytes(tmp_path / "a") == _dataset_bytes(tmp_path / "b")
    recipe.write_text(recipe.read_text().replace("seed: 7", "seed: 8"))
    run_recipe(recipe, tmp_path / "c")
    a = pq.read_table(tmp_path / "a" / "dataset" / "data" / "train-00000-of-00001.parquet")
    c = pq.read_table(tmp_path / "c" / "dataset" / "data" / "train-00000-of-00001.parquet")
    assert sorted(a["id"].to_pylist()) == sorted(c["id"].to_pylist())
    assert a["id"].to_pylist() != c["id"].to_pylist()


def test_cap_is_pushed_down_to_load(tmp_path: Path, user_catalog: Path) -> None:
    recipe = user_catalog / "recipes" / "mini.yaml"
    recipe.write_text(recipe.read_text().replace("cap: null", "cap: 2"))
    # Pad the source so the cap binds well below its size.
    with open(user_catalog / "data" / "mini_nli.jsonl", "a", encoding="utf-8") as fh:
        for i in range(100, 160):
            fh.write(
                json.dumps({"id": i, "p": f"Scene {i}.", "h": f"Claim {i}.", "gold": "neutral"})
                + "\n"
            )
    manifest = run_recipe(recipe, tmp_path / "o")
    c = manifest.sources["mini_nli"]
    assert c.examples_in == 64
    assert c.examples_rendered == 10  # ceil(2 / 2 * 1.1) + 8, not 64
    assert c.records_selected == 2
    assert manifest.check() == []


def test_shards_respect_shard_rows(tmp_path: Path, user_catalog: Path) -> None:
    recipe = user_catalog / "recipes" / "mini.yaml"
    recipe.write_text(recipe.read_text() + "export: {shard_rows: 3, row_group_rows: 2}\n")
    run_recipe(recipe, tmp_path / "o")
    files = sorted(p.name for p in (tmp_path / "o" / "dataset" / "data").iterdir())
    assert files == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert datasets.load_dataset(str(tmp_path / "o" / "dataset"))["train"].num_rows == 8


class FakeHfApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []

    def create_repo(self, **kwargs: object) -> str:
        self.calls.append(("create_repo", kwargs))
        return f"https://huggingface.co/datasets/{kwargs['repo_id']}"

    def upload_folder(self, **kwargs: object) -> None:
        self.calls.append(("upload_folder", kwargs))


def test_push_to_hub_uploads_the_export_folder(default_run: tuple[Path, Manifest]) -> None:
    out, _ = default_run
    api = FakeHfApi()
    url = push_to_hub(out / "dataset", "me/my-mix", private=True, api=api)
    assert url == "https://huggingface.co/datasets/me/my-mix"
    assert api.calls[0] == (
        "create_repo",
        {"repo_id": "me/my-mix", "repo_type": "dataset", "private": True, "exist_ok": True},
    )
    assert api.calls[1][1]["folder_path"] == str(out / "dataset")
    assert api.calls[1][1]["repo_type"] == "dataset"


def test_push_errors_never_echo_the_token(default_run: tuple[Path, Manifest]) -> None:
    out, _ = default_run

    class Failing(FakeHfApi):
        def create_repo(self, **kwargs: object) -> str:
            raise RuntimeError("401 Unauthorized for token hf_abcdefghijklmnopqrstuvwxyz")

    from pipeline import PipelineError

    with pytest.raises(PipelineError) as err:
        push_to_hub(out / "dataset", "me/x", token="hf_abcdefghijklmnopqrstuvwxyz", api=Failing())
    assert "hf_abcdefghij" not in str(err.value)
    assert "401 Unauthorized" in str(err.value)


def test_workers_give_the_same_bytes_as_one_process(
    default_run: tuple[Path, Manifest], tmp_path: Path
) -> None:
    out, manifest = default_run
    parallel = run_recipe(None, tmp_path / "w2", workers=2)
    assert _dataset_bytes(tmp_path / "w2") == _dataset_bytes(out)
    assert parallel.sources == manifest.sources
    # Intermediate parts match too, file names included.
    for stage in ("examples", "rendered", "valid"):
        for name in manifest.sources:
            ours = [p.read_bytes() for p in RunFolder(tmp_path / "w2").parts(stage, name)]
            assert ours == [p.read_bytes() for p in RunFolder(out).parts(stage, name)]


def test_rerunning_a_stage_does_not_count_twice(tmp_path: Path, user_catalog: Path) -> None:
    tpl = user_catalog / "templates" / "mini_nli.yaml"
    tpl.write_text(tpl.read_text().replace("{{ names.label }}", "{{ names.lable }}"))
    out = tmp_path / "o"
    first = run_recipe(user_catalog / "recipes" / "mini.yaml", out)
    for args in (["render", "-w", "1"], ["validate", "-w", "2"], ["validate"], ["mix"], ["export"]):
        assert runner.invoke(app, [*args, "--out", str(out), "-q"]).exit_code == 0
    again = Manifest.model_validate_json((out / "manifest.json").read_text())
    assert again.sources == first.sources
    assert again.check() == []


def test_duplicate_ids_are_rejected_after_the_first(tmp_path: Path, user_catalog: Path) -> None:
    with open(user_catalog / "data" / "mini_nli.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": 2, "p": "Copy.", "h": "Copy.", "gold": "neutral"}) + "\n")
        fh.write(json.dumps({"id": 2, "p": "Again.", "h": "Again.", "gold": "neutral"}) + "\n")
    out = tmp_path / "o"
    manifest = run_recipe(user_catalog / "recipes" / "mini.yaml", out)
    counts = manifest.sources["mini_nli"]
    assert (counts.examples_in, counts.examples_rejected, counts.examples_rendered) == (6, 2, 4)
    rejects = reject_lines(RunFolder(out), "load", "mini_nli")
    assert [r["locator"].rsplit(" ", 1)[-1] for r in rejects] == ["5", "6"]
    assert all(
        r["message"].startswith("example id '2' already used at") and r["message"].endswith("row 2")
        for r in rejects
    )
    assert manifest.check() == []


def test_two_exports_with_the_same_layout_load_their_own_rows(
    tmp_path: Path, user_catalog: Path
) -> None:
    # datasets caches a local folder by its card: the card's split sizes keep two exports with
    # identical file names (here: another seed, same counts) from sharing one cache entry.
    recipe = user_catalog / "recipes" / "mini.yaml"
    run_recipe(recipe, tmp_path / "a")
    recipe.write_text(recipe.read_text().replace("seed: 7", "seed: 9"))
    run_recipe(recipe, tmp_path / "b")
    first = datasets.load_dataset(str(tmp_path / "a" / "dataset"))["train"]["id"]
    second = datasets.load_dataset(str(tmp_path / "b" / "dataset"))["train"]["id"]
    assert sorted(first) == sorted(second) and list(first) != list(second)
    card = (tmp_path / "a" / "dataset" / "README.md").read_text()
    assert "dataset_info:\n  splits:\n  - name: train\n    num_bytes:" in card
