"""Input as declared (issue 8): data files stay inside the catalog, values keep their declared
types, YAML keys are unique, recipe numbers are finite and in range.

Each test runs what a user runs (``instructmix run``, or the loader it calls) on a small catalog
of the test's own, and checks the one-line error or the rejects that come out.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import Manifest, load_catalog, run_recipe
from pipeline.catalog import recipe_context
from pipeline.cli import app
from pipeline.errors import CatalogError
from pipeline.load import BadRow, Example, iter_rows, open_source
from pipeline.models import Limits, Recipe
from pipeline.promptsource import PromptsourceError, read_promptsource
from pipeline.runfolder import RunFolder, reject_lines

from .conftest import write

runner = CliRunner()


def _run(recipe: Path, out: Path) -> tuple[int, str]:
    # Mostly bad rows on purpose: the stop for a mostly-rejected source is off here.
    args = ["run", str(recipe), "--out", str(out), "-q", "-w", "1", "--max-reject-share", "0"]
    result = runner.invoke(app, args)
    return result.exit_code, result.stderr.strip()


def _source(root: Path, features: str, sample: str, name: str = "s") -> Path:
    """A source spec under ``root/sources``; ``features`` and ``sample`` are YAML mappings."""
    return write(
        root / "sources" / f"{name}.yaml",
        f"name: {name}\ntask: t\ncluster: misc\nlicense: MIT\nhub: {{id: a/{name}}}\n"
        f"features: {features}\nsample: {sample}\n",
    )


def _items(root: Path, name: str = "s") -> list[Example | BadRow]:
    catalog = load_catalog([root / "sources"], [], builtin=False)
    source = catalog.source(name)
    return [
        item
        for split in open_source(source, "sample")
        for batch in iter_rows(source, split, "sample")
        for item in batch
    ]


def _without(path: Path, *lines: str) -> str:
    """The file's text without ``lines`` (so a test can set those keys itself)."""
    text = path.read_text()
    for line in lines:
        assert line in text
        text = text.replace(line, "")
    return text


def _mini_recipe(user_catalog: Path, extra: str) -> Path:
    path = user_catalog / "recipes" / "mini.yaml"
    path.write_text(path.read_text() + textwrap.dedent(extra).lstrip("\n"))
    return path


# --------------------------------------------------------------------- data files


@pytest.mark.parametrize("target", ["outside_file", "etc_passwd"])
def test_data_file_symlinked_out_of_the_catalog_is_refused(
    user_catalog: Path, tmp_path: Path, target: str
) -> None:
    secret = Path("/etc/passwd") if target == "etc_passwd" else tmp_path / "secret.jsonl"
    if target == "etc_passwd" and not secret.is_file():
        pytest.skip("no /etc/passwd on this system")
    if target == "outside_file":
        secret.write_text(json.dumps({"id": 1, "p": "secret", "h": "x", "gold": "neutral"}) + "\n")
    data = user_catalog / "data" / "mini_nli.jsonl"
    data.unlink()
    data.symlink_to(secret)
    spec = user_catalog / "sources" / "mini_nli.yaml"
    code, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert code == 1
    assert err.startswith(f"error: {spec}: sample.file: {data} resolves to "), err
    assert "outside the catalog folder" in err and "allow_outside_catalog" in err
    assert len(err.splitlines()) == 1
    assert not list((tmp_path / "o").rglob("*.parquet"))  # nothing of the linked file is kept


def test_data_folder_symlinked_out_of_the_catalog_is_refused(
    user_catalog: Path, tmp_path: Path
) -> None:
    # The folder the user names is trusted as named; a data/ inside it that leads elsewhere is
    # the catalog's doing, and is refused like a linked file.
    elsewhere = tmp_path / "elsewhere"
    (user_catalog / "data").rename(elsewhere)
    (user_catalog / "data").symlink_to(elsewhere)
    code, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert code == 1 and "sample.file:" in err and "outside the catalog folder" in err, err


def test_allow_outside_catalog_opt_in_reads_the_linked_file(
    user_catalog: Path, tmp_path: Path
) -> None:
    data = user_catalog / "data"
    # A link that stays inside the catalog needs no opt-in.
    (data / "v1").mkdir()
    (data / "mini_nli.jsonl").rename(data / "v1" / "mini_nli.jsonl")
    (data / "mini_nli.jsonl").symlink_to(Path("v1") / "mini_nli.jsonl")
    recipe = user_catalog / "recipes" / "mini.yaml"
    assert run_recipe(recipe, tmp_path / "o1").sources["mini_nli"].examples_in == 4
    # One that leaves it is read only where the spec says so.
    shared = tmp_path / "shared" / "mini_nli.jsonl"
    shared.parent.mkdir()
    (data / "v1" / "mini_nli.jsonl").rename(shared)
    (data / "mini_nli.jsonl").unlink()
    (data / "mini_nli.jsonl").symlink_to(shared)
    assert _run(recipe, tmp_path / "o2")[0] == 1
    spec = user_catalog / "sources" / "mini_nli.yaml"
    spec.write_text(
        spec.read_text().replace(
            "  split: train\n", "  split: train\n  allow_outside_catalog: true\n"
        )
    )
    assert run_recipe(recipe, tmp_path / "o3").sources["mini_nli"].examples_in == 4


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_data_file_that_is_not_a_regular_file_is_refused(
    user_catalog: Path, tmp_path: Path, kind: str
) -> None:
    data = user_catalog / "data" / "mini_nli.jsonl"
    data.unlink()
    spec = user_catalog / "sources" / "mini_nli.yaml"
    if kind == "fifo":
        os.mkfifo(data)  # opening it to read would block forever: it must never be opened
        expected = "is a named pipe (FIFO), not a regular file"
    elif kind == "directory":
        data.mkdir()
        expected = "is a directory, not a regular file"
    else:
        if not Path("/dev/null").exists():
            pytest.skip("no /dev/null")
        data.symlink_to("/dev/null")
        spec.write_text(
            spec.read_text().replace(
                "  split: train\n", "  split: train\n  allow_outside_catalog: true\n"
            )
        )
        expected = "is a character device, not a regular file"
    code, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert code == 1
    assert err == f"error: {spec}: sample.file: {data} {expected}", err


# --------------------------------------------------------------------- types as declared


def test_csv_string_features_stay_as_written(tmp_path: Path) -> None:
    _source(
        tmp_path,
        "{zip: string, price: string, code: string, big: string}",
        "{file: s.csv, split: train}",
    )
    write(
        tmp_path / "data" / "s.csv",
        "zip,price,code,big\n02134,1.50,001,18446744073709551617\n00000,-0.0,1e5,+7\n",
    )
    items = _items(tmp_path)
    assert [i.fields for i in items if isinstance(i, Example)] == [
        {"zip": "02134", "price": "1.50", "code": "001", "big": "18446744073709551617"},
        {"zip": "00000", "price": "-0.0", "code": "1e5", "big": "+7"},
    ]


def test_tsv_string_features_stay_as_written(tmp_path: Path) -> None:
    _source(
        tmp_path,
        "{zip: string, text: string}",
        "{file: s.tsv, split: train,"
        ' csv: {delimiter: "\\t", quoting: 3, column_names: [zip, text]}}',
    )
    write(tmp_path / "data" / "s.tsv", '02134\t"quoted" verse\n1.50\tTRUE\n')
    items = _items(tmp_path)
    assert [i.fields for i in items if isinstance(i, Example)] == [
        {"zip": "02134", "text": '"quoted" verse'},
        {"zip": "1.50", "text": "TRUE"},
    ]


def test_csv_null_markers_are_text_unless_the_spec_names_them(tmp_path: Path) -> None:
    _source(tmp_path, "{text: string}", "{file: s.csv, split: train}")
    write(tmp_path / "data" / "s.csv", 'text\nNA\nNone\nnull\nnan\n""\nN/A\n')
    items = _items(tmp_path)
    assert [i.fields["text"] for i in items if isinstance(i, Example)] == [
        "NA",
        "None",
        "null",
        "nan",
        "",
        "N/A",
    ]
    # With markers named, exactly those cells are null (a missing field), the rest text.
    _source(
        tmp_path,
        "{text: string}",
        "{file: s.csv, split: train, csv: {null_values: ['NA', '']}}",
    )
    items = _items(tmp_path)
    assert [(i.rule if isinstance(i, BadRow) else i.fields["text"]) for i in items] == [
        "missing_field",
        "None",
        "null",
        "nan",
        "missing_field",
        "N/A",
    ]


def test_jsonl_big_int_ids_stay_exact(tmp_path: Path) -> None:
    _source(tmp_path, "{text: string}", "{file: s.jsonl, split: train, id_field: id}")
    ids = [2**64 + 1, 2**64 + 2, 2**53 + 1, 2**53, 10**40]
    lines = [json.dumps({"id": i, "text": f"row {n}"}) for n, i in enumerate(ids)]
    lines.append('{"id": 1.50, "text": "a float id keeps its text"}')
    write(tmp_path / "data" / "s.jsonl", "\n".join(lines) + "\n")
    items = _items(tmp_path)
    assert [i.example_id for i in items] == [str(i) for i in ids] + ["1.50"]
    assert all(isinstance(i, Example) for i in items)


def test_json_number_in_a_string_feature_keeps_its_text(tmp_path: Path) -> None:
    _source(tmp_path, "{score: string, n: string}", "{file: s.jsonl, split: train}")
    write(tmp_path / "data" / "s.jsonl", '{"score": 1.50, "n": 18446744073709551617}\n')
    (item,) = _items(tmp_path)
    assert isinstance(item, Example)
    assert item.fields == {"score": "1.50", "n": "18446744073709551617"}


def test_json_boolean_is_not_a_label(tmp_path: Path) -> None:
    _source(
        tmp_path,
        "{text: string, label: {names: [neg, pos]}, tags: {sequence: {names: [a, b]}}}",
        "{file: s.jsonl, split: train}",
    )
    rows = [
        {"text": "fine", "label": 1, "tags": [0, 1]},
        {"text": "bool label", "label": True, "tags": [0]},
        {"text": "bool tag", "label": 0, "tags": [False]},
    ]
    write(tmp_path / "data" / "s.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    items = _items(tmp_path)
    assert isinstance(items[0], Example) and items[0].fields["label"] == 1
    bad = [i for i in items[1:] if isinstance(i, BadRow)]
    assert [(b.rule, "is a boolean, not a label" in b.message) for b in bad] == [
        ("bad_type", True),
        ("bad_type", True),
    ]


def test_boolean_is_not_a_number(tmp_path: Path) -> None:
    _source(
        tmp_path,
        "{n: int, x: float, s: string, ns: 'list[int]'}",
        "{file: s.jsonl, split: train}",
    )
    rows = [
        {"n": 1, "x": 0.5, "s": "ok", "ns": [1, 2]},
        {"n": True, "x": 0.5, "s": "ok", "ns": [1]},
        {"n": 1, "x": False, "s": "ok", "ns": [1]},
        {"n": 1, "x": 0.5, "s": True, "ns": [1]},
        {"n": 1, "x": 0.5, "s": "ok", "ns": [True]},
    ]
    write(tmp_path / "data" / "s.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    items = _items(tmp_path)
    assert isinstance(items[0], Example)
    assert [i.rule for i in items[1:] if isinstance(i, BadRow)] == ["bad_type"] * 4


def test_csv_label_inf_nan_and_overflow_are_rejects(user_catalog: Path, tmp_path: Path) -> None:
    # A CSV label `inf` was an OverflowError in load (int(float('inf'))): the whole run died.
    spec = user_catalog / "sources" / "mini_nli.yaml"
    spec.write_text(spec.read_text().replace("mini_nli.jsonl", "mini_nli.csv"))
    labels = ["1", "inf", "-inf", "nan", "1e400", "Infinity", "1.5", "0x1", "٢"]
    write(
        user_catalog / "data" / "mini_nli.csv",
        "id,p,h,gold\n" + "".join(f"{n},P {n}.,H {n}.,{g}\n" for n, g in enumerate(labels, 1)),
    )
    out = tmp_path / "o"
    code, err = _run(user_catalog / "recipes" / "mini.yaml", out)
    assert code == 0, err
    manifest = Manifest.model_validate_json((out / "manifest.json").read_text())
    counts = manifest.sources["mini_nli"]
    assert counts.examples_in == 9 and counts.examples_rendered == 1
    assert counts.rejected_by_rule == {"bad_label": 8}
    assert manifest.check() == []


def test_json_label_inf_nan_and_overflow_are_rejects(user_catalog: Path, tmp_path: Path) -> None:
    lines = [
        '{"id": 1, "p": "P.", "h": "H.", "gold": 1}',
        '{"id": 2, "p": "P.", "h": "H.", "gold": 1e400}',
        '{"id": 3, "p": "P.", "h": "H.", "gold": NaN}',
        '{"id": 4, "p": "P.", "h": "H.", "gold": -Infinity}',
        '{"id": 5, "p": "P.", "h": "H.", "gold": 1.0}',  # integral: the label index 1
        '{"id": 6, "p": "P.", "h": "H.", "gold": 1.5}',
        '{"id": 7, "p": "P.", "h": "H.", "gold": ' + "9" * 5000 + "}",
    ]
    write(user_catalog / "data" / "mini_nli.jsonl", "\n".join(lines) + "\n")
    manifest = run_recipe(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    counts = manifest.sources["mini_nli"]
    assert counts.examples_rendered == 2 and counts.rejected_by_rule["bad_label"] == 5
    # Rows 1 and 5 are the same example once 1.0 reads as 1: the mix keeps one of any record
    # the two render identically.
    assert set(counts.rejected_by_rule) <= {"bad_label", "duplicate_record"}


def test_int_and_float_features_convert_by_declared_type(tmp_path: Path) -> None:
    _source(tmp_path, "{n: int, x: float}", "{file: s.csv, split: train}")
    write(
        tmp_path / "data" / "s.csv",
        "n,x\n"
        "7,0.25\n"  # plain
        "7.0,1e-3\n"  # an integral number is an int
        " 8 ,2\n"  # spaces around a number are ignored
        "7.5,1\n"  # not integral: bad_type
        "9223372036854775808,1\n"  # past int64: bad_type
        "1,nan\n"  # not finite: bad_type
        "1,inf\n"
        "1,1e400\n"  # overflows to inf: bad_type
        "1_000,1\n"  # Python's int() reads it; a data file does not mean it
        "1,0x10\n",
    )
    items = _items(tmp_path)
    kept = [i.fields for i in items if isinstance(i, Example)]
    assert kept == [{"n": 7, "x": 0.25}, {"n": 7, "x": 0.001}, {"n": 8, "x": 2.0}]
    assert [i.rule for i in items if isinstance(i, BadRow)] == ["bad_type"] * 7


def test_lone_surrogate_in_json_is_a_reject(user_catalog: Path, tmp_path: Path) -> None:
    # "\ud800" is valid JSON escaping but not Unicode text: Arrow's writer raised
    # UnicodeEncodeError and the run stopped with a traceback.
    lines = [
        '{"id": 1, "p": "A dog runs.", "h": "An animal moves.", "gold": "entailment"}',
        '{"id": 2, "p": "bad \\ud800 text", "h": "x", "gold": "neutral"}',
        '{"id": "3\\udfff", "p": "bad id", "h": "x", "gold": "neutral"}',
        '{"id": 4, "p": "a real pair \\ud83d\\ude00 is fine", "h": "x", "gold": "neutral"}',
    ]
    write(user_catalog / "data" / "mini_nli.jsonl", "\n".join(lines) + "\n")
    out = tmp_path / "o"
    manifest = run_recipe(user_catalog / "recipes" / "mini.yaml", out)
    counts = manifest.sources["mini_nli"]
    assert counts.examples_rendered == 2 and counts.rejected_by_rule == {"bad_text": 2}
    messages = [r["message"] for r in reject_lines(RunFolder(out), "load", "mini_nli")]
    assert any("field 'premise': character 5 is a lone surrogate" in m for m in messages)
    assert any("id field 'id'" in m for m in messages)
    assert manifest.check() == []


def test_csv_row_with_wrong_field_count_is_a_reject(tmp_path: Path) -> None:
    # pandas failed the whole source ("Expected 2 fields in line 3, saw 3"); one row is bad.
    _source(tmp_path, "{a: string, b: string}", "{file: s.csv, split: train}")
    write(tmp_path / "data" / "s.csv", "a,b\n1,2\n1,2,3\n4\n5,6\n")
    items = _items(tmp_path)
    assert [i.rule if isinstance(i, BadRow) else i.fields for i in items] == [
        {"a": "1", "b": "2"},
        "bad_row",
        "bad_row",
        {"a": "5", "b": "6"},
    ]
    assert "row has 3 fields, the header has 2" in items[1].message  # type: ignore[union-attr]


def test_duplicate_key_in_a_json_row_is_a_reject(tmp_path: Path) -> None:
    _source(tmp_path, "{text: string}", "{file: s.jsonl, split: train}")
    write(tmp_path / "data" / "s.jsonl", '{"text": "a"}\n{"text": "b", "text": "c"}\n')
    items = _items(tmp_path)
    assert isinstance(items[0], Example) and isinstance(items[1], BadRow)
    assert items[1].rule == "bad_row" and "'text' appears twice" in items[1].message


# --------------------------------------------------------------------- duplicate YAML keys


@pytest.mark.parametrize(
    ("file", "old", "new", "lines"),
    [
        ("sources/mini_nli.yaml", "cluster: nli", "cluster: nli\ncluster: misc", (3, 4)),
        (
            "templates/mini_nli.yaml",
            "    inverted: true",
            "    inverted: true\n    inverted: false",
            (8, 9),
        ),
        ("recipes/mini.yaml", "seed: 7", "seed: 7\nseed: 8", (2, 3)),
        # A quoted key is the same key: compared as built, not as spelt.
        (
            "sources/mini_nli.yaml",
            "  label: {names: [entailment, neutral, contradiction]}",
            "  label: {names: [entailment, neutral, contradiction]}\n  'label': string",
            (9, 10),
        ),
    ],
)
def test_duplicate_yaml_keys_name_both_lines(
    user_catalog: Path, tmp_path: Path, file: str, old: str, new: str, lines: tuple[int, int]
) -> None:
    path = user_catalog / file
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    code, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    first, second = lines
    assert code == 1
    assert err.startswith(f"error: {path}:{second}: invalid YAML: duplicate key "), err
    assert err.endswith(f"(first at line {first})"), err


def test_duplicate_keys_in_a_promptsource_file_name_both_lines(tmp_path: Path) -> None:
    # Two templates under one uuid: the first was dropped without a word.
    path = write(
        tmp_path / "templates.yaml",
        """
        dataset: x
        templates:
          0a3c: !Template
            id: 0a3c
            jinja: "first ||| a"
            name: first
          0a3c: !Template
            id: 0a3c
            jinja: "second ||| b"
            name: second
        """,
    )
    with pytest.raises(PromptsourceError) as err:
        read_promptsource(path)
    assert str(err.value) == f"{path}:7: invalid YAML: duplicate key '0a3c' (first at line 3)"


def test_yaml_integer_too_long_is_one_line(user_catalog: Path, tmp_path: Path) -> None:
    # int() refuses 4,300+ digits with a ValueError that escaped the YAML error handling.
    path = user_catalog / "recipes" / "mini.yaml"
    path.write_text(path.read_text().replace("seed: 7", "seed: " + "7" * 5000))
    code, err = _run(path, tmp_path / "o")
    assert code == 1 and err == f"error: {path}:2: invalid YAML: integer too long (5000 characters)"


# --------------------------------------------------------------------- recipe numbers


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "inf", "nan"])
@pytest.mark.parametrize(
    "field",
    [
        "mixing.temperature",
        "mixing.weights.mini_nli",
        "variants.zero_shot",
        "variants.few_shot",
        "variants.cot",
        "variants.options_shown",
        "validation_fraction",
        "limits.max_render_seconds",
    ],
)
def test_recipe_inf_and_nan_are_refused(
    user_catalog: Path, tmp_path: Path, field: str, value: str
) -> None:
    # `.inf` was accepted, written to the manifest as null, and every later stage died on it.
    *parents, leaf = field.split(".")
    text = f"{leaf}: {value}"
    for parent in reversed(parents):
        text = f"{parent}:\n" + textwrap.indent(text, "  ")
    recipe = user_catalog / "recipes" / "mini.yaml"
    body = _without(recipe, "mixing: {strategy: proportional, cap: null}\n", "seed: 7\n")
    recipe.write_text(body + text + "\n")
    code, err = _run(recipe, tmp_path / "o")
    line = len(body.splitlines()) + len(parents) + 1
    assert code == 1
    assert err == f"error: {recipe}:{line}: {field}: Input should be a finite number", err


def test_recipe_temperature_is_bounded(user_catalog: Path, tmp_path: Path) -> None:
    # count ** (1 / 1e-300) overflowed a float: OverflowError in the mix plan.
    recipe = user_catalog / "recipes" / "mini.yaml"
    text = recipe.read_text()
    recipe.write_text(
        text.replace("strategy: proportional", "strategy: temperature, temperature: 1e-300")
    )
    code, err = _run(recipe, tmp_path / "o")
    assert code == 1
    assert "mixing.temperature: Input should be greater than or equal to 0.1" in err, err
    recipe.write_text(
        text.replace("strategy: proportional", "strategy: temperature, temperature: 0.1")
    )
    code, err = _run(recipe, tmp_path / "o2")
    assert code == 0, err


def test_max_render_seconds_is_bounded(user_catalog: Path, tmp_path: Path) -> None:
    # setitimer(1e30) raised OverflowError ("timestamp out of range for platform time_t").
    recipe = _mini_recipe(user_catalog, "limits: {max_render_seconds: 1.0e+30}\n")
    code, err = _run(recipe, tmp_path / "o")
    assert code == 1
    assert err.endswith("limits.max_render_seconds: Input should be less than or equal to 3600")


@pytest.mark.parametrize(
    ("block", "field", "bound"),
    [
        ("mixing: {cap: VALUE}", "mixing.cap", "1000000000000"),
        ("mixing: {size: VALUE}", "mixing.size", "1000000000000"),
        ("few_shot: {max_chars: VALUE}", "few_shot.max_chars", "10000000"),
        ("limits: {max_prompt_chars: VALUE}", "limits.max_prompt_chars", "10000000"),
        ("limits: {max_output_chars: VALUE}", "limits.max_output_chars", "10000000"),
        ("limits: {max_worker_memory_mb: VALUE}", "limits.max_worker_memory_mb", "16777216"),
        ("export: {shard_rows: VALUE}", "export.shard_rows", "1000000000"),
        # A row group of 1e20 rows: OverflowError converting to a C long in the parquet writer.
        ("export: {row_group_rows: VALUE}", "export.row_group_rows", "1000000"),
        ("seed: VALUE", "seed", "18446744073709551615"),
    ],
)
def test_recipe_integers_are_bounded(
    user_catalog: Path, tmp_path: Path, block: str, field: str, bound: str
) -> None:
    recipe = user_catalog / "recipes" / "mini.yaml"
    body = _without(recipe, "mixing: {strategy: proportional, cap: null}\n", "seed: 7\n")
    recipe.write_text(body + block.replace("VALUE", str(10**30)) + "\n")
    code, err = _run(recipe, tmp_path / "o")
    line = len(body.splitlines()) + 1
    assert code == 1
    assert err == f"error: {recipe}:{line}: {field}: Input should be less than or equal to {bound}"


def test_recipe_templates_per_example_and_weights_are_bounded(
    user_catalog: Path, tmp_path: Path
) -> None:
    recipe = _mini_recipe(user_catalog, f"templates_per_example: {10**30}\n")
    code, err = _run(recipe, tmp_path / "o")
    assert code == 1 and err.endswith(
        "templates_per_example: Value error, must be 1 to 10000, or 'all'"
    )
    # Weights of 1e308 summed to inf and the mix plan died converting it to an int.
    recipe = user_catalog / "recipes" / "mini.yaml"
    recipe.write_text(
        recipe.read_text()
        .replace(f"templates_per_example: {10**30}\n", "")
        .replace(
            "strategy: proportional, cap: null",
            "strategy: weights, size: 10, weights: {mini_nli: 1.0e+308}",
        )
    )
    code, err = _run(recipe, tmp_path / "o")
    assert code == 1
    assert "mixing.weights.mini_nli: Input should be less than or equal to 1000000000000" in err


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ("seed: true", "seed"),
        ("mixing: {cap: yes}", "mixing.cap"),
        ("mixing: {strategy: temperature, temperature: true}", "mixing.temperature"),
        ("templates_per_example: true", "templates_per_example"),
        ("validation_fraction: false", "validation_fraction"),
        ("export: {shard_rows: true}", "export.shard_rows"),
    ],
)
def test_boolean_recipe_numbers_are_refused(
    user_catalog: Path, tmp_path: Path, block: str, field: str
) -> None:
    # pydantic read `true` as 1: `seed: true` silently meant seed 1.
    recipe = user_catalog / "recipes" / "mini.yaml"
    body = _without(recipe, "mixing: {strategy: proportional, cap: null}\n", "seed: 7\n")
    recipe.write_text(body + block + "\n")
    code, err = _run(recipe, tmp_path / "o")
    assert code == 1
    assert err.endswith(f": {field}: Value error, a boolean (true/false) is not a number"), err


def test_boolean_in_a_source_spec_number_is_refused(user_catalog: Path, tmp_path: Path) -> None:
    spec = user_catalog / "sources" / "mini_nli.yaml"
    spec.write_text(
        spec.read_text().replace(
            "fields: {premise: p, hypothesis: h, label: gold}",
            "fields: {premise: p, hypothesis: h, label: {column: gold, values: {e: true}}}\n"
            "  csv: {quoting: true}",
        )
    )
    code, err = _run(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    assert code == 1 and "a boolean (true/false) is not a number" in err, err


def test_max_worker_memory_mb_is_an_optional_limit() -> None:
    assert Limits().max_worker_memory_mb is None
    limits = Recipe(name="r", sources=["x"], limits={"max_worker_memory_mb": 4096}).limits
    assert limits.max_worker_memory_mb == 4096
    with pytest.raises(ValueError, match="greater than or equal to 256"):
        Limits(max_worker_memory_mb=10)


def test_run_folder_recipe_with_a_stored_inf_is_one_line(
    user_catalog: Path, tmp_path: Path
) -> None:
    # A folder written before this check stored `temperature: .inf` as null; the later stages
    # rebuilt the recipe from the manifest and died with a pydantic traceback.
    manifest = run_recipe(user_catalog / "recipes" / "mini.yaml", tmp_path / "o")
    stored = manifest.model_copy(
        update={"recipe": {**manifest.recipe, "mixing": {"temperature": None}}}
    )
    with pytest.raises(CatalogError) as err:
        recipe_context(stored)
    assert str(err.value) == (
        f"{manifest.recipe_path}: the run folder's recipe is not valid (mixing.temperature: "
        "Input should be a valid number); run it again from load (instructmix run --fresh)"
    )
