"""Lint's catalog rules: each one finds its defect class on a planted template, named by
template, rule and example, and stays quiet on a good template over the same rows.

Every catalog is made here: a source spec, a few dozen rows shaped like the real data (SNLI
premises, Breaking NLI's change categories, GSM8K's calculator annotations, PAWS sentences...)
and templates, rendered by the real renderer on the sample, as ``templates lint`` does.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from pipeline import load_catalog
from pipeline.lint import Finding, lint_catalog, lint_source

from .conftest import write

PREMISES = [
    "A man in a blue shirt is standing on a ladder.",
    "Two dogs run across a snowy field.",
    "A woman is slicing tomatoes in a small kitchen.",
    "Children are playing soccer in the park.",
    "An old man reads a newspaper on a bench.",
    "A girl in a red coat waits for the bus.",
    "Three workers repair a road at night.",
    "A boy throws a ball to his father.",
    "A chef plates a dessert in a busy restaurant.",
    "Two women laugh while drinking coffee.",
]
# Breaking NLI's idea: one word changed, and the kind of change nearly decides the label.
CHANGES = [
    ("synonyms", "entailment", ("blue", "azure")),
    ("antonyms", "contradiction", ("standing", "sitting")),
    ("colors", "contradiction", ("blue", "green")),
    ("nationalities", "contradiction", ("man", "French man")),
]


def nli_rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(40):
        premise = PREMISES[i % len(PREMISES)]
        category, label, _ = CHANGES[i % len(CHANGES)]
        words = premise.split()
        words[-1] = f"place{i}."  # every hypothesis its own
        rows.append(
            {
                "id": i,
                "sentence1": premise,
                "sentence2": " ".join(words),
                "category": category,
                "gold_label": label,
            }
        )
    rows[3]["gold_label"] = "entailment"  # one exception: the category is not the label itself
    return rows


NLI_SOURCE = """
name: {name}
task: lexical inference
cluster: nli
license: CC0-1.0
hub: {{id: someone/{name}, splits: [test]}}
features:
  sentence1: string
  sentence2: string
  category: string
  label: {{names: [entailment, neutral, contradiction]}}
sample:
  file: {name}.jsonl
  split: test
  id_field: id
  fields: {{label: gold_label}}
"""


def catalog_with(
    root: Path, name: str, source: str, rows: list[dict[str, Any]], templates: str
) -> list[Finding]:
    """Lint one source made here: its spec, its rows as the bundled sample, its templates."""
    write(root / "data" / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write(root / "sources" / f"{name}.yaml", source.format(name=name))
    write(
        root / "templates" / f"{name}.yaml",
        f"source: {name}\ntemplates:\n" + textwrap.indent(textwrap.dedent(templates), "  "),
    )
    catalog = load_catalog([root / "sources"], [root / "templates"], builtin=False)
    return lint_catalog(catalog)


def of_rule(findings: list[Finding], rule: str) -> dict[str | None, Finding]:
    return {f.template_id: f for f in findings if f.rule == rule}


# --------------------------------------------------------------------------- label leak

LEAK_TEMPLATES = """
- id: shows-category
  instruction: |-
    The second sentence changes one word of the first (a change of type "{{ category }}").
    First: {{ sentence1 }}
    Second: {{ sentence2 }}
    Reply with entailment, neutral or contradiction.
  output: "{{ answer_choices[label] }}"
  answer_choices: [entailment, neutral, contradiction]
- id: sentences-only
  instruction: |-
    First: {{ sentence1 }}
    Second: {{ sentence2 }}
    Does the second follow from the first, contradict it, or neither?
    Reply with entailment, neutral or contradiction.
  output: "{{ answer_choices[label] }}"
  answer_choices: [entailment, neutral, contradiction]
"""


def test_a_shown_category_that_predicts_the_label_is_a_leak(tmp_path: Path) -> None:
    findings = catalog_with(tmp_path, "lexnli", NLI_SOURCE, nli_rows(), LEAK_TEMPLATES)
    leaks = of_rule(findings, "label_leak")
    assert set(leaks) == {"shows-category"}  # the template without it is clean
    leak = leaks["shows-category"]
    assert leak.severity == "error"
    assert leak.example_id == "0"
    # 39 of 40 rows follow their category (leave-one-out); always "contradiction": 29 of 40.
    assert "'category' (4 values on the sample)" in leak.message
    assert "for 98% of the 40 sample rows" in leak.message
    assert "'contradiction': 72%" in leak.message
    assert "lexnli.jsonl row 1" in leak.message
    assert str(leak).startswith(
        f"{tmp_path / 'templates' / 'lexnli.yaml'}: lexnli/shows-category: error label_leak:"
    )
    assert [f for f in findings if f.severity == "error"] == [leak]


def test_a_condition_on_the_label_in_the_prompt_is_a_leak(tmp_path: Path) -> None:
    templates = """
    - id: hint-in-prompt
      instruction: |-
        {{ sentence1 }} / {{ sentence2 }}{% if label == 0 %} (note: close paraphrase){% endif %}
        Reply with entailment, neutral or contradiction.
      output: "{{ answer_choices[label] }}"
      answer_choices: [entailment, neutral, contradiction]
    """
    findings = catalog_with(tmp_path, "lexnli", NLI_SOURCE, nli_rows(), templates)
    leaks = of_rule(findings, "label_leak")
    assert list(leaks) == ["hint-in-prompt"] and "'label'" in leaks["hint-in-prompt"].message


# --------------------------------------------------------------------------- copy task


def test_an_output_copied_from_the_prompt_is_no_task(tmp_path: Path) -> None:
    templates = """
    - id: repeat-premise
      instruction: "Here is a sentence: {{ sentence1 }} Now write a sentence about a scene."
      output: "{{ sentence1 }}"
    - id: same-as-input
      instruction: "{{ sentence2 }}"
      output: "{{ sentence2 }}"
    - id: write-variant
      inverted: true
      instruction: "Change one word of this sentence: {{ sentence1 }}"
      output: "{{ sentence2 }}"
    """
    findings = catalog_with(tmp_path, "lexnli", NLI_SOURCE, nli_rows(), templates)
    copies = of_rule(findings, "copy_task")
    assert set(copies) == {"repeat-premise", "same-as-input"}
    assert copies["repeat-premise"].severity == "error"
    assert "copied from the prompt in 40 of 40 examples" in copies["repeat-premise"].message
    assert "it is in the prompt" in copies["repeat-premise"].message
    assert "it is the prompt" in copies["same-as-input"].message
    assert copies["same-as-input"].example_id == "0"


QA_SOURCE = """
name: {name}
task: extractive QA
cluster: reading_comprehension
license: CC0-1.0
hub: {{id: someone/{name}, splits: [validation]}}
features:
  context: string
  question: string
  answer: string
sample:
  file: {name}.jsonl
  split: validation
  id_field: id
"""


def qa_rows() -> list[dict[str, Any]]:
    places = ["the old stone bridge", "the harbour of the city", "the north tower gate"]
    return [
        {
            "id": i,
            "context": f"In year {1800 + i} the king met the envoys at {places[i % 3]} and "
            "signed the treaty there.",
            "question": f"Where did the king meet the envoys in {1800 + i}?",
            "answer": places[i % 3],
        }
        for i in range(12)
    ]


def test_extractive_qa_that_says_so_may_copy_a_span(tmp_path: Path) -> None:
    body = """
    - id: {id}
      instruction: "{{{{ context }}}}\\n\\nQuestion: {{{{ question }}}} Quote the passage."
      output: "{{{{ answer }}}}"
      metadata: {{metrics: {metrics}}}
    """
    templates = "".join(
        textwrap.dedent(body).format(id=i, metrics=m)
        for i, m in (("squad-span", "[squad]"), ("em-over-passage", "[exact_match]"),
                     ("unmarked-span", "[bleu]"))
    )  # fmt: skip
    copies = of_rule(catalog_with(tmp_path, "spans", QA_SOURCE, qa_rows(), templates), "copy_task")
    assert list(copies) == ["unmarked-span"]
    assert "metadata.metrics: [squad]" in copies["unmarked-span"].message


# --------------------------------------------------------------------------- degenerate inversion

POEM_SOURCE = """
name: {name}
task: verse sentiment
cluster: sentiment
license: CC0-1.0
hub: {{id: someone/{name}, splits: [train]}}
features:
  verse_text: string
  label: {{names: [negative, positive, no_impact, mixed]}}
sample:
  file: {name}.jsonl
  split: train
  id_field: id
  fields: {{label: gold}}
"""


def poem_rows() -> list[dict[str, Any]]:
    openings = ["with pale", "and all", "the bright", "o weary", "her gentle", "upon the"]
    labels = ["negative", "positive", "no_impact", "mixed"]
    return [
        {
            "id": i,
            "verse_text": f"{openings[i % 6]} hours of {['grief', 'joy', 'noon', 'dusk'][i % 4]} "
            f"that linger {i}",
            "gold": labels[i % 4],
        }
        for i in range(48)
    ]


def test_an_inversion_with_one_prompt_per_label_is_degenerate(tmp_path: Path) -> None:
    templates = """
    - id: write-verse
      inverted: true
      instruction: "Write a line of verse whose sentiment is {{ names.label }}."
      output: "{{ verse_text }}"
    - id: verse-starting-with
      inverted: true
      instruction: |-
        {%- set start = verse_text.split()[:2] | join(' ') -%}
        Write a line of verse with a {{ names.label }} sentiment that begins with "{{ start }}".
      output: "{{ verse_text }}"
    - id: write-any-verse
      inverted: true
      instruction: "Write a line of verse."
      output: "{{ verse_text }}"
    """
    findings = catalog_with(tmp_path, "verses", POEM_SOURCE, poem_rows(), templates)
    degenerate = of_rule(findings, "degenerate_inverted")
    assert set(degenerate) == {"write-verse", "write-any-verse"}
    assert degenerate["write-verse"].severity == "error"
    assert "4 distinct prompt(s) for 48 examples" in degenerate["write-verse"].message
    # One finding for the one-prompt template, not the constant_render warning as well.
    assert of_rule(findings, "constant_render") == {}


# --------------------------------------------------------------------------- doubled punctuation

PAWS_SOURCE = """
name: {name}
task: paraphrase identification
cluster: paraphrase
license: CC0-1.0
hub: {{id: someone/{name}, splits: [test]}}
features:
  sentence1: string
  sentence2: string
  label: {{names: ["no", "yes"]}}
sample:
  file: {name}.jsonl
  split: test
  id_field: id
"""


def paws_rows() -> list[dict[str, Any]]:
    rows = [
        {
            "id": i,
            "sentence1": f"The river flows {i} miles north of the old town.",
            "sentence2": f"The old town lies {i} miles south of the river.",
            "label": i % 2,
        }
        for i in range(20)
    ]
    rows[5]["sentence1"] = "Wait.. the river flows north , then east."  # the data's own
    return rows


def test_a_period_after_a_quoted_sentence_is_the_templates(tmp_path: Path) -> None:
    templates = """
    - id: quoted-then-period
      instruction: |-
        Sentence A: "{{ sentence1 }}". Sentence B: "{{ sentence2 }}".
        Do the two sentences mean the same thing?
      output: "{{ answer_choices[label] }}"
      answer_choices: ["no", "yes"]
    - id: quoted-clean
      instruction: |-
        Sentence A: "{{ sentence1 }}"
        Sentence B: "{{ sentence2 }}"
        Do the two sentences mean the same thing?
      output: "{{ answer_choices[label] }}"
      answer_choices: ["no", "yes"]
    - id: period-after-field
      instruction: "Rewrite this sentence in other words: {{ sentence1 }}."
      output: "{{ sentence2 }}"
    """
    findings = catalog_with(tmp_path, "para", PAWS_SOURCE, paws_rows(), templates)
    doubled = of_rule(findings, "doubled_punctuation")
    assert set(doubled) == {"quoted-then-period", "period-after-field"}
    quoted = doubled["quoted-then-period"]
    assert quoted.severity == "error" and quoted.example_id == "0"
    assert "a '.' after a quote closing a sentence" in quoted.message
    assert "the template adds it" in quoted.message and "para.jsonl row 1" in quoted.message
    assert "a doubled '.'" in doubled["period-after-field"].message
    # Row 5's own "Wait.." and " ," are the data's: quoted-clean shows them and is not flagged.


def test_a_space_before_punctuation_from_the_template(tmp_path: Path) -> None:
    templates = """
    - id: spaced-question
      instruction: "Do these two sentences say the same thing ?\\n{{ sentence1 }}\\n{{ sentence2 }}"
      output: "{{ answer_choices[label] }}"
      answer_choices: ["no", "yes"]
    """
    doubled = of_rule(
        catalog_with(tmp_path, "para", PAWS_SOURCE, paws_rows(), templates), "doubled_punctuation"
    )
    assert list(doubled) == ["spaced-question"]
    assert "a space before ';', ':', '!' or '?'" in doubled["spaced-question"].message


# --------------------------------------------------------------------------- answer form

SENTIMENT_SOURCE = """
name: {name}
task: review sentiment
cluster: sentiment
license: CC0-1.0
hub: {{id: someone/{name}, splits: [test]}}
features:
  text: string
  label: {{names: [negative, positive]}}
sample:
  file: {name}.jsonl
  split: test
  id_field: id
"""


def review_rows() -> list[dict[str, Any]]:
    texts = [
        "The soup was cold and the waiter ignored us.",
        "Lovely staff, and the pasta was perfect.",
        "Friends were positive about it, but my visit was a negative surprise.",
        "Great view, fair prices, would come back.",
    ]
    return [{"id": i, "text": texts[i % 4], "label": [0, 1, 0, 1][i % 4]} for i in range(8)]


def test_a_classification_prompt_must_say_what_to_answer(tmp_path: Path) -> None:
    templates = """
    - id: how-does-it-feel
      instruction: "How does the writer of this review feel?\\n{{ text }}"
      output: "{{ answer_choices[label] }}"
      answer_choices: [negative, positive]
    - id: which-option
      instruction: "{{ text }}\\nWhich option fits this review best?"
      output: "{{ answer_choices[label] }}"
      answer_choices: [negative, positive]
    - id: names-the-labels
      instruction: "{{ text }}\\nIs this review positive or negative?"
      output: "{{ answer_choices[label] }}"
      answer_choices: [negative, positive]
    - id: yes-no-question
      instruction: "{{ text }}\\nDid the writer enjoy the visit?"
      output: "{{ answer_choices[label] }}"
      answer_choices: ["no", "yes"]
    """
    findings = catalog_with(tmp_path, "reviews", SENTIMENT_SOURCE, review_rows(), templates)
    missing = of_rule(findings, "no_answer_form")
    # The review that says "positive" and "negative" itself does not excuse the template.
    assert set(missing) == {"how-does-it-feel", "which-option"}
    f = missing["how-does-it-feel"]
    assert f.severity == "error" and f.example_id == "0"
    assert f.message.startswith(
        "options hidden: the prompt does not say what to answer: it names 0 of its 2 choices"
    )
    assert "reviews.jsonl row 1" in f.message


def test_many_labels_must_be_listed_in_every_record(tmp_path: Path) -> None:
    intents = [f"intent_{i}" for i in range(15)]
    source = SENTIMENT_SOURCE.replace("[negative, positive]", json.dumps(intents))
    rows = [{"id": i, "text": f"query number {i} about my card", "label": i} for i in range(15)]
    templates = f"""
    - id: which-intent
      instruction: "Which intent does this query have? {{{{ text }}}}"
      output: "{{{{ answer_choices[label] }}}}"
      answer_choices: {json.dumps(intents)}
    - id: listed
      instruction: "Query: {{{{ text }}}}\\nPick its intent.\\n{{{{ options }}}}"
      output: "{{{{ answer_choices[label] }}}}"
      answer_choices: {json.dumps(intents)}
      metadata: {{choices_in_prompt: true}}
    """
    missing = of_rule(catalog_with(tmp_path, "intents", source, rows, templates), "no_answer_form")
    assert list(missing) == ["which-intent"]
    assert "it names 0 of its 15 choices" in missing["which-intent"].message


def test_a_label_output_without_answer_choices_must_say_its_labels(tmp_path: Path) -> None:
    # BANKING77's way: "{{ names.label }}" as the output, the intent strings never shown.
    intents = ["card_arrival", "card_linking", "change_pin"]
    source = SENTIMENT_SOURCE.replace("[negative, positive]", json.dumps(intents))
    queries = ["Where is my new card?", "How do I link my card?", "I want a new PIN."]
    rows = [{"id": i, "text": f"{queries[i % 3]} ({i})", "label": i % 3} for i in range(15)]
    templates = """
    - id: what-do-they-want
      instruction: "What does the customer want? {{ text }}"
      output: "{{ names.label }}"
    - id: says-the-labels
      instruction: "{{ text }}\\nReply with card_arrival, card_linking or change_pin."
      output: "{{ names.label }}"
    - id: write-query
      inverted: true
      instruction: "Write a customer message about {{ names.label }}, number {{ text[-3:-1] }}."
      output: "{{ text }}"
    """
    missing = of_rule(catalog_with(tmp_path, "intents", source, rows, templates), "no_answer_form")
    assert list(missing) == ["what-do-they-want"]
    f = missing["what-do-they-want"]
    assert f.message.startswith(
        "the output is made from the label field 'label' (3 values on the sample), but the "
        "template has no answer_choices and its prompt names 0 of them"
    )
    assert f.example_id == "0" and "[15 of 15 examples]" in f.message


# --------------------------------------------------------------------------- choices in prompt


def test_choices_in_prompt_that_only_the_data_or_other_words_show(tmp_path: Path) -> None:
    rows = [
        {"id": 0, "text": "Nobody at the table said yes to the eyesore of a dessert.", "label": 0},
        {"id": 1, "text": "A calm, honest place with no surprises.", "label": 1},
    ]
    templates = """
    - id: flag-but-no-list
      instruction: "{{ text }}\\nDid the writer like it?"
      output: "{{ answer_choices[label] }}"
      answer_choices: ["no", "yes"]
      metadata: {choices_in_prompt: true}
    - id: lists-them
      instruction: "{{ text }}\\nDid the writer like it? Answer yes or no."
      output: "{{ answer_choices[label] }}"
      answer_choices: ["no", "yes"]
      metadata: {choices_in_prompt: true}
    """
    source = SENTIMENT_SOURCE.replace("[negative, positive]", '["no", "yes"]')
    findings = catalog_with(tmp_path, "reviews", source, rows, templates)
    shown = of_rule(findings, "choices_not_in_prompt")
    assert list(shown) == ["flag-but-no-list"]
    f = shown["flag-but-no-list"]
    # Row 0 holds "no" and "yes" inside "Nobody", "eyesore" and its own words: not a list.
    assert "only inside other words or the example's own text" in f.message
    assert f.example_id == "0" and "[2 of 2 examples]" in f.message


# --------------------------------------------------------------------------- data artefacts

GSM_SOURCE = """
name: {name}
task: grade school math
cluster: math
license: MIT
hub: {{id: someone/{name}, splits: [test]}}
features:
  question: string
  answer: string
rationale: {rationale}
{transforms}
sample:
  file: {name}.jsonl
  split: test
  id_field: id
"""


def gsm_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "question": f"Ann has {2 * i + 2} apples and gives half away. How many are left?",
            "answer": f"Half of {2 * i + 2} is <<{2 * i + 2}/2={i + 1}>>{i + 1}.\n#### {i + 1}",
        }
        for i in range(6)
    ]


def gsm_catalog(root: Path, clean: bool) -> list[Finding]:
    transforms = (
        "transforms:\n"  # braces doubled: the spec is a format string
        "  - {{op: strip_calculator_annotations, field: answer}}\n"
        '  - {{op: text_before, field: answer, marker: "####", into: solution}}\n'
        '  - {{op: text_after, field: answer, marker: "####", into: final_answer}}'
    )
    source = GSM_SOURCE.replace("{rationale}", "solution" if clean else "answer").replace(
        "{transforms}", transforms if clean else ""
    )
    answer = "final_answer" if clean else "answer"
    templates = f"""
    - id: solve
      instruction: "{{{{ question }}}} Give the number only."
      output: "{{{{ {answer} }}}}"
      cot: true
    """
    return catalog_with(root, "math", source, gsm_rows(), templates)


def test_calculator_annotations_and_answer_lines_in_targets(tmp_path: Path) -> None:
    findings = gsm_catalog(tmp_path / "raw", clean=False)
    artefacts = of_rule(findings, "data_artefact")
    solve = artefacts["solve"]
    assert solve.severity == "error" and solve.example_id == "0"
    assert "the output has a calculator annotation ('...alf of 2 is <<2/2=1>>1." in solve.message
    assert "(found: a calculator annotation; a '####' answer line)" in solve.message
    assert "transform in the source spec" in solve.message
    # The rationale every chain-of-thought record would carry: found on the source spec.
    rationale = artefacts[None]
    assert rationale.file == str(tmp_path / "raw" / "sources" / "math.yaml")
    assert rationale.message.startswith("the rationale of chain-of-thought records has a calc")
    assert "[6 of 6 examples]" in rationale.message

    assert of_rule(gsm_catalog(tmp_path / "clean", clean=True), "data_artefact") == {}


DART_SOURCE = """
name: {name}
task: data to text
cluster: struct_to_text
license: MIT
hub: {{id: someone/{name}, splits: [validation]}}
features:
  tripleset: list[list[string]]
  text: string
sample:
  file: {name}.jsonl
  split: validation
  id_field: id
"""


def test_ptb_tokenisation_and_table_markers_in_targets(tmp_path: Path) -> None:
    rows = [
        {
            "id": i,
            "tripleset": [
                ["[TABLECONTEXT]", "[TITLE]", f"Season {i}"],
                [f"Club {i}", "GROUND", "Park"],
            ],
            "text": f"Club {i} , who play at Park , won in season {i} for its member(s) .",
        }
        for i in range(10)
    ]
    templates = """
    - id: describe
      instruction: "Facts: {{ tripleset | map('join', ' | ') | join('; ') }}. Say it in a sentence."
      output: "{{ text }}"
    - id: write-facts
      inverted: true
      instruction: "List the facts stated in: {{ text | replace(' ,', ',') | replace(' .', '.') }}"
      output: "{{ tripleset | map('join', ' | ') | join('; ') }}"
    - id: count-the-facts
      instruction: "Write a sentence from these {{ tripleset | length }} triple(s): {{ tripleset }}"
      output: "{{ text }}"
    """
    findings = catalog_with(tmp_path, "tables", DART_SOURCE, rows, templates)
    artefacts = of_rule(findings, "data_artefact")
    assert "PTB spacing ('Club 0 , who play at...')" in artefacts["describe"].message
    assert "a markup token ('[TABLECONTEXT] | [TITLE] |...')" in artefacts["write-facts"].message
    # The data's own "member(s)" is the author's; the template's "2 triple(s)" is a hack.
    assert all("(s)" not in f.message for f in artefacts.values())
    hacks = of_rule(findings, "plural_hack")
    assert list(hacks) == ["count-the-facts"]
    assert "plural (\"...e from these 2 triple(s): [['[TABLECONTEXT]'...\")" in (
        hacks["count-the-facts"].message
    )


def test_ptb_spacing_counts_where_the_data_is_tokenised_not_in_one_sloppy_row(
    tmp_path: Path,
) -> None:
    templates = """
    - id: write-review
      inverted: true
      instruction: "Write a {{ names.label }} review that ends with: {{ text[-4:] }}"
      output: "{{ text }}"
    """
    tokenised = [
        {"id": i, "text": f"Great food , a calm room , table {i} .", "label": 1} for i in range(60)
    ]
    sloppy = [{"id": i, "text": f"Good food, calm room, table {i}.", "label": 1} for i in range(60)]
    sloppy[7]["text"] = "Good food , calm room, table 7."  # one of 60: a typing habit, not PTB
    found = catalog_with(tmp_path / "a", "reviews", SENTIMENT_SOURCE, tokenised, templates)
    assert "[60 of 60 examples]" in of_rule(found, "data_artefact")["write-review"].message
    found = catalog_with(tmp_path / "b", "reviews", SENTIMENT_SOURCE, sloppy, templates)
    assert of_rule(found, "data_artefact") == {}


# --------------------------------------------------------------------------- lettered options


def test_a_lettered_list_of_its_own_must_say_how_to_answer(tmp_path: Path) -> None:
    templates = """
    - id: own-letters-silent
      instruction: |-
        {{ sentence1 }}
        {{ sentence2 }}
        (A) same meaning
        (B) different meaning
      output: "{{ answer_choices[1 - label] }}"
      answer_choices: ["A", "B"]
      metadata: {choices_in_prompt: true}
    - id: own-letters-said
      instruction: |-
        {{ sentence1 }}
        {{ sentence2 }}
        (A) same meaning
        (B) different meaning
        Answer with the letter only.
      output: "{{ answer_choices[1 - label] }}"
      answer_choices: ["A", "B"]
      metadata: {choices_in_prompt: true}
    - id: says-letter-gives-text
      instruction: |-
        {{ sentence1 }}
        {{ sentence2 }}
        (A) same meaning
        (B) different meaning
        Reply with just the letter of your choice.
      output: "{{ answer_choices[1 - label] }}"
      answer_choices: ["same meaning", "different meaning"]
      metadata: {choices_in_prompt: true}
    """
    source = PAWS_SOURCE
    findings = catalog_with(tmp_path, "para", source, paws_rows(), templates)
    mismatches = of_rule(findings, "option_target_mismatch")
    assert set(mismatches) == {"own-letters-silent", "says-letter-gives-text"}
    silent = mismatches["own-letters-silent"]
    assert silent.severity == "error" and silent.example_id == "0"
    assert "never says whether to answer with the letter or the text" in silent.message
    wrong = mismatches["says-letter-gives-text"].message
    assert "asks for the letter only, but the target 'different meaning' is the option's text" in (
        wrong
    )


def test_a_template_that_states_the_letter_form_clashes_with_the_block(tmp_path: Path) -> None:
    # The renderer's block already ends with how to answer (option_target: text); a template
    # that says "letter" as well asks for two things.
    templates = """
    - id: says-letter
      instruction: "{{ sentence1 }}\\n{{ sentence2 }}\\nSame meaning? Answer with the letter only."
      output: "{{ answer_choices[label] }}"
      answer_choices: ["no", "yes"]
    - id: leaves-it-to-the-block
      instruction: "{{ sentence1 }}\\n{{ sentence2 }}\\nDo they mean the same?"
      output: "{{ answer_choices[label] }}"
      answer_choices: ["no", "yes"]
    """
    findings = catalog_with(tmp_path, "para", PAWS_SOURCE, paws_rows(), templates)
    mismatches = of_rule(findings, "option_target_mismatch")
    assert list(mismatches) == ["says-letter"]
    assert "the prompt asks for the " in mismatches["says-letter"].message


def test_numbered_options_among_numbered_sentences(tmp_path: Path) -> None:
    body = """
    - id: {id}
      instruction: |-
        1. {{{{ sentence1 }}}}
        2. {{{{ sentence2 }}}}
        Do sentences 1 and 2 mean the same? Answer yes or no.
      output: "{{{{ answer_choices[label] }}}}"
      answer_choices: ["no", "yes"]
    """
    templates = textwrap.dedent(body).format(id="numbered") + textwrap.dedent(body).format(
        id="pinned"
    ) + "  option_styles: [dashes, letters, inline, flan]\n"
    findings = catalog_with(tmp_path, "para", PAWS_SOURCE, paws_rows(), templates)
    clashes = of_rule(findings, "numbering_clash")
    assert list(clashes) == ["numbered"]
    assert "set option_styles without numbers" in clashes["numbered"].message


# --------------------------------------------------------------------------- the whole catalog


def test_lint_source_runs_the_catalog_rules_on_one_source(tmp_path: Path) -> None:
    catalog_with(tmp_path, "lexnli", NLI_SOURCE, nli_rows(), LEAK_TEMPLATES)
    catalog = load_catalog([tmp_path / "sources"], [tmp_path / "templates"], builtin=False)
    found = lint_source(catalog.source("lexnli"), catalog.templates_for("lexnli"))
    assert [(f.template_id, f.rule) for f in found] == [("shows-category", "label_leak")]
