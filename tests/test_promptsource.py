"""Importing promptsource templates: reading its format, converting, writing, and parity with
promptsource's own ``Template.apply`` (re-implemented in ``promptsource_apply``) on real rows."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import load_catalog, render_one
from pipeline.catalog import Catalog, Template
from pipeline.load import Example
from pipeline.models import SLUG_PATTERN, TemplateFile, TemplateSpec
from pipeline.preview import sample_examples
from pipeline.promptsource import (
    PromptsourceError,
    convert,
    dump_template_file,
    import_promptsource,
    promptsource_apply,
    read_promptsource,
    rewrite_choice_filter,
    slugify,
    to_template_file,
    uses_randomness,
)
from pipeline.render import RenderError
from pipeline.yamlfile import load_model

FIXTURES = Path(__file__).parent / "fixtures" / "promptsource"
# fixture folder -> our source
FIXTURE_SOURCES = {
    "esnli": "esnli",
    "poem_sentiment": "poem_sentiment",
    "paws/labeled_final": "paws",
    "gsm8k/main": "gsm8k",
}
ROWS = 25


def _rows(catalog: Catalog, name: str, n: int = ROWS) -> list[Example]:
    return sample_examples(catalog, name, n)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("imported")
    for folder, source in FIXTURE_SOURCES.items():
        import_promptsource(FIXTURES / folder, source, out)
    return out


@pytest.fixture(scope="module")
def catalog(imported: Path) -> Catalog:
    return load_catalog(template_dirs=[imported])


# --------------------------------------------------------------------------- reading


def test_reads_promptsource_format() -> None:
    esnli = read_promptsource(FIXTURES / "esnli" / "templates.yaml")
    assert [t.name for t in esnli] == [
        "fixture relation in words",
        "fixture_explain_verdict",
        "fixture follows yes no",
    ]
    first = esnli[0]
    assert first.uuid == "1b6f0c52-9d8e-4d0b-a1f5-3c2e7d9a4b01"
    assert first.answer_choices == "entailment ||| neutral ||| contradiction"
    assert first.reference == "instructmix test fixture"
    assert (first.dataset, first.subset) == ("esnli", None)
    assert first.choices_in_prompt is True and first.metrics == ["Accuracy"]
    assert esnli[2].original_task is False
    paws = read_promptsource(FIXTURES / "paws" / "labeled_final")  # a folder works too
    assert {(t.dataset, t.subset) for t in paws} == {("paws", "labeled_final")}
    unannotated = read_promptsource(FIXTURES / "poem_sentiment")[1]
    assert unannotated.original_task is None and unannotated.metrics is None
    assert unannotated.languages is None and unannotated.answer_choices is None


def test_reader_runs_no_code(tmp_path: Path) -> None:
    evil = tmp_path / "templates.yaml"
    evil.write_text(
        "dataset: x\ntemplates:\n  a: !!python/object/apply:os.system ['true']\n", "utf-8"
    )
    with pytest.raises(PromptsourceError, match="invalid YAML"):
        read_promptsource(evil)
    with pytest.raises(PromptsourceError, match="no such file"):
        read_promptsource(tmp_path / "missing")
    (tmp_path / "other.yaml").write_text("name: x\n", "utf-8")
    with pytest.raises(PromptsourceError, match="not a promptsource file"):
        read_promptsource(tmp_path / "other.yaml")


# --------------------------------------------------------------------------- converting


def test_ids_are_unique_slugs_and_metadata_is_mapped() -> None:
    tfile = to_template_file(read_promptsource(FIXTURES / "paws" / "labeled_final"), "paws")
    assert [t.id for t in tfile.templates] == [
        "fixture-same-meaning",
        "fixture-same-meaning-2",
        "fixture-same-meaning-3",
    ]
    assert [t.name for t in tfile.templates] == [
        "Fixture Same Meaning?",
        "fixture-same-meaning",
        "fixture same meaning",
    ]
    assert all(re.match(SLUG_PATTERN, t.id) for t in tfile.templates)
    assert not any(t.inverted for t in tfile.templates)
    assert tfile.templates[2].metadata.original_task is False
    poem = to_template_file(read_promptsource(FIXTURES / "poem_sentiment"), "poem_sentiment")
    meta = poem.templates[1].metadata
    assert (meta.original_task, meta.choices_in_prompt) == (True, False)
    assert (meta.metrics, meta.languages) == ([], ["en"])
    assert slugify("PAWS-ANLI GPT3") == "paws-anli-gpt3"
    assert slugify("???") == "template"
    assert len(slugify("x" * 200)) == 64
    prefixed = convert(read_promptsource(FIXTURES / "esnli"), id_prefix="ps ")
    assert prefixed.templates[0].id == "ps-fixture-relation-in-words"
    reserved = convert(
        read_promptsource(FIXTURES / "esnli"), reserved_ids=["fixture-follows-yes-no"]
    )
    assert reserved.templates[2].id == "fixture-follows-yes-no-2"


@pytest.mark.parametrize(
    "text",
    [
        '{{ answer_choices |select("!=","") |list |choice }}',
        '{% set x = ["a", "b", "c"]|choice %}{{ x }}',
        "{{ answers | choice }} and {{ (answers | list) | choice | upper }}",
        "{{ a ~ b.c[0] | choice }}",
        "{{ x if flag else ys|choice }}",
        "{{ f(ys)|choice }}{% for q in ys|choice %}{{ q }}{% endfor %}",
    ],
)
def test_choice_filter_becomes_the_same_global_call(text: str) -> None:
    rewritten = rewrite_choice_filter(text)
    assert "| choice" not in rewritten.replace("|choice", "| choice")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)

    def pick(items: Any) -> Any:
        return list(items)[-1]

    env.filters["choice"] = pick
    context = {
        "answer_choices": ["x", "", "y"],
        "answers": ["p", "q"],
        "a": "A",
        "b": {"c": ["bc", "bd"]},
        "x": "X",
        "flag": False,
        "ys": ["y1", "y2"],
        "f": lambda v: v,
        "choice": pick,
    }
    assert env.from_string(rewritten).render(context) == env.from_string(text).render(context)
    assert uses_randomness(text) and not uses_randomness(rewritten)


def test_templates_our_environment_cannot_run_are_left_out(tmp_path: Path) -> None:
    src = tmp_path / "templates.yaml"
    src.write_text(
        """dataset: x
templates:
  u1: !Template
    answer_choices: null
    id: u1
    jinja: '{{ answers | most_frequent | first }} ||| x'
    metadata: !TemplateMetadata {choices_in_prompt: false, metrics: [], original_task: true}
    name: frequent
    reference: ''
  u2: !Template
    answer_choices: null
    id: u2
    jinja: "{% set v = {'a': ''} %}{% set _ = v.update({'a': text}) %}{{ v.a }} ||| x"
    metadata: !TemplateMetadata {choices_in_prompt: false, metrics: [], original_task: true}
    name: mutates
    reference: ''
  u3: !Template
    answer_choices: null
    id: u3
    jinja: '{{ text }} ||| ok'
    metadata: !TemplateMetadata {choices_in_prompt: false, metrics: [], original_task: true}
    name: fine
    reference: ''
""",
        "utf-8",
    )
    result = convert(read_promptsource(src))
    assert [t.name for t in result.templates] == ["fine"]
    reasons = {s.name: s.reason for s in result.skipped}
    assert "most_frequent" in reasons["frequent"]
    assert ".update()" in reasons["mutates"]
    written = import_promptsource(src, "x", tmp_path / "out")
    assert written == tmp_path / "out" / "x.yaml"
    header = written.read_text("utf-8")
    assert "#   frequent (u1):" in header and "#   mutates (u2):" in header
    assert [t.id for t in load_model(written, TemplateFile).templates] == ["fine"]


# --------------------------------------------------------------------------- writing


def test_imported_files_load_and_keep_every_character(imported: Path, catalog: Catalog) -> None:
    for folder, source in FIXTURE_SOURCES.items():
        originals = {t.name: t for t in read_promptsource(FIXTURES / folder)}
        path = imported / f"{source}.yaml"
        text = path.read_text("utf-8")
        assert "jinja: |" in text  # multi-line Jinja as block scalars
        tfile = load_model(path, TemplateFile)
        assert {t.name for t in tfile.templates} == set(originals)
        for spec in tfile.templates:
            assert spec.name is not None
            original = originals[spec.name]
            assert spec.jinja == rewrite_choice_filter(original.jinja)
            assert spec.answer_choices == original.answer_choices
            if not uses_randomness(original.jinja):
                assert spec.jinja == original.jinja
        ids = {t.id for t in catalog.templates_for(source)}
        assert {t.id for t in tfile.templates} <= ids
    # trailing spaces, edge newlines and leading blank lines survive the trip
    poem = load_model(imported / "poem_sentiment.yaml", TemplateFile)
    assert poem.templates[0].jinja == (
        "  \n\n{{verse_text}}   \nOne word for the mood of this verse: sad, glad, indifferent"
        " or torn?  |||   {{ answer_choices [label] }}  \n\n"
    )


_text = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(jinja=_text, choices=st.none() | _text, name=_text)
def test_dump_round_trips_any_text(jinja: str, choices: str | None, name: str) -> None:
    tfile = TemplateFile(
        source="x",
        templates=[TemplateSpec(id="t", name=name, jinja=jinja, answer_choices=choices)],
    )
    text = dump_template_file(tfile, header=["a header"])
    assert TemplateFile.model_validate(yaml.safe_load(text)) == tfile


@pytest.mark.parametrize(
    "jinja",
    [
        "a\n",
        "a\n\n\n",
        "\n\na",
        "  a\n b",
        "a  \n  \n\tb  ",
        "---\n...\n# x: y",
        "a\r\nb",
        "é\u2028",
    ],
)
def test_dump_edge_cases(jinja: str) -> None:
    tfile = TemplateFile(source="x", templates=[TemplateSpec(id="t", jinja=jinja)])
    text = dump_template_file(tfile)
    assert TemplateFile.model_validate(yaml.safe_load(text)).templates[0].jinja == jinja
    if "\r" not in jinja and "\u2028" not in jinja:
        assert "jinja: |" in text


# --------------------------------------------------------------------------- parity


def _ours(catalog: Catalog, source: str, template: Template, ex: Example) -> tuple[str, str]:
    record = render_one(
        catalog.source(source),
        template,
        ex.fields,
        variant="zero_shot_noopt",
        example_id=ex.example_id,
        split=ex.split,
    )
    messages = record["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    return messages[0]["content"], messages[1]["content"]


@pytest.mark.parametrize("folder", sorted(FIXTURE_SOURCES))
def test_renders_like_promptsource_on_bundled_rows(folder: str, catalog: Catalog) -> None:
    source = FIXTURE_SOURCES[folder]
    originals = {t.name: t for t in read_promptsource(FIXTURES / folder)}
    rows = _rows(catalog, source)
    assert len(rows) == ROWS
    compared = 0
    for template in catalog.templates_for(source):
        original = originals.get(template.spec.name or "")
        if original is None or uses_randomness(original.jinja, original.answer_choices):
            continue
        for ex in rows:
            parts = promptsource_apply(original.jinja, original.answer_choices, ex.fields)
            assert len(parts) in (1, 2)
            want = (parts[0], parts[1] if len(parts) == 2 else "")
            assert _ours(catalog, source, template, ex) == want, (template.id, ex.example_id)
            assert want[0]
            compared += 1
    assert compared >= ROWS


def test_template_without_target(catalog: Catalog) -> None:
    template = next(
        t for t in catalog.templates_for("poem_sentiment") if t.id == "fixture-verse-without-target"
    )
    ex = _rows(catalog, "poem_sentiment", 1)[0]
    parts = promptsource_apply(template.spec.jinja or "", None, ex.fields)
    assert len(parts) == 1
    assert _ours(catalog, "poem_sentiment", template, ex) == (parts[0], "")


def test_random_templates_are_seeded_not_process_random(catalog: Catalog) -> None:
    template = next(
        t for t in catalog.templates_for("gsm8k") if t.id == "fixture-random-instruction"
    )
    original = next(
        t for t in read_promptsource(FIXTURES / "gsm8k" / "main") if t.name == template.spec.name
    )
    assert uses_randomness(original.jinja)
    instructions = {
        "Solve this word problem.",
        "Work out the answer.",
        "Answer the question below.",
        "Find the number asked for.",
    }
    seen_ours: set[str] = set()
    for ex in _rows(catalog, "gsm8k", 10):
        outputs = set()
        ps_firsts = set()
        for seed in range(8):
            random.seed(seed)
            outputs.add(_ours(catalog, "gsm8k", template, ex))
            random.seed(seed)
            ps_parts = promptsource_apply(original.jinja, None, ex.fields)
            ps_firsts.add(ps_parts[0].split("\n")[0])
        assert len(outputs) == 1  # the process-wide random has no say in ours
        ((user, target),) = outputs
        assert user.split("\n")[0] in instructions
        assert target == ex.fields["answer"].split("####")[-1].strip()
        assert user.split("\n\n", 1)[1] == ex.fields["question"]
        assert len(ps_firsts) > 1  # promptsource follows the process-wide random
        seen_ours.add(user.split("\n")[0])
    assert len(seen_ours) > 1  # seeded per example, not one constant pick


# --------------------------------------------------------------------------- promptsource_apply


def test_promptsource_apply_semantics() -> None:
    # silent undefined, strip, split
    assert promptsource_apply("{{ missing }}A ||| B ", None, {}) == ["A", "B"]
    # the }} -> | string | truncate(2048) }} rewrite
    long = "word " * 1000
    prompt = promptsource_apply("{{ text }}", None, {"text": long})[0]
    assert prompt.endswith("...") and len(prompt) <= 2048
    assert promptsource_apply("{{ text }}", None, {"text": long}, truncate=False)[0] == long.strip()
    # ||| inside a field survives the split
    assert promptsource_apply("{{ a }} ||| {{ b }}", None, {"a": "x ||| y", "b": "z"}) == [
        "x ||| y",
        "z",
    ]
    # answer choices rendered and split; label -1 picks the last one
    parts = promptsource_apply("Q ||| {{ answer_choices[label] }}", "no ||| yes ", {"label": -1})
    assert parts == ["Q", "yes"]
    with pytest.raises(ValueError, match="restricted key"):
        promptsource_apply("x", None, {"answer_choices": 1})


def test_our_render_is_strict_where_promptsource_is_silent(catalog: Catalog) -> None:
    tfile = to_template_file(read_promptsource(FIXTURES / "esnli"), "esnli")
    spec = tfile.templates[0].model_copy(update={"jinja": "{{ explanation_9 }} ||| x"})
    template = Template(spec, "esnli", Path("t.yaml"))
    ex = _rows(catalog, "esnli", 1)[0]
    assert promptsource_apply(spec.jinja or "", None, ex.fields) == ["", "x"]
    with pytest.raises(RenderError) as info:
        _ours(catalog, "esnli", template, ex)
    assert info.value.rule == "undefined"
