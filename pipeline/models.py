"""Data contracts: everything users write and everything the pipeline writes.

Every file a user edits (source spec, template file, recipe) is parsed into one of these models,
so a typo fails early with the file, line and field at fault (see ``yamlfile.py``). Everything the
pipeline writes (records, rejects, the manifest) is described here too, so the export contract
lives in one place.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
Slug = Annotated[str, Field(pattern=SLUG_PATTERN)]

CLUSTERS = (
    "nli",
    "commonsense",
    "sentiment",
    "paraphrase",
    "closed_book_qa",
    "struct_to_text",
    "reading_comprehension",
    "reading_comprehension_commonsense",
    "coreference",
    "summarization",
    "translation",
    "misc",
    "math",
    "topic_classification",
    "intent_classification",
    "emotion_classification",
)

# FLAN 2022's four forms (zero/few-shot, options shown or not), plus chain-of-thought and
# inverted ("turn the task around") records.
Variant = Literal[
    "zero_shot_opt",
    "zero_shot_noopt",
    "few_shot_opt",
    "few_shot_noopt",
    "cot",
    "few_shot_cot",
    "inverted",
]
VARIANTS: tuple[Variant, ...] = get_args(Variant)

# Names that templates see besides the features. A feature may share one (AQuA-RAT's
# `options`): every feature is also under `example.<name>`, and by its bare name where it does
# not collide with one of these.
RESERVED_CONTEXT_NAMES = frozenset(
    {
        "names",
        "answer_choices",
        "example",
        "options",
        "choice",
        "shuffle",
        "sample",
        "randint",
        "gold_answers",
        "gold_answer",
    }
)


def _not_a_bool(value: Any) -> Any:
    # pydantic's lax mode reads `true` as 1 and 1.0; in a user's file that is a slip, not a number.
    if isinstance(value, bool):
        raise ValueError("a boolean (true/false) is not a number")
    return value


# Every number a user writes: never a boolean, never inf or nan (a YAML `.inf`/`.nan` used to be
# accepted, stored as null in the manifest, and every later stage died on it).
Int = Annotated[int, BeforeValidator(_not_a_bool)]
Float = Annotated[float, BeforeValidator(_not_a_bool), Field(allow_inf_nan=False)]

# Upper bounds on what a recipe may ask for. Each is far above any real use and low enough that
# nothing downstream overflows a C integer, loses float precision (counts stay below 2**53) or
# allocates beyond reason.
MAX_RECORDS = 10**12  # caps and sizes: counts of records
MAX_CHARS = 10_000_000  # text budgets: ten times the render's own 1M-character stop
MAX_SHARE = 1e12  # mixing weights and variant shares: relative numbers, summed as floats
MAX_ROW_GROUP_ROWS = 1_000_000  # rows held in memory before a parquet row group is written
MAX_SHARD_ROWS = 10**9
MAX_TEMPLATES_PER_EXAMPLE = 10_000
MAX_RENDER_SECONDS = 3600.0  # setitimer overflows the platform's time_t long before 1e30 s
# The temperature mix weighs a source by count ** (1 / T), which must stay a finite float: at
# T = 0.1 a count of 1e14 weighs 1e140, at T = 0.02 it overflows (OverflowError in the mix plan,
# as 1e-300 did). 0.1 is already close to winner-takes-all.
MIN_TEMPERATURE = 0.1
MAX_TEMPERATURE = 1000.0


class Strict(BaseModel):
    """Base for user-written files: unknown keys are errors, not silently ignored; floats are
    finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- sources

ScalarType = Literal[
    "string", "int", "float", "bool", "list[string]", "list[int]", "list[list[string]]", "any"
]


class ClassLabel(Strict):
    """A label stored as an int index into ``names``, as the Hub's ClassLabel feature does."""

    names: list[str] = Field(min_length=1)

    @field_validator("names")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("label names must be unique")
        return names


class SequenceOfClassLabel(Strict):
    """A multi-label field: a list of ClassLabel ints (the Hub's ``Sequence(ClassLabel)``)."""

    sequence: ClassLabel


class Struct(Strict):
    """An object feature (the Hub's dict of features), each key with its own type.

    The Hub stores a sequence of objects, such as SQuAD's and XQuAD's
    ``answers: Sequence({text: string, answer_start: int32})``, as ONE object of lists
    (``{text: [...], answer_start: [...]}``), and that is what its rows hold; declare it so,
    ``{struct: {text: "list[string]", answer_start: "list[int]"}}`` (quoted inside YAML's
    braces), and templates see
    ``answers.text`` as they would on the Hub. A sample that writes the value as a list of
    objects (``[{text: ..., answer_start: ...}, ...]``, as SQuAD's JSON does) is read the Hub's
    way when every key's type is a list: one list per key."""

    struct: dict[str, FeatureType] = Field(
        min_length=1,
        description="Key -> its type (any feature type, a struct included). Keys a value has "
        "beyond these are left out; a key it lacks is a `missing_field` reject naming "
        "`feature.key`.",
    )

    @field_validator("struct")
    @classmethod
    def _named_keys(cls, keys: dict[str, Any]) -> dict[str, Any]:
        if any(not key for key in keys):
            raise ValueError("a struct's keys must be non-empty names")
        return keys

    @property
    def of_lists(self) -> bool:
        """Whether every key holds a list (a sample's list of objects is then transposed)."""
        return all(is_list_type(t) for t in self.struct.values())


FeatureType = ScalarType | ClassLabel | SequenceOfClassLabel | Struct
Struct.model_rebuild()

LIST_TYPES = frozenset({"list[string]", "list[int]", "list[list[string]]"})


def is_list_type(ftype: FeatureType) -> bool:
    """A type whose value is always a list."""
    if isinstance(ftype, SequenceOfClassLabel):
        return True
    return isinstance(ftype, str) and ftype in LIST_TYPES


class FieldMap(Strict):
    """How one raw column becomes one feature value."""

    column: str = Field(description="Raw column name in the file or Hub dataset.")
    split: str | None = Field(
        default=None, description="Split a delimited string into a list (e.g. '4,27')."
    )
    values: dict[str, str | int] | None = Field(
        default=None,
        description="Map raw values, compared as the text written in the file (a JSON true is "
        "'true', 1.50 is '1.50'), to feature values or label names.",
    )

    @field_validator("values", mode="before")
    @classmethod
    def _no_bool_values(cls, values: Any) -> Any:
        if isinstance(values, dict):
            for value in values.values():
                _not_a_bool(value)
        return values


# The Hub's converted copy of a dataset: `<config>/<split>/0000.parquet`, readable by datasets
# >= 4 also where the repo's own files are a loading script.
PARQUET_BRANCH = "refs/convert/parquet"


class HubSpec(Strict):
    """Where the full dataset lives on the Hugging Face Hub."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")
    config: str | None = None
    revision: str | None = Field(
        default=None,
        description="A Git revision (tag, branch or commit) of the Hub dataset, to pin the data "
        f"a build reads; `{PARQUET_BRANCH}` reads the Hub's converted parquet copy, for a repo "
        "that still ships a loading script (which datasets >= 4 refuses): name the config's "
        "folder there with `data_dir` (the branch has no `config`s of its own).",
    )
    splits: list[str] = Field(
        default_factory=lambda: ["train"], min_length=1, description="The dataset's splits."
    )
    read: list[str] | None = Field(
        default=None,
        description="The splits `--data hub` reads. Default: `train` when the dataset has one "
        "(its only split otherwise), so a build never trains on a benchmark's dev or test "
        "split unless the spec asks for it here.",
    )
    id_field: str | None = Field(
        default=None, description="Hub column holding a stable example id, if any."
    )
    data_dir: str | None = Field(
        default=None,
        description="A folder inside the Hub repo to read (`load_dataset(..., data_dir=)`), "
        "e.g. one config of a converted `refs/convert/parquet` branch.",
    )
    data_files: str | list[str] | dict[str, str | list[str]] | None = Field(
        default=None,
        description="Files inside the Hub repo to read (`load_dataset(..., data_files=)`): a "
        "path or glob, a list of them, or a mapping from split to them.",
    )
    checked: str = Field(
        default="",
        description="Where and when these Hub facts (id, revision, config, splits, features, "
        "licence) were checked, e.g. the dataset card's URL and the date.",
    )

    @property
    def splits_read(self) -> list[str]:
        if self.read is not None:
            return list(self.read)
        return ["train"] if "train" in self.splits else self.splits[:1]

    @field_validator("data_dir")
    @classmethod
    def _inside_the_repo(cls, path: str | None) -> str | None:
        if path is not None and (
            not path.strip("/") or path.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", path)
        ):
            raise ValueError("data_dir must be a folder inside the Hub repo (a relative path)")
        return path

    @model_validator(mode="after")
    def _reads_known_splits(self) -> HubSpec:
        unknown = [s for s in self.read or [] if s not in self.splits]
        if unknown:
            raise ValueError(f"read: {unknown} not among splits {self.splits}")
        if isinstance(self.data_files, dict):
            unknown = [s for s in self.data_files if s not in self.splits]
            if unknown:
                raise ValueError(f"data_files: {unknown} not among splits {self.splits}")
            missing = [s for s in self.splits_read if s not in self.data_files]
            if missing:
                raise ValueError(f"data_files names no files for the split(s) read {missing}")
        elif self.data_files is not None and self.splits_read != ["train"]:
            # load_dataset puts files given without a split into `train`.
            raise ValueError(
                "data_files given as a path or list is the split 'train' to load_dataset; to "
                f"read {self.splits_read}, map each split to its files ({{split: files}})"
            )
        if self.revision == PARQUET_BRANCH and self.config is not None:
            # The converted branch holds one folder per config and no README `configs:`, so
            # load_dataset(name=...) finds no such config there.
            raise ValueError(
                f"revision {PARQUET_BRANCH}: the converted branch has no configs of its own; "
                f"name the config's folder instead: data_dir: {self.config} (and no config)"
            )
        return self


class CsvOptions(Strict):
    """How a CSV/TSV sample is read. Every cell is read as the text written in the file and then
    converted to its feature's declared type: nothing is guessed from the data, so ``02134``
    stays ``'02134'`` in a ``string`` feature and ``NA`` stays ``'NA'``."""

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    column_names: list[str] | None = Field(
        default=None, description="Names of the columns when the file has no header line."
    )
    quoting: Annotated[Literal[0, 1, 2, 3], BeforeValidator(_not_a_bool)] = Field(
        default=0,
        description="Python csv quoting constant; 3 (QUOTE_NONE) for raw TSV. 1 and 2 read like "
        "0 (quotes are honoured); no quoting mode turns a cell into a number.",
    )
    null_values: list[str] = Field(
        default_factory=list,
        description="Cell texts that mean 'no value' (e.g. ['', 'NA']), compared exactly. None by "
        "default: an empty cell is the empty string and 'NA', 'None', 'null', 'nan' are text.",
    )


# A language code as BCP 47 writes one (ISO 639 language, optional subtags): `en`, `de`,
# `pt-BR`, `zh-Hant`.
LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$"
LanguageCode = Annotated[str, Field(pattern=LANGUAGE_PATTERN)]


# A path to the records of a nested JSON document: keys joined by `.`, `[]` after a key whose
# value is a list to read item by item (a leading `[]`: the document itself is a list).
_RECORDS_STEP = re.compile(r"[^.\[\]]+(\[\])?")


def records_steps(path: str) -> list[tuple[str | None, bool]]:
    """``data[].paragraphs[].qas[]`` as its steps: ``(key, each)`` where ``key`` is the key to
    go into (None: the value itself, a leading ``[]``) and ``each`` whether its value is a list
    whose items are read one by one. Raises ValueError for a malformed path."""
    parts = path.split(".")
    steps: list[tuple[str | None, bool]] = []
    for i, part in enumerate(parts):
        if part == "[]" and i == 0:
            steps.append((None, True))
        elif _RECORDS_STEP.fullmatch(part):
            each = part.endswith("[]")
            steps.append((part.removesuffix("[]"), each))
        else:
            raise ValueError(
                f"records {path!r}: step {part!r} is not a key or key[] (keys joined by '.', "
                "e.g. 'data[].paragraphs[].qas[]')"
            )
    if not steps[-1][1]:
        raise ValueError(
            f"records {path!r} must end with [] (the list whose items are the records)"
        )
    return steps


def _records_path(path: str | None) -> str | None:
    if path is not None:
        records_steps(path)
    return path


_RECORDS_DESCRIPTION = (
    "Read the records of a nested JSON document (SQuAD's and XQuAD's articles, paragraphs, "
    "questions): a path of keys joined by `.`, with `[]` after each key whose value is a list "
    "to read item by item, ending with the list of records, e.g. `data[].paragraphs[].qas[]`. "
    "Each record also sees the keys of the objects above it (a paragraph's `context`, an "
    "article's `title`), except the key the path goes on into; a key of the record itself "
    "hides a parent's of the same name. Instead of `json_field` (`records: 'data[]'` reads "
    "the rows `json_field: data` does, with the document's other keys added)."
)


def _relative_path(path: str | None) -> str | None:
    if path is None:
        return path
    if path.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", path):
        raise ValueError("sample file must be a relative path inside the catalog")
    return path


class SampleFile(Strict):
    """One of several files of a sample (``sample.files``): its split, and optionally its
    language and the key its rows sit under."""

    file: str = Field(description="Path relative to the catalog's data folder or the spec file.")
    split: str = Field(description="Which split of the original dataset the file comes from.")
    language: LanguageCode | None = Field(
        default=None,
        description="The language of every row of this file (a code of the source's "
        "`language` list), unless the source's `language_field` says otherwise per row.",
    )
    json_field: str | None = Field(
        default=None,
        description="Read the list under this key of a JSON object file (default: the "
        "sample's `json_field`).",
    )
    records: str | None = Field(
        default=None,
        description=_RECORDS_DESCRIPTION + " Default: the sample's `records`.",
    )

    _relative = field_validator("file")(_relative_path)
    _records = field_validator("records")(_records_path)

    @model_validator(mode="after")
    def _one_reader(self) -> SampleFile:
        if self.json_field is not None and self.records is not None:
            raise ValueError("give 'json_field' or 'records', not both")
        return self


class SampleSpec(Strict):
    """A bundled (or user-provided) local file with real examples of the task."""

    file: str | None = Field(
        default=None,
        description="Path relative to the catalog's data folder or the spec file. Give "
        "`file` and `split`, or several `files`.",
    )
    files: list[SampleFile] | None = Field(
        default=None,
        min_length=1,
        description="Several files, each with its own `split` (and optionally `language` and "
        "`json_field`), read in the order listed; instead of `file` and `split`.",
    )
    format: Literal["json", "csv", "parquet"] | None = Field(
        default=None, description="Inferred from each file's extension when omitted."
    )
    split: str | None = Field(
        default=None,
        description="Which split of the original dataset the file comes from (with `file`).",
    )
    csv: CsvOptions | None = None
    json_field: str | None = Field(
        default=None, description="Read the list under this key of a JSON object file."
    )
    records: str | None = Field(default=None, description=_RECORDS_DESCRIPTION)
    id_field: str | None = Field(
        default=None,
        description="Raw column holding a stable example id, if any (a dotted path such as "
        "`meta.id` reaches into nested JSON).",
    )
    fields: dict[str, str | FieldMap | None] = Field(
        default_factory=dict,
        description="feature name -> raw column (or FieldMap); unnamed features map by name. "
        "A column may be a dotted path into nested JSON: `q.text` (key `text` of the object "
        "under `q`), `answers.text.0` (the first item of that list); a row where the path "
        "does not resolve is a `missing_field` reject naming the path. `null` says the "
        "feature is absent from this sample (every row gets `none`, as a null on the Hub); "
        "only for a `nullable` feature.",
    )
    filter: str | None = Field(
        default=None,
        min_length=1,
        description="A Jinja boolean expression over each example's features (after "
        "`fields` and the type conversions), such as `{{ label != 2 }}` or "
        "`{{ text | length > 10 }}`: a row for which it is false is a `filtered` reject (not "
        "counted towards `--max-reject-share`); one where it fails is a `filter_error` "
        "reject with the reason. It must render `True` or `False`.",
    )
    limit: Int | None = Field(
        default=None,
        ge=1,
        le=MAX_RECORDS,
        description="Read only the first N rows of each file, in file order; the rest are "
        "neither read nor counted.",
    )
    allow_outside_catalog: bool = Field(
        default=False,
        description="Read the file even where it resolves (through a symbolic link) to a place "
        "outside the catalog folder it was found in. Off by default: a catalog from elsewhere "
        "could otherwise link data/users.tsv to /etc/passwd and have it rendered and exported.",
    )

    _relative = field_validator("file")(_relative_path)
    _records = field_validator("records")(_records_path)

    @model_validator(mode="after")
    def _one_form(self) -> SampleSpec:
        if self.files is not None:
            if self.file is not None or self.split is not None:
                raise ValueError("give 'file' and 'split', or 'files', not both")
        elif self.file is None or self.split is None:
            raise ValueError("a sample needs 'file' and 'split' (or a list of 'files')")
        if self.json_field is not None and self.records is not None:
            raise ValueError("give 'json_field' or 'records', not both")
        return self

    @property
    def entries(self) -> list[SampleFile]:
        """Every file of the sample, in order, as ``files`` entries (one for ``file``)."""
        if self.files is not None:
            # A file that says neither how its rows sit takes the sample's way.
            return [
                f
                if f.json_field is not None or f.records is not None
                else f.model_copy(update={"json_field": self.json_field, "records": self.records})
                for f in self.files
            ]
        assert self.file is not None and self.split is not None
        return [
            SampleFile(
                file=self.file, split=self.split, json_field=self.json_field, records=self.records
            )
        ]


TransformOp = Literal[
    "strip_calculator_annotations",
    "text_before",
    "text_after",
    "detokenize",
    "replace",
    "collapse_whitespace",
]


class Transform(Strict):
    """One documented clean-up of a text field, applied to every example as it is loaded (from
    the bundled sample and from the Hub alike), so targets carry no data artefacts and no
    template has to work around them (``transforms.py`` has each op's exact rule)."""

    op: TransformOp = Field(
        description="`strip_calculator_annotations` (GSM8K's `<<48/2=24>>`), `text_before` / "
        "`text_after` a `marker` (the solution before `####`, the answer after it), "
        "`detokenize` (PTB-style tokenised text back to plain text), `replace` (literal "
        "strings, `map`), `collapse_whitespace`."
    )
    field: str = Field(
        description="The feature (or an earlier transform's `into`) to read; strings in lists "
        "are transformed one by one."
    )
    into: str | None = Field(
        default=None,
        description="Write the result into a new field of this name (a `string` feature, or "
        "the input's list type), which templates can use; default: replace `field` in place.",
    )
    marker: str | None = Field(
        default=None, min_length=1, description="For `text_before` / `text_after`."
    )
    map: dict[str, str] | None = Field(
        default=None, description="For `replace`: literal text -> its replacement, in order."
    )

    @model_validator(mode="after")
    def _arguments(self) -> Transform:
        needs_marker = self.op in ("text_before", "text_after")
        if needs_marker != (self.marker is not None):
            raise ValueError(
                f"{self.op}: 'marker' is " + ("required" if needs_marker else "not used")
            )
        if (self.op == "replace") != (self.map is not None):
            raise ValueError(
                f"{self.op}: 'map' is " + ("required" if self.op == "replace" else "not used")
            )
        if self.map is not None and (not self.map or "" in self.map):
            raise ValueError("replace: 'map' needs at least one non-empty text to replace")
        return self


def is_noncommercial(license: str) -> bool:
    """Whether a licence string is NonCommercial: ``NC`` as one of its elements (``CC BY-NC-SA
    4.0``, ``cc-by-nc-4.0``, ``CC-BY-NC-ND``) or the word NonCommercial / non-commercial."""
    text = license.lower()
    if "nc" in re.split(r"[^0-9a-z]+", text):
        return True
    return re.search(r"\bnon[\s_-]*commercial", text) is not None


LicenseText = Annotated[str, Field(min_length=1)]


class LicenseBy(Strict):
    """A licence that depends on the row, for a dataset that mixes sources under different
    licences (full DART on the Hub: WikiTableQuestions/WikiSQL rows MIT, WebNLG rows
    CC BY-NC-SA 4.0, E2E rows CC BY-SA 4.0)."""

    field: str = Field(
        min_length=1,
        description="A feature (text, number, boolean or ClassLabel), or Jinja over the "
        "row's features as loaded, before `transforms` (ClassLabels as ints, "
        "`names.<feature>` as names), whose value picks the licence (e.g. "
        "`{{ annotations.source | first }}`). Jinja that fails on a row makes it a "
        "`license_error` reject.",
    )
    licenses: dict[str, LicenseText] = Field(
        min_length=1,
        description="Value -> licence string, as in `license`. The value is matched as text, "
        "exactly, after surrounding whitespace is stripped (a ClassLabel feature by its label "
        "name, a boolean as `true`/`false`).",
    )
    default: LicenseText | None = Field(
        default=None,
        description="Licence for a value not listed (default: the source's `license`); "
        "`reject` makes such a row an `unknown_license` reject instead.",
    )


class RecordRule(Strict):
    """A check of your own on every rendered record, written in Jinja: a record for which
    ``check`` does not render ``True`` is rejected with ``name`` as its rule."""

    name: Slug = Field(description="The reject rule a failing record gets.")
    check: str = Field(
        min_length=1,
        description="A Jinja expression over the record: `prompt` (its last user turn), "
        "`output` (its answer), `system`, `variant`, `template_id`, `source`, `language`; "
        "e.g. `{{ output | trim | lower != prompt | trim | lower }}`.",
    )
    message: str = Field(default="", description="What the reject says (default: the check).")


class SourceSpec(Strict):
    """One NLP task: where it lives and the schema templates render against."""

    name: Slug
    task: str = Field(min_length=1, description="Human-readable task name.")
    cluster: str = Field(pattern=SLUG_PATTERN)
    description: str = ""
    language: LanguageCode | list[LanguageCode] = Field(
        default="en",
        description="The language of the examples (a BCP 47 code such as `en`), written to "
        "every record's `language` column and the dataset card; or a list of the codes a "
        "multilingual source covers. Each row's language is then its `language_field` value, "
        "or its file's `sample.files[].language`, or the first code listed; a row whose "
        "language is not listed is a `bad_language` reject.",
    )
    language_field: str | None = Field(
        default=None,
        description="A feature (`string`, or a ClassLabel whose names are codes) holding each "
        "row's language code, for a multilingual source whose rows are mixed in one file.",
    )
    license: str = Field(min_length=1)
    citation: str = ""
    homepage: str = ""
    hub: HubSpec | None = Field(
        default=None,
        description="Where the full dataset lives on the Hub (`--data hub`); leave it out for "
        "data that exists only in local files.",
    )
    sample: SampleSpec | None = None
    features: dict[str, FeatureType] = Field(min_length=1)
    split_group: str | list[str] | None = Field(
        default=None,
        description="What ties examples together so they land in the same split and never "
        "serve as each other's few-shot exemplars: a feature name (`premise`), or a Jinja "
        "expression over the example (`{{ premise | lower }}`). A list of them joins examples "
        "that share any one value (PAWS: `[sentence1, sentence2]`, since one sentence recurs "
        "across pairs). Default: each example alone.",
    )
    record_rules: list[RecordRule] = Field(
        default_factory=list,
        description="Checks of your own on this source's rendered records (see RecordRule); "
        "a record failing one is a reject named after it.",
    )
    decontaminate_on: list[str] | None = Field(
        default=None,
        description="The features whose text stands for an example when it is held out "
        "(validation or eval), for decontamination: train records sharing an n-gram with it "
        "are dropped. Default: every text feature. Structured inputs made of a few repeated "
        "keywords (E2E's meaning representations) match unrelated examples; leave them out "
        "and rely on split_group within the source.",
    )
    rationale: str | None = Field(
        default=None,
        description="The worked rationale for chain-of-thought records: a feature name, or Jinja "
        "over the features (e.g. GSM8K's solution without its '#### answer' line).",
    )
    rationale_rules: list[RecordRule] = Field(
        default_factory=list,
        description="Checks on each example's rationale (Jinja over the example's fields and "
        "`rationale`): an example whose rationale fails one makes no chain-of-thought record "
        "(a reject named after the rule) and is never a chain-of-thought exemplar. For "
        "annotation notes that are not reasoning (CREAK's 'I made this statement up.').",
    )
    transforms: list[Transform] = Field(
        default_factory=list,
        description="Clean-ups applied in order to every loaded example (see Transform); a "
        "field that a transform cannot read is a `bad_transform` reject of that row.",
    )
    nullable: list[str] = Field(
        default_factory=list,
        description="Features that may be null (missing on the Hub for some rows): a null "
        "stays `none` in templates instead of making the row a reject (a null in any other "
        "feature is a `missing_field` reject). A nullable feature the sample lacks is mapped "
        "`sample.fields: {feature: null}`.",
    )
    license_by: LicenseBy | None = Field(
        default=None,
        description="A per-row licence (see LicenseBy); each record's `license` column is its "
        "row's.",
    )
    allow_noncommercial: bool = Field(
        default=False,
        description="Keep rows whose licence is NonCommercial (`NC` as an element of the "
        "licence string, `CC BY-NC-SA 4.0`, `cc-by-nc-4.0`, or the word NonCommercial); by "
        "default they are `noncommercial_license` load rejects, so a build is usable for any "
        "purpose its other licences allow. A source whose own `license` is NonCommercial "
        "(without `license_by`) is refused when the catalog is read unless this is true, "
        "since every one of its rows would be rejected.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SourceSpec:
        # A feature may share a name with the template context (AQuA-RAT's `options`): the
        # renderer puts every feature under `example.<name>` as well, so none is unreachable.
        if self.hub is None and self.sample is None:
            raise ValueError("a source needs 'hub', 'sample', or both")
        if self.sample:
            unknown = set(self.sample.fields) - set(self.features)
            if unknown:
                raise ValueError(f"sample.fields maps unknown features {sorted(unknown)}")
        bare = self.rationale is not None and "{" not in self.rationale
        if bare and self.rationale not in self.field_names:
            raise ValueError(f"rationale names unknown feature {self.rationale!r}")
        self._check_transforms()
        unknown_nullable = set(self.nullable) - set(self.features)
        if unknown_nullable:
            raise ValueError(f"nullable names unknown features {sorted(unknown_nullable)}")
        absent = [f for f, m in (self.sample.fields if self.sample else {}).items() if m is None]
        for name in absent:
            if name not in self.nullable:
                raise ValueError(
                    f"sample.fields.{name} is null (absent from this sample), but {name!r} is "
                    "not in 'nullable': only a nullable feature may be absent (its rows get "
                    "none, as a null on the Hub)"
                )
        self._check_languages()
        self._check_licenses()
        return self

    def _check_licenses(self) -> None:
        by = self.license_by
        if by is not None and "{" not in by.field:
            ftype = self.features.get(by.field)
            if ftype is None:
                raise ValueError(
                    f"license_by.field {by.field!r} is not a feature (nor Jinja such as "
                    "'{{ origin | lower }}')"
                )
            if not (isinstance(ftype, ClassLabel) or ftype in ("string", "int", "bool")):
                raise ValueError(
                    f"license_by.field {by.field!r} is not a text, number or label feature; "
                    "pick one value with Jinja, e.g. '{{ " + by.field + " | first }}'"
                )
        if by is None and is_noncommercial(self.license) and not self.allow_noncommercial:
            # Every row would be a `noncommercial_license` reject: refused here, once.
            raise ValueError(
                f"license {self.license!r} is NonCommercial, so no row of this source may be "
                "used by default; set allow_noncommercial: true to build from it (its records "
                "carry the licence in their `license` column)"
            )

    def _check_languages(self) -> None:
        if isinstance(self.language, list):
            if not self.language:
                raise ValueError("language: give at least one code")
            if len(set(self.language)) != len(self.language):
                raise ValueError("language: each code may be listed once")
        if self.language_field is not None:
            ftype = self.features.get(self.language_field)
            if ftype is None:
                raise ValueError(f"language_field names unknown feature {self.language_field!r}")
            if ftype != "string" and not isinstance(ftype, ClassLabel):
                raise ValueError(
                    f"language_field {self.language_field!r} must be a string or ClassLabel feature"
                )
        for i, entry in enumerate(self.sample.files or [] if self.sample else []):
            if entry.language is not None and entry.language not in self.languages:
                raise ValueError(
                    f"sample.files[{i}].language {entry.language!r} is not among the source's "
                    f"languages {self.languages}"
                )

    def _check_transforms(self) -> None:
        known = set(self.features)
        for i, step in enumerate(self.transforms):
            if step.field not in known:
                raise ValueError(
                    f"transforms[{i}] ({step.op}): field {step.field!r} is neither a feature nor "
                    "an earlier transform's 'into'"
                )
            if step.into is not None:
                if step.into in known or step.into in RESERVED_CONTEXT_NAMES:
                    raise ValueError(
                        f"transforms[{i}] ({step.op}): into {step.into!r} already names a field"
                    )
                known.add(step.into)

    @property
    def derived_fields(self) -> list[str]:
        """The fields transforms add (their ``into``), in order."""
        return [t.into for t in self.transforms if t.into is not None]

    @property
    def field_names(self) -> list[str]:
        """Every field a template can name: the features, then the derived fields."""
        return [*self.features, *self.derived_fields]

    @property
    def languages(self) -> list[str]:
        """Every language the source covers (one, unless ``language`` is a list)."""
        return list(self.language) if isinstance(self.language, list) else [self.language]

    @property
    def default_language(self) -> str:
        """A row's language when neither its ``language_field`` nor its file says."""
        return self.languages[0]


# --------------------------------------------------------------------------- templates

# How a record shows its answer options (``options.py``): drawn per record from the recipe's list.
OptionStyle = Literal["dashes", "letters", "numbers", "inline", "flan"]
OPTION_STYLES: tuple[OptionStyle, ...] = ("dashes", "letters", "numbers", "inline", "flan")


class TemplateMetadata(Strict):
    original_task: bool = True
    choices_in_prompt: bool = Field(
        default=False,
        description="The template writes its choices into its prompt itself, with "
        "{{ answer_choices }} (or places the options block with {{ options }}): no options "
        "block is appended and its records are `_opt`. A template whose instruction/input "
        "never uses either is a lint error, and its records are `_noopt`.",
    )
    metrics: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=lambda: ["en"])


class TemplateText(Strict):
    """A template's phrasing in one language (``translations.<code>``): each field given
    replaces the template's own for examples of that language; a field left out keeps the
    template's."""

    instruction: str | None = Field(
        default=None, min_length=1, description="Replaces the template's `instruction`."
    )
    input: str | None = Field(default=None, description="Replaces the template's `input`.")
    output: str | None = Field(
        default=None, min_length=1, description="Replaces the template's `output`."
    )
    system: str | None = Field(default=None, description="Replaces the template's `system`.")
    jinja: str | None = Field(
        default=None, min_length=1, description="Replaces the template's `jinja` text."
    )
    answer_choices: str | list[str] | None = Field(
        default=None,
        description="Replaces the template's `answer_choices` (the same number of choices, "
        "in the same order, so the answer's index still points at the right one).",
    )
    gold_answers: str | list[str] | None = Field(
        default=None, description="Replaces the template's `gold_answers`."
    )

    @model_validator(mode="after")
    def _something_given(self) -> TemplateText:
        names = list(type(self).model_fields)
        if all(getattr(self, name) is None for name in names):
            raise ValueError("a translation must set at least one of " + ", ".join(names))
        return self


class TemplateSpec(Strict):
    """One phrasing of a task. Every text field is Jinja rendered against one example."""

    id: Slug
    name: str | None = Field(default=None, description="Human-readable name (promptsource's).")
    instruction: str | None = Field(default=None, min_length=1)
    input: str | None = None
    output: str | None = Field(default=None, min_length=1)
    jinja: str | None = Field(
        default=None,
        min_length=1,
        description="promptsource form: one Jinja text rendered, then split on '|||' into "
        "prompt and output. Use instead of instruction/input/output.",
    )
    answer_choices: str | list[str] | None = Field(
        default=None,
        description="A list of choices (each Jinja) or one Jinja string split on '|||'.",
    )
    gold_answers: str | list[str] | None = Field(
        default=None,
        description="Every correct answer, for tasks with several (NQ-open, WebQuestions): a "
        "list (each Jinja) or one Jinja string split on '|||'. One is drawn per record from the "
        "seed and the record's ids as `gold_answer` for the output to use; the record lists "
        "them all in its `gold_answers` column and validation accepts any of them.",
    )
    system: str | None = None
    inverted: bool = Field(default=False, description="The task turned around (FLAN).")
    cot: bool = Field(
        default=False,
        description="The output is a short answer that a rationale may precede: the template "
        "can make chain-of-thought records when its source has a rationale.",
    )
    option_target: Literal["text", "marker", "both"] = Field(
        default="text",
        description="With lettered or numbered options: answer with the option text, its "
        "marker (B, 2) or both ((B) text).",
    )
    option_styles: list[OptionStyle] | None = Field(
        default=None,
        min_length=1,
        description="The option styles this template's records may use (e.g. [numbers] for "
        "150 intents): the recipe's styles are narrowed to these, or, when the recipe has none "
        "of them, these are used. Default: the recipe's.",
    )
    translations: dict[LanguageCode, TemplateText] = Field(
        default_factory=dict,
        description="Per-language phrasings: language code -> the fields (`instruction`, "
        "`input`, `output`, `system`, `jinja`, `answer_choices`) that replace this template's "
        "own for examples of that language. One template then serves every language of a "
        "multilingual source; a language without an entry uses the template as written.",
    )
    metadata: TemplateMetadata = Field(default_factory=TemplateMetadata)

    @property
    def poses_task(self) -> bool:
        """Whether the template asks the source's own task (not inverted, ``original_task``):
        the templates a held-out evaluation is made of."""
        return not self.inverted and self.metadata.original_task

    @field_validator("option_styles")
    @classmethod
    def _styles_once(cls, styles: list[OptionStyle] | None) -> list[OptionStyle] | None:
        if styles is not None and len(set(styles)) != len(styles):
            raise ValueError("each option style may be listed once")
        return styles

    @model_validator(mode="after")
    def _one_form(self) -> TemplateSpec:
        if self.jinja is not None:
            if any(v is not None for v in (self.instruction, self.input, self.output)):
                raise ValueError("give either 'jinja' or 'instruction'/'input'/'output', not both")
        elif self.instruction is None or self.output is None:
            raise ValueError("a template needs 'instruction' and 'output' (or one 'jinja' text)")
        for code, text in self.translations.items():
            # A translation keeps the template's form: it replaces texts, never mixes forms.
            if self.jinja is not None and (text.instruction, text.input, text.output) != (
                None,
                None,
                None,
            ):
                raise ValueError(
                    f"translations.{code}: the template uses 'jinja'; translate it with 'jinja', "
                    "not 'instruction'/'input'/'output'"
                )
            if self.jinja is None and text.jinja is not None:
                raise ValueError(
                    f"translations.{code}: the template uses 'instruction'/'output'; translate "
                    "those, not 'jinja'"
                )
            if text.answer_choices is not None and self.answer_choices is None:
                raise ValueError(
                    f"translations.{code}: sets 'answer_choices', but the template has none"
                )
            if text.gold_answers is not None and self.gold_answers is None:
                raise ValueError(
                    f"translations.{code}: sets 'gold_answers', but the template has none"
                )
        return self


class TemplateFile(Strict):
    source: Slug
    templates: list[TemplateSpec] = Field(min_length=1)

    @field_validator("templates")
    @classmethod
    def _unique_ids(cls, templates: list[TemplateSpec]) -> list[TemplateSpec]:
        seen: set[str] = set()
        for template in templates:
            if template.id in seen:
                raise ValueError(f"duplicate template id {template.id!r}")
            seen.add(template.id)
        return templates


# --------------------------------------------------------------------------- recipes


class Mixing(Strict):
    strategy: Literal["proportional", "temperature", "weights"] = "proportional"
    cap: Int | None = Field(
        default=3000,
        ge=1,
        le=MAX_RECORDS,
        description="Most records one source may contribute (FLAN: 3k).",
    )
    temperature: Float = Field(
        default=1.0,
        ge=MIN_TEMPERATURE,
        le=MAX_TEMPERATURE,
        description="Sources weigh count ** (1 / temperature): 1 is proportional, higher is "
        "flatter.",
    )
    weights: dict[str, Annotated[Float, Field(ge=0, le=MAX_SHARE)]] = Field(default_factory=dict)
    size: Int | None = Field(
        default=None, ge=1, le=MAX_RECORDS, description="Total records; default: all."
    )

    @model_validator(mode="after")
    def _weights_given(self) -> Mixing:
        if self.strategy == "weights" and not self.weights:
            raise ValueError("strategy 'weights' needs a 'weights' mapping")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError("weights must be >= 0")
        return self


class Variants(Strict):
    """Shares of each form among the records of non-inverted templates (normalised)."""

    zero_shot: Float = Field(default=1.0, ge=0, le=MAX_SHARE)
    few_shot: Float = Field(default=0.0, ge=0, le=MAX_SHARE)
    cot: Float = Field(default=0.0, ge=0, le=MAX_SHARE)
    few_shot_cot: Float = Field(
        default=0.0,
        ge=0,
        le=MAX_SHARE,
        description="Share of few-shot chain-of-thought records: worked exemplars, each with "
        "its rationale and answer line, then the query in chain-of-thought form (Flan 2022).",
    )
    options_shown: Float = Field(
        default=1.0, ge=0, le=1, description="Share of choice templates that show the options."
    )
    option_styles: list[OptionStyle] = Field(
        default_factory=lambda: list(OPTION_STYLES), min_length=1
    )

    @property
    def uses_exemplars(self) -> bool:
        """Whether any record may carry few-shot exemplars (so a pool is needed)."""
        return self.few_shot > 0 or self.few_shot_cot > 0

    @model_validator(mode="after")
    def _some_share(self) -> Variants:
        if self.zero_shot + self.few_shot + self.cot + self.few_shot_cot <= 0:
            raise ValueError("at least one of zero_shot, few_shot, cot, few_shot_cot must be > 0")
        return self


class FewShot(Strict):
    k: Int = Field(default=3, ge=1, le=32, description="Exemplars per few-shot record (at most).")
    max_chars: Int = Field(
        default=6000,
        ge=1,
        le=MAX_CHARS,
        description="Budget for the whole prompt; exemplars that overflow it are left out.",
    )
    format: Literal["one_turn", "multi_turn"] = Field(
        default="one_turn",
        description="Exemplars inside one user turn, or as earlier user/assistant turns.",
    )


class Limits(Strict):
    max_prompt_chars: Int = Field(default=32_000, ge=1, le=MAX_CHARS)
    max_output_chars: Int = Field(default=16_000, ge=1, le=MAX_CHARS)
    max_render_seconds: Float = Field(
        default=2.0,
        ge=0,
        le=MAX_RENDER_SECONDS,
        description="Wall time one record may take to render (0: no limit).",
    )
    max_worker_memory_mb: Int | None = Field(
        default=None,
        ge=256,
        le=2**24,
        description="Address-space limit (RLIMIT_AS, in MiB) for each worker process, so a "
        "template that allocates without bound kills its worker rather than the machine. "
        "None: no limit. Counts virtual memory, which runs above resident memory.",
    )


class Dedup(Strict):
    """Duplicates of the rendered conversation, across sources, within each split: the first
    by a stable order (the record's seeded key) is kept, the others are dropped with a reason."""

    exact: bool = Field(default=True, description="Drop records identical to an earlier one.")
    normalized: bool = Field(
        default=True,
        description="Also drop records equal after NFKC, case folding, punctuation and "
        "whitespace are normalised away.",
    )


class EvalData(Strict):
    """Evaluation data to keep out of train: a local file or a Hub dataset, and its fields."""

    name: Slug
    path: str | None = Field(
        default=None, description="A local .jsonl/.json/.csv/.parquet file, relative to the recipe."
    )
    hub: str | None = Field(default=None, description="A Hub dataset id (read with load_dataset).")
    config: str | None = None
    split: str = Field(default="test", description="Split of the Hub dataset.")
    revision: str | None = None
    fields: list[str] = Field(min_length=1, description="Text fields to decontaminate against.")

    @model_validator(mode="after")
    def _one_place(self) -> EvalData:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of 'path' or 'hub'")
        return self


class Decontamination(Strict):
    """Train records sharing an n-gram with held-out text are dropped (GPT-3, open-instruct)."""

    enabled: bool = True
    n: Int = Field(default=13, ge=4, le=64, description="n-gram length, in word tokens.")
    min_tokens: Int = Field(
        default=8,
        ge=1,
        le=64,
        description="Held-out texts shorter than n but at least this long match as a whole; "
        "shorter ones are too generic to match on and are skipped (and counted).",
    )
    against: list[EvalData] = Field(
        default_factory=list,
        description="Extra evaluation data besides the run's own validation and eval splits.",
    )

    @model_validator(mode="after")
    def _short_below_n(self) -> Decontamination:
        if self.min_tokens > self.n:
            raise ValueError(f"min_tokens ({self.min_tokens}) must not exceed n ({self.n})")
        return self


class Submix(Strict):
    """One sub-mixture of a nested recipe (Flan 2022 mixes Flan 2021, T0, NIv2, CoT and dialog
    submixes at fixed rates): its own sources and mixing, and its share of the whole."""

    name: Slug
    weight: Float = Field(gt=0, le=MAX_SHARE, description="Share of the whole (normalised).")
    sources: list[str] = Field(default_factory=list)
    clusters: list[str] = Field(default_factory=list)
    mixing: Mixing = Field(default_factory=Mixing)

    @model_validator(mode="after")
    def _something_selected(self) -> Submix:
        if not self.sources and not self.clusters:
            raise ValueError("a sub-mixture must name 'sources' or 'clusters'")
        return self


class CatalogDirs(Strict):
    sources: list[str] = Field(default_factory=list)
    templates: list[str] = Field(default_factory=list)


ExportFormat = Literal["messages", "prompt_completion", "alpaca", "sharegpt", "flan", "all"]


def _messages_only() -> list[ExportFormat]:
    return ["messages"]


class ExportSpec(Strict):
    shard_rows: Int = Field(default=100_000, ge=1, le=MAX_SHARD_ROWS)
    row_group_rows: Int = Field(default=10_000, ge=1, le=MAX_ROW_GROUP_ROWS)
    pretty_name: str | None = None
    formats: list[ExportFormat] = Field(
        default_factory=_messages_only,
        min_length=1,
        description="The export's configs, one per layout (`messages` is the default config; "
        "`all` for every one); `export --format` overrides it.",
    )
    jsonl: bool = Field(
        default=False,
        description="Also write every parquet shard as JSON lines beside it (`export --jsonl`).",
    )


class Recipe(Strict):
    name: Slug
    description: str = ""
    seed: Int = Field(
        default=0,
        ge=-(2**63),
        le=2**64 - 1,
        description="Any 64-bit integer, signed or unsigned.",
    )
    sources: list[str] = Field(default_factory=list)
    clusters: list[str] = Field(default_factory=list)
    held_out_clusters: list[str] = Field(
        default_factory=list,
        description="Clusters kept out of train and written as the `eval` split (the FLAN "
        "protocol: train on the rest, evaluate zero-shot on these).",
    )
    eval_only: list[str] = Field(
        default_factory=list,
        description="Sources or clusters whose records go only to the `eval` split.",
    )
    eval_exemplar_fraction: Float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="Share of each eval source's examples (by split group) set aside as its "
        "few-shot exemplar pool; they are never eval queries. 0: eval records are zero-shot.",
    )
    eval_templates: Literal["original_task", "all"] = Field(
        default="original_task",
        description="Which templates make eval records (held-out clusters, `eval_only`): "
        "`original_task`, those that pose the source's own task (not inverted, "
        "`metadata.original_task` true), as FLAN evaluates a held-out task; `all`, every "
        "template, as for train. A source with no such template uses all of them.",
    )
    mixtures: list[Submix] = Field(
        default_factory=list,
        description="Nested mixing: sub-mixtures with their own sources and mixing, combined "
        "at fixed rates (their weights). Replaces top-level sources/clusters.",
    )
    templates_per_example: int | Literal["all"] = "all"
    mixing: Mixing = Field(default_factory=Mixing)
    validation_fraction: Float = Field(default=0.0, ge=0.0, lt=1.0)
    record_rules: list[RecordRule] = Field(
        default_factory=list,
        description="Checks of your own on every rendered record of the recipe (see "
        "RecordRule), besides each source's own.",
    )
    dedup: Dedup = Field(default_factory=Dedup)
    decontamination: Decontamination = Field(default_factory=Decontamination)
    system: str | None = Field(default=None, description="System prompt for every record.")
    variants: Variants = Field(default_factory=Variants)
    few_shot: FewShot = Field(default_factory=FewShot)
    limits: Limits = Field(default_factory=Limits)
    catalog: CatalogDirs = Field(default_factory=CatalogDirs)
    export: ExportSpec = Field(default_factory=ExportSpec)

    @model_validator(mode="after")
    def _something_selected(self) -> Recipe:
        if self.mixtures:
            if self.sources or self.clusters:
                raise ValueError("with 'mixtures', name sources and clusters inside each one")
            names = [m.name for m in self.mixtures]
            if len(set(names)) != len(names):
                raise ValueError("sub-mixture names must be unique")
        elif not self.sources and not self.clusters and not self.eval_only:
            raise ValueError("a recipe must name 'sources' or 'clusters'")
        return self

    @field_validator("templates_per_example", mode="before")
    @classmethod
    def _per_is_a_number(cls, per: Any) -> Any:
        return _not_a_bool(per)

    @field_validator("templates_per_example")
    @classmethod
    def _per_in_range(cls, per: int | str) -> int | str:
        if isinstance(per, int) and not 1 <= per <= MAX_TEMPLATES_PER_EXAMPLE:
            raise ValueError(f"must be 1 to {MAX_TEMPLATES_PER_EXAMPLE}, or 'all'")
        return per


# --------------------------------------------------------------------------- outputs


OutSplit = Literal["train", "validation", "eval"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class Record(BaseModel):
    """One instruction example: the row of the export's default config."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    messages: list[Message] = Field(min_length=2)
    source: str
    task: str
    cluster: str
    template_id: str
    variant: Variant
    answer_choices: list[str] | None
    gold_answers: list[str] | None = Field(
        default=None,
        description="Every correct answer where the task has several (the output is one).",
    )
    example_id: str
    split: str
    language: str
    license: str
    out_split: OutSplit | None = Field(
        default=None,
        description="Inside the run folder only: the mixture split the record goes to.",
    )

    @field_validator("messages")
    @classmethod
    def _alternating(cls, messages: list[Message]) -> list[Message]:
        turns = messages[1:] if messages[0].role == "system" else messages
        expected = ["user", "assistant"] * (len(turns) // 2 + 1)
        if not turns or [m.role for m in turns] != expected[: len(turns)]:
            raise ValueError("messages must alternate user/assistant after an optional system turn")
        if turns[-1].role != "assistant":
            raise ValueError("messages must end on an assistant turn")
        return messages


class Reject(BaseModel):
    """Why one example or one record did not make it, with enough to find it again."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["load", "render", "validate", "mix"]
    source: str
    split: str
    example_id: str | None
    template_id: str | None
    rule: str
    message: str
    locator: str = Field(description="File and row (or Hub dataset and index) of the example.")


class SourceCounts(BaseModel):
    """Per-source accounting. Invariants (checked by ``Manifest.check``):

    examples_in == examples_rejected + examples_capped + examples_exemplar_pool
                   + examples_rendered
    records_rendered == records_accepted + records_rejected
    records_accepted == records_selected + records_dropped_by_mix + records_deduplicated
                        + records_decontaminated
    """

    model_config = ConfigDict(extra="forbid")

    cluster: str = ""
    role: Literal["train", "eval"] = Field(
        default="train", description="'eval': held out; its records form the eval split."
    )
    submix: str | None = None
    examples_in: int = 0
    examples_rejected: int = 0
    examples_capped: int = 0
    examples_exemplar_pool: int = Field(
        default=0, description="Eval examples set aside as exemplars, never rendered as queries."
    )
    examples_rendered: int = 0
    examples_by_split: dict[str, int] = Field(
        default_factory=dict, description="Rendered examples per output split."
    )
    records_target: int = 0
    records_rendered: int = 0
    records_rejected: int = 0
    records_accepted: int = 0
    records_selected: int = 0
    records_dropped_by_mix: int = 0
    records_deduplicated: int = 0
    records_decontaminated: int = 0
    records_conflicting: int = Field(
        default=0,
        description="Selected records whose prompt equals another's with a different answer "
        "(reported in mixed/conflicts.jsonl, not dropped).",
    )
    original_splits: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Selected records per output split, by the original dataset split.",
    )
    rejected_by_rule: dict[str, int] = Field(default_factory=dict)


KeepMode = Literal["all", "resume", "dataset"]
# A parquet codec, with a zstd level after a colon (group 1: zstd, group 2: the level).
COMPRESSION_PATTERN = r"(zstd)(?::([1-9]|1[0-9]|2[0-2]))?|lz4|snappy|gzip|brotli|none"


class Storage(BaseModel):
    """How a run folder stores its stages (``run --keep`` and ``--compression``)."""

    model_config = ConfigDict(extra="forbid")

    keep: KeepMode = "all"
    compression: str = Field(
        default="zstd",
        pattern=f"^(?:{COMPRESSION_PATTERN})$",
        description="Parquet codec of the examples, rendered and valid parts (zstd:N: level N).",
    )
    dropped: list[str] = Field(
        default_factory=list,
        description="Stage folders `keep` removed once every stage that reads them had run.",
    )


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instructmix_version: str
    recipe: dict[str, Any]
    recipe_path: str | None = None
    recipe_fingerprint: str
    run_fingerprint: str = Field(
        default="", description="Recipe, specs, templates, data and version: what a resume checks."
    )
    catalog_dirs: dict[str, list[str]] = Field(default_factory=dict)
    data: Literal["sample", "hub"]
    stages_done: list[str] = Field(default_factory=list)
    sources: dict[str, SourceCounts] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict, description="source -> input fingerprint")
    splits: dict[str, int] = Field(default_factory=dict)
    timings_s: dict[str, float] = Field(default_factory=dict)
    export: dict[str, Any] = Field(default_factory=dict)
    decontamination: dict[str, Any] = Field(
        default_factory=dict, description="What train was checked against, and what it found."
    )
    warnings: list[str] = Field(
        default_factory=list, description="Plain-words warnings the card and `run` repeat."
    )
    storage: Storage = Field(default_factory=Storage)

    def check(self) -> list[str]:
        """Every way the counts fail to add up, as sentences (empty when they add up)."""
        problems = []
        for name, c in self.sources.items():
            examples = (
                c.examples_rejected + c.examples_capped + c.examples_exemplar_pool
                + c.examples_rendered
            )  # fmt: skip
            if c.examples_in != examples:
                problems.append(
                    f"{name}: examples_in != rejected + capped + exemplar_pool + rendered"
                )
            if c.records_rendered != c.records_accepted + c.records_rejected:
                problems.append(f"{name}: records_rendered != accepted + rejected")
            mixed = (
                c.records_selected + c.records_dropped_by_mix + c.records_deduplicated
                + c.records_decontaminated
            )  # fmt: skip
            if "mix" in self.stages_done and c.records_accepted != mixed:
                problems.append(
                    f"{name}: records_accepted != selected + dropped_by_mix + deduplicated "
                    "+ decontaminated"
                )
        return problems
