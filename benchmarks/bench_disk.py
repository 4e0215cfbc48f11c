"""Disk use of a run folder: bytes per record of each stage, per codec and per ``--keep`` mode.

    python benchmarks/bench_disk.py --out DIR [--json]        # an existing run folder
    python benchmarks/bench_disk.py [--builds default,uncapped,esnli] [--examples 20000]
                                    [--codecs zstd,zstd:3,lz4,snappy,none]
                                    [--keeps all,resume,dataset] [--repeat 2] [--json]

For a run folder it prints, per stage folder (examples, rendered, valid, mixed, dataset, rejects,
the manifest), the files, the bytes, the rows (parquet rows; reject lines) and bytes per row, and
bytes per record of the dataset (how much that folder costs for each record shipped), with the
total.

Without ``--out`` it builds, each into a temporary folder, with the command line users run
(``python -m pipeline run ... -w 1 -q``, every command printed):

- ``default``: the bundled default recipe on its samples (``instructmix run --out DIR -q``);
- ``uncapped``: the default recipe with ``mixing.cap: null`` (every loaded example of every
  bundled sample, two templates each): the same real data, about three times the records;
- ``esnli``: ``bench_pipeline.py``'s bigger build: ``--examples`` unique e-SNLI examples (the
  bundled sample's real rows cycled, each with a new id and a number appended to its premise),
  every template, zero-shot, ``cap: null``.

Each build runs once per codec (``--compression``, with ``--keep all``) and once per other keep
mode (with the default codec); codec runs are interleaved ``--repeat`` times and the fastest
wall time is kept, with its ratio to the default codec's. In this process, the same parts
(examples, rendered, valid) of the default-codec run are also rewritten and read back with each
codec: microseconds per row, the codec's own cost without the rest of the run. Every run's
dataset is compared byte for byte with the default's (``same dataset``).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pipeline  # the sibling script: its e-SNLI examples and catalog

from pipeline.runfolder import parse_compression

STAGE_DIRS = ("examples", "rendered", "valid", "mixed", "dataset", "rejects")
PART_STAGES = ("examples", "rendered", "valid")
DEFAULT_CODEC = "zstd"


# --------------------------------------------------------------------------- one run folder


def _rows(path: Path) -> int:
    if path.suffix == ".parquet" and not path.name.startswith("."):
        return int(pq.read_metadata(path).num_rows)
    if path.suffix == ".jsonl":
        with path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())
    return 0


def _dataset_records(dataset: Path) -> int:
    """Records of the default config (``data/*.parquet``): what the export ships, once."""
    return sum(_rows(p) for p in sorted((dataset / "data").glob("*.parquet")))


def folder_usage(out: Path) -> dict[str, Any]:
    """Per stage folder: files, bytes, rows and bytes per row; and the folder's total."""
    stages: dict[str, dict[str, Any]] = {}
    # A valid part that lost no record is a hard link to its rendered part: its bytes are on
    # disk once, counted under the first folder that names them.
    seen: set[tuple[int, int]] = set()
    for name in STAGE_DIRS:
        root = out / name
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        if name == "dataset":
            rows = _dataset_records(root) if root.is_dir() else 0
        elif name == "mixed":
            # conflicts.jsonl reports records, it does not hold the mixture: not counted.
            rows = sum(_rows(p) for p in files if p.suffix == ".parquet")
        else:
            rows = sum(_rows(p) for p in files)
        size = 0
        for p in files:
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                size += st.st_size
        stages[name] = {"files": len(files), "bytes": size, "rows": rows}
    manifest = out / "manifest.json"
    stages["manifest.json"] = {
        "files": int(manifest.is_file()),
        "bytes": manifest.stat().st_size if manifest.is_file() else 0,
        "rows": 0,
    }
    shipped = stages["dataset"]["rows"]
    for numbers in stages.values():
        numbers["bytes_per_row"] = numbers["bytes"] / numbers["rows"] if numbers["rows"] else None
        numbers["bytes_per_record"] = numbers["bytes"] / shipped if shipped else None
    total = {
        "files": sum(s["files"] for s in stages.values()),
        "bytes": sum(s["bytes"] for s in stages.values()),
    }
    total["bytes_per_record"] = total["bytes"] / shipped if shipped else None
    storage: dict[str, Any] = {}
    if manifest.is_file():
        storage = json.loads(manifest.read_text("utf-8")).get("storage") or {}
    return {"stages": stages, "total": total, "records": shipped, "storage": storage}


# --------------------------------------------------------------------------- builds


def _command(recipe: Path | None, out: Path, keep: str, codec: str) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline", "run"]
    cmd += [str(recipe)] if recipe is not None else []
    return [*cmd, "--out", str(out), "-w", "1", "-q", "--keep", keep, "--compression", codec]


def _run(cmd: list[str], log: Any) -> float:
    log(
        "  $ "
        + " ".join(cmd[1:] if cmd[0] == sys.executable else cmd).replace(
            "-m pipeline", "instructmix", 1
        )
    )
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def codec_cost(out: Path, codecs: Sequence[str], repeat: int) -> dict[str, dict[str, Any]]:
    """Each codec's own cost on the parts of ``out``: bytes, write and read µs per row (the
    fastest of ``repeat``), each part rewritten in memory with its row groups as written."""
    tables = [
        pq.read_table(p)
        for stage in PART_STAGES
        for p in sorted((out / stage).glob("*/part-*.parquet"))
    ]
    rows = sum(t.num_rows for t in tables)
    result: dict[str, dict[str, Any]] = {}
    for spec in codecs:
        codec, level = parse_compression(spec)
        best_write = best_read = float("inf")
        size = 0
        for _ in range(repeat):
            buffers = []
            started = time.perf_counter()
            for table in tables:
                sink = pa.BufferOutputStream()
                pq.write_table(
                    table, sink, compression=codec, compression_level=level, row_group_size=10_000
                )
                buffers.append(sink.getvalue())
            best_write = min(best_write, time.perf_counter() - started)
            started = time.perf_counter()
            for buffer in buffers:
                pq.read_table(pa.BufferReader(buffer))
            best_read = min(best_read, time.perf_counter() - started)
            size = sum(b.size for b in buffers)
        result[spec] = {
            "bytes": size,
            "bytes_per_row": size / rows if rows else None,
            "write_us_per_row": best_write * 1e6 / rows if rows else None,
            "read_us_per_row": best_read * 1e6 / rows if rows else None,
        }
    return result


def measure_build(
    name: str,
    recipe: Path | None,
    tmp: Path,
    codecs: Sequence[str],
    keeps: Sequence[str],
    repeat: int,
    log: Any,
) -> dict[str, Any]:
    log(f"{name}:")
    walls: dict[str, list[float]] = {c: [] for c in codecs}
    usage: dict[str, Any] = {}
    reference = tmp / f"{name}-all-{DEFAULT_CODEC}"
    for attempt in range(repeat):
        for codec in codecs:
            out = tmp / f"{name}-all-{codec.replace(':', '')}"
            shutil.rmtree(out, ignore_errors=True)
            walls[codec].append(_run(_command(recipe, out, "all", codec), log))
            if attempt == repeat - 1:
                usage[f"all/{codec}"] = folder_usage(out)
    runs: dict[str, Any] = {}
    base = min(walls[DEFAULT_CODEC]) if DEFAULT_CODEC in walls else None
    for codec in codecs:
        out = tmp / f"{name}-all-{codec.replace(':', '')}"
        wall = min(walls[codec])
        runs[f"all/{codec}"] = {
            "keep": "all",
            "compression": codec,
            "wall_s": wall,
            "walls_s": walls[codec],
            "wall_vs_default": wall / base if base else None,
            "same_dataset": _same_tree(out / "dataset", reference / "dataset"),
            **usage[f"all/{codec}"],
        }
    for keep in keeps:
        if keep == "all":
            continue
        out = tmp / f"{name}-{keep}-{DEFAULT_CODEC}"
        shutil.rmtree(out, ignore_errors=True)
        wall = _run(_command(recipe, out, keep, DEFAULT_CODEC), log)
        runs[f"{keep}/{DEFAULT_CODEC}"] = {
            "keep": keep,
            "compression": DEFAULT_CODEC,
            "wall_s": wall,
            "same_dataset": _same_tree(out / "dataset", reference / "dataset"),
            **folder_usage(out),
        }
    log("  codec cost in process ...")
    cost = codec_cost(reference, codecs, max(repeat, 3))
    return {"recipe": str(recipe) if recipe else "default", "runs": runs, "codec_cost": cost}


def uncapped_recipe(tmp: Path) -> Path:
    """The bundled default recipe without its per-source cap (built-in catalog, same seed)."""
    import yaml

    from pipeline.stages import default_recipe_path

    recipe = yaml.safe_load(default_recipe_path().read_text(encoding="utf-8"))
    recipe["name"] = "default-uncapped"
    recipe["mixing"]["cap"] = None
    path = tmp / "uncapped.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def esnli_recipe(tmp: Path, examples: int) -> Path:
    rows, spec = bench_pipeline.base_rows()
    return bench_pipeline.write_catalog(tmp / "esnli-catalog", examples, rows, spec, "all")


# --------------------------------------------------------------------------- report


def _n(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def usage_table(usage: dict[str, Any], title: str) -> list[str]:
    lines = [
        title,
        f"  {'folder':<14} {'files':>6} {'bytes':>13} {'rows':>10} {'B/row':>8} {'B/record':>9}",
    ]
    for name, s in usage["stages"].items():
        lines.append(
            f"  {name:<14} {s['files']:>6} {s['bytes']:>13,} {s['rows']:>10,} "
            f"{_n(s['bytes_per_row']):>8} {_n(s['bytes_per_record']):>9}"
        )
    t = usage["total"]
    lines.append(
        f"  {'total':<14} {t['files']:>6} {t['bytes']:>13,} {usage['records']:>10,} "
        f"{'':>8} {_n(t['bytes_per_record']):>9}"
    )
    return lines


def build_report(name: str, build: dict[str, Any]) -> list[str]:
    runs = build["runs"]
    lines = [f"== {name} ({build['recipe']})"]
    first = runs.get(f"all/{DEFAULT_CODEC}") or next(iter(runs.values()))
    lines += usage_table(
        first,
        f"  per stage, --keep {first['keep']} --compression "
        f"{first['compression']} (B/record: bytes per dataset record)",
    )
    lines.append("  codecs (--keep all): bytes per row of the parts, run wall time")
    lines.append(
        f"  {'codec':<9} {'examples':>9} {'rendered':>9} {'valid':>9} {'folder B/rec':>13} "
        f"{'wall s':>8} {'vs zstd':>8} {'write us':>9} {'read us':>8} {'same':>5}"
    )
    for run in runs.values():
        if run["keep"] != "all":
            continue
        st = run["stages"]
        cost = build["codec_cost"].get(run["compression"], {})
        lines.append(
            f"  {run['compression']:<9} {_n(st['examples']['bytes_per_row']):>9} "
            f"{_n(st['rendered']['bytes_per_row']):>9} {_n(st['valid']['bytes_per_row']):>9} "
            f"{_n(run['total']['bytes_per_record']):>13} {run['wall_s']:>8.2f} "
            f"{_n(run['wall_vs_default'], 3):>8} {_n(cost.get('write_us_per_row'), 2):>9} "
            f"{_n(cost.get('read_us_per_row'), 2):>8} {'yes' if run['same_dataset'] else 'NO':>5}"
        )
    lines.append("  keep modes (--compression zstd): what the finished folder holds")
    lines.append(f"  {'keep':<8} {'bytes':>13} {'B/record':>9} {'vs all':>7} {'same':>5}  folders")
    full = runs[f"all/{DEFAULT_CODEC}"]["total"]["bytes"] if f"all/{DEFAULT_CODEC}" in runs else 0
    for run in runs.values():
        if run["compression"] != DEFAULT_CODEC:
            continue
        present = [n for n in STAGE_DIRS if run["stages"][n]["rows"]]
        lines.append(
            f"  {run['keep']:<8} {run['total']['bytes']:>13,} "
            f"{_n(run['total']['bytes_per_record']):>9} "
            f"{_n(run['total']['bytes'] / full if full else None, 3):>7} "
            f"{'yes' if run['same_dataset'] else 'NO':>5}  {', '.join(present)}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="measure this run folder, build nothing")
    parser.add_argument("--builds", default="default,esnli", help="default, uncapped, esnli")
    parser.add_argument("--examples", type=int, default=20_000, help="e-SNLI examples")
    parser.add_argument("--codecs", default="zstd,zstd:3,lz4,snappy,none")
    parser.add_argument("--keeps", default="all,resume,dataset")
    parser.add_argument("--repeat", type=int, default=2, help="runs per codec (fastest kept)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    out_stream = sys.stderr if args.json else sys.stdout
    if args.out is not None:
        if not (args.out / "manifest.json").is_file():
            parser.error(f"{args.out}: no manifest.json: not a run folder")
        usage = folder_usage(args.out)
        if args.json:
            print(json.dumps(usage, indent=2))
        else:
            print("\n".join(usage_table(usage, f"{args.out} (B/record: per dataset record)")))
        return 0

    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    if DEFAULT_CODEC not in codecs:
        codecs.insert(0, DEFAULT_CODEC)
    for codec in codecs:
        parse_compression(codec)
    keeps = [k.strip() for k in args.keeps.split(",") if k.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="bench-disk-"))
    os.environ["HF_DATASETS_CACHE"] = str(tmp / "hf-cache")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result: dict[str, Any] = {
        "machine": bench_pipeline.machine(),
        "loadavg_start": os.getloadavg(),
        "builds": {},
    }
    try:
        for name in [b.strip() for b in args.builds.split(",") if b.strip()]:
            if name == "default":
                recipe = None
            elif name == "uncapped":
                recipe = uncapped_recipe(tmp)
            elif name == "esnli":
                recipe = esnli_recipe(tmp, args.examples)
                result["esnli_examples"] = args.examples
            else:
                parser.error(f"--builds: {name!r} is not default, uncapped or esnli")
            result["builds"][name] = measure_build(
                name, recipe, tmp, codecs, keeps, args.repeat, log
            )
            print("\n".join(build_report(name, result["builds"][name])), file=out_stream)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["loadavg_end"] = os.getloadavg()
    print(
        f"load average: start {result['loadavg_start'][0]:.2f}, end "
        f"{result['loadavg_end'][0]:.2f} (cores: {result['machine']['cores']})",
        file=out_stream,
    )
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
