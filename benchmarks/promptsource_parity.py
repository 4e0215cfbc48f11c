"""Parity check: promptsource's own ``Template.apply`` against our import of the same templates.

For every promptsource dataset whose bundled sample we ship, this loads promptsource's templates
(from the installed package, through ``promptsource.templates.DatasetTemplates``), imports the
same ``templates.yaml`` with ``pipeline.promptsource``, and renders every template that draws no
random choice on the sample rows (already mapped to the Hub's features by our loader): once with
promptsource, once with ``pipeline.render_one`` (zero-shot, no options block). It prints, per
dataset, the templates compared, examples compared, exact matches and mismatches (with the first
difference), then exits 1 if anything differed, 2 if promptsource cannot be imported, else 0.

    python benchmarks/promptsource_parity.py [--rows N]

Installing promptsource: its last release (0.2.3) declares Python < 3.10 and pins streamlit
0.82, but ``promptsource.templates`` itself only needs jinja2, pyyaml, pandas and
``pkg_resources``::

    python3 -m venv /tmp/psvenv
    /tmp/psvenv/bin/pip install --no-deps --ignore-requires-python promptsource==0.2.3
    /tmp/psvenv/bin/pip install jinja2 pyyaml pandas setuptools -e .
    /tmp/psvenv/bin/python benchmarks/promptsource_parity.py

Only ``promptsource.templates`` is imported (never its streamlit app). Where ``pkg_resources``
(gone from recent setuptools) or ``pandas`` (used only by ``get_templates_data_frame``) is
missing, a stub module stands in for it; the script says so when it does.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Our source name -> promptsource (dataset, subset) where the Hub id's last part and config do
# not give it (promptsource has e2e_nlg_cleaned, whose fields are tuetschek/e2e_nlg's).
PROMPTSOURCE_KEYS: dict[str, tuple[str, str | None]] = {
    "e2e_nlg": ("e2e_nlg_cleaned", None),
}


def _stub_missing() -> list[str]:
    stubbed = []
    if importlib.util.find_spec("pkg_resources") is None:
        spec = importlib.util.find_spec("promptsource")
        base = Path(next(iter(spec.submodule_search_locations or []))) if spec else Path(".")

        def resource_filename(package: str, resource: str) -> str:
            return str(base / resource)

        stub = types.ModuleType("pkg_resources")
        stub.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = stub
        stubbed.append("pkg_resources")
    if importlib.util.find_spec("pandas") is None:
        sys.modules["pandas"] = types.ModuleType("pandas")
        stubbed.append("pandas")
    return stubbed


@dataclass
class Result:
    dataset: str
    templates: int = 0
    random_templates: int = 0
    skipped_import: int = 0
    examples: int = 0
    matches: int = 0
    mismatches: int = 0
    first_diff: list[str] = field(default_factory=list)
    per_template: dict[str, int] = field(default_factory=dict)


def _first_diff(a: str, b: str) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    lo = max(0, i - 40)
    return f"at char {i}: promptsource {a[lo : i + 40]!r} vs ours {b[lo : i + 40]!r}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=0, help="rows per source (0: all)")
    args = parser.parse_args(argv)

    stubbed = _stub_missing()
    try:
        from promptsource import templates as ps
    except ImportError as exc:
        print(f"SKIP: promptsource.templates cannot be imported ({exc}); see the docstring.")
        return 2
    if stubbed:
        print(f"note: stubbed {', '.join(stubbed)} (not needed by Template.apply)")
    version = "unknown"
    try:
        from importlib.metadata import version as _version

        version = _version("promptsource")
    except Exception:
        pass
    print(f"promptsource {version} from {Path(ps.__file__).parent}")

    import pipeline
    from pipeline.catalog import Template
    from pipeline.load import Example, iter_rows, open_source
    from pipeline.promptsource import read_promptsource, to_template_file, uses_randomness
    from pipeline.render import RenderError

    catalog = pipeline.load_catalog()
    available = set(ps.TemplateCollection().keys)
    results: list[Result] = []
    for name, source in sorted(catalog.sources.items()):
        hub = source.spec.hub
        key = PROMPTSOURCE_KEYS.get(name, (hub.id.split("/")[-1], hub.config))
        if key not in available and (key[0], None) in available:
            key = (key[0], None)
        if key not in available or source.spec.sample is None:
            print(f"- {name}: no promptsource templates for {key[0]}/{key[1] or '-'}")
            continue
        dataset_templates = ps.DatasetTemplates(*key)
        label = key[0] + (f"/{key[1]}" if key[1] else "")
        res = Result(f"{name} <- {label}")
        ours = to_template_file(read_promptsource(Path(dataset_templates.yaml_path)), name)
        by_name = {spec.name: spec for spec in ours.templates}
        examples: list[Example] = []
        for split_data in open_source(source, "sample"):
            for batch in iter_rows(source, split_data, "sample"):
                examples += [e for e in batch if isinstance(e, Example)]
        if args.rows:
            examples = examples[: args.rows]
        for ps_template in sorted(dataset_templates.templates.values(), key=lambda t: t.name):
            res.templates += 1
            if uses_randomness(ps_template.jinja, ps_template.answer_choices):
                res.random_templates += 1
                continue
            spec = by_name.get(ps_template.name)
            if spec is None:
                res.skipped_import += 1
                continue
            template = Template(spec, name, Path(dataset_templates.yaml_path))
            bad = 0
            for example in examples:
                res.examples += 1
                parts = ps_template.apply(dict(example.fields))
                want = (parts[0], parts[1] if len(parts) > 1 else "")
                try:
                    record = pipeline.render_one(
                        source,
                        template,
                        example.fields,
                        variant="zero_shot_noopt",
                        example_id=example.example_id,
                    )
                    got = (record["messages"][0]["content"], record["messages"][1]["content"])
                except RenderError as exc:
                    got = (f"<RenderError {exc.rule}: {exc}>", "")
                if got == want and len(parts) <= 2:
                    res.matches += 1
                    continue
                res.mismatches += 1
                bad += 1
                if not res.first_diff:
                    part = 0 if got[0] != want[0] else 1
                    res.first_diff = [
                        f"template {ps_template.name!r}, example {example.example_id} "
                        f"({'prompt' if part == 0 else 'target'}, {len(parts)} parts)",
                        _first_diff(want[part], got[part]),
                    ]
            res.per_template[ps_template.name] = bad
        results.append(res)

    print()
    header = f"{'dataset':<40} {'tmpl':>4} {'rand':>4} {'cmp':>4} {'examples':>8} "
    print(header + f"{'match':>8} {'mismatch':>8}")
    total_mismatch = 0
    for r in results:
        compared = r.templates - r.random_templates - r.skipped_import
        print(
            f"{r.dataset:<40} {r.templates:>4} {r.random_templates:>4} {compared:>4} "
            f"{r.examples:>8} {r.matches:>8} {r.mismatches:>8}"
        )
        if r.skipped_import:
            print(f"    {r.skipped_import} template(s) left out by the import")
        if r.mismatches:
            worst = {k: v for k, v in r.per_template.items() if v}
            print(f"    mismatching templates: {worst}")
            for line in r.first_diff:
                print(f"    first diff: {line}")
        total_mismatch += r.mismatches
    total = sum(r.examples for r in results)
    print(
        f"\ntotal: {total} renders compared, {total - total_mismatch} exact, "
        f"{total_mismatch} differ"
    )
    return 1 if total_mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
