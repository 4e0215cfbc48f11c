"""Errors name everything at fault and say what it is: every pydantic problem of a file with
its line, a JSON object file as such (with its keys), unknown `rejects` filters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import PipelineError, run_recipe
from pipeline.cli import app
from pipeline.rejects import read_rejects

from .conftest import write

runner = CliRunner()


def _run(recipe: Path, out: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["run", str(recipe), "--out", str(out), "-q", "-w", "1"])
    return result.exit_code, result.stderr.strip()


# --------------------------------------------------------------------- every pydantic error


def test_every_problem_of_a_spec_is_listed_with_its_line(
    user_catalog: Path, tmp_path: Path
) -> None:
    spec = user_catalog / "sources" / "mini_nli.yaml"
    text = spec.read_text()
    text = text.replace("cluster: nli", "clustre: nli")  # line 3: misspelt, so cluster missing
    text = text.replace("license: CC0-1.0", "license: [1, 2]")  # line 4: wrong type
    text = text.replace("label: {names:", "label: {nmes:")  # line 9: a ClassLabel's unknown key
    spec.write_text(text)
    code, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert code == 1
    assert err.splitlines() == [
        f"error: {spec}:3: clustre: unknown key",
        f"{spec}:9: features.label.nmes: unknown key",
        f"{spec}:1: cluster: Field required",
        f"{spec}:4: license: Input should be a valid string",
        f"{spec}:9: features.label.names: Field required",
    ]


def test_a_value_of_the_wrong_form_is_one_line_naming_every_form(
    user_catalog: Path, tmp_path: Path
) -> None:
    spec = user_catalog / "sources" / "mini_nli.yaml"
    spec.write_text(spec.read_text().replace("premise: string", "premise: strin"))
    code, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert code == 1
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: {spec}:7: features.premise: Input should be 'string', "), err
    assert "or a mapping (ClassLabel)" in err and "literal[" not in err


def test_every_problem_of_a_recipe_is_listed(user_catalog: Path, tmp_path: Path) -> None:
    recipe = write(
        tmp_path / "r.yaml",
        "name: r\nsources: [mini_nli]\nseed: seven\nmixing: {cap: 0, strategy: weighted}\n",
    )
    code, err = _run(recipe, tmp_path / "o")
    assert code == 1
    assert err.removeprefix("error: ").splitlines() == [
        f"{recipe}:3: seed: Input should be a valid integer, unable to parse string as an integer",
        f"{recipe}:4: mixing.strategy: Input should be 'proportional', 'temperature' or 'weights'",
        f"{recipe}:4: mixing.cap: Input should be greater than or equal to 1",
    ]
    assert "more)" not in err


# --------------------------------------------------------------------- JSON object files


def _object_source(root: Path, document: object, indent: int | None) -> Path:
    write(
        root / "sources" / "obj.yaml",
        """
        name: obj
        task: toy
        cluster: nli
        license: CC0-1.0
        features: {premise: string, label: {names: [pos, neg]}}
        sample: {file: obj.json, split: train}
        """,
    )
    data = root / "data" / "obj.json"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text(json.dumps(document, indent=indent), encoding="utf-8")
    write(
        root / "recipes" / "r.yaml",
        "name: r\nsources: [obj]\ncatalog: {sources: [../sources], templates: [../templates]}\n",
    )
    write(
        root / "templates" / "obj.yaml",
        """
        source: obj
        templates:
          - {id: t, instruction: "{{ premise }}", output: "{{ answer_choices[label] }}",
             answer_choices: [pos, neg]}
        """,
    )
    return data


@pytest.mark.parametrize("rows", [3, 25_000], ids=["small", "2.5MB"])
@pytest.mark.parametrize("indent", [None, 2], ids=["one-line", "pretty"])
def test_json_object_file_is_named_with_its_keys(
    tmp_path: Path, rows: int, indent: int | None
) -> None:
    row = {"premise": "A sentence of about fifty characters, give or take.", "label": "pos"}
    data = _object_source(tmp_path / "cat", {"version": "1.0", "data": [row] * rows}, indent)
    if rows > 3:
        assert data.stat().st_size > 2_000_000
    code, err = _run(tmp_path / "cat" / "recipes" / "r.yaml", tmp_path / "o")
    assert code == 1
    # Small or large, one line or pretty-printed: the same diagnosis.
    assert err == (
        f"error: {data}: the file is one JSON object, not JSON Lines or a JSON array of rows; "
        f"its keys: 'version' (a string), 'data' (a list of {rows:,} objects); set "
        "`sample.json_field: data` to read the rows under that key (source 'obj')"
    )


def test_json_field_naming_a_missing_key_lists_the_keys(tmp_path: Path) -> None:
    row = {"premise": "p", "label": "pos"}
    data = _object_source(tmp_path / "cat", {"train": [row], "test": [row]}, 2)
    spec = tmp_path / "cat" / "sources" / "obj.yaml"
    spec.write_text(spec.read_text().replace("split: train}", "split: train, json_field: rows}"))
    code, err = _run(tmp_path / "cat" / "recipes" / "r.yaml", tmp_path / "o")
    assert code == 1
    assert err.startswith(
        f"error: {data}: sample.json_field 'rows': the object has no such key; its keys: "
        "'train' (a list of 1 objects), 'test' (a list of 1 objects); set `sample.json_field:` "
        "to the key whose list holds the rows (one of 'train', 'test'"
    ), err


def test_json_field_on_json_lines_says_so(tmp_path: Path) -> None:
    data = _object_source(tmp_path / "cat", {"premise": "p", "label": "pos"}, None)
    with open(data, "a", encoding="utf-8") as fh:
        fh.write("\n" + json.dumps({"premise": "q", "label": "neg"}) + "\n")
    spec = tmp_path / "cat" / "sources" / "obj.yaml"
    spec.write_text(spec.read_text().replace("split: train}", "split: train, json_field: data}"))
    code, err = _run(tmp_path / "cat" / "recipes" / "r.yaml", tmp_path / "o")
    assert code == 1
    assert err.startswith(f"error: {data}:2: a second JSON value starts here"), err
    assert "looks like JSON Lines" in err and "leave json_field out" in err


def test_a_one_row_json_lines_file_is_not_called_an_object(tmp_path: Path) -> None:
    # One line, one object, but no list of rows inside: the columns are simply wrong.
    data = _object_source(tmp_path / "cat", {"sentence": "p", "gold": "yes"}, None)
    code, err = _run(tmp_path / "cat" / "recipes" / "r.yaml", tmp_path / "o")
    assert code == 1
    assert f"{data} has no column(s) ['label', 'premise'] (it has ['gold', 'sentence'])" in err


def test_json_lines_of_no_objects_says_so(tmp_path: Path) -> None:
    data = _object_source(tmp_path / "cat", "just a string", None)
    code, err = _run(tmp_path / "cat" / "recipes" / "r.yaml", tmp_path / "o")
    assert code == 1
    assert err == (
        f"error: {data}: no row is a JSON object (row 1: the line is a string, not a JSON "
        "object) (source 'obj')"
    )


def test_two_values_on_one_json_line_are_named(user_catalog: Path, tmp_path: Path) -> None:
    data = user_catalog / "data" / "mini_nli.jsonl"
    data.write_text('{"id": 1, "p": "a", "h": "b", "gold": "neutral"} {"id": 2}\n')
    code, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert code == 1
    assert err == (
        f"error: {data}:1: invalid JSON line: a second JSON value follows the first on this "
        "line (column 50) (source 'mini_nli')"
    )


def test_lone_surrogate_that_arrow_refuses_is_named(tmp_path: Path) -> None:
    # datasets' JSON reader fails on it with pandas' "Trailing data at position 15".
    from pipeline.load import diagnose_file

    path = tmp_path / "bench.jsonl"
    path.write_text('{"q": "fine"}\n{"q": "bad \\ud800 x"}\n')
    message = diagnose_file(
        path, "json", "decontamination.against 'bench'", ValueError("Trailing data at position 15")
    )
    assert message == (
        f"{path}:2: a string holds a lone surrogate ('\\ud800', written as a \\u escape), "
        "which is not Unicode text (decontamination.against 'bench')"
    )


# --------------------------------------------------------------------- rejects filters


def test_unknown_rejects_filters_are_errors_listing_the_known(
    user_catalog: Path, tmp_path: Path
) -> None:
    data = user_catalog / "data" / "mini_nli.jsonl"
    with open(data, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": 9, "p": "x", "h": "y", "gold": "sure"}) + "\n")
    out = tmp_path / "o"
    run_recipe(user_catalog / "recipes" / "mini.yaml", out)
    assert read_rejects(out, source="mini_nli", rule="bad_label").height == 1
    with pytest.raises(
        PipelineError,
        match=r"--source 'nosuch': no such source in this run "
        r"\(sources: mini_nli\)",
    ):
        read_rejects(out, source="nosuch")
    with pytest.raises(
        PipelineError,
        match=r"--rule 'nosuch': no such rule \(rules in this run: "
        r"bad_label; every rule: bad_label, bad_row, ",
    ):
        read_rejects(out, rule="nosuch")
    # A real rule that rejected nothing in this run filters to none.
    assert read_rejects(out, rule="sandbox").height == 0
    result = runner.invoke(app, ["rejects", "--out", str(out), "--rule", "bad_labels"])
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: {out}: --rule 'bad_labels': no such rule (rules in this run: bad_label; "
    )
