"""Property-based tests: arbitrary data never crashes render or validate, and the accounting
invariant holds for random inputs."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import load_catalog, run_recipe
from pipeline.load import Example
from pipeline.models import Limits, Recipe
from pipeline.render import Renderer, RenderError, to_record
from pipeline.validate import check_record

from .conftest import write

CATALOG = load_catalog()
SOURCE = CATALOG.source("esnli")
TEMPLATES = CATALOG.templates_for("esnli")
RECIPE = Recipe.model_validate(
    {
        "name": "p",
        "sources": ["esnli"],
        "variants": {"zero_shot": 1, "few_shot": 1, "cot": 1, "options_shown": 0.5},
    }
)

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "premise": values,
            "hypothesis": values,
            "label": values,
            "explanation_1": values,
        },
    ),
    extra=st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=3),
    example_id=st.text(max_size=20),
)
def test_arbitrary_examples_never_crash_render_or_validate(
    fields: dict[str, object], extra: dict[str, object], example_id: str
) -> None:
    example = Example(example_id, "validation", {**extra, **fields}, "(hypothesis)")
    pool = [
        Example(
            f"p{i}",
            "validation",
            {"premise": f"P {i}.", "hypothesis": "H.", "label": 0, "explanation_1": "E."},
            "(pool)",
        )
        for i in range(4)
    ]
    renderer = Renderer(SOURCE, TEMPLATES, RECIPE, pool)
    for result in renderer.render(example):
        if isinstance(result, RenderError):
            assert result.rule and str(result)
            continue
        row = to_record(SOURCE, example, result)
        problem = check_record(row, Limits())
        assert problem is None or (problem[0] and problem[1])


@settings(max_examples=150, deadline=None)
@given(premise=st.text(), hypothesis=st.text(), label=st.integers(0, 2), explanation=st.text())
def test_arbitrary_text_in_valid_fields(
    premise: str, hypothesis: str, label: int, explanation: str
) -> None:
    example = Example(
        "x",
        "validation",
        {
            "premise": premise,
            "hypothesis": hypothesis,
            "label": label,
            "explanation_1": explanation,
        },
        "(h)",
    )
    for result in Renderer(SOURCE, TEMPLATES, RECIPE).render(example):
        if not isinstance(result, RenderError):
            check_record(to_record(SOURCE, example, result), Limits())


rows = st.fixed_dictionaries(
    {"id": st.integers(0, 6) | st.text(max_size=3) | st.none()},
    optional={
        "p": st.text(max_size=30) | st.none() | st.integers(),
        "h": st.text(max_size=30) | st.none() | st.lists(st.text(max_size=3), max_size=2),
        "gold": st.sampled_from(["entailment", "neutral", "contradiction", "maybe", 1, -1, 7])
        | st.none(),
        "junk": st.text(max_size=5),
    },
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(rows, min_size=1, max_size=12), cap=st.none() | st.integers(1, 6))
def test_accounting_holds_for_random_sources(
    data: list[dict[str, object]],
    cap: int | None,
) -> None:
    root = Path(tempfile.mkdtemp(prefix="instructmix-prop-"))
    try:
        write(
            root / "sources" / "s.yaml",
            """
            name: s
            task: t
            cluster: nli
            license: MIT
            hub: {id: a/b}
            features:
              premise: string
              hypothesis: string
              label: {names: [entailment, neutral, contradiction]}
            sample: {file: s.jsonl, split: train, id_field: id,
                     fields: {premise: p, hypothesis: h, label: gold}}
            """,
        )
        write(
            root / "templates" / "s.yaml",
            """
            source: s
            templates:
              - id: a
                instruction: "{{ premise }} / {{ hypothesis }}"
                output: "{{ answer_choices[label] }}"
                answer_choices: ["yes", "maybe", "no"]
              - id: b
                inverted: true
                instruction: "{{ names.label }}: {{ premise }}"
                output: "{{ hypothesis }}"
            """,
        )
        (root / "data").mkdir()
        # Every row has at least one key, so the JSON reader keeps one row per line.
        (root / "data" / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
        cap_text = "null" if cap is None else str(cap)
        write(
            root / "r.yaml",
            f"""
            name: r
            sources: [s]
            mixing: {{cap: {cap_text}}}
            variants: {{zero_shot: 1, few_shot: 1}}
            catalog: {{sources: [sources], templates: [templates]}}
            """,
        )
        try:
            manifest = run_recipe(root / "r.yaml", root / "out")
        except Exception as exc:  # a whole-source failure must be a clear one-line error
            from pipeline import PipelineError

            assert isinstance(exc, PipelineError) and "\n" not in str(exc), exc
            return
        counts = manifest.sources["s"]
        assert counts.examples_in == len(data)
        assert manifest.check() == []
        exported = sum(manifest.splits.values())
        assert exported == counts.records_selected
    finally:
        shutil.rmtree(root, ignore_errors=True)
