"""The bad-input catalog: every case gives a clear message (file, line or row, field); the run
stops where it cannot go on and rejects only the bad record where it can; counts add up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pipeline.load
from pipeline import Manifest, load_catalog, run_recipe
from pipeline.cli import app
from pipeline.runfolder import RunFolder, reject_lines

from .conftest import write

runner = CliRunner()


def _run(recipe: Path, out: Path) -> tuple[int, str, str]:
    # These catalogs are mostly bad rows on purpose: the run must go on and account for each,
    # so the stop for a mostly-rejected source (--max-reject-share) is off here.
    args = ["run", str(recipe), "--out", str(out), "-q", "-w", "1", "--max-reject-share", "0"]
    result = runner.invoke(app, args)
    return result.exit_code, result.stdout, result.stderr.strip()


def _rows(user_catalog: Path, *rows: object, raw: bytes | None = None) -> Path:
    path = user_catalog / "data" / "mini_nli.jsonl"
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD = {"id": 1, "p": "A dog runs.", "h": "An animal moves.", "gold": "entailment"}


# --------------------------------------------------------------------- files the user writes


@pytest.mark.parametrize(
    ("file", "text", "expected"),
    [
        ("sources/mini_nli.yaml", "name: mini_nli\ntask: [oops\n", ":3: invalid YAML"),
        (
            "templates/mini_nli.yaml",
            "source: mini_nli\ntemplates:\n  - id: a\n    instruction: {\n",
            ":5: invalid YAML",
        ),
        ("recipes/mini.yaml", "name: mini\nsources: [mini_nli\n", ":3: invalid YAML"),
    ],
)
def test_malformed_yaml(
    user_catalog: Path, tmp_path: Path, file: str, text: str, expected: str
) -> None:
    (user_catalog / file).write_text(text)
    code, _, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert code == 1
    assert err.startswith(f"error: {user_catalog / file}{expected}"), err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "sources/mini_nli.yaml",
            "cluster: nli",
            "cluster: nli\nclustre: nli",
            ":4: clustre: unknown key",
        ),
        (
            "sources/mini_nli.yaml",
            "license: CC0-1.0",
            "license: [1, 2]",
            ":4: license: Input should be a valid string",
        ),
        (
            "templates/mini_nli.yaml",
            "inverted: true",
            "inverted: maybe",
            ":8: templates.1.inverted: Input should be a valid boolean",
        ),
        (
            "templates/mini_nli.yaml",
            "inverted: true",
            "inverted: true\n    colour: red",
            ":9: templates.1.colour: unknown key",
        ),
        (
            "recipes/mini.yaml",
            "seed: 7",
            "seed: seven",
            ":2: seed: Input should be a valid integer",
        ),
        ("recipes/mini.yaml", "seed: 7", "seed: 7\nsead: 8", ":3: sead: unknown key"),
    ],
)
def test_unknown_keys_and_wrong_types(
    user_catalog: Path, tmp_path: Path, file: str, old: str, new: str, expected: str
) -> None:
    path = user_catalog / file
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    code, _, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert code == 1
    assert err.startswith(f"error: {path}{expected}"), err


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("name: mini_nli", "name: ../../etc", "name"),
        ("name: mini_nli", "name: /abs/path", "name"),
        ("name: mini_nli", "name: 'odd name!'", "name"),
        ("file: mini_nli.jsonl", "file: ../../../etc/passwd", "sample.file"),
        ("file: mini_nli.jsonl", "file: /etc/passwd", "sample.file"),
    ],
)
def test_names_and_paths_that_escape_are_refused(
    user_catalog: Path, tmp_path: Path, old: str, new: str, field: str
) -> None:
    path = user_catalog / "sources" / "mini_nli.yaml"
    path.write_text(path.read_text().replace(old, new))
    code, _, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert code == 1
    assert f"{path}:" in err and f": {field}:" in err, err


def test_template_ids_and_recipe_names_are_slugs(user_catalog: Path, tmp_path: Path) -> None:
    tpl = user_catalog / "templates" / "mini_nli.yaml"
    tpl.write_text(tpl.read_text().replace("id: write-claim", "id: ../write-claim"))
    code, _, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert code == 1 and "templates.1.id: String should match pattern" in err
    recipe = write(tmp_path / "r.yaml", "name: 'my recipe/../x'\nsources: [esnli]\n")
    code, _, err = _run(recipe, tmp_path / "o2")
    assert code == 1 and f"{recipe}:1: name: String should match pattern" in err


def test_unknown_source_and_cluster(tmp_path: Path) -> None:
    code, _, err = _run(write(tmp_path / "a.yaml", "name: a\nsources: [snlii]\n"), tmp_path / "o")
    assert code == 1 and "unknown source 'snlii' (known: banking77," in err
    code, _, err = _run(write(tmp_path / "b.yaml", "name: b\nclusters: [nlii]\n"), tmp_path / "o")
    expected = "recipe 'b': clusters: unknown cluster 'nlii' (known: closed_book_qa,"
    assert code == 1 and expected in err


# --------------------------------------------------------------------- data files


def test_non_utf8_file(user_catalog: Path, tmp_path: Path) -> None:
    data = _rows(
        user_catalog,
        raw=b'{"id": 1, "p": "ok", "h": "ok", "gold": "neutral"}\n'
        b'{"id": 2, "p": "caf\xe9", "h": "x", "gold": "neutral"}\n',
    )
    code, _, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert code == 1
    assert err == (f"error: {data}:2: not UTF-8 text (byte 0xe9 at column 20) (source 'mini_nli')")


def test_truncated_file(user_catalog: Path, tmp_path: Path) -> None:
    whole = json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "id": 2})
    data = _rows(user_catalog, raw=(whole[:-12]).encode())
    code, _, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert code == 1
    assert err.startswith(f"error: {data}:2: invalid JSON line:"), err


def test_a_bad_line_past_the_rows_opening_parses_stops_the_run_at_its_line(
    user_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Opening a JSON Lines sample parses only its first rows (PARSED_AT_OPEN); a line further
    # on that is not JSON is found where it is loaded, with the same message, on any workers.
    monkeypatch.setattr("pipeline.load.PARSED_AT_OPEN", 3)
    rows = [json.dumps({**GOOD, "id": i}) for i in range(1, 9)]
    rows[5] = rows[5][:-5]
    data = _rows(user_catalog, raw=("\n".join(rows) + "\n").encode())
    for workers in ("1", "2"):
        result = runner.invoke(
            app, ["run", str(user_catalog / "recipes" / "mini.yaml"), "--out",
                  str(tmp_path / workers), "-q", "-w", workers],
        )  # fmt: skip
        assert result.exit_code == 1
        assert result.stderr.strip().startswith(f"error: {data}:6: invalid JSON line:"), (
            result.stderr
        )


def test_a_column_first_seen_past_the_rows_opening_parses_is_found(
    user_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pipeline.load.PARSED_AT_OPEN", 2)
    parsed: list[str] = []
    real = pipeline.load._json_loads

    def counting(text: str) -> object:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr("pipeline.load._json_loads", counting)
    sample = user_catalog / "data" / "mini_nli.jsonl"
    source = user_catalog / "sources" / "mini_nli.yaml"
    # The premise sits under "p" in rows 1-4 and under "premise" in rows 5 on: the spec reads
    # "premise", a column only the later rows have.
    rows = [{**GOOD, "id": i} for i in range(1, 9)]
    for row in rows[4:]:
        row["premise"] = row["p"]
    source.write_text(source.read_text().replace("premise: p", "premise: premise"))
    _rows(user_catalog, *rows)
    table = pipeline.load.TextTable.open(
        load_catalog([user_catalog / "sources"], [user_catalog / "templates"]).source(
            "mini_nli"
        ),
        sample,
        "jsonl",
    )
    assert len(table) == 8 and len(parsed) == 2 and not table.parsed_all
    assert "premise" not in table.columns
    assert table.complete() and "premise" in table.columns and table.parsed_all
    # Through the run: the column is found, so the run goes on.
    code, _, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert code == 0, err
    # A column no row has is still the one-line error, naming every row's columns.
    source.write_text(source.read_text().replace("premise: premise", "premise: premisse"))
    code, _, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o2")
    assert code == 1
    assert "has no column(s) ['premisse']" in err and "'premise'" in err, err


@pytest.mark.parametrize("content", [b"", b"\n"])
def test_empty_source(user_catalog: Path, tmp_path: Path, content: bytes) -> None:
    data = _rows(user_catalog, raw=content)
    code, _, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert code == 1
    assert err.startswith(f"error: {data}: ") and ("empty" in err or "no rows" in err), err


def test_bad_rows_are_rejected_with_reasons_and_the_run_goes_on(
    user_catalog: Path, tmp_path: Path
) -> None:
    _rows(
        user_catalog,
        GOOD,
        {"id": 2, "p": "A cat.", "gold": "neutral"},  # missing field
        {"id": 3, "p": None, "h": "x", "gold": "neutral"},  # null
        {"id": 4, "p": ["a", "list"], "h": "x", "gold": "neutral"},  # wrong type
        {"id": 5, "p": "Fine.", "h": "Fine.", "gold": "neutral", "extra": "ignored"},  # extra
        {"id": 6, "p": "Fine.", "h": "Fine.", "gold": 17},  # label out of range
        {"id": 1, "p": "Dup.", "h": "Dup.", "gold": "neutral"},  # duplicate id
    )
    out = tmp_path / "o"
    code, _, err = _run(user_catalog / "recipes" / "mini.yaml", out)
    assert code == 0, err
    manifest = Manifest.model_validate_json((out / "manifest.json").read_text())
    counts = manifest.sources["mini_nli"]
    assert counts.examples_in == 7 and counts.examples_rendered == 2
    assert counts.rejected_by_rule == {
        "missing_field": 2,
        "bad_type": 1,
        "bad_label": 1,
        "duplicate_example_id": 1,
    }
    by_row = {
        r["locator"].rsplit(" ", 1)[-1]: r for r in reject_lines(RunFolder(out), "load", "mini_nli")
    }
    assert by_row["2"]["message"].startswith("field 'hypothesis' is missing or null")
    assert by_row["4"]["message"].startswith("field 'premise': expected string, got ['a', 'list']")
    assert by_row["6"]["message"].startswith("field 'label': 17 is not a label index")
    assert manifest.check() == []


def test_huge_fields_are_rejects_not_crashes(user_catalog: Path, tmp_path: Path) -> None:
    _rows(
        user_catalog,
        GOOD,
        {**GOOD, "id": 2, "p": "word " * 8_000},  # 40k characters: over the prompt limit
        {**GOOD, "id": 3, "p": "word " * 400_000},  # 2M characters: over the render limit
    )
    manifest = run_recipe(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    counts = manifest.sources["mini_nli"]
    # Both templates put the premise in the prompt, so each huge row is rejected twice.
    assert counts.rejected_by_rule == {"prompt_too_long": 2, "render_too_large": 2}
    assert counts.records_accepted == 2 and manifest.check() == []
