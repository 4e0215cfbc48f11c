"""Record rules: each broken rule yields its own reject reason."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.models import Limits
from pipeline.validate import check_record, has_template_syntax


def record(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "0" * 32,
        "messages": [
            {"role": "user", "content": "Is the sky blue? Options: yes, no"},
            {"role": "assistant", "content": "yes"},
        ],
        "source": "s",
        "task": "t",
        "cluster": "c",
        "template_id": "tpl",
        "variant": "zero_shot_opt",
        "answer_choices": ["yes", "no"],
        "example_id": "e1",
        "split": "train",
        "language": "en",
        "license": "MIT",
    }
    row.update(overrides)
    return row


def test_good_record_passes() -> None:
    assert check_record(record(), Limits()) is None


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": " "},
                ],
                "answer_choices": None,
            },
            "empty_output",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": ""},
                    {"role": "assistant", "content": "yes"},
                ]
            },
            "empty_prompt",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "maybe"},
                ]
            },
            "output_not_in_choices",
        ),
        ({"answer_choices": ["yes", ""]}, "empty_choice"),
        (
            {
                "messages": [
                    {"role": "user", "content": "q {{ x }}"},
                    {"role": "assistant", "content": "yes"},
                ]
            },
            "leftover_template_syntax",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "content": "yes"},
                    {"role": "user", "content": "q"},
                ]
            },
            "schema",
        ),
        ({"variant": "sideways"}, "schema"),
        ({"id": "not-a-hash"}, "schema"),
    ],
)
def test_each_rule(overrides: dict[str, Any], rule: str) -> None:
    problem = check_record(record(**overrides), Limits())
    assert problem is not None and problem[0] == rule, problem


def test_length_limits() -> None:
    limits = Limits(max_prompt_chars=10, max_output_chars=2)
    assert check_record(record(), limits) == ("prompt_too_long", "33 prompt characters > 10")
    long_output = record(
        answer_choices=None,
        messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "yes"}],
    )
    assert check_record(long_output, limits) == ("output_too_long", "3 output characters > 2")


def test_template_syntax_in_the_data_itself_is_not_a_leftover() -> None:
    row = record(
        answer_choices=None,
        messages=[
            {"role": "user", "content": "Explain {{ name }} in Jinja."},
            {"role": "assistant", "content": "It prints a variable."},
        ],
    )
    assert check_record(row, Limits(), data_has_syntax=True) is None
    assert has_template_syntax(["plain", ["nested {% if %}"]])
    assert not has_template_syntax(["plain", {"k": "v"}])


def test_chain_of_thought_answer_is_read_after_the_prefix() -> None:
    good = record(
        variant="cot",
        messages=[
            {"role": "user", "content": "Is the sky blue? Think step by step."},
            {"role": "assistant", "content": "It scatters blue light.\n\nSo the answer is: yes"},
        ],
    )
    assert check_record(good, Limits()) is None
    wrong = record(
        variant="cot",
        messages=[
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "Because.\n\nSo the answer is: perhaps"},
        ],
    )
    assert check_record(wrong, Limits())[0] == "output_not_in_choices"  # type: ignore[index]
    shapeless = record(
        variant="cot",
        messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "yes"}],
    )
    assert check_record(shapeless, Limits())[0] == "cot_shape"  # type: ignore[index]
