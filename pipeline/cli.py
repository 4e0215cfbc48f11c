"""The ``instructmix`` command line: a thin layer over the public API."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from . import __version__
from .catalog import load_catalog
from .dryrun import dry_run as dry_run_plan
from .errors import CatalogError, PipelineError, os_cause
from .executor import ExecutorName, make_executor
from .export import export_stage, parse_formats, push_to_hub, redact_secrets
from .lint import lint_catalog
from .mix import mix_stage
from .models import KeepMode, Manifest, TemplateFile
from .preview import preview_records
from .progress import NullProgress, Progress, RichProgress
from .promptsource import convert, import_promptsource, read_promptsource
from .rejects import read_rejects, summarize
from .retention import KEEP_MODES
from .run import run_recipe
from .stages import load_stage, render_stage, validate_stage
from .yamlfile import load_model

app = typer.Typer(
    name="instructmix",
    help="Build FLAN-style instruction-tuning mixtures: load, render, validate, mix, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sources_app = typer.Typer(help="Inspect the source catalog.", no_args_is_help=True)
templates_app = typer.Typer(
    help="List, preview, lint and import (promptsource) templates.", no_args_is_help=True
)
recipes_app = typer.Typer(help="Inspect the recipe catalog.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
app.add_typer(templates_app, name="templates")
app.add_typer(recipes_app, name="recipes")

T = TypeVar("T")
DataChoice = Literal["sample", "hub"]

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run folder (created if missing).")]
DataOpt = Annotated[
    str,
    typer.Option(
        "--data", help="'sample': the bundled real samples (offline); 'hub': full Hub datasets."
    ),
]
SourcesOpt = Annotated[
    list[Path] | None,
    typer.Option("--sources", help="Extra folder of source specs (repeatable)."),
]
TemplatesOpt = Annotated[
    list[Path] | None,
    typer.Option("--templates", help="Extra folder of template files (repeatable)."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the run manifest as JSON on stdout.")]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-w",
        help="Worker processes for load, render and validate (default: all cores). The output "
        "is the same for any number.",
    ),
]
ExecutorOpt = Annotated[
    str,
    typer.Option("--executor", help="'local' (processes on this machine) or 'ray' (Ray Data)."),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address", help="Ray cluster address for --executor ray (default: start a local Ray)."
    ),
]
RecipeArg = Annotated[
    str | None,
    typer.Argument(help="Recipe file or catalog recipe name; default: the bundled 'default'."),
]


def _progress(quiet: bool, as_json: bool) -> Progress:
    return NullProgress() if quiet or as_json or not sys.stderr.isatty() else RichProgress()


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except PipelineError as exc:
        _error(str(exc))
        raise typer.Exit(1) from None
    except OSError as exc:
        _error(os_error_line(exc))
        raise typer.Exit(1) from None


def _error(line: str) -> None:
    # Hub and datasets errors can echo a token; no error line leaves with one.
    typer.echo(f"error: {redact_secrets(line)}", err=True)


def os_error_line(exc: OSError) -> str:
    """``path: cause`` for an error the operating system gave (disk full, read-only, gone)."""
    cause = os_cause(exc)
    where = ": ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    return f"{where}: {cause}" if where else cause


def _data(value: str) -> DataChoice:
    if value not in ("sample", "hub"):
        typer.echo(f"error: --data must be 'sample' or 'hub', not {value!r}", err=True)
        raise typer.Exit(2)
    return value  # type: ignore[return-value]


def _report(manifest: Manifest, quiet: bool, as_json: bool, stage: str) -> None:
    if as_json:
        typer.echo(manifest.model_dump_json(indent=2))
        return
    if quiet:
        return
    # Piped output gets a fixed width so the table is never cut to 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(summary_table(manifest, stage))
    rules = rejects_by_rule(manifest)
    if rules:
        rt = Table(title="Rejects by rule")
        rt.add_column("rule")
        rt.add_column("count", justify="right")
        for rule, n in sorted(rules.items(), key=lambda kv: -kv[1]):
            rt.add_row(rule, str(n))
        console.print(rt)
    problems = manifest.check()
    for p in problems:
        console.print(f"[red]accounting: {p}")
    dropped = {
        "duplicates": sum(c.records_deduplicated for c in manifest.sources.values()),
        "contaminated": sum(c.records_decontaminated for c in manifest.sources.values()),
    }
    if "mix" in manifest.stages_done and any(dropped.values()):
        console.print(
            f"mix dropped {dropped['duplicates']} duplicate and {dropped['contaminated']} "
            "contaminated train records (rejects/mix has each one with its reason)"
        )
    conflicting = sum(c.records_conflicting for c in manifest.sources.values())
    if "mix" in manifest.stages_done and conflicting:
        console.print(
            f"{conflicting} selected records share their prompt with a record of another "
            "answer (mixed/conflicts.jsonl; kept: multi-reference data and inverted templates "
            "have them by design)"
        )
    _print_warnings(console, manifest.warnings)
    if "export" in manifest.stages_done:
        console.print(f"dataset: {manifest.export.get('path')}")


def _print_warnings(console: Console, warnings: list[str]) -> None:
    """The manifest's warnings; many of one kind (train rows from evaluation splits, one per
    source) as one line naming the sources, with the card holding each in full."""
    borrowed = [w for w in warnings if "train records come from the dataset's evaluation" in w]
    if len(borrowed) > 3:
        names = ", ".join(w.split(":", 1)[0] for w in borrowed)
        console.print(
            f"[yellow]warning: train records of {len(borrowed)} sources ({escape(names)}) come "
            "from their datasets' dev or test splits; do not report results on those splits "
            "for a model trained on this mixture (the card lists them per source)"
        )
        warnings = [w for w in warnings if w not in borrowed]
    for warning in warnings:
        console.print(f"[yellow]warning: {escape(warning)}")


def rejects_by_rule(manifest: Manifest) -> dict[str, int]:
    out: dict[str, int] = {}
    for counts in manifest.sources.values():
        for rule, n in counts.rejected_by_rule.items():
            out[rule] = out.get(rule, 0) + n
    return out


def summary_table(manifest: Manifest, stage: str) -> Table:
    cols = [
        ("source", "source"),
        ("examples_in", "examples"),
        ("examples_rejected", "ex.rej"),
        ("examples_capped", "capped"),
        ("records_rendered", "records"),
        ("records_rejected", "rec.rej"),
        ("records_accepted", "valid"),
        ("records_deduplicated", "dups"),
        ("records_decontaminated", "contam."),
        ("records_selected", "selected"),
    ]
    table = Table(
        title=f"instructmix {stage}: {manifest.recipe.get('name')}",
        box=box.SIMPLE_HEAD,
        caption="examples in = rejected + capped + exemplar pool + rendered; "
        "records = rejected + valid; valid = dups + contam. + selected + dropped by mix",
    )
    table.add_column("source", no_wrap=True)
    table.add_column("cluster", no_wrap=True)
    for _, title in cols[1:]:
        table.add_column(title, justify="right", no_wrap=True)
    totals: dict[str, int] = {}
    for name, counts in sorted(manifest.sources.items()):
        row = [name, counts.cluster + (" (eval)" if counts.role == "eval" else "")]
        for key, _ in cols[1:]:
            value = getattr(counts, key)
            totals[key] = totals.get(key, 0) + value
            row.append(f"{value:,}")
        table.add_row(*row)
    table.add_row("total", "", *[f"{totals.get(k, 0):,}" for k, _ in cols[1:]], style="bold")
    return table


def plan_table(plan: dict[str, Any]) -> Table:
    table = Table(
        title=f"instructmix run --dry-run: {plan['recipe']}",
        box=box.SIMPLE_HEAD,
        caption="records by split are exact unless the cap binds (then ≈, by share); "
        "rejects, duplicates and contamination are found by the run itself",
    )
    for title in ("source", "cluster", "examples", "capped", "records", "target", "by split",
                  "variants"):  # fmt: skip
        table.add_column(title, justify="left" if title in ("source", "cluster") else "right")
    for name, p in plan["sources"].items():
        exact = "" if p["records_by_split_exact"] else "≈"
        table.add_row(
            name + (" (eval)" if p["role"] == "eval" else ""),
            p["cluster"],
            f"{p['examples_available']:,}",
            f"{p['examples_capped']:,}" + (" (binds)" if p["cap_binds"] else ""),
            f"{p['records_possible']:,}",
            f"{p['records_target']:,}",
            " ".join(f"{s} {exact}{n:,}" for s, n in p["records_by_split"].items()),
            " ".join(f"{v} {n:,}" for v, n in p["variants"].items()),
        )
    totals = " ".join(f"{s} {n:,}" for s, n in plan["splits"].items())
    table.add_row("total", "", "", "", "", "", totals, "", style="bold")
    return table


@app.command()
def run(
    recipe: RecipeArg = None,
    out: OutOpt = Path("output"),
    data: DataOpt = "sample",
    sources: SourcesOpt = None,
    templates: TemplatesOpt = None,
    workers: WorkersOpt = None,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    fresh: Annotated[
        bool,
        typer.Option("--fresh", help="Rebuild from scratch instead of resuming finished work."),
    ] = False,
    max_reject_share: Annotated[
        float,
        typer.Option(
            "--max-reject-share",
            min=0.0,
            max=1.0,
            help="Stop before the mix when a source loses more than this share of its examples "
            "at load, or a template more than this share of its records (a misspelt field "
            "would ship an empty source). 0: never stop.",
        ),
    ] = 0.5,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan (rows per source, cluster, split and variant; the caps that "
            "bind; the eval sources) without rendering or writing OUT. With --json: the plan "
            "as JSON.",
        ),
    ] = False,
    keep: Annotated[
        str,
        typer.Option(
            "--keep",
            help="What OUT keeps of the stages once every stage reading them has run. 'all': "
            "everything (examples, rendered, valid, mixed, dataset). 'resume': drops rendered "
            "after validate and valid after mix; examples (every stage can be redone from "
            "them without the sources) and mixed (export again) stay. 'dataset': only the "
            "dataset; examples go after mix, mixed after export. The manifest, rejects and "
            "mixed/conflicts.jsonl always stay, and the dataset is the same in every mode. A "
            "resume redoes what it needs that was dropped; `export`, `mix`, `validate` and "
            "`render` on a dropped input stop and say so.",
        ),
    ] = "all",
    compression: Annotated[
        str,
        typer.Option(
            "--compression",
            help="Parquet codec of the examples, rendered and valid parts: zstd (level 1), "
            "zstd:N (level 1-22, smaller and slower), lz4, snappy, gzip, brotli or none. The "
            "mixture and the dataset are always zstd; data is the same in any codec.",
        ),
    ] = "zstd",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run every stage: load, render, validate, mix and export into OUT/dataset.

    Resumes: work a previous run of the same recipe and inputs finished in OUT is kept (in
    every --keep mode)."""
    progress = _progress(quiet, as_json)
    if dry_run:
        plan = _guard(
            lambda: dry_run_plan(
                recipe,
                data=_data(data),
                source_dirs=sources or [],
                template_dirs=templates or [],
                progress=progress,
            )
        )
        if as_json:
            typer.echo(json.dumps(plan, indent=2))
        else:
            Console(width=None if sys.stdout.isatty() else 120).print(plan_table(plan))
        return
    manifest = _guard(
        lambda: run_recipe(
            recipe,
            out,
            data=_data(data),
            source_dirs=sources or [],
            template_dirs=templates or [],
            workers=workers,
            executor=_executor_name(executor),
            address=address,
            resume=not fresh,
            progress=progress,
            max_reject_share=max_reject_share,
            keep=_keep_mode(keep),
            compression=compression,
        )
    )
    _report(manifest, quiet, as_json, "run")
    if manifest.storage.dropped and not quiet and not as_json:
        typer.echo(
            f"--keep {manifest.storage.keep}: dropped "
            + ", ".join(f"{name}/" for name in manifest.storage.dropped),
            err=True,
        )


def _keep_mode(value: str) -> KeepMode:
    if value not in KEEP_MODES:
        typer.echo(f"error: --keep must be one of {', '.join(KEEP_MODES)}, not {value!r}", err=True)
        raise typer.Exit(2)
    return value  # type: ignore[return-value]


@app.command()
def load(
    recipe: RecipeArg = None,
    out: OutOpt = Path("output"),
    data: DataOpt = "sample",
    sources: SourcesOpt = None,
    templates: TemplatesOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stage 1: read the recipe's sources into OUT/examples (caps pushed down)."""
    progress = _progress(quiet, as_json)
    manifest = _guard(
        lambda: load_stage(
            Path(recipe) if recipe else None,
            out,
            data=_data(data),
            source_dirs=sources or [],
            template_dirs=templates or [],
            progress=progress,
        )
    )
    _report(manifest, quiet, as_json, "load")


@app.command()
def render(
    out: OutOpt = Path("output"),
    workers: WorkersOpt = None,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stage 2: render OUT/examples with their templates into OUT/rendered."""
    manifest = _on_executor(
        render_stage, out, workers, executor, address, _progress(quiet, as_json)
    )
    _report(manifest, quiet, as_json, "render")


@app.command()
def validate(
    out: OutOpt = Path("output"),
    workers: WorkersOpt = None,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stage 3: check every rendered record; good ones to OUT/valid, others to OUT/rejects."""
    manifest = _on_executor(
        validate_stage, out, workers, executor, address, _progress(quiet, as_json)
    )
    _report(manifest, quiet, as_json, "validate")


def _on_executor(
    stage: Callable[..., Manifest],
    out: Path,
    workers: int | None,
    executor: str,
    address: str | None,
    progress: Progress,
) -> Manifest:
    def go() -> Manifest:
        pool = make_executor(_executor_name(executor), workers, address)
        try:
            return stage(out, executor=pool, progress=progress)
        finally:
            pool.close()

    return _guard(go)


def _executor_name(value: str) -> ExecutorName:
    if value not in ("local", "ray"):
        typer.echo(f"error: --executor must be 'local' or 'ray', not {value!r}", err=True)
        raise typer.Exit(2)
    return value  # type: ignore[return-value]


@app.command()
def mix(out: OutOpt = Path("output"), quiet: QuietOpt = False, as_json: JsonOpt = False) -> None:
    """Stage 4: select each source's share and shuffle into OUT/mixed."""
    manifest = _guard(lambda: mix_stage(out, progress=_progress(quiet, as_json)))
    _report(manifest, quiet, as_json, "mix")


@app.command()
def export(
    out: OutOpt = Path("output"),
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="Folder to write the dataset to (default OUT/dataset), or 'hub'."
        ),
    ] = None,
    repo_id: Annotated[
        str | None, typer.Option("--repo-id", help="Hub dataset repo (user/name) for --to hub.")
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="Create the Hub repo private.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Export into a --to folder that is not an earlier export: what is there is "
            "renamed to FOLDER.bak-N first, never deleted.",
        ),
    ] = False,
    formats: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            "-f",
            help="Layouts to write, each a config of the folder (repeatable, or a comma "
            "list): messages (config 'default', the default), prompt_completion, alpaca, "
            "sharegpt, flan, or all.",
        ),
    ] = None,
    jsonl: Annotated[
        bool,
        typer.Option("--jsonl", help="Write every parquet shard as JSON lines beside it too."),
    ] = False,
    eval_harness: Annotated[
        Path | None,
        typer.Option(
            "--eval-harness",
            help="Instead of the dataset, write the eval split as lm-evaluation-harness tasks "
            "into this folder (run them with lm_eval --include_path DIR).",
        ),
    ] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stage 5: write the Hub-style folder (shards, card, dataset_info.json); --to hub pushes it.

    The export is built beside the target and renamed into place: a failed export leaves the
    previous one as it was, and a folder that is not an earlier export is refused (--force)."""
    if eval_harness is not None:
        _export_eval_harness(out, eval_harness, force, quiet, as_json)
        return
    # Without --format (or --jsonl), the recipe's export.formats (export.jsonl) decide.
    chosen = _guard(lambda: parse_formats(formats)) if formats else None
    progress = _progress(quiet, as_json)

    def stage(target: Path | None) -> Manifest:
        return export_stage(
            out, to=target, force=force, formats=chosen, jsonl=jsonl or None, progress=progress
        )

    if to == "hub":
        if not repo_id:
            typer.echo("error: --to hub needs --repo-id USER/NAME", err=True)
            raise typer.Exit(2)
        manifest = _guard(lambda: stage(None))
        url = _guard(lambda: push_to_hub(Path(manifest.export["path"]), repo_id, private=private))
        if not quiet and not as_json:
            typer.echo(f"pushed to {url}", err=True)
    else:
        manifest = _guard(lambda: stage(Path(to) if to else None))
    if manifest.export.get("moved_aside") and not quiet and not as_json:
        typer.echo(f"moved what was at the target to {manifest.export['moved_aside']}", err=True)
    _report(manifest, quiet, as_json, "export")


def _export_eval_harness(out: Path, target: Path, force: bool, quiet: bool, as_json: bool) -> None:
    # Imported here: the lm-eval export is optional to the dataset export and its tests.
    from .eval_harness import write_eval_harness

    written = _guard(lambda: write_eval_harness(out, target, force=force))
    if as_json:
        typer.echo(json.dumps([str(p) for p in written], indent=2))
    elif not quiet:
        typer.echo(f"wrote {len(written)} files for lm-evaluation-harness into {target}", err=True)


def _catalog(sources: list[Path] | None, templates: list[Path] | None) -> Any:
    return _guard(lambda: load_catalog(sources or [], templates or []))


@app.command()
def rejects(
    out: OutOpt = Path("output"),
    source: Annotated[str | None, typer.Option("--source", help="Only this source.")] = None,
    rule: Annotated[str | None, typer.Option("--rule", help="Only this rule.")] = None,
    n: Annotated[int, typer.Option("-n", help="Show this many rejects after the summary.")] = 5,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print every matching reject as a JSON list on stdout (stage, source, split, "
            "example_id, template_id, rule, message, locator).",
        ),
    ] = False,
) -> None:
    """Why examples and records were left out: counts by stage, source and rule, then examples."""
    table = _guard(lambda: read_rejects(out, source, rule))
    if as_json:
        typer.echo(json.dumps(table.to_dicts(), indent=2, ensure_ascii=False))
        return
    console = Console(width=None if sys.stdout.isatty() else 120)
    summary = Table(title=f"rejects in {out}: {table.height}", box=box.SIMPLE_HEAD)
    for col in ("stage", "source", "rule", "count"):
        summary.add_column(col, justify="right" if col == "count" else "left")
    for row in summarize(table).iter_rows(named=True):
        summary.add_row(row["stage"], row["source"], row["rule"], f"{row['count']:,}")
    console.print(summary)
    for row in table.head(n).iter_rows(named=True):
        console.print(
            f"[bold]{row['rule']}[/bold] {escape(row['locator'])}: {escape(row['message'])}"
        )


@sources_app.command("list")
def sources_list(
    sources: SourcesOpt = None,
    templates: TemplatesOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the sources as a JSON list on stdout: {name, cluster, task, license, "
            "hub, templates} each.",
        ),
    ] = False,
) -> None:
    """List every source with its cluster, licence and template count."""
    catalog = _catalog(sources, templates)
    rows = [
        {
            "name": s.name,
            "cluster": s.spec.cluster,
            "task": s.spec.task,
            "license": s.spec.license,
            "hub": s.spec.hub.id if s.spec.hub else None,
            "templates": len(catalog.templates_for(s.name)),
        }
        for s in sorted(catalog.sources.values(), key=lambda s: s.name)
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="sources")
    for col in ("name", "cluster", "task", "license", "hub", "templates"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            *(str(r[c]) for c in ("name", "cluster", "task", "license", "hub", "templates"))
        )
    Console().print(table)


@sources_app.command("show")
def sources_show(
    name: Annotated[str, typer.Argument(help="Source name.")],
    sources: SourcesOpt = None,
    templates: TemplatesOpt = None,
) -> None:
    """Show one source spec (as loaded, with defaults) and where it came from."""
    catalog = _catalog(sources, templates)
    src = _guard(lambda: catalog.source(name))
    payload = {
        "path": str(src.path),
        **src.spec.model_dump(mode="json"),
        "templates": [t.id for t in catalog.templates_for(name)],
    }
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))


@templates_app.command("list")
def templates_list(
    source: Annotated[str | None, typer.Argument(help="Only this source's templates.")] = None,
    sources: SourcesOpt = None,
    templates: TemplatesOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the templates as a JSON list on stdout: {source, id, inverted, "
            "choices, file} each.",
        ),
    ] = False,
) -> None:
    """List templates per source with their flags."""
    catalog = _catalog(sources, templates)
    names = [source] if source else sorted(catalog.templates)
    if source:
        _guard(lambda: catalog.source(source))
    rows = [
        {
            "source": n,
            "cluster": catalog.source(n).spec.cluster if n in catalog.sources else "",
            "id": t.id,
            "inverted": t.spec.inverted,
            "cot": t.spec.cot,
            "choices": t.spec.answer_choices is not None,
            "languages": sorted({*t.spec.metadata.languages, *t.spec.translations}),
            "file": str(t.path),
        }
        for n in names
        for t in catalog.templates_for(n)
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="templates")
    for col in ("source", "cluster", "id", "inverted", "cot", "choices", "languages"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["source"], r["cluster"], r["id"], str(r["inverted"]), str(r["cot"]),
            str(r["choices"]), ", ".join(r["languages"]),
        )  # fmt: skip
    n_sources = len({r["source"] for r in rows})
    n_clusters = len({r["cluster"] for r in rows})
    table.caption = f"{len(rows)} templates, {n_sources} sources, {n_clusters} clusters"
    Console().print(table)


LintRecipeOpt = Annotated[
    str | None,
    typer.Option(
        "--recipe",
        help="Recipe file or catalog recipe name: use its variants, option styles, few-shot "
        "settings, limits, system prompt and catalog folders, as run does.",
    ),
]


@templates_app.command("preview")
def templates_preview(
    source: Annotated[str, typer.Argument(help="Source whose templates to render.")],
    template: Annotated[
        str | None, typer.Option("--template", "-t", help="Only this template id.")
    ] = None,
    n: Annotated[int, typer.Option("-n", help="How many sample examples to render.")] = 2,
    variant: Annotated[
        str | None,
        typer.Option(
            "--variant",
            help="Force a form: zero_shot_opt, zero_shot_noopt, few_shot_opt, few_shot_noopt, "
            "cot, inverted. A template that cannot take it is left out (named on stderr); an "
            "error if it is the -t template or no template can. Default: run's own draw.",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed for the draws (default 0; with --recipe: its seed)."),
    ] = None,
    recipe: LintRecipeOpt = None,
    sources: SourcesOpt = None,
    templates: TemplatesOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print a JSON list on stdout: each record as run exports it (with its "
            "out_split under --recipe), or {template_id, example_id, stage, rule, error} for "
            "one run would reject.",
        ),
    ] = False,
) -> None:
    """Render real sample examples with a source's templates, to read in the terminal.

    With --recipe: the examples that recipe loads, drawn as its run draws them (variants,
    option styles, few-shot pool and settings, limits, system prompt, templates per example),
    and checked by run's validation: what run would make of them."""
    catalog = None if recipe else _catalog(sources, templates)
    skipped: list[str] = []
    records = _guard(
        lambda: preview_records(
            catalog,
            source,
            template,
            n,
            variant,
            seed,
            recipe=recipe,
            source_dirs=sources or [],
            template_dirs=templates or [],
            skipped=skipped,
        )
    )
    for line in skipped:
        typer.echo(f"left out: {line}", err=True)
    if as_json:
        typer.echo(json.dumps(records, indent=2, ensure_ascii=False))
        return
    console = Console()
    for rec in records:
        if "error" in rec:
            console.print(
                Panel(
                    rec["error"],
                    title=f"{rec['template_id']}  (reject: {rec['rule']})",
                    border_style="red",
                )
            )
            continue
        body = "\n\n".join(
            f"[bold]{m['role']}[/bold]\n{escape(m['content'])}" for m in rec["messages"]
        )
        title = f"{rec['template_id']}  ·  {rec['variant']}  ·  example {rec['example_id']}"
        console.print(Panel(body, title=title, border_style="cyan"))


@templates_app.command("lint")
def templates_lint(
    source: Annotated[
        str | None,
        typer.Argument(help="Only this source (default: all; with --recipe: the recipe's)."),
    ] = None,
    max_examples: Annotated[
        int | None,
        typer.Option("--max-examples", help="Check at most this many sample rows per source."),
    ] = None,
    recipe: LintRecipeOpt = None,
    sources: SourcesOpt = None,
    templates: TemplatesOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the findings as a JSON list on stdout: {severity, rule, source, "
            "template_id, file, message, example_id} each.",
        ),
    ] = False,
) -> None:
    """Check every template on every sample example; exit 1 if any error is found.

    With --recipe: in the forms that recipe draws (options hidden/shown, chain-of-thought,
    its option styles, limits and system prompt), so a template it renders cleanly passes."""
    names: list[str] | None
    if recipe:
        catalog, lint_recipe, names = _guard(
            lambda: _lint_recipe(recipe, source, sources or [], templates or [])
        )
    else:
        catalog, lint_recipe = _catalog(sources, templates), None
        names = [source] if source else None
    findings = _guard(
        lambda: lint_catalog(catalog, names, max_examples=max_examples, recipe=lint_recipe)
    )
    errors = [f for f in findings if f.severity == "error"]
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(f) for f in findings], indent=2, default=str))
    else:
        for finding in findings:
            typer.echo(str(finding))
        typer.echo(
            f"{len(errors)} error(s), {len(findings) - len(errors)} warning(s) in "
            f"{len(catalog.templates) if names is None else len(names)} source(s)",
            err=True,
        )
    if errors:
        raise typer.Exit(1)


def _lint_recipe(
    recipe: str, source: str | None, source_dirs: list[Path], template_dirs: list[Path]
) -> tuple[Any, Any, list[str]]:
    """(catalog, recipe, sources to lint) for ``lint --recipe``, resolved as run resolves it."""
    from .stages import prepare

    prepared = prepare(Path(recipe), source_dirs=source_dirs, template_dirs=template_dirs)
    built = sorted(prepared.members)
    if source is not None and source not in prepared.members:
        raise CatalogError(
            f"recipe {prepared.recipe.name!r} does not build source {source!r} (it builds: "
            f"{', '.join(built) or 'none'})"
        )
    names = [source] if source else [n for n in built if prepared.catalog.templates_for(n)]
    return prepared.catalog, prepared.recipe, names


@templates_app.command("import-promptsource")
def templates_import_promptsource(
    path: Annotated[Path, typer.Argument(help="promptsource templates.yaml, or its folder.")],
    source: Annotated[str, typer.Option("--source", help="Our source the templates are for.")],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Template file, or folder that gets SOURCE.yaml."),
    ] = Path("templates"),
    prefix: Annotated[
        str, typer.Option("--prefix", help="Prefix for the imported template ids.")
    ] = "",
    sources: SourcesOpt = None,
    templates: TemplatesOpt = None,
) -> None:
    """Convert promptsource templates into a template file that renders identically."""
    catalog = _catalog(sources, templates)
    _guard(lambda: catalog.source(source))
    taken = {t.id for t in catalog.templates_for(source)}

    def go() -> tuple[Path, list[Any]]:
        written = import_promptsource(path, source, out, id_prefix=prefix, reserved_ids=taken)
        return written, convert(read_promptsource(path)).skipped

    written, skipped = _guard(go)
    kept = load_model(written, TemplateFile).templates
    typer.echo(f"wrote {len(kept)} template(s) for {source!r} to {written}")
    for s in skipped:
        typer.echo(f"left out {s.name!r}: {s.reason}", err=True)


@recipes_app.command("list")
def recipes_list(
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print a JSON object on stdout: recipe name -> recipe file."),
    ] = False,
) -> None:
    """List the bundled recipes."""
    catalog = _catalog(None, None)
    rows = {name: str(path) for name, path in sorted(catalog.recipes.items())}
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for name, path in rows.items():
        typer.echo(f"{name}\t{path}")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"instructmix {__version__}")
        raise typer.Exit()


@app.command()
def studio(
    sources: SourcesOpt = None,
    templates: Annotated[
        list[Path] | None,
        typer.Option(
            "--templates",
            help="Folder of your template files (repeatable); Save writes into the first. "
            "Without one, the studio previews and lints but does not save.",
        ),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on (0: any free port).")
    ] = 8765,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (default: this machine only).")
    ] = "127.0.0.1",
) -> None:
    """Write, preview and lint templates in the browser, live, on real sample rows.

    Serves a local page (its address is printed) until Ctrl-C. Every record is rendered as
    `run` renders it, in the same sandbox; the server reads and writes only inside the
    folders it is given and refuses requests from other web pages."""
    from .studio import serve  # starlette and uvicorn: this command's needs only

    _guard(lambda: serve(sources or [], templates or [], port, host))


@app.callback()
def _main(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """instructmix command line."""


def main() -> None:
    """The console script: every failure ends in one line on stderr and a non-zero exit; the
    traceback of an unexpected one is shown only with INSTRUCTMIX_TRACEBACK=1."""
    try:
        app()
    except PipelineError as exc:
        _error(str(exc))
        sys.exit(1)
    except OSError as exc:
        _error(os_error_line(exc))
        sys.exit(1)
    except Exception as exc:
        if os.environ.get("INSTRUCTMIX_TRACEBACK"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        _error(
            f"unexpected {type(exc).__name__}: {first} (a bug: please report it; "
            "INSTRUCTMIX_TRACEBACK=1 shows the traceback)"
        )
        sys.exit(1)
