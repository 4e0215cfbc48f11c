"""The reference of every key a user writes, generated from the pydantic models.

``docs/sources.md``, ``docs/templates.md`` and ``docs/recipes.md`` are written by
``python -m pipeline.reference`` from the models in ``models.py``: each key's dotted path, its type
in YAML terms, its default, its constraints and its description (the ``Field``'s, or one kept
here for a field that has none yet), with one example per key. ``tests/test_reference.py``
checks that the checked-in files equal what this writes now, that every key has a description
and an example, and that every example is a valid file (so the reference cannot drift from the
code). ``python -m pipeline.reference --check`` says which file is stale without writing.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from . import models
from .models import (
    CLUSTERS,
    OPTION_STYLES,
    RESERVED_CONTEXT_NAMES,
    VARIANTS,
    Recipe,
    ScalarType,
    SourceSpec,
    TemplateFile,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"
REGENERATE = "python -m pipeline.reference"


@dataclass(frozen=True)
class Key:
    """One key a user may write: where it sits, what it takes, what it means."""

    path: str  # dotted, `[]` for a list item, `<name>` for a key the user chooses
    owner: type[BaseModel]
    name: str  # the field's name in ``owner``
    type_text: str
    required: bool
    default: str | None  # as YAML; None when required
    constraints: str
    description: str
    same_as: str | None = None  # a model documented at another path: its keys are not repeated


# Keys whose name the user chooses (a mapping's keys), by the path of the mapping.
PLACEHOLDERS = {
    "features": "<feature>",
    "features.<feature>.struct": "<key>",
    "sample.fields": "<feature>",
    "mixing.weights": "<source>",
    "templates.translations": "<language>",
}

# Descriptions for fields whose ``Field`` has none yet, by model and field name. A test fails
# when one of these is also given in models.py (then the one here is stale: delete it).
DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("SourceSpec", "name"): "The source's name: what recipes, template files and the output's "
    "`source` column call it. A slug: lower-case letters, digits, `_` and `-`.",
    ("SourceSpec", "cluster"): "The task cluster (FLAN's task groups), used by a recipe's "
    "`clusters` and `held_out_clusters`: one of " + ", ".join(f"`{c}`" for c in CLUSTERS) + ".",
    ("SourceSpec", "description"): "Free text about the source, shown by `sources show`.",
    ("SourceSpec", "license"): "The licence of the data, written to every record and the card.",
    ("SourceSpec", "citation"): "How to cite the dataset (BibTeX or a line); the card lists it.",
    ("SourceSpec", "homepage"): "The dataset's home page, linked from the card.",
    ("SourceSpec", "sample"): "A local file with real examples of the task: what the default "
    "`--data sample` builds from. Leave it out for a source read only from the Hub.",
    ("SourceSpec", "features"): "The task's features, as the Hub publishes them: feature name "
    "-> type. Templates see each feature by name. A type is a name (`string`, `int`, `float`, "
    "`bool`, `list[string]`, `list[int]`, `list[list[string]]`, `any`) or a mapping: "
    "`{names: [...]}` (a ClassLabel, stored as an int index), `{sequence: {names: [...]}}` "
    "(a list of ClassLabel ints, for multi-label data) or `{struct: {key: type, ...}}` (an "
    "object, such as the Hub's Sequence of a dict: one list per key).",
    ("ClassLabel", "names"): "The label names, in the order of their int index (as the Hub's "
    "ClassLabel); templates see the label as an int and `names.<feature>` as this list.",
    ("SequenceOfClassLabel", "sequence"): "The ClassLabel every item of the list is an index of.",
    ("HubSpec", "id"): "The Hub dataset id (`owner/name`, or a canonical name).",
    ("HubSpec", "config"): "The dataset's configuration (subset) name, if it has several.",
    ("SampleSpec", "csv"): "How a CSV/TSV file is read (delimiter, header, quoting, null "
    "markers). Only for `.csv`/`.tsv` files or `format: csv`.",
    ("CsvOptions", "delimiter"): "The one character between cells: `,` for CSV; a `.tsv` file "
    'needs `"\\t"` here.',
    ("TemplateFile", "source"): "The source (its `name`) that every template in this file renders.",
    ("TemplateFile", "templates"): "The templates: at least one, each with an `id` unique in "
    "the file.",
    ("TemplateSpec", "id"): "The template's id (a slug), unique within its file: the output's "
    "`template_id` column and the name `templates preview -t` takes.",
    ("TemplateSpec", "instruction"): "Jinja text: the user turn (the task's instruction, with "
    "the example's inputs). Required unless the template uses `jinja`.",
    ("TemplateSpec", "input"): "Jinja text appended to the instruction after a blank line (an "
    "input kept apart from the instruction, as Alpaca-style data does).",
    ("TemplateSpec", "output"): "Jinja text: the assistant turn (the answer). Required unless "
    "the template uses `jinja`. For a template with `answer_choices`, normally one of them, "
    "such as `{{ answer_choices[label] }}`.",
    ("TemplateSpec", "system"): "Jinja text for a system turn of this template's records (the "
    "recipe's `system` applies when this is not set).",
    ("TemplateSpec", "metadata"): "promptsource's metadata about the template.",
    ("TemplateMetadata", "original_task"): "The template asks the dataset's own task (not a "
    "made-up task around it), as promptsource marks it.",
    ("TemplateMetadata", "metrics"): "Metrics that evaluate the task (promptsource's list, "
    "e.g. `accuracy`); informational.",
    ("TemplateMetadata", "languages"): "Languages the template is written in.",
    ("Recipe", "name"): "The recipe's name (a slug), recorded in the manifest and card.",
    ("Recipe", "description"): "Free text about the mixture, shown by `recipes list` and the card.",
    ("Recipe", "sources"): "Sources (by name) in the mixture.",
    ("Recipe", "clusters"): "Whole clusters in the mixture: every source of each cluster.",
    ("Recipe", "templates_per_example"): "How many templates render each example: `all`, or k "
    "drawn per example from (seed, source, example id).",
    ("Recipe", "mixing"): "How many records each source contributes to the mixture.",
    ("Recipe", "validation_fraction"): "Share of each train source's split groups held out as "
    "the `validation` split (no group is in both splits).",
    ("Recipe", "dedup"): "Dropping repeated conversations in the mix.",
    ("Recipe", "decontamination"): "Dropping train records that share an n-gram with held-out "
    "text.",
    ("Recipe", "variants"): "The forms records take (zero-shot, few-shot, chain-of-thought; "
    "options shown or not) and their shares.",
    ("Recipe", "few_shot"): "How few-shot records are built.",
    ("Recipe", "limits"): "Size and time limits on every record and render.",
    ("Recipe", "catalog"): "Your own source and template folders, relative to the recipe file.",
    ("Recipe", "export"): "How the exported dataset is written.",
    ("Mixing", "strategy"): "`proportional`: each source by its size (FLAN's "
    "examples-proportional mixing) up to `cap`; `temperature`: by size ** (1 / temperature); "
    "`weights`: by the `weights` given.",
    ("Mixing", "weights"): "For `strategy: weights`: source name -> relative weight, for "
    "every source of the mixture.",
    ("Variants", "zero_shot"): "Share of zero-shot records (normalised with the others).",
    ("Variants", "few_shot"): "Share of few-shot records: the prompt starts with exemplars, "
    "train examples of the same source (never of the query's split group).",
    ("Variants", "cot"): "Share of chain-of-thought records, drawn only for templates marked "
    "`cot: true` of sources with a `rationale`.",
    ("Variants", "option_styles"): "The styles options blocks are drawn from: "
    + ", ".join(f"`{s}`" for s in OPTION_STYLES)
    + ".",
    ("Limits", "max_prompt_chars"): "Longest prompt (every turn before the answer), in "
    "characters; a longer record is rejected (`prompt_too_long`).",
    ("Limits", "max_output_chars"): "Longest answer, in characters; a longer record is rejected.",
    ("Decontamination", "enabled"): "Decontaminate at all.",
    ("EvalData", "name"): "A name for this evaluation data (a slug), used in the rejects that "
    "name what a dropped record matched.",
    ("EvalData", "config"): "The Hub dataset's configuration, if it has several.",
    ("EvalData", "revision"): "A Git revision of the Hub dataset.",
    ("Submix", "name"): "The sub-mixture's name (a slug), unique in the recipe; the manifest "
    "counts records per sub-mixture.",
    ("Submix", "sources"): "Sources in this sub-mixture.",
    ("Submix", "clusters"): "Whole clusters in this sub-mixture.",
    ("Submix", "mixing"): "How this sub-mixture mixes its own sources (its own cap, strategy, "
    "temperature, weights).",
    ("CatalogDirs", "sources"): "Folders of source specs, relative to the recipe file.",
    ("CatalogDirs", "templates"): "Folders of template files, relative to the recipe file.",
    ("ExportSpec", "shard_rows"): "Most rows in one exported parquet file.",
    ("ExportSpec", "row_group_rows"): "Rows per parquet row group.",
    ("ExportSpec", "pretty_name"): "The dataset's name in the card's header (default: the "
    "recipe's name).",
}


# --------------------------------------------------------------------------- walking the models


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_args(annotation: Any) -> list[Any] | None:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [_unwrap(a) for a in typing.get_args(annotation)]
    return None


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def yaml_type(annotation: Any) -> str:
    """A type as a YAML writer reads it."""
    annotation = _unwrap(annotation)
    if annotation is ScalarType:
        return "a type name"
    args = _union_args(annotation)
    if args is not None:
        parts = [yaml_type(a) for a in args if a is not type(None)]
        text = " or ".join(dict.fromkeys(parts))
        return text + (" or null" if type(None) in args else "")
    origin = typing.get_origin(annotation)
    if origin is Literal:
        values = [a for a in typing.get_args(annotation)]
        return "one of " + ", ".join(f"`{v}`" for v in values)
    if origin is list:
        return f"list of {_plural(yaml_type(typing.get_args(annotation)[0]))}"
    if origin is dict:
        return f"mapping of name to {yaml_type(typing.get_args(annotation)[1])}"
    if _is_model(annotation):
        return f"mapping ({annotation.__name__})"
    return {str: "string", int: "integer", float: "number", bool: "true/false"}.get(
        annotation, str(annotation)
    )


def _plural(text: str) -> str:
    words = {"string": "strings", "integer": "integers", "number": "numbers"}
    if text in words:
        return words[text]
    return text.replace("mapping (", "mappings (", 1) if text.startswith("mapping (") else text


def _constraints(info: FieldInfo) -> str:
    parts = []
    for meta in info.metadata:
        for attr, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(meta, attr, None)
            if isinstance(meta, getattr(annotated_types, attr.capitalize())) and value is not None:
                parts.append(f"{word} {_number(value)}")
        if isinstance(meta, annotated_types.MinLen) and meta.min_length:
            parts.append(f"at least {meta.min_length} long")
        if isinstance(meta, annotated_types.MaxLen):
            parts.append(f"at most {meta.max_length} long")
        pattern = getattr(meta, "pattern", None)
        if isinstance(pattern, str):
            parts.append(
                "a slug (`a-z`, `0-9`, `_`, `-`)"
                if pattern == models.SLUG_PATTERN
                else f"matches `{pattern}`"
            )
    # Patterns given inside the annotation (Slug) live on the annotation's own FieldInfo.
    for arg in typing.get_args(info.annotation) if info.annotation is not None else ():
        if isinstance(arg, FieldInfo) and arg.metadata:
            nested = _constraints(arg)
            if nested:
                parts.append(nested)
    return "; ".join(dict.fromkeys(parts))


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1e6:
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else str(value)


def _default(info: FieldInfo) -> str | None:
    if info.is_required():
        return None
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    if value is PydanticUndefined:
        return None
    if isinstance(value, BaseModel):
        return "see its keys"
    return (
        yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1000)
        .strip()
        .removesuffix("\n...")
        .removesuffix("...")
        .strip()
    )


def description_of(owner: type[BaseModel], name: str) -> str:
    info = owner.model_fields[name]
    return (info.description or DESCRIPTIONS.get((owner.__name__, name), "")).strip()


def keys_of(
    model: type[BaseModel], prefix: str = "", seen: dict[type, str] | None = None
) -> Iterator[Key]:
    """Every key of ``model`` and the models inside it, depth first, in declaration order. A
    model met again (Mixing inside a sub-mixture) is named, not repeated."""
    seen = {} if seen is None else seen
    seen.setdefault(model, prefix.rstrip("."))
    # A model a field holds directly is documented there, before one nested deeper (Recipe's
    # `mixing` before `mixtures[].mixing`).
    for name, info in model.model_fields.items():
        for sub_path, sub in _models_inside(prefix + name, info.annotation):
            seen.setdefault(sub, sub_path)
    for name, info in model.model_fields.items():
        path = prefix + name
        annotation = info.annotation
        required = info.is_required()
        inner: list[tuple[str, type[BaseModel]]] = []
        for sub_path, sub in _models_inside(path, annotation):
            inner.append((sub_path, sub))
        same = next((seen[sub] for p, sub in inner if seen.get(sub, p) != p), None)
        yield Key(
            path=path,
            owner=model,
            name=name,
            type_text=yaml_type(annotation),
            required=required,
            default=_default(info),
            constraints=_constraints(info),
            description=description_of(model, name),
            same_as=same,
        )
        for sub_path, sub in inner:
            if seen.get(sub) == sub_path:
                yield from keys_of(sub, sub_path + ".", seen)


def _models_inside(path: str, annotation: Any) -> list[tuple[str, type[BaseModel]]]:
    """The models a field's value may be, each with the path its keys sit under."""
    annotation = _unwrap(annotation)
    args = _union_args(annotation)
    if args is not None:
        return [m for a in args for m in _models_inside(path, a)]
    origin = typing.get_origin(annotation)
    if origin is list:
        return _models_inside(path + "[]", typing.get_args(annotation)[0])
    if origin is dict:
        key = PLACEHOLDERS.get(path.replace("[]", ""), "<name>")
        return _models_inside(f"{path}.{key}", typing.get_args(annotation)[1])
    if _is_model(annotation):
        return [(path, annotation)]
    return []


def all_keys(model: type[BaseModel]) -> list[Key]:
    return list(keys_of(model))


# --------------------------------------------------------------------------- examples

# One example per key: a fragment of the file (YAML), merged into a minimal valid file of its
# kind (BASES) when a test validates it. A list in a fragment replaces the base's list, so a
# template or sub-mixture in an example is written whole.
BASES: dict[type[BaseModel], str] = {
    SourceSpec: """\
name: my_nli
task: natural language inference
cluster: nli
license: CC BY-SA 4.0
features:
  premise: string
  hypothesis: string
  label: {names: [entailment, neutral, contradiction]}
hub: {id: me/my_nli}
""",
    TemplateFile: """\
source: my_nli
templates:
  - {id: base, instruction: "{{ premise }}", output: "{{ hypothesis }}"}
""",
    # eval_only keeps the base valid beside an example's `sources`, `clusters` or `mixtures`.
    Recipe: "name: my-mix\neval_only: [gsm8k]\n",
}

_TEMPLATE = '    instruction: "Premise: {{ premise }}\\n  Does it follow?"\n    output: "yes"\n'

EXAMPLES: dict[str, str] = {
    # ---- sources
    "name": "name: my_nli",
    "task": "task: natural language inference",
    "cluster": "cluster: nli",
    "description": "description: Pairs of sentences labelled for entailment by crowd workers.",
    "language": "language: [en, de, fr]",
    "language_field": "language: [en, de, fr]\nfeatures: {premise: string, lang: string}\n"
    "language_field: lang",
    "license": "license: CC BY-SA 4.0",
    "citation": 'citation: "Me et al. 2026. My NLI corpus."',
    "homepage": "homepage: https://example.org/my_nli",
    "hub": "hub: {id: me/my_nli, splits: [train, validation, test]}",
    "hub.id": "hub: {id: stanfordnlp/snli}",
    "hub.config": "hub: {id: nyu-mll/glue, config: mnli}",
    "hub.revision": "hub: {id: me/my_nli, revision: v1.0}",
    "hub.splits": "hub: {id: me/my_nli, splits: [train, validation, test]}",
    "hub.read": "hub: {id: openai/gsm8k, config: main, splits: [train, test], read: [train]}",
    "hub.id_field": "hub: {id: me/my_nli, id_field: pair_id}",
    "hub.data_dir": "hub: {id: Helsinki-NLP/xed_en_fi, revision: refs/convert/parquet, "
    "data_dir: en_annotated, splits: [train]}",
    "hub.data_files": "hub:\n  id: me/my_nli\n  splits: [train, test]\n"
    "  data_files: {train: data/train-*.parquet, test: data/test-*.parquet}",
    "hub.checked": "hub: {id: openai/gsm8k, config: main, splits: [train, test], "
    "checked: 'https://huggingface.co/datasets/openai/gsm8k (card, 2026-12-01)'}",
    "sample": "sample: {file: my_nli.jsonl, split: validation, id_field: pair_id}",
    "sample.file": "sample: {file: my_nli.dev.jsonl, split: validation}",
    "sample.format": "sample: {file: my_nli.txt, split: train, format: json}",
    "sample.split": "sample: {file: my_nli.dev.jsonl, split: validation}",
    "sample.csv": 'sample: {file: my_nli.tsv, split: train, csv: {delimiter: "\\t", quoting: 3}}',
    "sample.csv.delimiter": 'sample: {file: my_nli.tsv, split: train, csv: {delimiter: "\\t"}}',
    "sample.csv.column_names": "sample:\n  file: my_nli.csv\n  split: train\n"
    "  csv: {column_names: [premise, hypothesis, label]}",
    "sample.csv.quoting": 'sample: {file: my_nli.tsv, split: train, csv: {delimiter: "\\t", '
    "quoting: 3}}",
    "sample.csv.null_values": "sample: {file: my_nli.csv, split: train, csv: {null_values: ['', "
    "NA]}}",
    "sample.json_field": "sample: {file: my_nli.json, split: train, json_field: data}",
    "sample.records": "features:\n  id: string\n  context: string\n  question: string\n"
    "  answers:\n    struct:\n      text: list[string]\n      answer_start: list[int]\n"
    "sample: {file: xquad.en.json, split: validation, records: 'data[].paragraphs[].qas[]', "
    "id_field: id}",
    "sample.files[].records": "sample:\n  files:\n"
    "    - {file: squad.dev.json, split: validation, records: 'data[].paragraphs[].qas[]'}",
    "sample.id_field": "sample: {file: my_nli.jsonl, split: train, id_field: pair_id}",
    "sample.fields": "sample:\n  file: my_nli.jsonl\n  split: train\n  fields:\n"
    "    premise: sentence1\n    hypothesis: sentence2\n"
    "    label: {column: gold, values: {e: entailment, n: neutral, c: contradiction}}",
    "sample.fields.<feature>.column": "sample:\n  file: my_nli.jsonl\n  split: train\n"
    "  fields: {premise: {column: pair.sentence1}, hypothesis: {column: hypotheses.0}}",
    "sample.fields.<feature>.split": "features: {labels: {sequence: {names: [joy, anger, fear]}}}\n"
    "sample:\n  file: emotions.tsv\n  split: train\n  fields: {labels: {column: ids, split: ','}}",
    "sample.fields.<feature>.values": "sample:\n  file: my_nli.jsonl\n  split: train\n"
    "  fields:\n    label: {column: gold, values: {e: entailment, n: neutral, c: contradiction}}",
    "sample.files": "language: [en, de]\nsample:\n  files:\n"
    "    - {file: my_nli.en.jsonl, split: train, language: en}\n"
    "    - {file: my_nli.de.jsonl, split: train, language: de}",
    "sample.files[].file": "sample:\n  files: [{file: my_nli.train.jsonl, split: train}]",
    "sample.files[].split": "sample:\n  files:\n    - {file: my_nli.train.jsonl, split: train}\n"
    "    - {file: my_nli.dev.jsonl, split: validation}",
    "sample.files[].language": "language: [en, de]\nsample:\n  files:\n"
    "    - {file: my_nli.de.jsonl, split: train, language: de}",
    "sample.files[].json_field": "sample:\n  files:\n"
    "    - {file: my_nli.json, split: train, json_field: train}\n"
    "    - {file: my_nli.json, split: validation, json_field: dev}",
    "sample.filter": 'sample: {file: my_nli.jsonl, split: train, filter: "{{ label != 1 }}"}',
    "sample.limit": "sample: {file: my_nli.jsonl, split: train, limit: 500}",
    "sample.allow_outside_catalog": "sample: {file: shared.jsonl, split: train, "
    "allow_outside_catalog: true}",
    "features": "features:\n  question: string\n  choices: list[string]\n  answer: int\n"
    "  label: {names: [entailment, neutral, contradiction]}",
    "features.<feature>.names": "features:\n  label: {names: [negative, positive]}",
    "features.<feature>.sequence": "features:\n  labels: {sequence: {names: [joy, anger, fear]}}",
    "split_group": "split_group: premise",
    # One set for a source's and a recipe's rules: the same keys, the same meaning.
    "record_rules": "record_rules:\n  - name: short_answer\n"
    '    check: "{{ output | wordcount <= 3 }}"',
    "record_rules[].name": "record_rules:\n  - name: short_answer\n"
    '    check: "{{ output | wordcount <= 3 }}"',
    "record_rules[].check": "record_rules:\n  - name: answer_repeats_prompt\n"
    '    check: "{{ output | trim | lower != prompt | trim | lower }}"',
    "record_rules[].message": "record_rules:\n  - name: short_answer\n"
    '    check: "{{ output | wordcount <= 3 }}"\n    message: a label answer is one to three words',
    "decontaminate_on": "decontaminate_on: [premise, hypothesis]",
    "features.<feature>.struct": "features:\n  question: string\n"
    "  answers:\n    struct:\n      text: list[string]\n      answer_start: list[int]",
    "rationale": "features: {explanation_1: string}\nrationale: explanation_1",
    "rationale_rules": "features: {explanation: string}\nrationale: explanation\n"
    "rationale_rules:\n  - name: annotator_note\n"
    "    check: \"{{ 'made this up' not in rationale | lower }}\"\n"
    "    message: an annotator's note, not reasoning",
    "transforms": "features: {question: string, answer: string}\ntransforms:\n"
    "  - {op: strip_calculator_annotations, field: answer}\n"
    "  - {op: text_after, field: answer, marker: '####', into: final_answer}",
    "transforms[].op": "transforms: [{op: detokenize, field: premise}]",
    "transforms[].field": "transforms: [{op: collapse_whitespace, field: hypothesis}]",
    "transforms[].into": "transforms:\n  - {op: detokenize, field: premise, into: premise_plain}",
    "transforms[].marker": "features: {answer: string}\ntransforms:\n"
    "  - {op: text_before, field: answer, marker: '####', into: solution}",
    "transforms[].map": "transforms:\n"
    "  - {op: replace, field: premise, map: {'[TITLE]': 'title', '[TABLECONTEXT]': 'table'}}",
    "nullable": "features: {premise: string, explanation_2: string}\nnullable: [explanation_2]\n"
    "sample:\n  file: my_nli.jsonl\n  split: validation\n"
    "  fields: {explanation_2: null}  # this sample has no second explanation",
    "license_by": "features: {premise: string, origin: string}\nlicense_by:\n  field: origin\n"
    "  licenses: {webnlg: CC BY-NC-SA 4.0, e2e: CC BY-SA 4.0}",
    "license_by.field": "features: {premise: string, origin: string}\n"
    "license_by: {field: '{{ origin | lower }}', licenses: {e2e: CC BY-SA 4.0}}",
    "license_by.licenses": "features: {premise: string, origin: string}\n"
    "license_by: {field: origin, licenses: {wikisql: MIT, e2e: CC BY-SA 4.0}}",
    "license_by.default": "features: {premise: string, origin: string}\n"
    "license_by: {field: origin, licenses: {e2e: CC BY-SA 4.0}, default: reject}",
    "allow_noncommercial": "allow_noncommercial: true",
    # ---- templates
    "source": "source: my_nli",
    "templates": "templates:\n  - id: does-it-follow\n" + _TEMPLATE,
    "templates[].id": "templates:\n  - id: does-it-follow\n" + _TEMPLATE,
    "templates[].name": "templates:\n  - id: gpt-3-style\n    name: GPT-3 style\n" + _TEMPLATE,
    "templates[].instruction": "templates:\n  - id: does-it-follow\n    instruction: |-\n"
    "      Premise: {{ premise }}\n      Hypothesis: {{ hypothesis }}\n"
    "      Does the premise support the hypothesis?\n"
    '    output: "{{ answer_choices[label] }}"\n    answer_choices: ["yes", "maybe", "no"]',
    "templates[].input": "templates:\n  - id: with-input\n"
    "    instruction: Does the first sentence support the second?\n"
    '    input: "{{ premise }}\\n{{ hypothesis }}"\n'
    '    output: "{{ answer_choices[label] }}"\n    answer_choices: ["yes", "maybe", "no"]',
    "templates[].output": "templates:\n  - id: write-a-claim\n"
    '    instruction: "Write a claim that follows from: {{ premise }}"\n'
    '    output: "{{ hypothesis }}"',
    "templates[].jinja": "templates:\n  - id: gpt-3-style\n"
    '    jinja: "{{ premise }} Question: {{ hypothesis }} True, False or Neither? ||| '
    '{{ answer_choices[label] }}"\n    answer_choices: True ||| Neither ||| False',
    "templates[].answer_choices": "templates:\n  - id: yes-maybe-no\n"
    '    instruction: "Does \\"{{ premise }}\\" imply \\"{{ hypothesis }}\\"?"\n'
    '    output: "{{ answer_choices[label] }}"\n    answer_choices: ["yes", "maybe", "no"]',
    "templates[].gold_answers": "templates:\n  - id: short-answer\n"
    '    instruction: "{{ premise }} Answer in a few words."\n'
    '    output: "{{ gold_answer }}"\n    gold_answers: "{{ hypothesis }} ||| {{ premise }}"',
    "templates[].system": "templates:\n  - id: terse\n"
    "    system: Answer with one word.\n" + _TEMPLATE,
    "templates[].inverted": "templates:\n  - id: write-a-claim\n    inverted: true\n"
    '    instruction: "Write a claim that is {{ names.label }} given: {{ premise }}"\n'
    '    output: "{{ hypothesis }}"',
    "templates[].cot": "templates:\n  - id: does-it-follow\n    cot: true\n"
    '    instruction: "Does \\"{{ premise }}\\" imply \\"{{ hypothesis }}\\"?"\n'
    '    output: "{{ answer_choices[label] }}"\n    answer_choices: ["yes", "maybe", "no"]',
    "templates[].option_target": "templates:\n  - id: pick-one\n    option_target: marker\n"
    '    instruction: "Does \\"{{ premise }}\\" imply \\"{{ hypothesis }}\\"?"\n'
    '    output: "{{ answer_choices[label] }}"\n    answer_choices: ["yes", "maybe", "no"]',
    "templates[].option_styles": "templates:\n  - id: pick-one\n"
    "    option_styles: [letters, numbers]\n"
    '    instruction: "Does \\"{{ premise }}\\" imply \\"{{ hypothesis }}\\"?"\n'
    '    output: "{{ answer_choices[label] }}"\n    answer_choices: ["yes", "maybe", "no"]',
    "templates[].translations": "templates:\n  - id: does-it-follow\n"
    '    instruction: "Does \\"{{ premise }}\\" imply \\"{{ hypothesis }}\\"?"\n'
    '    output: "{{ answer_choices[label] }}"\n    answer_choices: ["yes", "maybe", "no"]\n'
    "    translations:\n"
    '      de: {instruction: "Folgt \\"{{ hypothesis }}\\" aus \\"{{ premise }}\\"?", '
    'answer_choices: ["ja", "vielleicht", "nein"]}',
    "templates[].translations.<language>.instruction": (
        "templates:\n  - id: does-it-follow\n" + _TEMPLATE + "    translations:\n"
        '      de: {instruction: "Folgt \\"{{ hypothesis }}\\" aus \\"{{ premise }}\\"?"}'
    ),
    "templates[].translations.<language>.input": (
        "templates:\n  - id: with-input\n"
        "    instruction: Does the sentence hold?\n"
        '    input: "Sentence: {{ premise }}"\n    output: "yes"\n'
        "    translations:\n"
        '      de: {input: "Satz: {{ premise }}"}'
    ),
    "templates[].translations.<language>.output": (
        "templates:\n  - id: does-it-follow\n" + _TEMPLATE + "    translations:\n"
        '      de: {output: "Ja."}'
    ),
    "templates[].translations.<language>.system": (
        "templates:\n  - id: does-it-follow\n" + _TEMPLATE + "    translations:\n"
        "      de: {system: Antworte mit einem Wort.}"
    ),
    "templates[].translations.<language>.answer_choices": (
        "templates:\n  - id: yes-no\n"
        '    instruction: "{{ premise }} => {{ hypothesis }}?"\n'
        '    output: "{{ answer_choices[label] }}"\n    answer_choices: ["yes", "no"]\n'
        "    translations:\n"
        '      de: {answer_choices: ["ja", "nein"]}'
    ),
    "templates[].translations.<language>.gold_answers": (
        "templates:\n  - id: short-answer\n"
        '    instruction: "{{ premise }}?"\n'
        '    output: "{{ gold_answer }}"\n    gold_answers: ["yes", "sure"]\n'
        "    translations:\n"
        '      de: {gold_answers: ["ja", "sicher"]}'
    ),
    "templates[].translations.<language>.jinja": "templates:\n  - id: gpt-3-style\n"
    '    jinja: "{{ premise }} Question: {{ hypothesis }}? ||| yes"\n'
    "    translations:\n"
    '      de: {jinja: "{{ premise }} Frage: {{ hypothesis }}? ||| ja"}',
    "templates[].metadata": "templates:\n  - id: does-it-follow\n"
    "    metadata: {original_task: true, choices_in_prompt: false, metrics: [accuracy]}\n"
    + _TEMPLATE,
    "templates[].metadata.original_task": "templates:\n  - id: write-a-claim\n"
    "    metadata: {original_task: false}\n"
    '    instruction: "Write a claim that follows from: {{ premise }}"\n'
    '    output: "{{ hypothesis }}"',
    "templates[].metadata.choices_in_prompt": "templates:\n  - id: listed-choices\n"
    "    metadata: {choices_in_prompt: true}\n"
    '    instruction: "{{ premise }} => {{ hypothesis }}? Answer {{ answer_choices | '
    'join(\\", \\") }}."\n'
    '    output: "{{ answer_choices[label] }}"\n    answer_choices: ["yes", "maybe", "no"]',
    "templates[].metadata.metrics": "templates:\n  - id: does-it-follow\n"
    "    metadata: {metrics: [accuracy]}\n" + _TEMPLATE,
    "templates[].metadata.languages": "templates:\n  - id: folgt-daraus\n"
    "    metadata: {languages: [de]}\n"
    '    instruction: "Folgt \\"{{ hypothesis }}\\" aus \\"{{ premise }}\\"?"\n'
    '    output: "ja"',
    # ---- recipes
    "seed": "seed: 1234",
    "sources": "sources: [esnli, paws]",
    "clusters": "clusters: [nli, sentiment]",
    "held_out_clusters": "clusters: [nli, paraphrase, commonsense]\n"
    "held_out_clusters: [commonsense]",
    "eval_only": "sources: [esnli]\neval_only: [gsm8k]",
    "eval_exemplar_fraction": "eval_only: [gsm8k]\neval_exemplar_fraction: 0.1",
    "eval_templates": "held_out_clusters: [nli]\neval_templates: all",
    "mixtures": "mixtures:\n  - {name: flan, weight: 0.6, clusters: [nli, paraphrase]}\n"
    "  - {name: cot, weight: 0.4, sources: [gsm8k, creak]}",
    "mixtures[].name": "mixtures:\n  - {name: flan, weight: 1, clusters: [nli]}",
    "mixtures[].weight": "mixtures:\n  - {name: flan, weight: 0.6, clusters: [nli]}\n"
    "  - {name: cot, weight: 0.4, sources: [gsm8k]}",
    "mixtures[].sources": "mixtures:\n  - {name: cot, weight: 1, sources: [gsm8k, creak]}",
    "mixtures[].clusters": "mixtures:\n  - {name: flan, weight: 1, clusters: [nli, paraphrase]}",
    "mixtures[].mixing": "mixtures:\n  - name: cot\n    weight: 1\n    sources: [gsm8k, creak]\n"
    "    mixing: {strategy: temperature, temperature: 2, cap: 1000}",
    "templates_per_example": "templates_per_example: 2",
    "mixing": "mixing: {strategy: proportional, cap: 3000}",
    "mixing.strategy": "mixing: {strategy: temperature, temperature: 2.0}",
    "mixing.cap": "mixing: {cap: null}",
    "mixing.temperature": "mixing: {strategy: temperature, temperature: 2.0}",
    "mixing.weights": "sources: [esnli, paws]\nmixing: {strategy: weights, weights: {esnli: 2, "
    "paws: 1}}",
    "mixing.size": "mixing: {size: 50000}",
    "validation_fraction": "validation_fraction: 0.02",
    "dedup": "dedup: {exact: true, normalized: false}",
    "dedup.exact": "dedup: {exact: false, normalized: false}",
    "dedup.normalized": "dedup: {normalized: false}",
    "decontamination": "decontamination: {n: 13, min_tokens: 8}",
    "decontamination.enabled": "decontamination: {enabled: false}",
    "decontamination.n": "decontamination: {n: 8, min_tokens: 8}",
    "decontamination.min_tokens": "decontamination: {min_tokens: 5}",
    "decontamination.against": "decontamination:\n  against:\n"
    "    - {name: mybench, path: ../bench/test.jsonl, fields: [question]}\n"
    "    - {name: arc, hub: allenai/ai2_arc, config: ARC-Challenge, split: test, "
    "fields: [question]}",
    "decontamination.against[].name": "decontamination:\n  against:\n"
    "    - {name: mybench, path: ../bench/test.jsonl, fields: [question]}",
    "decontamination.against[].path": "decontamination:\n  against:\n"
    "    - {name: mybench, path: ../bench/test.jsonl, fields: [question, answer]}",
    "decontamination.against[].hub": "decontamination:\n  against:\n"
    "    - {name: gsm8k-test, hub: openai/gsm8k, config: main, fields: [question]}",
    "decontamination.against[].config": "decontamination:\n  against:\n"
    "    - {name: arc, hub: allenai/ai2_arc, config: ARC-Challenge, fields: [question]}",
    "decontamination.against[].split": "decontamination:\n  against:\n"
    "    - {name: arc-dev, hub: allenai/ai2_arc, config: ARC-Easy, split: validation, "
    "fields: [question]}",
    "decontamination.against[].revision": "decontamination:\n  against:\n"
    "    - {name: arc, hub: allenai/ai2_arc, config: ARC-Challenge, revision: main, "
    "fields: [question]}",
    "decontamination.against[].fields": "decontamination:\n  against:\n"
    "    - {name: mybench, path: ../bench/test.jsonl, fields: [question, choices]}",
    "system": "system: You are a careful assistant.",
    "variants": "variants: {zero_shot: 0.5, few_shot: 0.3, cot: 0.2, options_shown: 0.5}",
    "variants.zero_shot": "variants: {zero_shot: 0.7, few_shot: 0.3}",
    "variants.few_shot": "variants: {zero_shot: 0.5, few_shot: 0.5}",
    "variants.cot": "variants: {zero_shot: 0.8, cot: 0.2}",
    "variants.few_shot_cot": "variants: {zero_shot: 0.6, cot: 0.2, few_shot_cot: 0.2}",
    "variants.options_shown": "variants: {options_shown: 0.5}",
    "variants.option_styles": "variants: {option_styles: [letters, numbers]}",
    "few_shot": "few_shot: {k: 3, max_chars: 4000, format: one_turn}",
    "few_shot.k": "few_shot: {k: 5}",
    "few_shot.max_chars": "few_shot: {max_chars: 4000}",
    "few_shot.format": "few_shot: {format: multi_turn}",
    "limits": "limits: {max_prompt_chars: 32000, max_output_chars: 16000}",
    "limits.max_prompt_chars": "limits: {max_prompt_chars: 8000}",
    "limits.max_output_chars": "limits: {max_output_chars: 4000}",
    "limits.max_render_seconds": "limits: {max_render_seconds: 5}",
    "limits.max_worker_memory_mb": "limits: {max_worker_memory_mb: 4096}",
    "catalog": "catalog:\n  sources: [../my_sources]\n  templates: [../my_templates]",
    "catalog.sources": "catalog: {sources: [../my_sources]}",
    "catalog.templates": "catalog: {templates: [../my_templates]}",
    "export": "export: {shard_rows: 100000, row_group_rows: 10000}",
    "export.shard_rows": "export: {shard_rows: 50000}",
    "export.row_group_rows": "export: {row_group_rows: 5000}",
    "export.pretty_name": "export: {pretty_name: My instruction mixture}",
    "export.formats": "export: {formats: [messages, prompt_completion, alpaca]}",
    "export.jsonl": "export: {jsonl: true}",
}

# The recipe's own `name`, `description` and `system` share their path with the source's
# keys of the same name; examples are per document.
RECIPE_EXAMPLES: dict[str, str] = {
    "name": "name: my-mix",
    "description": "description: NLI and paraphrase tasks, FLAN-style, capped at 3k per source.",
}


def example_for(model: type[BaseModel], path: str) -> str | None:
    if model is Recipe and path in RECIPE_EXAMPLES:
        return RECIPE_EXAMPLES[path]
    return EXAMPLES.get(path)


def merged(base: Any, fragment: Any) -> Any:
    """``fragment`` laid over ``base``: mappings merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(fragment, dict):
        out = dict(base)
        for key, value in fragment.items():
            out[key] = merged(base[key], value) if key in base else value
        return out
    return fragment


def example_document(model: type[BaseModel], snippet: str) -> Any:
    """The whole file an example stands for: the minimal file of its kind with it laid over."""
    return merged(yaml.safe_load(BASES[model]), yaml.safe_load(snippet))


# --------------------------------------------------------------------------- the documents

_NAMES = ", ".join(f"`{n}`" for n in sorted(RESERVED_CONTEXT_NAMES))
_TYPES = ", ".join(f"`{t}`" for t in typing.get_args(ScalarType))

INTROS: dict[type[BaseModel], tuple[str, str, str]] = {
    SourceSpec: (
        "sources.md",
        "Source specs",
        f"""\
A **source spec** (`my_sources/<name>.yaml`) describes one NLP task: where its data lives (a
local `sample` file, the Hugging Face Hub, or both) and its features, declared **as the Hub
publishes them**, so the same templates render your sample and the full dataset. See
[Add a source](../README.md#add-a-source) for a whole example.

- **Local only or Hub.** `hub` is optional: a source whose data exists only in local files
  leaves it out and builds with the default `--data sample` (`--data hub` then stops with one
  line naming the source). A source needs `hub`, `sample`, or both.
- **Feature types.** A feature is a type name ({_TYPES}), a ClassLabel `{{names: [...]}}`
  (stored as an int index, like the Hub; templates also see `names.<feature>`),
  `{{sequence: {{names: [...]}}}}` for multi-label lists, or `{{struct: {{key: type, ...}}}}`
  for an object. The Hub stores a `Sequence` of a dict as an object of lists: SQuAD's
  `answers` is `{{struct: {{text: "list[string]", answer_start: "list[int]"}}}}` (list types
  quoted inside YAML's braces) and templates write `answers.text`. Values are converted by
  the declared type only, never guessed from the data; a row that cannot be converted is a
  reject with its reason (`rejects/load/`). A null is a reject too, except in a `nullable`
  feature.
- **Context names.** Templates see these names besides the features: {_NAMES}. A feature may
  share one (AQuA-RAT and MathQA publish `options`): every feature is also
  `example.<feature>`, and is seen by its bare name where that does not collide.
- **Files.** `sample.file` is `.jsonl` (JSON Lines), `.json` (a JSON array of rows, or one JSON
  object with the rows under `sample.json_field`), `.csv`/`.tsv` (see `sample.csv`) or
  `.parquet`; `sample.files` lists several (one per split or language, or several keys of one
  JSON object, or records nested deeper under `sample.records`, such as SQuAD's
  `data[].paragraphs[].qas[]`). Raw columns map onto features through `sample.fields`; a
  column may be a dotted path into nested JSON (`q.text`, `answers.text.0`).
  `sample.filter` keeps the rows a Jinja test passes and `sample.limit` reads only the first
  rows of each file.
- **The Hub.** `--data hub` reads each split with `datasets.load_dataset(hub.id, hub.config,
  revision=, data_dir=, data_files=, split=)`. A repo that still ships a loading script
  (which datasets >= 4 refuses) is read from its converted copy: `revision:
  refs/convert/parquet` with `data_dir: <config>`.
- **Licences.** `license` is every record's, unless `license_by` picks a licence per row.
  NonCommercial rows are rejected (`noncommercial_license`) unless `allow_noncommercial`.
- **Multilingual sources.** `language` may list several codes; each row's language comes from
  `language_field`, or its file's `sample.files[].language`, or the first code. One template
  file serves every language; a template's `translations` give per-language phrasings.
- **`rationale`** makes chain-of-thought records possible for templates marked `cot: true`.
- **`split_group`** keeps examples that share a value in one split and never lets them
  exemplify each other; **`decontaminate_on`** picks the text that stands for a held-out
  example when train records are checked against it.
""",
    ),
    TemplateFile: (
        "templates.md",
        "Template files",
        f"""\
A **template file** (`my_templates/<source>.yaml`) holds the phrasings of one source's task.
Every text key (`instruction`, `input`, `output`, `system`, `jinja`, each answer choice) is
Jinja, rendered against one example in a sandbox with strict undefined: a misspelt field
rejects that record with its reason (`rejects/render/`), it never renders as empty text. See
[Add a template](../README.md#add-a-template) for a whole example, and `instructmix templates
lint` / `templates preview` to check one.

- **What a template sees:** every feature by name (ClassLabels as ints), `names.<feature>`
  (label names), `answer_choices` (the rendered choices), and the seeded helpers: {_NAMES}. A
  feature named like one of these is reached as `example.<feature>`.
- **Two forms:** `instruction` + `output` (and optional `input`), or promptsource's one
  `jinja` text split on `|||` into prompt and output.
- **Answer choices** are a list (each item Jinja) or one Jinja string split on `|||`, such as
  `{{{{ answer_choices_field | join(' ||| ') }}}}`. A template with choices gets an options
  block in the drawn style (a recipe's `variants.option_styles`) unless its instruction lists
  them itself: then set `metadata.choices_in_prompt: true`.
- **Languages:** `translations.<code>` replaces any of the template's texts for examples of
  that language (from the source's `language`, `language_field` or `sample.files[].language`),
  so one template serves a multilingual source.
- **Variants** of every record: {", ".join(f"`{v}`" for v in VARIANTS)}. `cot: true` lets a
  template make chain-of-thought records when its source has a `rationale`; `inverted: true`
  marks a template that turns the task around.
""",
    ),
    Recipe: (
        "recipes.md",
        "Recipes",
        """\
A **recipe** (`my_recipe.yaml`) says which sources go into a mixture, how many records each
contributes, which forms the records take, and what is held out. `instructmix run my_recipe.yaml`
builds it; `--dry-run` prints the plan first. See [Recipes](../README.md#recipes).

- **Selecting:** `sources` and `clusters` (or nested `mixtures`, each with its own selection,
  mixing and weight). `held_out_clusters` and `eval_only` send whole clusters or sources to the
  `eval` split only (FLAN's protocol); `validation_fraction` holds out split groups of the rest.
- **Mixing:** `mixing.strategy` weighs sources by size (`proportional`, with a per-source
  `cap`), by size ** (1 / `temperature`), or by `weights`; `mixing.size` fixes the total.
- **Dedup and decontamination** run in the mix: repeated conversations are dropped (`dedup`),
  and train records sharing an n-gram with validation, eval or `decontamination.against` text
  are dropped (`decontamination`); each drop is a reject in `rejects/mix/` with its reason.
- Every random choice is a hash of `seed` and stable ids: the same recipe and seed give the
  same bytes.
""",
    ),
}


def _anchor(path: str) -> str:
    return "".join(c for c in path.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


def render_document(model: type[BaseModel]) -> str:
    """The reference of ``model``'s file as Markdown."""
    _, title, intro = INTROS[model]
    keys = all_keys(model)
    lines = [
        f"# {title}",
        "",
        f"<!-- Generated from pipeline/models.py by `{REGENERATE}`; do not edit by hand. -->",
        "",
        intro.rstrip(),
        "",
        "## Keys",
        "",
        "| key | type | default |",
        "|---|---|---|",
    ]
    for key in keys:
        default = "**required**" if key.required else _shown_default(key.default)
        lines.append(f"| [`{key.path}`](#{_anchor(key.path)}) | {key.type_text} | {default} |")
    for key in keys:
        lines += ["", f"### {key.path}", ""]
        facts = [key.type_text]
        facts.append("required" if key.required else f"default {_shown_default(key.default)}")
        if key.constraints:
            facts.append(key.constraints)
        lines.append("*" + "; ".join(facts).replace("*", "\\*") + "*")
        lines += ["", key.description]
        if key.same_as:
            lines += ["", f"Its keys are those of [`{key.same_as}`](#{_anchor(key.same_as)})."]
        example = example_for(model, key.path)
        if example is not None:
            lines += ["", "```yaml", example.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _shown_default(default: str | None) -> str:
    return "its keys' defaults" if default == "see its keys" else f"`{default}`"


def documents() -> dict[Path, str]:
    """Every reference file and the text it should hold now."""
    return {DOCS / INTROS[m][0]: render_document(m) for m in (SourceSpec, TemplateFile, Recipe)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.reference",
        description="Write docs/sources.md, docs/templates.md and docs/recipes.md from the models.",
    )
    parser.add_argument(
        "--check", action="store_true", help="Only say which file is stale (exit 1 if any)."
    )
    args = parser.parse_args(argv)
    stale = []
    for path, text in documents().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{path}: {'stale; run ' + REGENERATE if args.check else 'written'}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
