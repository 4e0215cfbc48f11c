"""Mixing: how many records each source contributes, and which ones.

The plan is made before anything is rendered, from the sources' sizes, so that a cap is pushed
down to load: a 3k cap on a 400k-example source renders a few thousand examples, not 400k x
templates. Selection is by a seeded hash of stable ids, so it does not depend on arrival order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import CatalogError
from .models import Mixing
from .seeding import stable_key, stable_unit

# Some examples are rejected after load; render a little more than the target so the mix can
# still fill it. Extra accepted records are dropped by the mix (and counted as such).
PUSHDOWN_MARGIN = 1.10
PUSHDOWN_SLACK = 8


@dataclass(frozen=True)
class SourcePlan:
    examples_available: int
    templates_per_example: int
    records_target: int
    examples_needed: int

    @property
    def records_possible(self) -> int:
        return self.examples_available * self.templates_per_example


def plan_mixture(mixing: Mixing, sizes: Mapping[str, tuple[int, int]]) -> dict[str, SourcePlan]:
    """``sizes`` maps source -> (examples available, templates per example)."""
    names = sorted(sizes)
    possible = {n: sizes[n][0] * sizes[n][1] for n in names}
    capped = {n: min(possible[n], mixing.cap) if mixing.cap else possible[n] for n in names}

    if mixing.strategy == "proportional":
        weights = {n: float(capped[n]) for n in names}
    elif mixing.strategy == "temperature":
        weights = {n: capped[n] ** (1.0 / mixing.temperature) if capped[n] else 0.0 for n in names}
    else:
        unknown = sorted(set(mixing.weights) - set(names))
        if unknown:
            raise CatalogError(f"mixing.weights names sources not in the recipe: {unknown}")
        missing = [n for n in names if n not in mixing.weights]
        if missing:
            raise CatalogError(f"mixing.weights has no weight for sources {missing}")
        weights = {n: float(mixing.weights[n]) for n in names}

    if mixing.size is None and mixing.strategy == "proportional":
        targets = dict(capped)
    else:
        size = mixing.size if mixing.size is not None else sum(capped.values())
        targets = apportion(size, weights)
        targets = {n: min(targets[n], capped[n]) for n in names}

    plans = {}
    for n in names:
        per = sizes[n][1]
        needed = math.ceil(targets[n] / per * PUSHDOWN_MARGIN) + PUSHDOWN_SLACK if per else 0
        plans[n] = SourcePlan(sizes[n][0], per, targets[n], min(sizes[n][0], needed))
    return plans


def apportion(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights`` into integers that sum to it exactly."""
    names = sorted(weights)
    wsum = sum(weights.values())
    if wsum <= 0:
        return {n: 0 for n in names}
    quotas = {n: total * weights[n] / wsum for n in names}
    out = {n: math.floor(quotas[n]) for n in names}
    leftover = total - sum(out.values())
    # Largest remainder, ties broken by name so the result never depends on dict order.
    for n in sorted(names, key=lambda n: (out[n] - quotas[n], n))[:leftover]:
        out[n] += 1
    return out


def example_key(seed: int, source: str, example_id: str) -> int:
    """Which examples load keeps when a cap binds: the smallest keys."""
    return stable_key(seed, "examples", source, example_id)


def record_key(seed: int, record_id: str) -> int:
    """Which records the mix keeps when it has more than its target: the smallest keys."""
    return stable_key(seed, "records", record_id)


def order_key(seed: int, record_id: str) -> int:
    """Position of a record in the exported mixture: a seeded shuffle across sources."""
    return stable_key(seed, "order", record_id)


def split_of(seed: int, source: str, example_id: str, validation_fraction: float) -> str:
    """Split by example, not by record, so no example leaks from train into validation."""
    if validation_fraction <= 0:
        return "train"
    return (
        "validation"
        if stable_unit(seed, "split", source, example_id) < validation_fraction
        else "train"
    )
