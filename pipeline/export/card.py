"""The dataset card: the Hub's YAML header (configs, licence ids, languages, features) and
what the rows are, counted from the rows themselves.

``huggingface_hub.DatasetCard`` loads it, and ``datasets`` reads its ``configs`` and
``dataset_info``; its composition table is the mixture's own counts per source and split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import yaml

from ..catalog import Catalog
from ..models import Manifest, Recipe, SourceSpec
from .formats import Format, yaml_features
from .licenses import hub_license_id, license_slug, license_terms, license_url

# What each `variant` value means (render.py makes them).
VARIANTS = {
    "zero_shot_opt": "zero-shot, the answer options listed in the prompt",
    "zero_shot_noopt": "zero-shot, no options shown (the model names the answer itself)",
    "few_shot_opt": "solved exemplars of the same task before the query, options shown",
    "few_shot_noopt": "solved exemplars before the query, no options shown",
    "cot": "chain of thought: the answer is a rationale, a blank line, then "
    "`So the answer is: ...`",
    "few_shot_cot": "worked exemplars (rationale and answer) before a chain-of-thought query",
    "inverted": "the task turned around: the prompt gives the answer and asks for the input",
}


@dataclass(frozen=True)
class Composition:
    """What the rows hold, counted from the mixture: records by source and split, and each
    source's languages, licences and templates."""

    records: dict[str, dict[str, int]]  # source -> split -> records
    languages: dict[str, Counter[str]]  # source -> language code -> records
    licenses: dict[str, Counter[str]]  # source -> licence string -> records
    templates: dict[str, Counter[str]]  # source -> template id -> records
    variants: Counter[str]

    @classmethod
    def count(cls, parts: Iterable[tuple[str, pa.Table]]) -> Composition:
        """From (split, table) parts with columns source, language, license, template_id and
        variant: a split may come in many parts, so no split is held in memory whole."""
        records: dict[str, dict[str, int]] = {}
        by: dict[str, dict[str, Counter[str]]] = {"language": {}, "license": {}, "template_id": {}}
        variants = Counter[str]()
        for split, table in parts:
            for column in by:
                counts = table.group_by(["source", column]).aggregate([([], "count_all")])
                for row in counts.to_pylist():
                    by[column].setdefault(row["source"], Counter())[row[column]] += row["count_all"]
            for row in table.group_by(["source"]).aggregate([([], "count_all")]).to_pylist():
                counts = records.setdefault(row["source"], {})
                counts[split] = counts.get(split, 0) + row["count_all"]
            for row in table.group_by(["variant"]).aggregate([([], "count_all")]).to_pylist():
                variants[row["variant"]] += row["count_all"]
        return cls(
            records=dict(sorted(records.items())),
            languages=by["language"],
            licenses=by["license"],
            templates=by["template_id"],
            variants=variants,
        )

    def total(self) -> int:
        return sum(n for splits in self.records.values() for n in splits.values())


@dataclass(frozen=True)
class ExportedConfig:
    """One format as exported: its parquet shards and their sizes by split."""

    format: Format
    files: dict[str, list[str]]
    sizes: dict[str, int]
    jsonl: bool = False


def dataset_card(
    manifest: Manifest,
    recipe: Recipe,
    catalog: Catalog,
    composition: Composition,
    configs: list[ExportedConfig],
) -> str:
    """README.md: the Hub's YAML header, then composition, templates, variants, columns,
    licences (with a warning when some carry conditions), citations and the recipe."""
    specs = {name: catalog.source(name).spec for name in composition.records}
    header = _header(manifest, recipe, composition, configs, specs)
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    lines += [
        f"# {header['pretty_name']}",
        "",
        f"An instruction-tuning mixture built by instructmix {manifest.instructmix_version} from "
        f"recipe `{recipe.name}` (seed {recipe.seed}, "
        f"fingerprint `{manifest.recipe_fingerprint}`), "
        f"from the {'bundled samples' if manifest.data == 'sample' else 'full Hub datasets'}. "
        f"The same recipe and seed rebuild these files byte for byte.",
    ]
    lines += _license_warning(composition, specs)
    lines += _configs_section(configs)
    lines += [
        "",
        "## Splits",
        "",
        "| split | records |",
        "|---|---|",
        *[f"| {s} | {n} |" for s, n in manifest.splits.items()],
    ]
    lines += _composition_section(manifest, composition, specs)
    used = {n: c for n, c in manifest.sources.items() if c.records_selected}
    lines += _provenance_section(manifest, used)
    lines += _templates_section(composition, catalog)
    lines += ["", "## Variants", "", "| variant | what it is | records |", "|---|---|---|"]
    lines += [
        f"| {v} | {VARIANTS.get(v, '')} | {n} |" for v, n in sorted(composition.variants.items())
    ]
    lines += _columns_section(configs)
    lines += _licenses_section(composition, specs)
    lines += [
        "",
        "## Recipe",
        "",
        "The recipe as the run resolved it (every default filled in); save it as a file and "
        "`instructmix run` it with the same catalog to rebuild these files.",
        "",
        "```yaml",
        yaml.safe_dump(manifest.recipe, sort_keys=False, allow_unicode=True).rstrip(),
        "```",
    ]
    lines += _load_section(configs)
    return "\n".join(lines) + "\n"


def _header(
    manifest: Manifest,
    recipe: Recipe,
    composition: Composition,
    configs: list[ExportedConfig],
    specs: Mapping[str, SourceSpec],
) -> dict[str, Any]:
    names = [c.format.config for c in configs]
    header: dict[str, Any] = {
        "configs": [
            {
                "config_name": c.format.config,
                "data_files": [
                    {"split": s, "path": f"{c.format.folder}/{s}-*.parquet"} for s in c.files
                ],
                # `load_dataset(folder)` takes the `default` config; without one, the first.
                **({"default": True} if "default" not in names and i == 0 else {}),
            }
            for i, c in enumerate(configs)
        ],
    }
    texts = sorted({t for counts in composition.licenses.values() for t in counts})
    ids = {t: hub_license_id(t) or "other" for t in texts}
    hub_ids = sorted(set(ids.values()))
    header["license"] = hub_ids[0] if len(hub_ids) == 1 else hub_ids or "unknown"
    others = [t for t in texts if ids[t] == "other"]
    if len(others) == 1:
        header["license_name"] = license_slug(others[0])
        header["license_link"] = _license_link(others[0], composition, specs)
    elif others:
        # One name and link for several licences: the card's own list of them.
        header["license_name"] = "several-licenses"
        header["license_link"] = "README.md"
    languages = sorted({code for counts in composition.languages.values() for code in counts})
    header["language"] = languages or ["en"]
    header["multilinguality"] = "multilingual" if len(languages) > 1 else "monolingual"
    header["task_categories"] = ["text-generation"]
    header["size_categories"] = [_size_category(composition.total())]
    header["tags"] = ["instruction-tuning", "flan", "instructmix"]
    header["pretty_name"] = recipe.export.pretty_name or f"instructmix {recipe.name}"
    # Split sizes and features per config: the Hub shows them, and `datasets` keys its cache
    # of a local folder on the card. Without them two exports with the same file names share
    # one cache entry, and load_dataset returns the first one's rows for the second.
    infos = [
        {
            "config_name": c.format.config,
            "splits": [
                {"name": s, "num_bytes": c.sizes[s], "num_examples": manifest.splits[s]}
                for s in c.files
            ],
            "download_size": sum(c.sizes.values()),
            "dataset_size": sum(c.sizes.values()),
            "features": yaml_features(c.format.features),
        }
        for c in configs
    ]
    if len(infos) == 1:
        info = infos[0]
        if info["config_name"] == "default":
            del info["config_name"]
        header["dataset_info"] = info
    else:
        header["dataset_info"] = infos
    return header


def _license_link(text: str, composition: Composition, specs: Mapping[str, SourceSpec]) -> str:
    """Where a licence the Hub has no id for is written: its own page when known, else the
    page of the first source under it (its homepage, else its Hub dataset)."""
    url = license_url(text)
    if url:
        return url
    for name, counts in composition.licenses.items():
        if text in counts:
            spec = specs[name]
            if spec.homepage:
                return spec.homepage
            if spec.hub is not None:
                return f"https://huggingface.co/datasets/{spec.hub.id}"
    return "README.md"


def _license_warning(composition: Composition, specs: Mapping[str, SourceSpec]) -> list[str]:
    """A warning when some rows' licences put conditions on whoever builds on them."""
    by_term: dict[str, dict[str, list[str]]] = {"sa": {}, "nc": {}, "nd": {}}
    for name, counts in composition.licenses.items():
        for text in counts:
            terms = license_terms(text)
            for key, flag in (
                ("sa", terms.share_alike),
                ("nc", terms.noncommercial),
                ("nd", terms.no_derivatives),
            ):
                if flag:
                    by_term[key].setdefault(text, []).append(name)
    if not any(by_term.values()):
        return []
    lines = [
        "",
        "## Licence conditions",
        "",
        "> **Warning:** this mixture combines sources whose licences put conditions on what "
        "you build from them. The mixture as a whole has no single licence: each row keeps "
        "its source's, in its `license` column.",
        "",
    ]
    what = {
        "sa": "ShareAlike (copyleft): what you adapt from these rows, a model's training data "
        "included, must be shared under the same licence or a compatible one",
        "nc": "NonCommercial: these rows may not be used for commercial purposes",
        "nd": "NoDerivatives: these rows may not be shared adapted, and an instruction "
        "rewrite is an adaptation",
    }
    for key, texts in by_term.items():
        if texts:
            listed = "; ".join(
                f"{text}: {', '.join(sorted(names))}" for text, names in sorted(texts.items())
            )
            lines.append(f"- {what[key]} ({listed}).")
    flagged = sorted({t for texts in by_term.values() for t in texts})
    lines += [
        "",
        "To keep only rows whose terms you can meet, filter on the column: "
        f"`ds.filter(lambda row: row['license'] not in {flagged!r})`.",
    ]
    return lines


def _configs_section(configs: list[ExportedConfig]) -> list[str]:
    lines = [
        "",
        "## Configs",
        "",
        "The same rows in every config, in the same order, with the same provenance columns.",
        "",
        "| config | files | columns |",
        "|---|---|---|",
    ]
    for c in configs:
        files = f"`{c.format.folder}/<split>-*.parquet`"
        if c.jsonl:
            files += " (and `.jsonl`)"
        lines.append(f"| `{c.format.config}` | {files} | {', '.join(c.format.columns)} |")
    return lines


def _composition_section(
    manifest: Manifest, composition: Composition, specs: Mapping[str, SourceSpec]
) -> list[str]:
    splits = list(manifest.splits)
    total = composition.total()
    lines = [
        "",
        "## Composition",
        "",
        "Records per source and split, counted from the data files.",
        "",
        "| source | cluster | task | languages | license | " + " | ".join(splits) + " | share |",
        "|---|---|---|---|---|" + "---|" * len(splits) + "---|",
    ]
    for name, by_split in composition.records.items():
        s = specs[name]
        n = sum(by_split.values())
        cells = [
            name,
            s.cluster,
            s.task,
            ", ".join(sorted(composition.languages.get(name, {}))),
            ", ".join(sorted(composition.licenses.get(name, {}))),
            *(str(by_split.get(split, 0)) for split in splits),
            f"{n / total:.1%}" if total else "0.0%",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _templates_section(composition: Composition, catalog: Catalog) -> list[str]:
    lines = [
        "",
        "## Templates",
        "",
        "Every template that made records, per source.",
        "",
        "| source | template | kind | records |",
        "|---|---|---|---|",
    ]
    for name in composition.records:
        specs = {t.id: t.spec for t in catalog.templates_for(name)}
        for template, n in sorted(composition.templates.get(name, {}).items()):
            spec = specs.get(template)
            kind = ""
            if spec is not None:
                kind = (
                    "inverted" if spec.inverted
                    else "original task" if spec.metadata.original_task
                    else "related task"
                ) + (", chain of thought" if spec.cot else "")  # fmt: skip
            lines.append(f"| {name} | {_cell(template)} | {kind} | {n} |")
    return lines


def _columns_section(configs: list[ExportedConfig]) -> list[str]:
    lines = ["", "## Columns", ""]
    lines += [f"- config `{c.format.config}`: {c.format.summary}" for c in configs]
    lines += [
        "- `id`: stable hash of source, split, example id, template id and variant.",
        "- `source`, `task`, `cluster`, `template_id`, `variant`, `answer_choices`, `example_id`, "
        "`split` (of the original dataset), `language`, `license`: provenance of every row; "
        "filter on `license` to honour each source's terms.",
        "- `gold_answers`: every correct answer where the task has several (NQ-open, "
        "WebQuestions); the answer turn is one of them. Score against all of them.",
    ]
    return lines


def _licenses_section(composition: Composition, specs: Mapping[str, SourceSpec]) -> list[str]:
    by_license: dict[str, Counter[str]] = {}
    for name, counts in composition.licenses.items():
        for text, n in counts.items():
            by_license.setdefault(text, Counter())[name] += n
    lines = [
        "",
        "## Licences and attribution",
        "",
        "| license | Hub id | sources | records |",
        "|---|---|---|---|",
    ]
    for text, sources in sorted(by_license.items()):
        hub_id = hub_license_id(text) or f"other ({license_slug(text)})"
        listed = ", ".join(sorted(sources))
        lines.append(f"| {_cell(text)} | {hub_id} | {listed} | {sum(sources.values())} |")
    lines += ["", "Cite the sources you train on:", ""]
    # One entry per citation: sources that share one (one dataset in several languages or
    # configurations) are listed together, so the card never repeats a citation.
    by_citation: dict[str, list[str]] = {}
    for name in composition.records:
        s = specs[name]
        cite = " ".join(s.citation.split()) if s.citation else f"(no citation given: {name})"
        by_citation.setdefault(cite, []).append(name)
    for cite, names in by_citation.items():
        s = specs[names[0]]
        where = s.homepage or (s.hub.id if s.hub else "local data")
        terms = ", ".join(sorted({t for n in names for t in composition.licenses.get(n, {})}))
        lines.append(f"- **{', '.join(names)}** ({terms}; {where}): {cite}")
    return lines


def _load_section(configs: list[ExportedConfig]) -> list[str]:
    lines = ["", "## Load", "", "```python", "from datasets import load_dataset", ""]
    for c in configs:
        config = "" if c.format.config == "default" else f', "{c.format.config}"'
        lines.append(f'ds = load_dataset("path/or/repo-id"{config})  # {c.format.name}')
    lines += ["```"]
    return lines


def _size_category(n: int) -> str:
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
    ]
    for bound, label in bounds:
        if n < bound:
            return label
    return "100M<n<1B"


def _provenance_section(manifest: Manifest, used: dict[str, Any]) -> list[str]:
    """Where every split's rows came from, per source, in the original dataset's split names;
    the held-out protocol; what dedup and decontamination removed; and the warnings."""
    lines = [
        "",
        "## Where the rows come from",
        "",
        "Each source's records by the split of this dataset (rows) and the split of the "
        "original dataset they were drawn from. Train and validation never share an example or "
        "a split group (such as one premise or one meaning representation), and few-shot "
        "exemplars are drawn from train examples only.",
        "",
        "| source | role | split | original split: records |",
        "|---|---|---|---|",
    ]
    for name, counts in sorted(used.items()):
        for split, origins in counts.original_splits.items():
            where = ", ".join(f"{o}: {n}" for o, n in origins.items())
            lines.append(f"| {name} | {counts.role} | {split} | {where} |")
    held = sorted(n for n, c in manifest.sources.items() if c.role == "eval")
    if held:
        lines += [
            "",
            f"The `eval` split holds the held-out sources ({', '.join(held)}): no record of "
            "theirs is in train or validation, so a model trained on train can be evaluated "
            "on them as unseen tasks (the FLAN protocol).",
        ]
    dedup = sum(c.records_deduplicated for c in manifest.sources.values())
    decon = sum(c.records_decontaminated for c in manifest.sources.values())
    report = manifest.decontamination
    lines += ["", f"Duplicates removed: {dedup} records (exact or after normalisation)."]
    if report.get("enabled"):
        lines.append(
            f"Decontamination: {decon} train records dropped for sharing a "
            f"{report['n']}-gram (or a whole text of at least {report['min_tokens']} tokens) "
            f"with held-out text: {report['texts_indexed']} validation, eval and external "
            f"texts indexed, {report['texts_too_short']} too short to match on."
        )
    else:
        lines.append("Decontamination was turned off for this build.")
    train = [c.original_splits.get("train", {}) for c in manifest.sources.values()]
    total = sum(n for origins in train for n in origins.values())
    borrowed = sum(n for origins in train for s, n in origins.items() if s != "train")
    if borrowed:
        lines += [
            "",
            f"{borrowed} of {total} train records ({borrowed / total:.0%}) come from the "
            "evaluation (dev or test) splits of their datasets.",
        ]
    if manifest.warnings:
        lines += ["", "**Warnings**", ""] + [f"- {w}" for w in manifest.warnings]
    return lines
