"""What the studio's endpoints do, without any HTTP: the catalog it was given, one source's
details, one template's YAML block, the live preview (records in every form, lint findings,
statistics) of a template being edited, and saving it into the user's templates folder.

The preview renders through the pipeline's own code: ``pipeline.render.Renderer`` over the
examples ``templates preview`` uses (``preview.sample_examples``, under ``preview_recipe``),
each form forced as ``templates preview --variant`` forces it, each record checked by run's
validation (``validate.check_record``); lint is ``lint.lint_source`` on this template alone.

Reads go only to the files of the catalog (built-in plus the folders given); writes only to
the first ``--templates`` folder, as a file name directly inside it (see ``Workspace.save``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import stat
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ..catalog import Catalog, Source, Template, builtin_root, load_catalog
from ..errors import CatalogError, PipelineError
from ..lint import Finding, lint_source, load_examples
from ..load import Example
from ..models import (
    RESERVED_CONTEXT_NAMES,
    ClassLabel,
    SequenceOfClassLabel,
    Struct,
    TemplateFile,
    TemplateSpec,
)
from ..options import styles_for
from ..preview import FORMS, POOL_ROWS, preview_recipe, sample_examples
from ..render import (
    CompiledTemplate,
    Renderer,
    RenderError,
    forced_draw,
    to_record,
    unmade_variant,
    variant_problem,
)
from ..validate import check_record, has_template_syntax
from ..yamlfile import StrictConstruction, validation_message, yaml_error
from .splice import SpliceError, block_text, new_file, put_block

# Bounds that keep one keystroke's preview well under a second.
MAX_ROWS_SHOWN = 20  # preview's n, and the sample rows a source's page shows
STATS_ROWS = 200  # statistics: the first rows of the sample (preview's few-shot pool too)
LINT_ROWS = 200  # lint: this many sample rows (its stable-hash subset)
HISTOGRAM_BINS = 10
TIMEOUT = "render_timeout"  # the sandbox's rule for a record past limits.max_render_seconds
MAX_YAML_CHARS = 200_000

# The path an edited template is rendered under: it is not (yet) any file's content.
EDITOR = Path("(editor)")
_MARK = "\x00studio\x00"  # stands for the file name in yamlfile's messages, then becomes "line N"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.ya?ml")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_JINJA_WORDS = frozenset({"true", "false", "none", "and", "or", "not", "in", "is", "if"})

M = TypeVar("M", bound=BaseModel)


class StudioError(Exception):
    """A request the studio refuses; ``str()`` is the one line shown to the user."""


class NotFound(StudioError):
    pass


class Forbidden(StudioError):
    """Outside the folders the studio was given, or no folder to save into."""


class Conflict(StudioError):
    """The file on disk is not what the editor loaded, or the id is taken elsewhere."""


class Invalid(StudioError):
    """The request or the template text is malformed."""


class _Loader(StrictConstruction, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    pass


def parse_model(text: str, model: type[M], label: str | None = None) -> M:
    """``text`` validated as ``model``, with yamlfile's messages: ``label:line: ...``, or
    ``line N: ...`` when ``label`` is None (the editor's text, which is no file yet)."""
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise Invalid(_located(yaml_error(Path(_MARK), exc), label)) from None
    if data is None:
        raise Invalid(f"{label}: file is empty" if label else "line 1: the text is empty")
    if model is TemplateSpec and not isinstance(data, dict):
        raise Invalid(
            "line 1: a template is one mapping (id:, instruction:, output:, ...), "
            f"not a {type(data).__name__}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Invalid(_located(validation_message(Path(_MARK), exc, data, node), label)) from None


def parse_template(text: str) -> TemplateSpec:
    """The editor's text as one template, or ``Invalid`` with ``line N: field: reason``."""
    if len(text) > MAX_YAML_CHARS:
        raise Invalid(f"the template is {len(text):,} characters; the limit is {MAX_YAML_CHARS:,}")
    return parse_model(text, TemplateSpec)


def _located(message: str, label: str | None) -> str:
    lines = []
    for line in message.split("\n"):
        if label is not None:
            lines.append(line.replace(_MARK, label, 1))
        elif line.startswith(_MARK + ":") and line[len(_MARK) + 1 : len(_MARK) + 2].isdigit():
            num, _, rest = line[len(_MARK) + 1 :].partition(":")
            lines.append(f"line {num}:{rest}")
        else:
            lines.append(line.replace(_MARK + ": ", "", 1).replace(_MARK, "the template"))
    return "\n".join(lines)


def etag_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def jsonable(value: Any) -> Any:
    """A data value as JSON can carry it (NaN and infinities become null)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def feature_text(ftype: Any) -> str:
    """A feature's type as the Hub writes it: ``string``, ``ClassLabel(a, b)``, ..."""
    if isinstance(ftype, ClassLabel):
        return f"ClassLabel({', '.join(ftype.names)})"
    if isinstance(ftype, SequenceOfClassLabel):
        return f"Sequence(ClassLabel({', '.join(ftype.sequence.names)}))"
    if isinstance(ftype, Struct):
        return "{" + ", ".join(f"{k}: {feature_text(v)}" for k, v in ftype.struct.items()) + "}"
    return str(ftype)


def histogram(values: Sequence[int], bins: int = HISTOGRAM_BINS) -> dict[str, list[Any]]:
    """``bins`` equal-width bins from the smallest value to the largest (the last bin holds
    the largest); no values: no bins."""
    if not values:
        return {"edges": [], "counts": []}
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins if hi > lo else 1 / bins
    edges = [round(lo + i * width, 2) for i in range(bins + 1)]
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    return {"edges": edges, "counts": counts}


def _in_folder(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


class Workspace:
    """The catalog the studio serves, built-in plus ``source_dirs`` and ``template_dirs``.

    Save writes only into ``template_dirs[0]`` (resolved once, here: a folder given as a
    symbolic link is trusted as named, and every write goes to where it pointed at start).
    """

    def __init__(self, source_dirs: Sequence[Path] = (), template_dirs: Sequence[Path] = ()):
        self.source_dirs = [Path(d) for d in source_dirs]
        self.template_dirs = [Path(d) for d in template_dirs]
        root = builtin_root()
        self._builtin_sources = (root / "sources").resolve()
        self._builtin_templates = (root / "templates").resolve()
        self.save_dir: Path | None = None
        if self.template_dirs:
            self.save_dir = self._checked_save_dir(self.template_dirs[0])
        self.catalog: Catalog = load_catalog(self.source_dirs, self.template_dirs)
        # Read once: os.umask can only be read by setting it (here, before any thread runs).
        mask = os.umask(0o022)
        os.umask(mask)
        self._new_file_mode = 0o666 & ~mask
        self._pools: dict[str, list[Example]] = {}
        self._rows: dict[str, dict[str, Example]] = {}
        self._lock = threading.Lock()

    def _checked_save_dir(self, folder: Path) -> Path:
        real = folder.resolve()
        package = Path(__file__).resolve().parent.parent
        forbidden = [package, self._builtin_sources, self._builtin_templates]
        forbidden += [d.resolve() for d in self.source_dirs]
        for place in forbidden:
            if real.is_relative_to(place):
                raise CatalogError(
                    f"--templates {folder}: {real} is inside {place} (the installed package or "
                    "a sources folder); give a folder of your own to save templates into"
                )
        return real

    def refresh(self) -> None:
        """Read the catalog's files again (another editor may have changed them); a catalog
        that no longer loads keeps the last good one and says why."""
        try:
            catalog = load_catalog(self.source_dirs, self.template_dirs)
        except PipelineError as exc:
            raise Conflict(f"the catalog no longer loads: {exc}") from None
        self.catalog = catalog

    # -- reading -------------------------------------------------------------------------------

    def sources(self) -> dict[str, Any]:
        out = []
        for name in sorted(self.catalog.sources):
            src = self.catalog.sources[name]
            out.append(
                {
                    "name": name,
                    "origin": self._origin(src.path, self._builtin_sources),
                    "path": str(src.path),
                    "templates": len(self.catalog.templates_for(name)),
                }
            )
        return {
            "sources": out,
            "writable": self.save_dir is not None,
            "templates_dir": str(self.save_dir) if self.save_dir is not None else None,
        }

    def source_details(self, name: str) -> dict[str, Any]:
        src = self._source(name)
        spec = src.spec
        labels: dict[str, list[str]] = {}
        for field, ftype in spec.features.items():
            if isinstance(ftype, ClassLabel):
                labels[field] = list(ftype.names)
            elif isinstance(ftype, SequenceOfClassLabel):
                labels[field] = list(ftype.sequence.names)
        try:
            rows = [jsonable(e.fields) for e in list(self._all_rows(src).values())[:MAX_ROWS_SHOWN]]
        except PipelineError:  # no sample, or an unreadable one: the spec is still worth showing
            rows = []
        return {
            "name": name,
            "path": str(src.path),
            "spec_yaml": self._spec_text(src),
            "task": spec.task,
            "cluster": spec.cluster,
            "description": spec.description,
            "license": spec.license,
            "features": {f: feature_text(t) for f, t in spec.features.items()},
            "label_names": labels,
            "rows": rows,
            "templates": [
                {"id": t.id, "file": self._file_name(t.path), "origin": self._template_origin(t)}
                for t in self.catalog.templates_for(name)
            ],
        }

    def template(self, source: str, template_id: str) -> dict[str, Any]:
        self._source(source)
        found = [t for t in self.catalog.templates_for(source) if t.id == template_id]
        if not found:
            raise NotFound(f"source {source!r} has no template {template_id!r}")
        template = found[0]
        data = self._read_catalog_file(template.path)
        text = data.decode("utf-8")
        try:
            block = block_text(text, template_id)
        except SpliceError:
            # A flow-style file: show the template, though Save will refuse to edit that file.
            block = yaml.safe_dump(
                template.spec.model_dump(mode="json", exclude_defaults=True),
                sort_keys=False,
                allow_unicode=True,
            )
        if block is None:
            raise NotFound(f"{template.path} no longer holds template {template_id!r}")
        return {
            "source": source,
            "id": template_id,
            "yaml": block,
            "file": self._file_name(template.path),
            "origin": self._template_origin(template),
            "etag": etag_of(data),
        }

    def starter(self, source: str) -> dict[str, Any]:
        """A first template for ``source`` that renders on its sample: its text fields shown,
        its first label (if any) as the answer, with the label names as the choices."""
        src = self._source(source)
        features = src.spec.features
        texts = [f for f, t in features.items() if t == "string"]
        labels = [f for f, t in features.items() if isinstance(t, ClassLabel)]
        taken = {t.id for t in self.catalog.templates_for(source)}
        new_id = "my-template"
        for k in range(2, 1000):
            if new_id not in taken:
                break
            new_id = f"my-template-{k}"
        lines = [f"id: {new_id}", "instruction: |-"]
        if labels:
            label = labels[0]
            shown = texts[:2] or [f for f in features if f != label][:1]
            for field in shown:
                lines.append(f"  {_title(field)}: {_ref(field)}")
            lines += ["", '  Which of these fits best: {{ answer_choices | join(", ") }}?']
            names = features[label]
            assert isinstance(names, ClassLabel)
            choices = ", ".join(_quoted(n.replace("_", " ")) for n in names.names)
            lines.append(f'output: "{{{{ answer_choices[{_expr(label)}] }}}}"')
            lines.append(f"answer_choices: [{choices}]")
            lines += ["metadata:", "  original_task: true", "  choices_in_prompt: true"]
        else:
            target = texts[-1] if texts else next(iter(features))
            shown = [f for f in texts if f != target][:2]
            for field in shown:
                lines.append(f"  {_title(field)}: {_ref(field)}")
            lines += ["", f"  Write the {_title(target).lower()}."]
            lines.append(f'output: "{_ref(target)}"')
            lines += ["metadata:", "  original_task: true"]
        return {"yaml": "\n".join(lines) + "\n", "etag": None}

    # -- preview -------------------------------------------------------------------------------

    def preview(self, source: str, text: str, n: int = 3, seed: int = 0) -> dict[str, Any]:
        """Every form of the edited template on ``n`` sample rows, its lint findings and its
        statistics; a template that does not parse gives ``error`` and nothing else."""
        src = self._source(source)
        if not 1 <= n <= MAX_ROWS_SHOWN:
            raise Invalid(f"n must be from 1 to {MAX_ROWS_SHOWN}, not {n}")
        empty: dict[str, Any] = {"variants": [], "lint": [], "stats": None}
        try:
            spec = parse_template(text)
        except Invalid as exc:
            return {"error": str(exc), "template_id": None, **empty}
        template = Template(spec, source, EDITOR)
        catalog = edited_catalog(self.catalog, template)
        chosen = [t for t in catalog.templates_for(source) if t.id == spec.id]
        try:
            pool = self._pool(source)
        except PipelineError as exc:
            return {"error": str(exc), "template_id": spec.id, **empty}
        renderer = Renderer(src, chosen, preview_recipe(seed, source), pool)
        compiled = renderer.templates[0]
        watch = _Watch()
        variants = self._variants(renderer, compiled, pool[:n], len(pool), watch)
        if watch.timeout is not None:
            # Lint and statistics render hundreds of rows: at the time limit each, minutes.
            example_id, message = watch.timeout
            row = self._pool_rows(source).get(example_id)
            lint = [
                {
                    "severity": "error",
                    "rule": "render_timeout",
                    "message": f"{message}; lint and statistics were not run",
                    "example_id": example_id,
                    "row": jsonable(row.fields) if row is not None else None,
                }
            ]
            return {
                "error": None,
                "template_id": spec.id,
                "variants": variants,
                "lint": lint,
                "stats": None,
            }
        return {
            "error": None,
            "template_id": spec.id,
            "variants": variants,
            "lint": self._lint(src, chosen),
            "stats": self._stats(renderer, compiled, pool[:STATS_ROWS]),
        }

    def _variants(
        self,
        renderer: Renderer,
        compiled: CompiledTemplate,
        queries: Sequence[Example],
        pool_size: int,
        watch: _Watch,
    ) -> list[dict[str, Any]]:
        out = []
        for variant in FORMS:
            problem = variant_problem(renderer, compiled, variant, recipe_shares=True)
            styles: list[Any] = [None]
            if variant == "zero_shot_opt" and problem is None:
                styles += self._styles(renderer, compiled, queries, watch)
            for style in styles:
                records = []
                if problem is None:
                    records = [
                        _record(renderer, e, compiled, variant, style, pool_size, watch)
                        for e in queries
                    ]
                entry = {
                    # One tab per style: "zero_shot_opt:letters" (the plain one draws per row).
                    "variant": variant if style is None else f"{variant}:{style}",
                    "style": style,
                    "available": problem is None,
                    "reason": problem,
                    "records": records,
                }
                # A form that no row comes out in (a choices_in_prompt template asked to hide
                # its options) is one run never makes: say so once, not once per row.
                unmade = [r for r in records if r.get("rule") == "variant_unavailable"]
                if records and len(unmade) == len(records):
                    entry.update(available=False, reason=unmade[0]["error"], records=[])
                out.append(entry)
        return out

    def _styles(
        self,
        renderer: Renderer,
        compiled: CompiledTemplate,
        queries: Sequence[Example],
        watch: _Watch,
    ) -> list[str]:
        """The option styles the template's records may draw (``options.styles_for``), for the
        first row's number of choices and language."""
        n_choices, language = 0, renderer.source.spec.default_language
        if queries:
            language = renderer.prompt_language(compiled, queries[0])
            first = _record(renderer, queries[0], compiled, "zero_shot_opt", None, 0, watch)
            n_choices = len(first.get("answer_choices") or [])
        return list(
            styles_for(
                renderer.recipe.variants.option_styles,
                compiled.template.spec.option_styles,
                n_choices,
                language,
            )
        )

    def _lint(self, src: Source, templates: Sequence[Template]) -> list[dict[str, Any]]:
        findings = lint_source(src, templates, LINT_ROWS)
        findings.sort(key=lambda f: (f.severity != "error", f.rule))
        try:
            rows = self._all_rows(src)
        except PipelineError:
            rows = {}
        return [_finding(f, rows) for f in findings]

    def _stats(
        self,
        renderer: Renderer,
        compiled: CompiledTemplate,
        rows: Sequence[Example],
    ) -> dict[str, Any]:
        """Each row once, zero-shot (inverted for an inverted template), options hidden unless
        the template writes them itself: the answers then read as the choices' own text."""
        spec = compiled.template.spec
        base = "inverted" if spec.inverted else "zero_shot"
        answers: Counter[str] = Counter()
        prompts: set[str] = set()
        prompt_lengths: list[int] = []
        output_lengths: list[int] = []
        for example in rows:
            try:
                draw = renderer.draw(example, compiled)
                draw = dataclasses.replace(
                    draw, base=base, options_shown=draw.options_shown and _writes_choices(spec)
                )
                rendered = renderer.render_with(example, compiled, draw)
            except RenderError as exc:
                if exc.rule == TIMEOUT:
                    break  # the rows left would each take as long: counted as rejects
                continue
            row = to_record(renderer.source, example, rendered)
            syntax = has_template_syntax(example.fields.values())
            if check_record(row, renderer.recipe.limits, syntax) is not None:
                continue
            messages = row["messages"]
            prompt = "\n\n".join(m["content"] for m in messages[:-1])
            target = messages[-1]["content"]
            answers[target] += 1
            prompts.add(prompt)
            prompt_lengths.append(len(prompt))
            output_lengths.append(len(target))
        return {
            "rows": len(rows),
            "records": len(prompt_lengths),
            "rejects": len(rows) - len(prompt_lengths),
            "answers": [[a, c] for a, c in sorted(answers.items(), key=lambda x: (-x[1], x[0]))],
            "distinct_prompts": len(prompts),
            "prompt_lengths": histogram(prompt_lengths),
            "output_lengths": histogram(output_lengths),
        }

    # -- saving --------------------------------------------------------------------------------

    def save(self, source: str, text: str, file: Any, etag: str | None) -> dict[str, Any]:
        """Write the edited template into ``file`` (a name directly inside the save folder):
        its block replaced, or appended under ``templates:``, or a new file; atomically.

        Refused with ``Conflict`` when the file's bytes are not those ``etag`` names (``etag``
        None: the editor loaded no version of it, so the file must not hold this id yet); with
        ``Invalid`` when another file of the catalog defines the id (the catalog would then not
        load) or the file holds another source's templates.
        """
        if self.save_dir is None:
            raise Forbidden(
                "this studio has no templates folder to save into: start it with "
                "`instructmix studio --templates DIR`"
            )
        self._source(source)
        spec = parse_template(text)
        target = self._target(file)
        with self._lock:
            before = _read_regular(target)
            if before is None:
                if etag is not None:
                    raise Conflict(
                        f"{file} no longer exists (moved or deleted since you loaded it); "
                        "nothing was written"
                    )
                new_text = new_file(source, text)
                kept: list[TemplateSpec] = []
            else:
                if etag is not None and etag != etag_of(before):
                    raise Conflict(
                        f"{file} changed on disk since you loaded it; reload it (your text "
                        "stays in the editor) and save again. Nothing was written"
                    )
                old_text = _decoded(before, file)
                old = parse_model(old_text, TemplateFile, file)
                if old.source != source:
                    raise Invalid(
                        f"{file} holds templates of source {old.source!r}, not {source!r}"
                    )
                ids = [t.id for t in old.templates]
                if etag is None and spec.id in ids:
                    raise Conflict(
                        f"{file} already has a template {spec.id!r}: open that one (or give "
                        "this one a new id) so that its text on disk is not lost"
                    )
                try:
                    new_text = put_block(old_text, spec.id, text)
                except SpliceError as exc:
                    raise Invalid(f"{file}: {exc}") from None
                kept = list(old.templates)
            self.refresh()
            for other in self.catalog.templates_for(source):
                if other.id == spec.id and other.path.resolve() != target:
                    raise Invalid(
                        f"template id {spec.id!r} of source {source!r} is already defined in "
                        f"{other.path}: give this one a new id"
                    )
            _check_spliced(new_text, file, kept, spec)
            data = new_text.encode("utf-8")
            mode = stat.S_IMODE(os.stat(target).st_mode) if before is not None else None
            self._write(target, data, before, self._new_file_mode if mode is None else mode)
            self.refresh()
        return {"path": str(target), "etag": etag_of(data)}

    def _target(self, file: Any) -> Path:
        assert self.save_dir is not None
        if not isinstance(file, str) or not _NAME.fullmatch(file):
            raise Forbidden(
                f"{file!r} is not a file name of the templates folder: give a plain name "
                "ending in .yaml or .yml (letters, digits, '.', '_', '-'; no folders)"
            )
        target = self.save_dir / file
        if target.is_symlink():
            raise Forbidden(f"{file} is a symbolic link; the studio writes only regular files")
        if target.resolve().parent != self.save_dir:
            raise Forbidden(f"{file} is not inside {self.save_dir}")
        if os.path.lexists(target) and not target.is_file():
            raise Forbidden(f"{file} is not a regular file")
        return target

    def _write(self, target: Path, data: bytes, before: bytes | None, mode: int) -> None:
        """Temp file in the same folder, fsync, then os.replace over the target, unless its
        bytes changed meanwhile; then fsync the folder so the rename itself is durable."""
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            if _read_regular(target) != before:
                raise Conflict(f"{target.name} changed on disk while saving; nothing was written")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # -- helpers -------------------------------------------------------------------------------

    def _source(self, name: str) -> Source:
        src = self.catalog.sources.get(name)
        if src is None:
            raise NotFound(f"unknown source {name!r}")
        return src

    def _pool_rows(self, source: str) -> dict[str, Example]:
        return {e.example_id: e for e in self._pool(source)}

    def _pool(self, source: str) -> list[Example]:
        """Preview's examples (and few-shot pool), loaded once per source."""
        if source not in self._pools:
            self._pools[source] = sample_examples(self.catalog, source, POOL_ROWS)
        return self._pools[source]

    def _all_rows(self, src: Source) -> dict[str, Example]:
        """Every good sample row by example id (lint's rows, to show the one a finding names)."""
        if src.name not in self._rows:
            self._rows[src.name] = {e.example_id: e for e in load_examples(src)}
        return self._rows[src.name]

    def _spec_text(self, src: Source) -> str:
        """The source file's text; for a file that a link leads out of its folder, the spec as
        the catalog read it (the studio shows no file from outside the folders it was given)."""
        data = _read_regular(src.path) if _in_folder(src.path, src.path.parent) else None
        if data is not None:
            return data.decode("utf-8", "replace")
        return yaml.safe_dump(
            src.spec.model_dump(mode="json", exclude_defaults=True),
            sort_keys=False,
            allow_unicode=True,
        )

    def _read_catalog_file(self, path: Path) -> bytes:
        """A template file of the catalog, which must lie (links resolved) inside the folder
        it was found in: a link in a user's folder does not make the studio read elsewhere."""
        folders = [self._builtin_templates, *self.template_dirs]
        if not any(path.parent.resolve() == d.resolve() for d in folders):
            raise Forbidden(f"{path} is not in a templates folder of this studio")
        if not _in_folder(path, path.parent):
            raise Forbidden(f"{path} resolves to {path.resolve()}, outside its templates folder")
        data = _read_regular(path)
        if data is None:
            raise NotFound(f"{path} no longer exists")
        return data

    def _origin(self, path: Path, builtin: Path) -> str:
        return "builtin" if path.resolve().is_relative_to(builtin) else "user"

    def _template_origin(self, template: Template) -> str:
        return self._origin(template.path, self._builtin_templates)

    def _file_name(self, path: Path) -> str:
        """A file of the save folder by its name (what Save takes), any other by its path."""
        if self.save_dir is not None and path.parent.resolve() == self.save_dir:
            return path.name
        return str(path)


def edited_catalog(catalog: Catalog, template: Template) -> Catalog:
    """``catalog`` with ``template`` in place of its source's template of the same id (or
    added): the catalog the preview renders from."""
    old = catalog.templates_for(template.source)
    ids = [t.id for t in old]
    if template.id in ids:
        new = tuple(template if t.id == template.id else t for t in old)
    else:
        new = (*old, template)
    return dataclasses.replace(catalog, templates={**catalog.templates, template.source: new})


def _record(
    renderer: Renderer,
    example: Example,
    compiled: CompiledTemplate,
    variant: str,
    style: Any,
    pool_size: int,
    watch: _Watch,
) -> dict[str, Any]:
    """One record forced to ``variant`` (and option ``style``), checked by run's validation:
    what ``templates preview --variant`` makes of it, or its reject. After one record ran out
    of time, the others are not tried (each would take as long)."""

    def reject(rule: str, error: str) -> dict[str, Any]:
        return {"example_id": example.example_id, "rule": rule, "error": _clean(error)}

    if watch.timeout is not None:
        return reject(TIMEOUT, f"not rendered: {watch.timeout[1]}")
    try:
        draw = forced_draw(renderer.draw(example, compiled), variant)
        if style is not None:
            draw = dataclasses.replace(draw, style=style)
        rendered = renderer.render_with(example, compiled, draw)
    except RenderError as exc:
        if exc.rule == TIMEOUT:
            watch.timeout = (
                example.example_id,
                f"example {example.example_id}: {_clean(str(exc))}",
            )
        return reject(exc.rule, str(exc))
    problem = unmade_variant(compiled, renderer.recipe, pool_size, variant, rendered.variant)
    if problem is not None:
        return reject("variant_unavailable", problem)
    row = to_record(renderer.source, example, rendered)
    problem_rule = check_record(
        row, renderer.recipe.limits, has_template_syntax(example.fields.values())
    )
    if problem_rule is not None:
        return reject(*problem_rule)
    return {
        "example_id": example.example_id,
        "messages": row["messages"],
        "target": row["messages"][-1]["content"],
        "answer_choices": row["answer_choices"],
        "variant": row["variant"],
    }


@dataclasses.dataclass
class _Watch:
    """What one preview learnt so far: the row (id, message) whose render ran out of time."""

    timeout: tuple[str, str] | None = None


def _finding(finding: Finding, rows: dict[str, Example]) -> dict[str, Any]:
    example = rows.get(finding.example_id) if finding.example_id is not None else None
    return {
        "severity": finding.severity,
        "rule": finding.rule,
        "message": _clean(finding.message),
        "example_id": finding.example_id,
        "row": jsonable(example.fields) if example is not None else None,
    }


def _clean(message: str) -> str:
    return message.replace(f"{EDITOR}: ", "")


def _writes_choices(spec: TemplateSpec) -> bool:
    return spec.metadata.choices_in_prompt


def _read_regular(path: Path) -> bytes | None:
    """The file's bytes, or None when there is none (a link is never followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Forbidden(f"{path.name}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise Forbidden(f"{path.name} is not a regular file")
        return fh.read()


def _decoded(data: bytes, file: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(f"{file}: not UTF-8 text (byte {exc.start})") from None


def _check_spliced(new_text: str, file: str, kept: list[TemplateSpec], spec: TemplateSpec) -> None:
    """The new text must read back as the file's templates with only this one changed."""
    try:
        new = parse_model(new_text, TemplateFile, file)
    except Invalid as exc:
        raise Invalid(f"the template cannot be placed in {file}: {exc}") from None
    ids = [t.id for t in kept]
    expected = list(kept)
    if spec.id in ids:
        expected[ids.index(spec.id)] = spec
    else:
        expected.append(spec)
    if [t.model_dump() for t in new.templates] != [t.model_dump() for t in expected]:
        raise Invalid(
            f"the template cannot be placed in {file} without changing the others (a block "
            "ending in a `|+` scalar, or a `---` in the text?); nothing was written"
        )


def _title(field: str) -> str:
    return field.replace("_", " ").replace("-", " ").strip().capitalize() or field


def _expr(field: str) -> str:
    plain = _IDENTIFIER.fullmatch(field) and field.lower() not in _JINJA_WORDS
    if plain and field not in RESERVED_CONTEXT_NAMES:
        return field
    return f"example[{field!r}]"


def _ref(field: str) -> str:
    return "{{ " + _expr(field) + " }}"


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
