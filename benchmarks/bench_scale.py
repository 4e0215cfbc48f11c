"""One large run end to end, measured stage by stage: time, CPU, peak memory, disk.

    python benchmarks/bench_scale.py [--records 1000000] [--templates 5] [--workers 2]
                                     [--executor local|ray] [--address ADDR] [--json]
                                     [--validation-fraction F] [--against FILE:FIELD,...]
                                     [--tmp DIR] [--keep] [--stages load,...] [--reuse DIR]

The examples are ``bench_pipeline.py``'s (the bundled e-SNLI sample's real rows, cycled, each
made unique by a new id and a number appended to its premise), written as a JSONL sample of a
temporary catalog by ``bench_pipeline.write_catalog``; the recipe takes ``--templates`` of the
e-SNLI templates per example, zero-shot, no cap, so ``--records`` records come from
``records / templates`` examples. The stages run as ``run_recipe`` runs them (``prepare``,
``load_stage``, ``render_validate_stage`` on the chosen executor, ``mix_stage``,
``export_stage``), one after the other in this process, so each stage's numbers are its own:

- wall seconds and records per second (rows the stage wrote);
- CPU seconds of this process and every process under it (the executor's workers, Ray's
  raylet and workers), from ``/proc/<pid>/stat``, sampled;
- peak RSS of this process, and of this process and all its descendants together, sampled
  from ``/proc/<pid>/statm`` (a sample every ``--interval`` seconds: a spike shorter than
  that can be missed; this process's own VmHWM is printed too);
- bytes on disk of each stage's folder in the run folder (and of the datasets cache the load
  stage fills), with bytes per row of that stage;
- the load average at the start and the end (the machine may be shared).

The mix decontaminates every train record against held-out text (by default two bundled
subsets e-SNLI barely overlaps, so the matching costs what it costs on every record while
almost nothing is dropped); ``--validation-fraction`` holds out part of the generated examples
instead, a worst case: they are one sample cycled, so most train records then share text with
a held-out one and become rejects.

With ``--json`` one JSON object goes to stdout and the table to stderr. The temporary folder
(under ``--tmp``, default the system's) is removed at the end unless ``--keep``; ``--stages``
with ``--reuse`` runs some stages on a kept folder (e.g. the mix again, after a change).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pipeline  # the sibling script: its examples and catalog
from bench_pipeline import descendants, proc_cpu

_PAGE = os.sysconf("SC_PAGE_SIZE")
_DATA = Path(__file__).resolve().parent.parent / "data"
DEFAULT_AGAINST = (
    f"{_DATA / 'breaking_nli.subset.jsonl'}:sentence1,sentence2",
    f"{_DATA / 'scitldr_a.dev.jsonl'}:source,target",
)
STAGES = ("load", "render+validate", "mix", "export")
_STAGE_DIRS = ("examples", "rendered", "valid", "mixed", "dataset", "rejects")


# --------------------------------------------------------------------------- /proc sampling


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class StageNumbers:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_self_mb: float = 0.0
    peak_rss_tree_mb: float = 0.0
    peak_processes: int = 0
    min_free_disk_gb: float = float("inf")
    cpu_start: dict[int, float] = field(default_factory=dict)
    cpu_last: dict[int, float] = field(default_factory=dict)


class Sampler:
    """Polls this process and its descendants; the numbers go to the stage marked current."""

    def __init__(self, interval_s: float, disk: Path) -> None:
        self.interval_s = interval_s
        self.disk = disk
        self.stages: dict[str, StageNumbers] = {}
        self._current: StageNumbers | None = None
        self._seen: dict[int, float] = {}  # CPU seconds of every process when last sampled
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = os.getpid()
        pids = [me, *descendants(me)]
        cpu = {}
        for pid in pids:
            got = proc_cpu(pid)
            if got is not None:
                cpu[pid] = got[1]
        rss_self = _rss(me)
        rss_tree = rss_self + sum(_rss(p) for p in pids[1:])
        vfs = os.statvfs(self.disk)
        free_gb = vfs.f_bavail * vfs.f_frsize / 1e9
        with self._lock:
            s = self._current
            if s is None:
                return
            for pid, c in cpu.items():
                # A process first seen in this stage started in it (a sample comes within
                # ``interval_s`` of a worker's start): all its CPU is the stage's.
                s.cpu_start.setdefault(pid, 0.0)
                s.cpu_last[pid] = c
                self._seen[pid] = c
            s.peak_rss_self_mb = max(s.peak_rss_self_mb, rss_self / 2**20)
            s.peak_rss_tree_mb = max(s.peak_rss_tree_mb, rss_tree / 2**20)
            s.peak_processes = max(s.peak_processes, len(cpu))
            s.min_free_disk_gb = min(s.min_free_disk_gb, free_gb)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @contextmanager
    def stage(self, name: str) -> Iterator[StageNumbers]:
        numbers = StageNumbers()
        me = os.getpid()
        got = proc_cpu(me)
        with self._lock:
            numbers.cpu_start.update(self._seen)
            numbers.cpu_start[me] = got[1] if got else 0.0
            self.stages[name] = numbers
            self._current = numbers
        started = time.perf_counter()
        try:
            yield numbers
        finally:
            self._sample()  # the stage's last state, before the next one starts
            numbers.wall_s = time.perf_counter() - started
            with self._lock:
                self._current = None
                numbers.cpu_s = sum(
                    last - numbers.cpu_start.get(pid, 0.0) for pid, last in numbers.cpu_last.items()
                )


# --------------------------------------------------------------------------- disk


def tree_bytes(path: Path) -> tuple[int, int]:
    """(apparent bytes, files) under ``path``."""
    total = files = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            try:
                total += (Path(dirpath) / name).lstat().st_size
                files += 1
            except OSError:
                pass
    return total, files


# --------------------------------------------------------------------------- the run


def _against(value: str) -> tuple[str, list[str]]:
    path, _, fields = value.rpartition(":")
    return path, [f for f in fields.split(",") if f]


def _set_recipe(path: Path, **values: Any) -> None:
    import yaml

    recipe = yaml.safe_load(path.read_text())
    recipe.update(values)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))


def run_scale(
    records: int,
    templates: int,
    workers: int,
    executor: str,
    address: str | None,
    validation_fraction: float,
    against: Sequence[tuple[str, list[str]]],
    tmp: Path,
    interval_s: float,
    stages: Sequence[str],
    log: Callable[[str], None],
) -> dict[str, Any]:
    from pipeline.executor import LocalExecutor, make_executor
    from pipeline.export import export_stage
    from pipeline.mix import mix_stage
    from pipeline.runfolder import RunFolder
    from pipeline.stages import load_stage, prepare, render_validate_stage

    examples = -(-records // templates)
    result: dict[str, Any] = {
        "stages_run": list(stages),
        "records_requested": records,
        "examples": examples,
        "templates_per_example": templates,
        "workers": workers,
        "executor": executor,
        "validation_fraction": validation_fraction,
        "against": [f"{path}:{','.join(f)}" for path, f in against],
        "loadavg_start": os.getloadavg(),
        "cpus": os.cpu_count(),
        "free_disk_gb_start": shutil.disk_usage(tmp).free / 1e9,
    }
    recipe = tmp / "catalog" / "recipe.yaml"
    if not recipe.is_file():
        rows, spec = bench_pipeline.base_rows()
        started = time.perf_counter()
        log(f"writing {examples:,} examples (JSONL sample) ...")
        bench_pipeline.write_catalog(tmp / "catalog", examples, rows, spec, templates)
        heldout = [
            {"name": Path(p).stem.replace(".", "_"), "path": str(Path(p).resolve()), "fields": f}
            for p, f in against
        ]
        _set_recipe(
            recipe, validation_fraction=validation_fraction, decontamination={"against": heldout}
        )
        result["write_sample_s"] = time.perf_counter() - started
    sample = tmp / "catalog" / "sources" / f"{bench_pipeline.BENCH_SOURCE}.jsonl"
    result["sample_bytes"] = sample.stat().st_size
    out = tmp / "run"
    cache = tmp / "hf-cache"
    os.environ["HF_DATASETS_CACHE"] = str(cache)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    with Sampler(interval_s, tmp) as sampler:
        # One pool for load's shards and render+validate's parts, started before the recipe is
        # prepared and given its memory limit once read: as `run` does it.
        pool = None
        if "load" in stages or "render+validate" in stages:
            pool = make_executor(executor, workers, address)  # type: ignore[arg-type]
            pool.start()
        try:
            if pool is not None:
                with sampler.stage("prepare"):
                    log("prepare ...")
                    prepared = prepare(recipe)
                if isinstance(pool, LocalExecutor):
                    pool.memory_mb = prepared.recipe.limits.max_worker_memory_mb
            if "load" in stages:
                with sampler.stage("load"):
                    log("load ...")
                    load_stage(None, out, prepared=prepared, executor=pool)
            if "render+validate" in stages:
                with sampler.stage("render+validate"):
                    log("render+validate ...")
                    render_validate_stage(out, executor=pool, resume=True)
        finally:
            if pool is not None:
                pool.close()
        if "mix" in stages:
            with sampler.stage("mix"):
                log("mix ...")
                mix_stage(out)
        if "export" in stages:
            with sampler.stage("export"):
                log("export ...")
                export_stage(out)
    manifest = RunFolder(out).read_manifest()
    result["total_s"] = sum(s.wall_s for s in sampler.stages.values())
    result["vm_hwm_self_mb"] = vm_hwm_mb()
    result["loadavg_end"] = os.getloadavg()

    counts = manifest.sources[bench_pipeline.BENCH_SOURCE]
    rows_of = {
        "load": counts.examples_in,
        "render+validate": counts.records_rendered,
        "mix": sum(manifest.splits.values()),
        "export": sum(manifest.splits.values()),
    }
    result["counts"] = {
        "examples_in": counts.examples_in,
        "examples_rejected": counts.examples_rejected,
        "records_rendered": counts.records_rendered,
        "records_accepted": counts.records_accepted,
        "records_decontaminated": counts.records_decontaminated,
        "records_deduplicated": counts.records_deduplicated,
        "records_selected": counts.records_selected,
        "splits": dict(manifest.splits),
    }
    result["manifest_timings_s"] = dict(manifest.timings_s)
    result["stages"] = {
        name: {
            "wall_s": s.wall_s,
            "cpu_s": s.cpu_s,
            "peak_rss_self_mb": s.peak_rss_self_mb,
            "peak_rss_tree_mb": s.peak_rss_tree_mb,
            "peak_processes": s.peak_processes,
            "min_free_disk_gb": s.min_free_disk_gb,
            "rows": rows_of.get(name),
            "rows_per_s": rows_of[name] / s.wall_s if name in rows_of and s.wall_s else None,
        }
        for name, s in sampler.stages.items()
    }
    per_row = {
        "examples": counts.examples_in,
        "rendered": counts.records_rendered,
        "valid": counts.records_accepted,
        "mixed": sum(manifest.splits.values()),
        "dataset": sum(manifest.splits.values()),
        "rejects": None,
    }
    disk: dict[str, Any] = {}
    for name in _STAGE_DIRS:
        size, files = tree_bytes(out / name)
        rows_here = per_row[name]
        disk[name] = {
            "bytes": size,
            "files": files,
            "bytes_per_row": size / rows_here if rows_here else None,
        }
    size, files = tree_bytes(cache)
    disk["hf-cache"] = {"bytes": size, "files": files, "bytes_per_row": size / examples}
    disk["sample (input)"] = {
        "bytes": result["sample_bytes"],
        "files": 1,
        "bytes_per_row": result["sample_bytes"] / examples,
    }
    disk["run folder total"] = {
        "bytes": tree_bytes(out)[0],
        "files": None,
        "bytes_per_row": tree_bytes(out)[0] / max(1, counts.records_rendered),
    }
    result["disk"] = disk
    return result


# --------------------------------------------------------------------------- report


def print_report(result: dict[str, Any], to: Any) -> None:
    def p(line: str = "") -> None:
        print(line, file=to)

    c = result["counts"]
    p(
        f"{result['examples']:,} examples x {result['templates_per_example']} templates: "
        f"{c['records_rendered']:,} records rendered, {c['records_accepted']:,} accepted, "
        f"{c['records_selected']:,} selected ({c['records_decontaminated']:,} "
        f"decontaminated, {c['records_deduplicated']:,} duplicates); splits {c['splits']}"
    )
    p(
        f"executor {result['executor']}, {result['workers']} workers, {result['cpus']} CPUs; "
        f"load average {_load(result['loadavg_start'])} at the start, "
        f"{_load(result['loadavg_end'])} at the end"
    )
    p()
    p(
        f"{'stage':<16}{'wall s':>9}{'CPU s':>9}{'rows/s':>10}{'RSS self MB':>13}"
        f"{'RSS tree MB':>13}{'procs':>7}"
    )
    for name, s in result["stages"].items():
        rate = f"{s['rows_per_s']:,.0f}" if s["rows_per_s"] else "-"
        p(
            f"{name:<16}{s['wall_s']:>9.1f}{s['cpu_s']:>9.1f}{rate:>10}"
            f"{s['peak_rss_self_mb']:>13.0f}{s['peak_rss_tree_mb']:>13.0f}{s['peak_processes']:>7}"
        )
    p(f"{'total':<16}{result['total_s']:>9.1f}")
    p(f"VmHWM of this process: {result['vm_hwm_self_mb']:.0f} MB")
    p()
    p(f"{'folder':<18}{'MB':>10}{'files':>8}{'bytes/row':>11}")
    for name, d in result["disk"].items():
        per = f"{d['bytes_per_row']:.0f}" if d["bytes_per_row"] else "-"
        files = d["files"] if d["files"] is not None else "-"
        p(f"{name:<18}{d['bytes'] / 1e6:>10.1f}{files:>8}{per:>11}")


def _load(values: Sequence[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--templates", type=int, default=5, help="templates per example")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--address", default=None, help="a Ray cluster's address")
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.0,
        help="the recipe's validation_fraction (held-out text for decontamination); the "
        "generated examples are one sample cycled, so most train records then share text with "
        "a held-out one: a worst case for the mix's rejects",
    )
    parser.add_argument(
        "--against",
        action="append",
        metavar="FILE:FIELD,FIELD",
        help="held-out data the mix decontaminates against (repeatable; default: the bundled "
        "Breaking NLI and SciTLDR subsets, real text that e-SNLI barely overlaps, so the "
        "matching costs what it costs on every train record)",
    )
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--tmp", type=Path, default=None, help="where the run folder goes")
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"the stages to run, in order (default all: {','.join(STAGES)})",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="a folder an earlier --keep run left: run --stages on its run folder (kept)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    if not 1 <= args.templates <= len(bench_pipeline.template_texts()):
        parser.error(f"--templates must be 1 to {len(bench_pipeline.template_texts())}")

    unknown = set(args.stages.split(",")) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage {sorted(unknown)[0]!r} (stages: {', '.join(STAGES)})")

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if args.reuse is not None:
        tmp, args.keep = args.reuse, True
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.tmp))
    try:
        result = run_scale(
            args.records,
            args.templates,
            args.workers,
            args.executor,
            args.address,
            args.validation_fraction,
            [_against(a) for a in args.against or DEFAULT_AGAINST],
            tmp,
            args.interval,
            [st for st in args.stages.split(",") if st],
            log,
        )
        result["machine"] = bench_pipeline.machine()
        result["command"] = " ".join(["python", "benchmarks/bench_scale.py", *sys.argv[1:]])
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_report(result, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
