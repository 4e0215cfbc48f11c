"""What a run folder keeps once its stages have run (``run --keep``).

Each stage's output is derived from the one before, so once every stage that reads a folder has
run, the folder is only needed to redo work. The modes:

    folder      read by                      all    resume                 dataset
    examples    render, validate, mix        kept   kept                   dropped after mix
    rendered    validate                     kept   dropped after validate dropped after validate
    valid       mix                          kept   dropped after mix      dropped after mix
    mixed       export, the eval harness     kept   kept                   dropped after export
    dataset     (the product)                kept   kept                   kept

``resume`` keeps what lets every stage be redone without reading the sources again (the
examples) and the mixture to export again (other formats, ``--to``, ``--eval-harness``);
``dataset`` keeps the dataset only. The manifest, the rejects and ``mixed/conflicts.jsonl`` stay
in every mode: they are the run's account of itself.

A folder is listed in the manifest's ``storage.dropped`` before any of its files is deleted, so
a run killed in between leaves a manifest that tells the truth, and the next run finishes the
deletion. A stage that needs a dropped folder is refused with a message naming it
(``RunFolder.read_manifest``), never run on nothing; ``run`` redoes the stages whose output the
mode, or the next stage, needs and finds dropped.
"""

from __future__ import annotations

from typing import get_args

from .models import KeepMode, Manifest
from .runfolder import RunFolder

KEEP_MODES: tuple[str, ...] = get_args(KeepMode)

# The folder each stage writes, in run order.
OUTPUT = {
    "load": "examples",
    "render": "rendered",
    "validate": "valid",
    "mix": "mixed",
    "export": "dataset",
}
# What each stage reads from the run folder.
READS: dict[str, tuple[str, ...]] = {
    "load": (),
    "render": ("examples",),
    "validate": ("rendered", "examples"),
    "mix": ("valid", "examples"),
    "export": ("mixed",),
}
# (folder, the last stage that reads it, the modes that drop it once that stage has run), in
# the order they become droppable.
_DROPS: tuple[tuple[str, str, tuple[KeepMode, ...]], ...] = (
    ("rendered", "validate", ("resume", "dataset")),
    ("valid", "mix", ("resume", "dataset")),
    ("examples", "mix", ("dataset",)),
    ("mixed", "export", ("dataset",)),
)


def kept(keep: KeepMode) -> set[str]:
    """The stage folders a finished run in mode ``keep`` leaves."""
    return set(OUTPUT.values()) - {name for name, _, modes in _DROPS if keep in modes}


def apply_keep(folder: RunFolder, keep: KeepMode) -> Manifest:
    """Drop what ``keep`` drops of the stages done so far; returns the manifest as written.

    Idempotent: a folder already listed as dropped is deleted again (a kill may have stopped
    the first deletion halfway)."""
    manifest = folder.read_manifest()
    storage = manifest.storage
    due = [
        name
        for name, last, modes in _DROPS
        if keep in modes and last in manifest.stages_done and name not in storage.dropped
    ]
    if due or storage.keep != keep:
        storage.keep = keep
        storage.dropped = [*storage.dropped, *due]
        folder.write_manifest(manifest)
    for name in storage.dropped:
        folder.drop(name)
    return manifest


def resumable_stages(manifest: Manifest, keep: KeepMode) -> list[str]:
    """Of the stages the manifest says are done, those a resume in mode ``keep`` can keep: all
    of them, unless one's output was dropped and is wanted now, because the mode keeps it or
    a stage to be run reads it. Then the stages from that one on are redone."""
    done = [stage for stage in OUTPUT if stage in manifest.stages_done]
    dropped = set(manifest.storage.dropped)
    pending = next((stage for stage in OUTPUT if stage not in done), None)
    wanted = kept(keep) | set(READS[pending] if pending else ())
    while True:
        cut = next((i for i, stage in enumerate(done) if OUTPUT[stage] in dropped & wanted), None)
        if cut is None:
            return list(manifest.stages_done)
        # Redoing that stage needs its own inputs on disk: when one is dropped too, redo the
        # stage that writes it as well.
        missing = (set(READS[done[cut]]) & dropped) - wanted
        if not missing:
            return done[:cut]
        wanted |= missing
