"""The mixture's plan: how many records each source contributes, decided before anything is
rendered, from the sources' sizes alone.

So a cap is pushed down to load: a 3k cap on a 400k-example source renders a few thousand
examples, not 400k x templates. Nested recipes mix sub-mixtures at fixed rates (their weights),
each with its own strategy inside; eval sources are never weighed against train ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import CatalogError
from .models import Mixing, Recipe
from .splits import Membership

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



def plan_recipe(
    recipe: Recipe, sizes: Mapping[str, tuple[int, int]], members: Mapping[str, Membership]
) -> dict[str, SourcePlan]:
    """Every source's plan: train sources by the recipe's mixing (or its sub-mixtures), eval
    sources whole, up to the recipe's cap."""
    train = {n: sizes[n] for n in sizes if members[n].role == "train"}
    plans: dict[str, SourcePlan] = {}
    if recipe.mixtures:
        plans.update(_plan_submixes(recipe, train, members))
    elif train:
        plans.update(plan_mixture(recipe.mixing, train))
    held = {n: sizes[n] for n in sizes if members[n].role == "eval"}
    if held:
        plans.update(plan_mixture(Mixing(strategy="proportional", cap=recipe.mixing.cap), held))
    return dict(sorted(plans.items()))


def _plan_submixes(
    recipe: Recipe, sizes: Mapping[str, tuple[int, int]], members: Mapping[str, Membership]
) -> dict[str, SourcePlan]:
    """Sub-mixtures at fixed rates: the total is the recipe's ``mixing.size`` or, by default,
    the largest total no sub-mixture runs short of at its rate (Flan 2022's way)."""
    natural: dict[str, dict[str, SourcePlan]] = {}
    for mix in recipe.mixtures:
        own = {n: sizes[n] for n in sizes if members[n].submix == mix.name}
        natural[mix.name] = plan_mixture(mix.mixing, own) if own else {}
    available = {m: sum(p.records_target for p in plans.values()) for m, plans in natural.items()}
    weights = {m.name: m.weight for m in recipe.mixtures}
    wsum = sum(weights.values())
    if recipe.mixing.size is not None:
        total = recipe.mixing.size
    else:
        total = min(
            (math.floor(available[m] * wsum / w) for m, w in weights.items()), default=0
        )
    shares = apportion(total, weights)
    plans: dict[str, SourcePlan] = {}
    for mix in recipe.mixtures:
        own = {n: sizes[n] for n in sizes if members[n].submix == mix.name}
        if not own:
            continue
        size = min(shares[mix.name], available[mix.name])
        plans.update(plan_mixture(mix.mixing.model_copy(update={"size": max(size, 0)}), own))
    return plans
