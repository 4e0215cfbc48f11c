"""Source transforms on the bundled data's own lines: GSM8K's calculator annotations and
`####` answers, e-SNLI's and PAWS's PTB tokenisation, DART's table markers; a row a transform
cannot work on is a reject naming the op, the field and the row; ids never depend on the
clean-ups; and `--data hub` cleans rows exactly as the sample path does."""

from __future__ import annotations

import csv
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import datasets
import pytest

from pipeline import load_catalog
from pipeline.catalog import Source, builtin_root
from pipeline.load import BadRow, Example, iter_rows, open_source
from pipeline.models import Transform
from pipeline.transforms import apply_transforms, detokenize

from .conftest import write

DATA = builtin_root() / "data"


def _steps(*steps: dict[str, Any]) -> list[Transform]:
    return [Transform.model_validate(s) for s in steps]


def _jsonl(name: str) -> list[dict[str, Any]]:
    with open(DATA / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _paws() -> list[dict[str, str]]:
    with open(DATA / "paws_wiki.dev_subset.tsv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


GSM8K = _steps(
    {"op": "strip_calculator_annotations", "field": "answer"},
    {"op": "text_before", "field": "answer", "marker": "####", "into": "solution"},
    {"op": "text_after", "field": "answer", "marker": "####", "into": "final_answer"},
)


# --------------------------------------------------------------------------- each op


def test_gsm8k_solution_and_answer_come_out_without_annotations() -> None:
    first = _jsonl("gsm8k.test.jsonl")[0]
    assert "<<16-3-4=9>>" in first["answer"]
    out = apply_transforms(GSM8K, first)
    assert out["answer"] == (
        "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n"
        "She makes 9 * 2 = $18 every day at the farmer\u2019s market.\n#### 18"
    )
    assert out["solution"] == (
        "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n"
        "She makes 9 * 2 = $18 every day at the farmer\u2019s market."
    )
    assert out["final_answer"] == "18"
    assert out["question"] == first["question"]  # untouched, and the input dict too
    assert "<<" in first["answer"]


def test_every_bundled_gsm8k_answer_splits_into_a_clean_solution_and_a_number() -> None:
    rows = _jsonl("gsm8k.test.jsonl")
    outs = [apply_transforms(GSM8K, row) for row in rows]
    assert len(outs) == 1319
    assert not [o for o in outs if "<<" in o["solution"] or ">>" in o["solution"]]
    assert not [o for o in outs if "####" in o["solution"]]
    assert all(re.fullmatch(r"-?[0-9][0-9,]*(\.[0-9]+)?", o["final_answer"]) for o in outs)


def test_detokenize_an_esnli_explanation() -> None:
    row = next(r for r in _jsonl("esnli_snli.dev_subset.jsonl") if r["line"] == 6)
    assert detokenize(row["preproc1_expl_1"]) == (
        "if you're wearing a jacket, you won't be able to see the blue jerseys; when you're "
        "standing in a bathroom, you can not be walking to school at the same time."
    )
    assert detokenize(row["s1"]) == (
        "Two young children in blue jerseys, one with the number 9 and one with the number 2 "
        "are standing on wooden steps in a bathroom and washing their hands in a sink."
    )


def test_detokenize_pairs_paws_quotes_even_where_the_marks_are_swapped() -> None:
    rows = {r["id"]: r for r in _paws()}
    assert detokenize(rows["3"]["sentence1"]) == (
        'After the end of the war in June 1902, Higgins left Southampton in the "SSBavarian" '
        "in August, returning to Cape Town the following month."
    )
    # PAWS's word swapping left this pair's PTB quotes the wrong way round.
    assert "as '' Macpelah Cemetery `` or" in rows["25"]["sentence2"]
    assert detokenize(rows["25"]["sentence2"]) == (
        'The Machpelah Cemetery, also spelled as "Macpelah Cemetery" or "Macphelah Cemetery", '
        "is a graveyard in Hudson County, New Jersey."
    )


def test_no_bundled_paws_sentence_keeps_ptb_spacing_or_loose_quotes() -> None:
    sentences = [r[k] for r in _paws() for k in ("sentence1", "sentence2")]
    plain = [detokenize(s) for s in sentences]
    assert not [p for p in plain if re.search(r" [,.;:!?)]|``|''|\( ", p)]
    loose = []
    for text in plain:
        quotes = [m.start() for m in re.finditer('"', text)]
        if len(quotes) % 2:
            continue  # an unpaired quote in the data itself
        for n, i in enumerate(quotes):
            # An opening quote hugs the next word, a closing one the previous.
            if (n % 2 == 0 and text[i + 1 : i + 2] == " ") or (n % 2 and text[i - 1] == " "):
                loose.append(text)
                break
    assert loose == []


def test_replace_renders_dart_markers_in_every_triple() -> None:
    row = next(r for r in _jsonl("dart.dev_subset.jsonl") if "[TITLE]" in json.dumps(r))
    steps = _steps(
        {
            "op": "replace",
            "field": "tripleset",
            "map": {"[TABLECONTEXT]": "the table", "[TITLE]": "title"},
            "into": "triples",
        }
    )
    out = apply_transforms(steps, row)
    assert out["tripleset"] == row["tripleset"]
    assert len(out["triples"]) == len(row["tripleset"])
    assert not [t for triple in out["triples"] for t in triple if "[" in t]
    assert ["the table", "title", "List of metropolitan areas by population"] in out["triples"]


def test_collapse_whitespace_of_an_esnli_explanation() -> None:
    row = next(r for r in _jsonl("esnli_snli.dev_subset.jsonl") if r["line"] == 4)
    assert "kids ;  jerseys" in row["preproc1_expl_1"]
    out = apply_transforms(_steps({"op": "collapse_whitespace", "field": "preproc1_expl_1"}), row)
    assert out["preproc1_expl_1"] == (
        "young children are kids ; jerseys with number 9 and 2 are numbered jerseys ."
    )


# --------------------------------------------------------------------------- at load

SPEC = """
name: mathy
task: toy math word problems
cluster: math
license: MIT
hub: {id: someone/mathy, splits: [train]}
features: {question: string, answer: string}
transforms:
  - {op: strip_calculator_annotations, field: answer}
  - {op: text_before, field: answer, marker: "####", into: solution}
  - {op: text_after, field: answer, marker: "####", into: final_answer}
sample: {file: mathy.jsonl, split: train}
"""


def _source(root: Path, rows: list[dict[str, Any]], spec: str = SPEC) -> Source:
    (root / "data").mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (root / "data" / "mathy.jsonl").write_text(text, encoding="utf-8")
    write(root / "sources" / "mathy.yaml", textwrap.dedent(spec))
    return load_catalog([root / "sources"], builtin=False).source("mathy")


def _items(source: Source, data: str) -> list[Example | BadRow]:
    return [
        item
        for split in open_source(source, data)  # type: ignore[arg-type]
        for batch in iter_rows(source, split, data)  # type: ignore[arg-type]
        for item in batch
    ]


ROWS = [
    *_jsonl("gsm8k.test.jsonl")[:2],
    {"question": "What is 2 + 2?", "answer": "2 + 2 = <<2+2=4>>4, with no final line."},
]


def test_a_row_a_transform_cannot_work_on_is_a_reject_naming_op_field_and_row(
    tmp_path: Path,
) -> None:
    items = _items(_source(tmp_path, ROWS), "sample")
    assert [type(i).__name__ for i in items] == ["Example", "Example", "BadRow"]
    bad = items[2]
    assert isinstance(bad, BadRow) and bad.rule == "bad_transform"
    assert "transform text_after of 'answer': has no '####' to take the text after" in bad.message
    assert bad.locator.endswith("mathy.jsonl row 3") and bad.locator in bad.message
    assert bad.example_id  # the id was fixed before the transform failed


def test_transforms_never_change_an_examples_id(tmp_path: Path) -> None:
    plain = SPEC.split("transforms:")[0] + "sample: {file: mathy.jsonl, split: train}\n"
    cleaned = _items(_source(tmp_path / "a", ROWS[:2]), "sample")
    raw = _items(_source(tmp_path / "b", ROWS[:2], plain), "sample")
    assert all(isinstance(i, Example) for i in cleaned + raw)
    assert [i.example_id for i in cleaned] == [i.example_id for i in raw]
    assert [i.fields for i in cleaned] != [i.fields for i in raw]


def test_hub_rows_are_cleaned_exactly_as_sample_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    source = _source(tmp_path / "cat", ROWS)
    repo = tmp_path / "hub" / "someone" / "mathy" / "data"
    repo.mkdir(parents=True)
    datasets.Dataset.from_list(ROWS).to_parquet(str(repo / "train-00000-of-00001.parquet"))
    monkeypatch.chdir(tmp_path / "hub")

    def shown(items: list[Example | BadRow]) -> list[Any]:
        return [
            (i.example_id, i.fields) if isinstance(i, Example) else (i.rule, i.example_id)
            for i in items
        ]

    sample, hub = _items(source, "sample"), _items(source, "hub")
    # Ids are content hashes of the row's features (no id field here), the same either way.
    assert shown(hub) == shown(sample)
    assert hub[0].fields["final_answer"] == "18"  # type: ignore[union-attr]
    assert hub[2].locator == "hub:someone/mathy[train] row 3"


def test_detokenize_joins_plural_possessives_but_not_quoted_words() -> None:
    paws = [s for r in _paws() for s in (r["sentence1"], r["sentence2"]) if "s ' " in s]
    assert paws  # the bundled sample has them ("the girls ' school")
    assert not [s for s in map(detokenize, paws) if re.search(r"\ws ' ", s)]
    assert detokenize("The girls ' school is near .") == "The girls' school is near."
    assert detokenize("He said ' hello ' to me .") == "He said ' hello ' to me."


def test_detokenize_keeps_a_decimal_that_follows_a_space() -> None:
    # WikiTableQuestions cells: "a .537 average" is a number, not a full stop.
    assert detokenize("batting a .537 average , then 3 .") == "batting a .537 average, then 3."


def test_transforms_reach_strings_inside_structs() -> None:
    step = Transform(op="collapse_whitespace", field="annotations")
    fields = {"annotations": {"source": ["wikisql"], "text": ["A  table  says so ."]}}
    out = apply_transforms([step], fields)
    assert out["annotations"] == {"source": ["wikisql"], "text": ["A table says so ."]}


def test_detokenize_leaves_a_spaced_dash_alone() -> None:
    # PTB keeps hyphenated words whole: " - " in tokenised or plain text is a real dash.
    assert detokenize("Toluca - answer : yes .") == "Toluca - answer: yes."


def _detokenize_by_the_rules(text: str) -> str:
    """detokenize with every PTB step run as its regex, none skipped: the reference for the
    shortcuts (steps skipped when they cannot match, plain replacement for spaces)."""
    from pipeline import transforms

    for token, char in transforms._BRACKETS.items():
        text = text.replace(token, char)
    text = transforms._pair_straight_quotes(text)
    for pattern, replacement, *_ in transforms._PTB_STEPS:
        text = pattern.sub(replacement, text)
    return " ".join(text.split())


def test_detokenize_shortcuts_give_what_the_rules_give() -> None:
    """Tokenised pieces joined at random (tabs, no-break spaces, decimals after spaces, quotes,
    contractions, brackets), 20,000 of them, and every bundled e-SNLI and PAWS text."""
    import random

    pieces = ["a", "dog", "n't", "'s", "'S", "N'T", "``", "''", '"', "\t", "\xa0", ",", ".",
              ".5", "5", "(", ")", "-LRB-", "-RSB-", "$", "#", "%", "'", "girls", ";", "!",
              "?", "]", "[", "{", "}", "\n", "'re", "'ll", ":", " .", "3"]  # fmt: skip
    rng = random.Random(1201)
    texts = [
        "".join(rng.choice(pieces) + rng.choice(["", " ", " ", "  "]) for _ in range(14))
        for _ in range(20_000)
    ]
    texts += [s for r in _paws() for s in (r["sentence1"], r["sentence2"])]
    texts += [
        v for r in _jsonl("esnli_snli.dev_subset.jsonl") for v in r.values() if isinstance(v, str)
    ]
    assert sum(" ." in t for t in texts) > 1_000  # the close-up shortcut is exercised
    assert sum(" .5" in t for t in texts) > 100  # and the decimals it keeps
    # A text with none of the rare characters skips every step but the close-up.
    assert sum(not set("`'([{$#") & set(t) for t in texts) > 1_000
    for text in texts:
        assert detokenize(text) == _detokenize_by_the_rules(text), text
