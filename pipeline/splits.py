"""Which split every example goes to, decided once, at load, from the seed and stable ids.

A source is either *train* (its examples go to train or validation, by split group) or *eval*
(a held-out cluster or an ``eval_only`` entry: its examples go to the eval split, except those
set aside as its few-shot exemplar pool). Examples that share a split group (one E2E meaning
representation, one SNLI premise) land in the same split and never serve as each other's
exemplars, so no validation or eval input reaches a train record by way of a sibling.

Few-shot exemplars come only from train examples (or an eval source's exemplar pool), for
records of every split: no validation or eval answer ever reaches a prompt.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .catalog import Catalog, Source
from .errors import CatalogError
from .models import Recipe
from .seeding import stable_key, stable_unit

Role = Literal["train", "eval"]
# Output splits whose examples may be few-shot exemplars.
POOL_SPLITS = frozenset({"train", "exemplar"})


@dataclass(frozen=True)
class Membership:
    role: Role
    submix: str | None = None


def resolve_sources(recipe: Recipe, catalog: Catalog) -> dict[str, Membership]:
    """The recipe's sources and what each is for: train (in a sub-mixture, if the recipe has
    them) or eval (held-out clusters and ``eval_only`` entries)."""
    clusters = catalog.clusters()

    def expand(sources: list[str], cluster_names: list[str], what: str) -> list[str]:
        names = list(sources)
        for cluster in cluster_names:
            if cluster not in clusters:
                raise CatalogError(
                    f"recipe {recipe.name!r}: {what}: unknown cluster {cluster!r} "
                    f"(known: {', '.join(sorted(clusters))})"
                )
            names += clusters[cluster]
        return names

    # An eval_only entry may name a source or a whole cluster.
    eval_entries = [e for e in recipe.eval_only if e not in clusters]
    eval_clusters = [e for e in recipe.eval_only if e in clusters]
    held = set(expand(eval_entries, eval_clusters, "eval_only"))
    held |= set(expand([], recipe.held_out_clusters, "held_out_clusters"))
    members: dict[str, Membership] = {}
    if recipe.mixtures:
        for mix in recipe.mixtures:
            for name in expand(mix.sources, mix.clusters, f"mixtures.{mix.name}.clusters"):
                if name in held:
                    continue
                other = members.get(name)
                if other is not None and other.submix != mix.name:
                    raise CatalogError(
                        f"recipe {recipe.name!r}: source {name!r} is in two sub-mixtures "
                        f"({other.submix!r} and {mix.name!r})"
                    )
                members[name] = Membership("train", mix.name)
    else:
        for name in expand(recipe.sources, recipe.clusters, "clusters"):
            if name not in held:
                members[name] = Membership("train")
    for name in held:
        members[name] = Membership("eval")
    for name in members:
        catalog.source(name)  # raises with the list of known sources
        if not catalog.templates_for(name):
            raise CatalogError(f"recipe {recipe.name!r}: source {name!r} has no templates")
    if not members:
        raise CatalogError(f"recipe {recipe.name!r}: selects no sources")
    return dict(sorted(members.items()))


def split_of(seed: int, source: str, group: str, validation_fraction: float) -> str:
    """Train or validation, by split group, so no group straddles the two."""
    if validation_fraction <= 0:
        return "train"
    u = stable_unit(seed, "split", source, group)
    return "validation" if u < validation_fraction else "train"


def out_split(recipe: Recipe, source: str, role: Role, group: str) -> str:
    if role == "eval":
        fraction = recipe.eval_exemplar_fraction
        if fraction > 0 and stable_unit(recipe.seed, "exemplar-pool", source, group) < fraction:
            return "exemplar"
        return "eval"
    return split_of(recipe.seed, source, group, recipe.validation_fraction)


def group_function(source: Source, seconds: float) -> Callable[[str, dict[str, Any]], list[str]]:
    """``(example_id, fields) -> group keys`` for a source: the values of its ``split_group``
    features or Jinja expressions, or the example id when it declares none. Examples sharing
    any key form one group (see ``GroupJoiner``). A Jinja expression that fails raises, and
    load rejects that example with the reason."""
    spec = source.spec
    entries = spec.split_group
    if entries is None:
        return lambda example_id, fields: [example_id]
    listed = [entries] if isinstance(entries, str) else entries
    parts = [_group_part(source, e, seconds) for e in listed]
    # One key space for every entry: a sentence that is one pair's first and another's second
    # (PAWS) joins the two, which is the point.
    return lambda example_id, fields: [part(fields) for part in parts]


def _group_part(source: Source, entry: str, seconds: float) -> Callable[[dict[str, Any]], str]:
    spec = source.spec
    if entry in spec.features:
        return lambda fields: json.dumps(fields.get(entry), sort_keys=True, ensure_ascii=False)
    if "{{" not in entry and "{%" not in entry:
        raise CatalogError(
            f"{source.path}: split_group: {entry!r} is neither a feature of the source "
            f"({', '.join(sorted(spec.features))}) nor a Jinja expression such as "
            "'{{ premise | lower }}'"
        )
    # Imported here: render imports the catalog, and only sources with an expression need it.
    from .render import compile_text, make_environment
    from .sandbox import deadline

    try:
        render = compile_text(make_environment(), entry)
    except Exception as exc:
        raise CatalogError(f"{source.path}: split_group: {exc}") from None

    def part(fields: dict[str, Any]) -> str:
        with deadline(seconds):
            return render(dict(fields)).strip()

    return part


def group_hashes(keys: list[str]) -> list[int]:
    """A row's group keys as the 8-byte hashes groups are named by."""
    return [stable_key(0, "group", k) for k in keys]


def group_name(hashed: int) -> str:
    """The name of the group whose smallest key hash is ``hashed``."""
    return f"{hashed:016x}"


class GroupJoiner:
    """Connected components over group keys: two examples that share any key are one group.

    Keys are held as 8-byte hashes; a group is named by the smallest hash in it, so the name
    depends on which examples are loaded, never on the order they arrive in. A key never
    joined is a group of its own: load joins only the rows with several keys, so a source whose
    rows have one key each (most) needs no map at all."""

    def __init__(self) -> None:
        self._parent: dict[int, int] = {}

    def add(self, keys: list[str]) -> list[int]:
        hashed = group_hashes(keys)
        self.join(hashed)
        return hashed

    def join(self, hashed: list[int]) -> None:
        """Put the keys ``hashed`` (from ``group_hashes``) in one group."""
        for h in hashed:
            self._parent.setdefault(h, h)
        for h in hashed[1:]:
            self._union(hashed[0], h)

    def __len__(self) -> int:
        return len(self._parent)

    def group(self, hashed: list[int]) -> str:
        return group_name(self._find(hashed[0]))

    def _find(self, h: int) -> int:
        parent = self._parent
        if h not in parent:
            return h
        root = h
        while parent[root] != root:
            root = parent[root]
        while parent[h] != root:  # path compression
            parent[h], h = root, parent[h]
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            # The smaller hash is the root, so a group's name is its smallest key.
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self._parent[hi] = lo
