"""Every command and every option documents itself (a missing help text fails here)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import typer
from typer.testing import CliRunner

from pipeline.cli import app


def _walk(command: Any, path: str = "instructmix"):  # type: ignore[no-untyped-def]
    yield path, command
    # typer ships its own copy of click, so look at shapes, not classes.
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, f"{path} {name}")


def test_every_command_and_option_has_help() -> None:
    root = typer.main.get_command(app)
    missing = []
    for path, command in _walk(root):
        if not (command.help or "").strip():
            missing.append(path)
        for param in command.params:
            if param.name == "help":
                continue
            text = getattr(param, "help", None)
            if not (text or "").strip():
                missing.append(f"{path} {param.name}")
    assert not missing, f"no help text: {missing}"


def test_the_expected_commands_exist() -> None:
    names = {p for p, _ in _walk(typer.main.get_command(app))}
    for cmd in (
        "run",
        "load",
        "render",
        "validate",
        "mix",
        "export",
        "sources list",
        "sources show",
        "templates list",
        "recipes list",
    ):
        assert f"instructmix {cmd}" in names


def test_python_dash_m_is_the_same_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("instructmix ")


def test_sources_list_json() -> None:
    import json

    result = CliRunner().invoke(app, ["sources", "list", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert {"esnli", "gsm8k"} <= {r["name"] for r in rows}


def test_templates_preview_json_renders_real_examples() -> None:
    import json

    result = CliRunner().invoke(
        app,
        [
            "templates",
            "preview",
            "esnli",
            "-t",
            "true-false-uncertain",
            "-n",
            "2",
            "--variant",
            "cot",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["example_id"] for r in rows] == ["1", "2"]
    assert all(r["variant"] == "cot" for r in rows)
    assert rows[0]["messages"][-1]["content"].endswith("So the answer is: impossible to decide")


def test_templates_preview_panels_and_bad_template_id() -> None:
    ok = CliRunner().invoke(app, ["templates", "preview", "gsm8k", "-n", "1"])
    assert ok.exit_code == 0 and "how-much" in ok.output
    bad = CliRunner().invoke(app, ["templates", "preview", "gsm8k", "-t", "nope"])
    assert bad.exit_code == 1
    assert "source 'gsm8k' has no template 'nope'" in bad.stderr


def test_templates_lint_cli_exit_codes(user_catalog) -> None:  # type: ignore[no-untyped-def]
    args = [
        "templates",
        "lint",
        "mini_nli",
        "--sources",
        str(user_catalog / "sources"),
        "--templates",
        str(user_catalog / "templates"),
    ]
    assert CliRunner().invoke(app, args).exit_code == 0
    tpl = user_catalog / "templates" / "mini_nli.yaml"
    tpl.write_text(
        tpl.read_text().replace('output: "{{ hypothesis }}"', 'output: "{{ hypothesis }}n"')
    )
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "stray_after_field" in result.stdout and "mini_nli/write-claim" in result.stdout


def test_import_promptsource_cli(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "promptsource" / "esnli"
    result = CliRunner().invoke(
        app,
        [
            "templates",
            "import-promptsource",
            str(fixture),
            "--source",
            "esnli",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "for 'esnli' to" in result.stdout
    listed = CliRunner().invoke(
        app, ["templates", "list", "esnli", "--templates", str(tmp_path), "--json"]
    )
    ids = {row["id"] for row in json.loads(listed.stdout)}
    assert "premise-hypothesis-options" in ids and any(i.startswith("fixture-") for i in ids)
    unknown = CliRunner().invoke(
        app, ["templates", "import-promptsource", str(fixture), "--source", "nope"]
    )
    assert unknown.exit_code == 1 and "unknown source 'nope'" in unknown.stderr


def test_rejects_command_summarizes_with_polars(tmp_path, user_catalog) -> None:  # type: ignore[no-untyped-def]
    with open(user_catalog / "data" / "mini_nli.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": 8, "p": "x", "h": "y", "gold": "nope"}) + "\n")
    out = tmp_path / "o"
    assert (
        CliRunner()
        .invoke(app, ["run", str(user_catalog / "recipes" / "mini.yaml"), "--out", str(out), "-q"])
        .exit_code
        == 0
    )
    result = CliRunner().invoke(app, ["rejects", "--out", str(out)])
    assert result.exit_code == 0
    assert "bad_label" in result.stdout and "rejects in" in result.stdout
    rows = json.loads(CliRunner().invoke(app, ["rejects", "--out", str(out), "--json"]).stdout)
    assert [(r["stage"], r["rule"], r["example_id"]) for r in rows] == [("load", "bad_label", "8")]
    empty = CliRunner().invoke(app, ["rejects", "--out", str(out), "--rule", "sandbox", "--json"])
    assert json.loads(empty.stdout) == []
    missing = CliRunner().invoke(app, ["rejects", "--out", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "no manifest.json" in missing.stderr
