"""The columnar hot path gives what the record-by-record one gave.

``RecordColumns`` builds a part's table from columns (one flat message array, constant columns
written once) and ``check_table`` runs validation as column expressions; both are held here to
the plain versions kept as the reference: ``to_record`` rows through ``Table.from_pylist``, and
``check_record`` on every row.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pipeline.catalog import Catalog
from pipeline.columns import RecordColumns
from pipeline.models import Limits, Recipe, Variants
from pipeline.preview import sample_examples
from pipeline.render import Renderer, RenderError, to_record
from pipeline.runfolder import PART_SCHEMA
from pipeline.validate import (
    TEMPLATE_SYNTAX,
    check_record,
    check_table,
    holds_template_syntax,
)
from tests.test_validate import record

LIMITS = Limits()
# Every form, options shown half the time, two templates per example: what run draws.
RECIPE = Recipe(
    name="columns",
    sources=["x"],
    seed=7,
    templates_per_example=3,
    variants=Variants(zero_shot=0.4, few_shot=0.3, cot=0.2, few_shot_cot=0.1, options_shown=0.5),
)


def rendered_table(catalog: Catalog, source: str, n: int = 40) -> tuple[pa.Table, pa.Table]:
    """One source's sample through the renderer: (the columnar table, the from_pylist one)."""
    src = catalog.source(source)
    examples = sample_examples(catalog, source, n)
    renderer = Renderer(src, catalog.templates_for(source), RECIPE, examples)
    columns = RecordColumns(src)
    rows: list[dict[str, Any]] = []
    for example in examples:
        for result in renderer.render(example):
            if isinstance(result, RenderError):
                continue
            columns.add(example, result)
            rows.append({**to_record(src, example, result), "out_split": example.out_split})
    return columns.table(), pa.Table.from_pylist(rows, schema=PART_SCHEMA)


def reference(table: pa.Table, syntax: np.ndarray) -> list[tuple[int, tuple[str, str]]]:
    out = []
    for i, row in enumerate(table.to_pylist()):
        problem = check_record(row, LIMITS, bool(syntax[i]))
        if problem is not None:
            out.append((i, problem))
    return out


def test_columns_build_the_table_to_record_rows_make_for_every_source(
    builtin_catalog: Catalog,
) -> None:
    variants: set[str] = set()
    for source in builtin_catalog.sources:
        columnar, plain = rendered_table(builtin_catalog, source)
        assert plain.num_rows > 0, source
        assert columnar.equals(plain), source
        variants |= set(columnar.column("variant").to_pylist())
    # The comparison saw every form the catalog can make.
    assert {"zero_shot_opt", "zero_shot_noopt", "few_shot_opt", "cot", "inverted"} <= variants


def test_real_records_pass_both_checks_alike(builtin_catalog: Catalog) -> None:
    for source in builtin_catalog.sources:
        table, _ = rendered_table(builtin_catalog, source)
        syntax = np.zeros(table.num_rows, dtype=bool)
        assert check_table(table, LIMITS, syntax) == reference(table, syntax), source


def _row(**changes: Any) -> dict[str, Any]:
    # The record test_validate checks rules on, as a part holds it (gold answers, out_split).
    return record(**{"gold_answers": None, "out_split": "train", **changes})


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": text} for role, text in pairs]


PLANTED = {
    "good": _row(),
    "good_system": _row(
        messages=_turns(("system", "Be brief."), ("user", "Yes or no?"), ("assistant", "no"))
    ),
    "good_multi_turn": _row(
        variant="few_shot_opt",
        messages=_turns(
            ("user", "Q1? yes or no"), ("assistant", "no"), ("user", "Q2?"), ("assistant", "yes")
        ),
    ),
    "bad_id": _row(id="not-an-id"),
    "bad_variant": _row(variant="zero_shot"),
    "one_turn": _row(messages=_turns(("user", "Q?"))),
    "two_users": _row(messages=_turns(("user", "Q?"), ("user", "yes"))),
    "system_last": _row(messages=_turns(("user", "Q?"), ("assistant", "yes"), ("system", "x"))),
    "system_in_middle": _row(
        messages=_turns(("user", "Q?"), ("system", "x"), ("assistant", "yes"))
    ),
    "odd_role": _row(messages=_turns(("user", "Q?"), ("robot", "yes"))),
    "ends_on_user": _row(
        messages=_turns(("user", "Q?"), ("assistant", "yes"), ("user", "and?"))
    ),
    "bad_out_split": _row(out_split="test"),
    "no_out_split": _row(out_split=None),
    "empty_output": _row(messages=_turns(("user", "Q?"), ("assistant", " \n"))),
    # Python's str.strip() takes these for blanks too; the column check must as well.
    "blank_separators": _row(messages=_turns(("user", "Q?"), ("assistant", "\x1c\u3000\x85"))),
    "blank_prompt": _row(messages=_turns(("user", "\u2003\t"), ("assistant", "yes"))),
    "blank_system_is_fine": _row(
        messages=_turns(("system", " "), ("user", "Q? yes/no"), ("assistant", "yes"))
    ),
    "not_a_choice": _row(messages=_turns(("user", "Q?"), ("assistant", "Yes"))),
    "empty_choice": _row(answer_choices=["yes", ""]),
    "no_choices": _row(answer_choices=None),
    "gold_hit": _row(answer_choices=None, gold_answers=["yes", "aye"]),
    "gold_miss": _row(answer_choices=None, gold_answers=["aye"]),
    "cot_good": _row(
        variant="cot",
        messages=_turns(
            ("user", "Q? Think first."), ("assistant", "Because.\n\nSo the answer is: yes")
        ),
    ),
    "cot_no_line": _row(
        variant="cot", messages=_turns(("user", "Q?"), ("assistant", "Because. yes"))
    ),
    "cot_wrong_answer": _row(
        variant="few_shot_cot",
        messages=_turns(("user", "Q?"), ("assistant", "Because.\n\nSo the answer is: maybe")),
    ),
    "prompt_too_long": _row(
        messages=_turns(("user", "x" * (LIMITS.max_prompt_chars + 1)), ("assistant", "yes"))
    ),
    "system_counts_in_prompt": _row(
        messages=_turns(
            ("system", "s" * LIMITS.max_prompt_chars), ("user", "Q?"), ("assistant", "yes")
        )
    ),
    "output_too_long": _row(
        answer_choices=None,
        messages=_turns(("user", "Q?"), ("assistant", "y" * (LIMITS.max_output_chars + 1))),
    ),
    "leftover": _row(messages=_turns(("user", "Is {{ x }} blue?"), ("assistant", "yes"))),
    "leftover_in_output": _row(
        answer_choices=None, messages=_turns(("user", "Q?"), ("assistant", "a %} b"))
    ),
    "leftover_in_system": _row(
        messages=_turns(("system", "{# note #}"), ("user", "Q?"), ("assistant", "yes"))
    ),
}


@pytest.mark.parametrize("sliced", [False, True])
def test_planted_records_get_the_rule_and_message_check_record_gives(sliced: bool) -> None:
    names = list(PLANTED)
    rows = [PLANTED[name] for name in names]
    table = pa.Table.from_pylist(rows, schema=PART_SCHEMA)
    if sliced:  # a table that starts inside its buffers (a slice) is checked just the same
        table = pa.concat_tables([table, table]).slice(len(rows) - 3, len(rows) + 3)
    for syntax_everywhere in (False, True):
        syntax = np.full(table.num_rows, syntax_everywhere)
        got = check_table(table, LIMITS, syntax)
        assert got == reference(table, syntax)
    by_name = dict(zip(names, rows, strict=True))
    found = {names[i]: problem[0] for i, problem in check_table(
        pa.Table.from_pylist(rows, schema=PART_SCHEMA), LIMITS, np.zeros(len(rows), dtype=bool)
    )}  # fmt: skip
    assert not {n for n in found if n.startswith("good")}
    assert found["blank_separators"] == "empty_output"
    assert found["blank_prompt"] == "empty_prompt"
    assert found["system_counts_in_prompt"] == "prompt_too_long"
    assert found["gold_miss"] == "output_not_gold"
    assert found["cot_no_line"] == "cot_shape"
    assert {found[n] for n in ("bad_id", "one_turn", "two_users", "odd_role")} == {"schema"}
    assert "no_out_split" not in found and "blank_system_is_fine" not in found
    assert set(by_name) - set(found) == {
        "good", "good_system", "good_multi_turn", "no_out_split", "blank_system_is_fine",
        "no_choices", "gold_hit", "cot_good",
    }  # fmt: skip


def test_templates_that_name_their_choices_in_literal_text_are_labelled_as_before(
    builtin_catalog: Catalog,
) -> None:
    """``CompiledTemplate.always_names`` skips the per-record ``shows_all`` test when the
    template's own literal text names every choice; the label must be the one that test gives."""
    from pipeline.render import shows_all

    checked = 0
    for source in builtin_catalog.sources:
        table, _ = rendered_table(builtin_catalog, source)
        specs = {t.spec.id: t.spec for t in builtin_catalog.templates_for(source)}
        for row in table.to_pylist():
            spec = specs[row["template_id"]]
            if not spec.metadata.choices_in_prompt or not row["variant"].startswith("zero_shot"):
                continue
            if "options" in (spec.instruction or "") + (spec.input or ""):
                continue  # the template places the options block itself
            prompt = row["messages"][-2]["content"]
            choices = row["answer_choices"]
            assert row["variant"].endswith("_opt") == bool(choices and shows_all(prompt, choices))
            checked += 1
    assert checked > 100


@pytest.mark.parametrize(
    ("literal", "choice", "named"),
    [
        ("answer yes or no.", "yes", True),
        ("answer yes or no.", "no", True),
        ("nobody knows", "no", False),  # not a word of its own
        ("yes or no", "yes", False),  # at the literal's edge: the data before it may be a word
        ("is it true or false", "false", False),  # at the end: the data after it may be a word
        ("pick (a) or (b)", "(a)", True),  # a choice that is no word needs no edges
        ("", "", True),
    ],
)
def test_names_within_needs_both_edges_inside_the_literal(
    literal: str, choice: str, named: bool
) -> None:
    from pipeline.options import names_within

    assert names_within(literal, choice) is named


def test_the_byte_search_for_delimiters_finds_what_a_substring_search_finds() -> None:
    # Random texts over the characters delimiters are made of (and a few that are not, one of
    # them several bytes long), empty and null ones, in plain, large, sliced and chunked arrays.
    rng = random.Random(13)
    alphabet = "{}%# a\u00e9\u4e2d"
    texts: list[str | None] = [
        "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 7))) for _ in range(5000)
    ]
    texts += ["", None, "{", "}", "{{", "}}", "{%", "%}", "{#", "#}", "{}", "}{", "%{", "}#"]
    for i in range(0, len(texts), 97):
        texts[i] = None

    def expected(values: list[str | None]) -> list[bool]:
        return [v is not None and any(tok in v for tok in TEMPLATE_SYNTAX) for v in values]

    plain = pa.array(texts, pa.string())
    assert holds_template_syntax(plain).tolist() == expected(texts)
    assert holds_template_syntax(pa.array(texts, pa.large_string())).tolist() == expected(texts)
    # A delimiter split across two neighbouring strings ("{" then "{") is in neither.
    assert holds_template_syntax(pa.array(["a{", "{b", "%", "}"])).tolist() == [False] * 4
    for start, length in ((1, 100), (333, 2000), (4990, 24)):
        part = plain.slice(start, length)
        assert holds_template_syntax(part).tolist() == expected(texts[start : start + length])
    chunked = pa.chunked_array([plain.slice(0, 10), plain.slice(10)])
    assert holds_template_syntax(chunked).tolist() == expected(texts)
    assert holds_template_syntax(pa.array([], pa.string())).tolist() == []
