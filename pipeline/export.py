"""Export: the mixture as a Hub-style dataset folder, and optionally pushed to the Hub.

    dataset/data/train-00000-of-00002.parquet   `messages` + provenance columns
    dataset/README.md                           dataset card with the Hub's YAML header
    dataset/dataset_info.json                   LLaMA-Factory entries (sharegpt, role/content)

``datasets.load_dataset(folder)`` reads the folder the way the Hub would.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from .catalog import Catalog, recipe_context
from .errors import PipelineError
from .models import Manifest, Recipe
from .progress import NullProgress, Progress
from .runfolder import RECORD_SCHEMA, ParquetSink, RowGroups, RunFolder, atomic_text, read_batches

LICENSE_IDS = {
    "CC BY 4.0": "cc-by-4.0",
    "CC BY-SA 4.0": "cc-by-sa-4.0",
    "CC BY-SA 3.0": "cc-by-sa-3.0",
    "MIT": "mit",
    "Apache-2.0": "apache-2.0",
}


def export_stage(
    out: Path, *, to: Path | None = None, progress: Progress | None = None
) -> Manifest:
    """Write the Hub-style folder (default ``<out>/dataset``) from the run's mixture."""
    progress = progress or NullProgress()
    folder = RunFolder(out)
    with folder.lock():
        started = time.perf_counter()
        manifest = folder.read_manifest(needs="mix")
        folder.remove_temporaries()
        recipe, catalog = recipe_context(manifest)
        target = Path(to) if to is not None else folder.dataset
        data_dir = target / "data"
        if data_dir.exists():
            # Old shards with another shard count would be read back as part of the dataset.
            shutil.rmtree(data_dir)
        files: dict[str, list[str]] = {}
        variants = Counter[str]()
        for split in manifest.splits:
            column = pq.read_table(folder.mixed(split), columns=["variant"]).column("variant")
            for item in pc.value_counts(column).to_pylist():
                variants[item["values"]] += item["counts"]
        with progress.task("export", sum(manifest.splits.values())) as advance:
            for split, rows in manifest.splits.items():
                files[split] = _write_shards(
                    folder.mixed(split), data_dir, split, rows, recipe, advance
                )
        with atomic_text(target / "README.md") as fh:
            sizes = {
                split: sum((target / name).stat().st_size for name in names)
                for split, names in files.items()
            }
            fh.write(dataset_card(manifest, recipe, catalog, files, variants, sizes))
        with atomic_text(target / "dataset_info.json") as fh:
            fh.write(json.dumps(llamafactory_info(recipe.name, files), indent=2) + "\n")
        manifest.export = {"path": str(target.resolve()), "files": files}
        if "export" not in manifest.stages_done:
            manifest.stages_done = [*manifest.stages_done, "export"]
        manifest.timings_s["export"] = round(time.perf_counter() - started, 3)
        folder.write_manifest(manifest)
        return manifest


def _write_shards(
    src: Path, data_dir: Path, split: str, rows: int, recipe: Recipe, advance: Any
) -> list[str]:
    """Stream the mixture into shards of ``shard_rows`` rows, in fixed-size row groups."""
    shard_rows = recipe.export.shard_rows
    n_shards = max(1, math.ceil(rows / shard_rows))
    schema = _schema_with_features()
    names = [f"data/{split}-{i:05d}-of-{n_shards:05d}.parquet" for i in range(n_shards)]
    batches = read_batches(src, batch_rows=recipe.export.row_group_rows)
    pending: pa.Table = schema.empty_table()
    for i, name in enumerate(names):
        with ParquetSink(data_dir / Path(name).name, schema, recipe.export.row_group_rows) as sink:
            groups = RowGroups(sink, recipe.export.row_group_rows)
            left = min(shard_rows, rows - i * shard_rows)
            while left > 0:
                if pending.num_rows == 0:
                    batch = next(batches)
                    pending = pa.Table.from_batches([batch]).cast(schema)
                take = pending.slice(0, left)
                groups.add(take)
                left -= take.num_rows
                pending = pending.slice(take.num_rows)
                advance(take.num_rows)
            groups.close()
    return names


def _schema_with_features() -> pa.Schema:
    # The `huggingface` metadata fixes the feature types datasets reports (e.g. messages as a
    # list of {role, content}) instead of leaving them to inference from the first shard.
    features = {
        "id": _value(),
        "messages": {"feature": {"role": _value(), "content": _value()}, "_type": "List"},
        "source": _value(),
        "task": _value(),
        "cluster": _value(),
        "template_id": _value(),
        "variant": _value(),
        "answer_choices": {"feature": _value(), "_type": "List"},
        "example_id": _value(),
        "split": _value(),
        "language": _value(),
        "license": _value(),
    }
    meta = {"info": {"features": features}}
    return RECORD_SCHEMA.with_metadata({b"huggingface": json.dumps(meta).encode()})


def _value() -> dict[str, str]:
    return {"dtype": "string", "_type": "Value"}


def llamafactory_info(name: str, files: dict[str, list[str]]) -> dict[str, Any]:
    """LLaMA-Factory's dataset_info.json entries: one per shard file (its file_name is one path)."""
    entry = {
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }
    info: dict[str, Any] = {}
    for split, paths in files.items():
        for i, path in enumerate(paths):
            key = f"{name}_{split}" if len(paths) == 1 else f"{name}_{split}_{i:05d}"
            info[key] = {"file_name": path, **entry}
    return info


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


def dataset_card(
    manifest: Manifest,
    recipe: Recipe,
    catalog: Catalog,
    files: dict[str, list[str]],
    variants: Counter[str],
    sizes: dict[str, int],
) -> str:
    """README.md with the Hub's YAML header, the composition and every source's licence."""
    used = {n: c for n, c in manifest.sources.items() if c.records_selected}
    total = sum(c.records_selected for c in used.values())
    specs = {n: catalog.source(n).spec for n in used}
    licenses = sorted({LICENSE_IDS.get(s.license, "other") for s in specs.values()})
    header: dict[str, Any] = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*"} for s in files],
            }
        ],
        "license": licenses if len(licenses) > 1 else licenses[0] if licenses else "other",
        "language": sorted({s.language for s in specs.values()}) or ["en"],
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(total)],
        "tags": ["instruction-tuning", "flan", "instructmix"],
        "pretty_name": recipe.export.pretty_name or f"instructmix {recipe.name}",
        # Split sizes: the Hub shows them, and `datasets` keys its cache of a local folder on
        # the card. Without them two exports with the same file names share one cache entry,
        # and load_dataset returns the first one's rows for the second.
        "dataset_info": {
            "splits": [
                {"name": split, "num_bytes": sizes[split], "num_examples": manifest.splits[split]}
                for split in files
            ],
            "download_size": sum(sizes.values()),
            "dataset_size": sum(sizes.values()),
        },
    }
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    lines += [
        f"# {header['pretty_name']}",
        "",
        f"An instruction-tuning mixture built by instructmix {manifest.instructmix_version} from "
        f"recipe `{recipe.name}` (seed {recipe.seed}, "
        f"fingerprint `{manifest.recipe_fingerprint}`), "
        f"from the {'bundled samples' if manifest.data == 'sample' else 'full Hub datasets'}. "
        f"The same recipe and seed rebuild these files byte for byte.",
        "",
        "## Splits",
        "",
        "| split | records |",
        "|---|---|",
        *[f"| {s} | {n} |" for s, n in manifest.splits.items()],
        "",
        "## Composition",
        "",
        "| source | cluster | task | license | records | share |",
        "|---|---|---|---|---|---|",
    ]
    for name, counts in sorted(used.items()):
        s = specs[name]
        share = counts.records_selected / total if total else 0.0
        lines.append(
            f"| {name} | {s.cluster} | {s.task} | {s.license} | "
            f"{counts.records_selected} | {share:.1%} |"
        )
    lines += ["", "## Variants", "", "| variant | records |", "|---|---|"]
    lines += [f"| {v} | {n} |" for v, n in sorted(variants.items())]
    lines += [
        "",
        "## Columns",
        "",
        "- `messages`: list of `{role, content}` (optional system turn, then user/assistant turns "
        "ending on assistant). TRL's SFTTrainer, Axolotl (`type: chat_template`) and "
        "open-instruct read it as is; `dataset_info.json` holds LLaMA-Factory entries.",
        "- `id`: stable hash of source, split, example id, template id and variant.",
        "- `source`, `task`, `cluster`, `template_id`, `variant`, `answer_choices`, `example_id`, "
        "`split` (of the original dataset), `language`, `license`: provenance of every row; "
        "filter on `license` to honour each source's terms.",
        "",
        "## Licences and attribution",
        "",
        "Each row carries its source's licence. ShareAlike (CC BY-SA) rows oblige derived datasets "
        "to use the same licence. Cite the sources you train on:",
        "",
    ]
    for name in sorted(used):
        s = specs[name]
        cite = " ".join(s.citation.split()) if s.citation else "(no citation given)"
        lines.append(f"- **{name}** ({s.license}; {s.homepage or s.hub.id}): {cite}")
    lines += [
        "",
        "## Load",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'ds = load_dataset("path/or/repo-id")',
        "```",
        "",
    ]
    return "\n".join(lines)


def push_to_hub(
    folder: Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    api: Any = None,
) -> str:
    """Upload an export folder as a dataset repo; the token comes from the environment or the
    login cache when not given, and is never printed. Returns the repo URL."""
    if not (folder / "README.md").is_file():
        raise PipelineError(f"{folder}: not an export folder (no README.md); run export first")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id=repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            commit_message="Upload instructmix export",
        )
    except Exception as exc:
        # Hub errors can echo request headers; keep only the first line of the message.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"push to hub {repo_id!r} failed: {_redact(first, token)}") from None
    return str(url)


def _redact(text: str, token: str | None) -> str:
    import re

    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)
