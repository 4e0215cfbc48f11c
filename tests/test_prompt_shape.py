"""Every prompt says what the answer looks like, and every target obeys it.

- Lettered and numbered options end with a line saying whether to answer with the marker, the
  text or both; the target is that form (before, 502 of 664 such records expected the text and
  the prompt never said which).
- One-turn few-shot prompts mark each exemplar's input and answer with a pattern drawn per
  record, and the query ends where the answer starts (before: "- yes\\n- no\\nyes").
- Several gold answers (NQ-open, WebQuestions): one drawn per record, all listed, any accepted.
- Junk rationales (annotator notes) make no chain-of-thought record and no CoT exemplar.
- The renderer's own sentences follow the prompt's language, not the rows'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipeline import render_one, run_recipe
from pipeline.catalog import Source, Template
from pipeline.load import Example
from pipeline.locales import locale_for
from pipeline.models import Limits, Recipe, SourceSpec, TemplateSpec
from pipeline.preview import preview_records, sample_examples
from pipeline.render import Renderer, RenderError, VariantUnavailable, shows_all, to_record
from pipeline.validate import check_record

from .conftest import write

NLI = SourceSpec.model_validate(
    {
        "name": "nli",
        "task": "NLI",
        "cluster": "nli",
        "license": "MIT",
        "hub": {"id": "me/nli"},
        "features": {
            "premise": "string",
            "hypothesis": "string",
            "label": {"names": ["entailment", "neutral", "contradiction"]},
            "why": "string",
        },
        "rationale": "why",
        "rationale_rules": [
            {
                "name": "annotator_note",
                "check": "{{ 'made this up' not in rationale | lower }}",
                "message": "an annotator's note, not reasoning",
            }
        ],
    }
)
SOURCE = Source(NLI, Path("nli.yaml"))
ROWS = [
    ("A dog runs in a park.", "An animal is outside.", 0, "A dog is an animal; a park is outside."),
    ("A man plays a guitar.", "A man is asleep.", 2, "Playing a guitar needs one to be awake."),
    ("Two kids eat lunch.", "The kids are siblings.", 1, "Eating together says nothing of kin."),
    ("A woman reads a book.", "Someone is reading.", 0, "A woman is someone; she is reading."),
    ("A cat sleeps on a mat.", "The cat is running.", 2, "I made this up, sorry."),
]


def _template(**extra: Any) -> Template:
    spec = TemplateSpec.model_validate(
        {
            "id": "does-it-follow",
            "instruction": 'Premise: "{{ premise }}" Hypothesis: "{{ hypothesis }}". '
            "Does the premise entail the hypothesis?",
            "output": "{{ answer_choices[label] }}",
            "answer_choices": ["yes", "maybe", "no"],
            "cot": True,
            **extra,
        }
    )
    return Template(spec, "nli", Path("nli.templates.yaml"))


def _example(i: int) -> Example:
    premise, hypothesis, label, why = ROWS[i]
    fields = {"premise": premise, "hypothesis": hypothesis, "label": label, "why": why}
    return Example(f"e{i}", "train", fields, f"row {i + 1}")


def _recipe(**variants: Any) -> Recipe:
    return Recipe.model_validate({"name": "r", "sources": ["nli"], "variants": variants})


@pytest.mark.parametrize("style", ["letters", "numbers"])
@pytest.mark.parametrize("target", ["text", "marker", "both"])
def test_marked_options_say_how_to_answer_and_the_target_obeys(style: str, target: str) -> None:
    recipe = _recipe(option_styles=[style], options_shown=1.0)
    template = _template(option_target=target)
    for i in range(len(ROWS)):
        premise, hypothesis, label, why = ROWS[i]
        fields = {"premise": premise, "hypothesis": hypothesis, "label": label, "why": why}
        record = render_one(SOURCE, template, fields, recipe=recipe, variant="zero_shot_opt")
        prompt, answer = (m["content"] for m in record["messages"])
        *block, form = prompt.splitlines()
        assert form in locale_for("en").answer_forms[style][target], prompt
        marker = "ABC"[label] if style == "letters" else "123"[label]
        text = ["yes", "maybe", "no"][label]
        line = next(b for b in block if b.endswith(f" {text}"))
        assert {"text": text, "marker": marker, "both": line}[target] == answer
        assert check_record(record, Limits()) is None


def test_dashes_and_inline_need_no_answer_form_line() -> None:
    for style in ("dashes", "inline", "flan"):
        recipe = _recipe(option_styles=[style], options_shown=1.0)
        record = render_one(SOURCE, _template(), {**_example(0).fields}, recipe=recipe)
        prompt = record["messages"][0]["content"]
        forms = locale_for("en").answer_forms
        assert not any(f in prompt for s in forms.values() for t in s.values() for f in t)
        assert record["messages"][1]["content"] == "yes"


def test_one_turn_few_shot_marks_every_exemplar_and_ends_on_the_answer_mark() -> None:
    recipe = Recipe.model_validate(
        {
            "name": "r",
            "sources": ["nli"],
            "variants": {"zero_shot": 0, "few_shot": 1, "options_shown": 1.0},
            "few_shot": {"k": 2},
        }
    )
    pool = [_example(i) for i in range(len(ROWS))]
    renderer = Renderer(SOURCE, [_template()], recipe, pool)
    patterns = locale_for("en").few_shot_patterns
    used = set()
    for example in pool:
        [rendered] = renderer.render(example)
        assert not isinstance(rendered, RenderError)
        [(prompt, answer)] = rendered.turns
        fits = [
            p
            for p in patterns
            if prompt.endswith("\n" + p.answer.rstrip()) and prompt.startswith(p.input)
        ]
        pattern = max(fits, key=lambda p: len(p.input))  # "Question: " before no prefix
        used.add(pattern)
        shots = prompt[len(pattern.input) :].split(pattern.separator + pattern.input)
        assert len(shots) == 3  # two exemplars and the query
        for shot in shots[:-1]:
            # The exemplar's answer is on its own line, after the answer mark.
            last = shot.splitlines()[-1]
            assert last.startswith(pattern.answer) and last[len(pattern.answer) :] in {
                "yes",
                "maybe",
                "no",
            }
        assert shots[-1].startswith('Premise: "' + example.fields["premise"])
        assert answer == ["yes", "maybe", "no"][example.fields["label"]]
        # Same seed and ids, same pattern.
        again = Renderer(SOURCE, [_template()], recipe, pool).render(example)[0]
        assert not isinstance(again, RenderError) and again.turns == rendered.turns
    assert len(used) >= 2  # drawn per record, not one fixed pattern


def test_gold_answers_one_drawn_all_listed_any_accepted() -> None:
    spec = SourceSpec.model_validate(
        {
            "name": "qa",
            "task": "QA",
            "cluster": "closed_book_qa",
            "license": "MIT",
            "hub": {"id": "me/qa"},
            "features": {"question": "string", "answer": "list[string]"},
        }
    )
    source = Source(spec, Path("qa.yaml"))
    template = Template(
        TemplateSpec.model_validate(
            {
                "id": "ask",
                "instruction": "{{ question }} Answer in a few words.",
                "output": "{{ gold_answer }}",
                "gold_answers": "{{ answer | join('|||') }}",
            }
        ),
        "qa",
        Path("qa.templates.yaml"),
    )
    answers = ["Chicago", "Chicago, Illinois", "the Windy City", "Chicago"]
    drawn = set()
    for i in range(40):
        record = render_one(
            source, template, {"question": "Where?", "answer": answers}, example_id=f"q{i}"
        )
        assert record["gold_answers"] == ["Chicago", "Chicago, Illinois", "the Windy City"]
        assert record["messages"][1]["content"] in record["gold_answers"]
        assert check_record(record, Limits()) is None
        drawn.add(record["messages"][1]["content"])
    assert len(drawn) == 3  # not always answers[0]
    wrong = dict(record)
    wrong["messages"] = [record["messages"][0], {"role": "assistant", "content": "Boston"}]
    assert check_record(wrong, Limits()) == (
        "output_not_gold",
        "output 'Boston' is not one of the gold answers "
        "['Chicago', 'Chicago, Illinois', 'the Windy City']",
    )
    with pytest.raises(RenderError) as caught:
        render_one(source, template, {"question": "Where?", "answer": ["", " "]})
    assert caught.value.rule == "no_gold_answer"


def test_a_junk_rationale_makes_no_cot_record_and_no_cot_exemplar() -> None:
    recipe = Recipe.model_validate(
        {
            "name": "r",
            "sources": ["nli"],
            "variants": {"zero_shot": 0, "few_shot_cot": 1, "options_shown": 0.0},
            "few_shot": {"k": 3},
        }
    )
    pool = [_example(i) for i in range(len(ROWS))]
    renderer = Renderer(SOURCE, [_template()], recipe, pool)
    [junk] = renderer.render(pool[4])
    assert isinstance(junk, RenderError) and junk.rule == "annotator_note"
    assert "an annotator's note, not reasoning" in str(junk)
    for example in pool[:4]:
        [rendered] = renderer.render(example)
        assert not isinstance(rendered, RenderError)
        prompt = rendered.turns[0][0]
        assert "I made this up" not in prompt
        assert ROWS[4][0] not in prompt  # the junk example is never an exemplar
        row = to_record(SOURCE, example, rendered)
        assert check_record(row, Limits()) is None


def test_the_renderers_sentences_follow_the_prompts_language() -> None:
    spec = NLI.model_copy(update={"language": ["en", "fi"]})
    source = Source(spec, Path("nli.yaml"))
    recipe = _recipe(option_styles=["letters"], options_shown=1.0)
    example = Example("f1", "train", _example(0).fields, "row 1", language="fi")
    english = _template()
    finnish = _template(
        id="seuraako",
        instruction='Premissi: "{{ premise }}" Hypoteesi: "{{ hypothesis }}". Seuraako?',
        answer_choices=["kyllä", "ehkä", "ei"],
        metadata={"languages": ["fi"]},
    )
    translated = _template(
        id="translated", translations={"fi": {"instruction": "Seuraako {{ hypothesis }}?"}}
    )
    words = {"en": locale_for("en"), "fi": locale_for("fi")}
    for template, language in ((english, "en"), (finnish, "fi"), (translated, "fi")):
        renderer = Renderer(source, [template], recipe)
        [rendered] = renderer.render(example)
        assert not isinstance(rendered, RenderError)
        prompt = rendered.turns[0][0]
        assert prompt.splitlines()[-1] in words[language].answer_forms["letters"]["text"]
        assert any(o in prompt for o in words[language].option_openings), prompt
        assert to_record(source, example, rendered)["language"] == "fi"  # the rows' language


def test_an_exemplars_own_jinja_delimiters_are_no_leftover_syntax(tmp_path: Path) -> None:
    # SciTLDR's abstracts hold LaTeX such as "\\frac{a}{b}}": shown as an exemplar in another
    # example's few-shot prompt, that is data, not a template left unrendered.
    latex = " with \\frac{a}{b}}"
    rows = [
        {"id": i, "text": f"Paper {i} proves a bound{latex if i == 0 else ''}.", "label": i % 2}
        for i in range(8)
    ]
    root = tmp_path / "cat"
    write(root / "sources" / "papers.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    write(
        root / "sources" / "papers.yaml",
        """
        name: papers
        task: Paper claims
        cluster: misc
        license: MIT
        features: {text: string, label: {names: [weak, strong]}}
        sample: {file: papers.jsonl, split: train, id_field: id}
        """,
    )
    write(
        root / "templates" / "papers.yaml",
        """
        source: papers
        templates:
          - id: strength
            instruction: "Is this claim weak or strong? Answer weak or strong. {{ text }}"
            output: "{{ answer_choices[label] }}"
            answer_choices: [weak, strong]
        """,
    )
    recipe = write(
        root / "recipes" / "r.yaml",
        """
        name: r
        seed: 3
        sources: [papers]
        mixing: {cap: null}
        variants: {zero_shot: 0, few_shot: 1, options_shown: 0.0}
        few_shot: {k: 7}
        dedup: {exact: false, normalized: false}
        decontamination: {enabled: false}
        catalog: {sources: [../sources], templates: [../templates]}
        """,
    )
    out = tmp_path / "out"
    manifest = run_recipe(recipe, out, max_reject_share=0.0)
    assert manifest.check() == []
    assert manifest.sources["papers"].rejected_by_rule == {}
    prompts = [
        r["messages"][0]["content"]
        for f in sorted((out / "mixed").glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
        if r["example_id"] != "0"
    ]
    assert len(prompts) == 7 and all("}}" in p for p in prompts)  # the exemplar is shown


def test_a_template_that_writes_its_choices_has_no_optionless_form() -> None:
    # preview --variant zero_shot_noopt used to render its prompt with {{ options }} empty: a
    # record run never makes, shown to the template writer as if it were one.
    listed = _template(
        id="listed",
        instruction="{{ premise }} / {{ hypothesis }}: does it follow?\n{{ options }}",
        metadata={"choices_in_prompt": True},
    )
    with pytest.raises(VariantUnavailable, match="places"):
        render_one(SOURCE, listed, _example(0).fields, variant="zero_shot_noopt")
    record = render_one(SOURCE, listed, _example(0).fields, variant="zero_shot_opt")
    assert "- maybe" in record["messages"][0]["content"] or "(B) maybe" in str(record)


def test_a_previews_exemplars_are_never_of_the_querys_split_group(builtin_catalog) -> None:
    # e-SNLI pairs three hypotheses with one premise (split_group: premise): a preview used to
    # show a sibling pair, with the query's own premise, as its exemplar.
    rows = preview_records(
        builtin_catalog, "esnli", "relation-label-question", n=30, variant="few_shot_opt"
    )
    examples = {e.example_id: e for e in sample_examples(builtin_catalog, "esnli", 30)}
    assert len({e.group for e in examples.values()}) < len(examples)  # siblings are there
    made = [r for r in rows if "messages" in r]
    assert len(made) >= 20
    for row in made:
        premise = examples[row["example_id"]].fields["premise"]
        assert row["messages"][0]["content"].count(premise) == 1, row["example_id"]


def test_a_prompt_shows_a_choice_only_as_words_of_its_own() -> None:
    # "no" inside "Nobody" once made run label a record _opt whose prompt never offered "no".
    assert shows_all("Yes or no: is it raining?", ["yes", "no"])
    assert not shows_all("Nobody saw it. Is that so, yes?", ["yes", "no"])
    assert shows_all("Pick one: (A) well-known, (B) unknown", ["well-known", "unknown"])
