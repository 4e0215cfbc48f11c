"""The catalog: source specs, template files and recipes, built-in and the user's own.

Nothing is registered at import time; a ``Catalog`` is a plain value built from folders, so two
catalogs (say, a test's and the built-in one) never interfere.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from .errors import CatalogError
from .models import Manifest, Recipe, SourceSpec, TemplateFile, TemplateSpec
from .yamlfile import load_model


def builtin_root() -> Path:
    """Where the shipped catalog lives: inside the installed package, or the source checkout."""
    here = Path(__file__).resolve().parent
    for root in (here / "_catalog", here.parent):
        if (root / "sources").is_dir() and (root / "recipes").is_dir():
            return root
    raise CatalogError(f"built-in catalog not found next to {here}; reinstall instructmix")


@dataclass(frozen=True)
class Source:
    spec: SourceSpec
    path: Path

    @property
    def name(self) -> str:
        return self.spec.name

    def sample_path(self) -> Path:
        """The sample's first (with ``sample.file``, its only) file; see ``sample_paths``."""
        return self.sample_paths()[0]

    def sample_paths(self) -> list[Path]:
        """The sample's files, in order: each next to the spec, or in the ``data/`` folder
        beside ``sources/``.

        Each must be a regular file, and (after every symbolic link is resolved) inside the
        folder it was found in, unless the spec sets ``sample.allow_outside_catalog``: a catalog
        from elsewhere could otherwise link ``data/users.tsv`` to ``/etc/passwd`` and have it
        rendered into the export. The folder the user named (the spec's folder, and the catalog
        folder above it) is trusted as named; only what lies below it is resolved.
        """
        sample = self.spec.sample
        if sample is None:
            raise CatalogError(f"{self.path}: source {self.name!r} has no bundled sample")
        if sample.files is None:
            return [self._sample_file(sample.entries[0].file, "sample.file")]
        return [
            self._sample_file(entry.file, f"sample.files[{i}].file")
            for i, entry in enumerate(sample.files)
        ]

    def _sample_file(self, rel: str, key: str) -> Path:
        sample = self.spec.sample
        assert sample is not None
        spec_dir = self.path.parent
        for base, root in (
            (spec_dir, spec_dir.resolve()),
            (spec_dir.parent / "data", spec_dir.parent.resolve() / "data"),
        ):
            candidate = base / rel
            if not os.path.lexists(candidate):
                continue
            where = f"{self.path}: {key}: {candidate}"
            try:
                real = candidate.resolve()
            except (OSError, RuntimeError) as exc:  # a loop of links (RuntimeError before 3.13)
                raise CatalogError(f"{where} cannot be resolved: {exc}") from None
            if not sample.allow_outside_catalog and not real.is_relative_to(root):
                raise CatalogError(
                    f"{where} resolves to {real}, outside the catalog folder {root} "
                    "(set sample.allow_outside_catalog: true to read it anyway)"
                )
            kind = file_kind(real)
            if kind != "file":
                raise CatalogError(f"{where} is {kind}, not a regular file")
            return candidate
        raise CatalogError(
            f"{self.path}: {key} {rel!r} not found in {self.path.parent} "
            f"or {self.path.parent.parent / 'data'}"
        )


def file_kind(path: Path) -> str:
    """'file' for a regular file, else what it is (in words, for an error message)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a symbolic link to a missing file"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if stat.S_ISREG(mode):
        return "file"
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


@dataclass(frozen=True)
class Template:
    spec: TemplateSpec
    source: str
    path: Path

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass(frozen=True)
class Catalog:
    sources: dict[str, Source] = field(default_factory=dict)
    templates: dict[str, tuple[Template, ...]] = field(default_factory=dict)
    recipes: dict[str, Path] = field(default_factory=dict)

    def source(self, name: str) -> Source:
        if name not in self.sources:
            known = ", ".join(sorted(self.sources)) or "none"
            raise CatalogError(f"unknown source {name!r} (known: {known})")
        return self.sources[name]

    def templates_for(self, name: str) -> tuple[Template, ...]:
        return self.templates.get(name, ())

    def clusters(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for src in sorted(self.sources.values(), key=lambda s: s.name):
            out.setdefault(src.spec.cluster, []).append(src.name)
        return out

    def recipe_path(self, name_or_path: str | Path) -> Path:
        path = Path(name_or_path)
        if path.suffix in {".yaml", ".yml"} or path.exists():
            if not path.is_file():
                raise CatalogError(f"{path}: no such recipe file")
            return path
        if str(name_or_path) not in self.recipes:
            known = ", ".join(sorted(self.recipes)) or "none"
            raise CatalogError(f"unknown recipe {name_or_path!r} (known: {known})")
        return self.recipes[str(name_or_path)]


def load_catalog(
    source_dirs: Sequence[Path] = (),
    template_dirs: Sequence[Path] = (),
    recipe_dirs: Sequence[Path] = (),
    *,
    builtin: bool = True,
) -> Catalog:
    """Read every source, template and recipe file; user folders add to the built-in ones."""
    roots = [builtin_root()] if builtin else []
    src_dirs = [r / "sources" for r in roots] + [Path(d) for d in source_dirs]
    tpl_dirs = [r / "templates" for r in roots] + [Path(d) for d in template_dirs]
    rec_dirs = [r / "recipes" for r in roots] + [Path(d) for d in recipe_dirs]

    sources: dict[str, Source] = {}
    for path in _yaml_files(src_dirs):
        spec = load_model(path, SourceSpec)
        if spec.name in sources:
            raise CatalogError(
                f"{path}: source {spec.name!r} is already defined in {sources[spec.name].path}"
            )
        sources[spec.name] = Source(spec, path)

    templates: dict[str, list[Template]] = {}
    for path in _yaml_files(tpl_dirs):
        tfile = load_model(path, TemplateFile)
        if tfile.source not in sources:
            raise CatalogError(f"{path}: templates for unknown source {tfile.source!r}")
        existing = templates.setdefault(tfile.source, [])
        taken = {t.id: t.path for t in existing}
        for tspec in tfile.templates:
            if tspec.id in taken:
                raise CatalogError(
                    f"{path}: template id {tspec.id!r} of source {tfile.source!r} "
                    f"is already defined in {taken[tspec.id]}"
                )
            existing.append(Template(tspec, tfile.source, path))

    recipes = {p.stem: p for p in _yaml_files(rec_dirs)}
    return Catalog(sources, {k: tuple(v) for k, v in templates.items()}, recipes)


def _yaml_files(dirs: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        if not d.is_dir():
            raise CatalogError(f"{d}: catalog folder does not exist")
        files.extend(sorted([*d.glob("*.yaml"), *d.glob("*.yml")]))
    return files


def load_recipe(path: Path) -> Recipe:
    return load_model(path, Recipe)


def catalog_for_recipe(source_dirs: Sequence[Path], template_dirs: Sequence[Path]) -> Catalog:
    """The built-in catalog plus the user's folders (each read once, in order)."""
    return load_catalog(_dedup(source_dirs), _dedup(template_dirs))


def _dedup(paths: Iterable[Path]) -> list[Path]:
    seen: dict[Path, None] = {}
    for p in paths:
        seen.setdefault(Path(p).resolve(), None)
    return list(seen)


def recipe_context(manifest: Manifest) -> tuple[Recipe, Catalog]:
    """Rebuild the recipe and catalog a run folder was loaded with."""
    try:
        recipe = Recipe.model_validate(manifest.recipe)
    except ValidationError as exc:
        # A folder from an older version (whose recipe held a number now out of range, or an
        # `.inf` stored as null) or a hand-edited manifest: one line, not a traceback.
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "(top level)"
        raise CatalogError(
            f"{manifest.recipe_path or 'manifest.json'}: the run folder's recipe is not valid "
            f"({field}: {error['msg']}); run it again from load (instructmix run --fresh)"
        ) from None
    catalog = catalog_for_recipe(
        [Path(p) for p in manifest.catalog_dirs.get("sources", [])],
        [Path(p) for p in manifest.catalog_dirs.get("templates", [])],
    )
    return recipe, catalog
