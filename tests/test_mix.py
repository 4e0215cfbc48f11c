"""Mixing: rates, caps pushed down, exact sizes, seeded selection."""

from __future__ import annotations

import pytest

from pipeline import CatalogError
from pipeline.models import Mixing
from pipeline.plan import apportion, plan_mixture
from pipeline.splits import split_of

SIZES = {"big": (400_000, 10), "mid": (5_000, 4), "small": (100, 3)}


def test_examples_proportional_with_cap_is_flan_style() -> None:
    plans = plan_mixture(Mixing(strategy="proportional", cap=3000), SIZES)
    assert {n: p.records_target for n, p in plans.items()} == {
        "big": 3000,
        "mid": 3000,
        "small": 300,
    }
    # The cap reaches load: a few hundred examples of the 400k are rendered, not 4M records.
    assert plans["big"].examples_needed == 338  # ceil(3000 / 10 * 1.1) + 8
    assert plans["small"].examples_needed == 100


def test_proportional_with_size_splits_exactly() -> None:
    plans = plan_mixture(Mixing(strategy="proportional", cap=3000, size=1000), SIZES)
    targets = {n: p.records_target for n, p in plans.items()}
    assert sum(targets.values()) == 1000
    assert targets == {"big": 476, "mid": 476, "small": 48}


def test_temperature_flattens_the_mix() -> None:
    flat = plan_mixture(Mixing(strategy="temperature", temperature=3.0, cap=None, size=3000), SIZES)
    prop = plan_mixture(Mixing(strategy="proportional", cap=None, size=3000), SIZES)
    assert flat["small"].records_target > prop["small"].records_target
    assert sum(p.records_target for p in flat.values()) <= 3000


def test_explicit_weights() -> None:
    mixing = Mixing(
        strategy="weights", weights={"big": 1, "mid": 1, "small": 2}, cap=None, size=400
    )
    plans = plan_mixture(mixing, SIZES)
    assert {n: p.records_target for n, p in plans.items()} == {"big": 100, "mid": 100, "small": 200}


def test_weights_must_cover_every_source() -> None:
    with pytest.raises(CatalogError, match="no weight for sources"):
        plan_mixture(Mixing(strategy="weights", weights={"big": 1.0}), SIZES)
    with pytest.raises(CatalogError, match="not in the recipe"):
        plan_mixture(
            Mixing(strategy="weights", weights={"big": 1, "mid": 1, "small": 1, "x": 1}), SIZES
        )


def test_apportion_sums_exactly_and_ignores_dict_order() -> None:
    a = apportion(10, {"a": 1, "b": 1, "c": 1})
    b = apportion(10, {"c": 1, "a": 1, "b": 1})
    assert a == b and sum(a.values()) == 10


def test_selection_and_split_are_seeded_functions_of_ids() -> None:
    assert split_of(1, "s", "e", 0.0) == "train"
    fractions = [split_of(1, "s", str(i), 0.1) for i in range(5000)]
    assert 400 < fractions.count("validation") < 600
    assert fractions == [split_of(1, "s", str(i), 0.1) for i in range(5000)]
