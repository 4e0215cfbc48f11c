"""Writing a folder a tool owns whole (the export's dataset folder, the eval harness) as a
transaction, the same way for every such tool.

The new folder is built beside the target, in ``.<name>.<build>XXXXXXXX``, and renamed into
place; an earlier folder of the tool's is first renamed aside to ``.<name>.<aside>XXXXXXXX`` and
removed file by file once the new one is in. A failure at any point leaves the target as it
was, and a write killed between the renames is finished by the next one. Only a folder whose
marker lists everything in it is replaced; anything else is refused, or with ``force`` renamed
to ``<target>.bak-N`` and never deleted. ``.<name>.<lock>`` beside the target keeps two writers
(from any run folders) off one target.

A ``FolderKind`` says what differs between the tools: the marker, the names the tool writes,
the folders a scan may read, the names beside the target, and the words of its messages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from .errors import PipelineError, os_cause, os_filename
from .models import Manifest
from .runfolder import RunFolder, _umask, atomic_text, sign_lock, try_lock

SHOWN = 3  # foreign entries a refusal names

T = TypeVar("T")


@dataclass(frozen=True)
class Words:
    """The phrases a tool's messages are worded with; the rest of each message is shared.
    The comments show where each one goes."""

    tool: str  # holds files no instructmix {tool} wrote
    writer: str  # in use by another instructmix {writer} (pid N)
    write_to: str  # {write_to} a new or empty folder; or {write_to} another folder
    at_root: str  # cannot {at_root} a filesystem root
    under_file: str  # {ancestor}: is a file, not a folder; cannot {under_file} {target}
    own_folder: str  # holds the run folder R; {own_folder}
    is_folder: str  # is a symbolic link; {is_folder}, give a path that is not a link
    elsewhere: str  # is a file, not a folder; {elsewhere}
    nothing_done: str  # {nothing_done}, {target} is as it was
    done: str  # (changed since it was {done})


@dataclass(frozen=True)
class FolderKind:
    """One tool's folder: what is its own in it and beside it, and how its messages read."""

    marker: str  # the marker's file name in the folder
    marker_key: str  # the marker's format key, whose value is ``marker_format``
    # The folders a scan reads, the folder itself ("") first: the tool writes nothing deeper,
    # and a user's tree is never walked.
    levels: tuple[str, ...]
    # Every name the tool writes in its folder, temporaries included: a leftover folder of a
    # killed write holds nothing else.
    layout: re.Pattern[str]
    build: str  # .<name>.<build>XXXXXXXX: a folder being built
    aside: str  # .<name>.<aside>XXXXXXXX: an earlier folder renamed aside
    lock: str  # .<name>.<lock>: the lock file
    # Entries of a run folder the stages read: a folder written there would pull them out from
    # under them.
    run_entries: frozenset[str]
    words: Words
    # Files someone else makes in the folder that count as the tool's wherever it is scanned
    # (bytecode Python caches beside a module the tool wrote).
    derived: re.Pattern[str] | None = None
    # Whether an OS error on the lock file or the build folder names their parent (at fault:
    # it cannot be written) rather than the hidden entry itself. The export does; the harness
    # names the entry, as each did before they shared this module.
    blame_parent: bool = False
    marker_format: int = 1


def target_path(kind: FolderKind, folder: RunFolder, to: Path) -> Path:
    """The absolute target, refused when it is not a folder the tool may replace."""
    words = kind.words
    # abspath, not resolve: a symlink at the target itself must be seen, not followed.
    target = Path(os.path.abspath(to))
    if not target.name:
        raise PipelineError(f"{target}: cannot {words.at_root} a filesystem root; name a folder")
    for ancestor in target.parents:
        if os.path.lexists(ancestor):
            if not ancestor.is_dir():
                raise PipelineError(
                    f"{ancestor}: is a file, not a folder; cannot {words.under_file} {target}"
                )
            break
    real = target.parent.resolve() / target.name
    root = folder.root.resolve()
    if real == root or root.is_relative_to(real):
        raise PipelineError(f"{target}: holds the run folder {folder.root}; {words.own_folder}")
    if real.is_relative_to(root) and real.relative_to(root).parts[0] in kind.run_entries:
        raise PipelineError(
            f"{target}: is part of the run folder {folder.root}; {words.own_folder}"
        )
    return target


def write_folder(
    kind: FolderKind,
    target: Path,
    build_into: Callable[[Path], T],
    *,
    force: bool,
    legacy: Mapping[str, int | None] | None = None,
) -> tuple[T, Path | None]:
    """Build the tool's folder with ``build_into(build)`` beside ``target`` and swap it in.
    Returns what ``build_into`` returned, and where a foreign target was moved (or None).

    ``legacy``: files an earlier write made at ``target`` before it had a marker, counted as
    the tool's when the target has no complete marker.
    """
    earlier = legacy or {}
    build: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _lock(kind, target):
            _recover(kind, target)
            _refuse_foreign(kind, target, _holding(kind, target, earlier), force)
            build = Path(tempfile.mkdtemp(prefix=f".{target.name}.{kind.build}", dir=target.parent))
            try:
                # mkdtemp makes 0700 folders; the folder is meant to be shared like any file.
                os.chmod(build, 0o777 & ~_umask())
                result = build_into(build)
                # Checked again: the target may have changed while the build was written.
                holding = _holding(kind, target, earlier)
                _refuse_foreign(kind, target, holding, force)
                moved = _swap_in(kind, build, target, holding)
            except BaseException:
                shutil.rmtree(build, ignore_errors=True)
                raise
    except OSError as exc:
        raise _environment_error(kind, exc, target, build) from None
    except PipelineError as exc:
        if build is None or str(build) not in str(exc):
            raise
        # The writers name the file they failed on; the build folder is gone, show the target.
        raise PipelineError(
            f"{str(exc).replace(str(build), str(target))}; {kind.words.nothing_done}, "
            f"{target} is as it was"
        ) from None
    return result, moved


def write_marker(
    kind: FolderKind,
    build: Path,
    manifest: Manifest,
    files: dict[str, int] | None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """The marker: incomplete (``files`` None) while the folder is built, then listing every
    file with its size. ``extra`` entries go before ``files``."""
    # Deterministic like every other file the tool writes: no time, no absolute path.
    marker = {
        kind.marker_key: kind.marker_format,
        "complete": files is not None,
        "instructmix_version": manifest.instructmix_version,
        "recipe": manifest.recipe.get("name"),
        "recipe_fingerprint": manifest.recipe_fingerprint,
        "run_fingerprint": manifest.run_fingerprint,
        **(extra or {}),
        "files": dict(sorted((files or {}).items())),
    }
    with atomic_text(build / kind.marker) as fh:
        fh.write(json.dumps(marker, indent=2) + "\n")


def read_marker(kind: FolderKind, folder: Path) -> dict[str, Any] | None:
    """The folder's marker, or None when it has none of this tool's format."""
    path = folder / kind.marker
    if path.is_symlink() or not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(marker, dict)
        or marker.get(kind.marker_key) != kind.marker_format
        or not isinstance(marker.get("files"), dict)
    ):
        return None
    return marker


def scan(
    kind: FolderKind,
    folder: Path,
    written: Mapping[str, Any],
    extra: re.Pattern[str] | None,
    limit: int | None = None,
) -> tuple[list[Path], list[str]]:
    """Files under ``folder`` the tool wrote (listed in ``written``, with its size when
    recorded, named as ``extra`` allows, or ``derived``), and the first entries it did not
    write. Only ``kind.levels`` are read."""
    ours: list[Path] = []
    foreign: list[str] = []
    for prefix in kind.levels:
        where = folder / prefix
        if prefix and (where.is_symlink() or not where.is_dir()):
            continue
        with os.scandir(where) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = prefix + entry.name
            if rel + "/" in kind.levels and entry.is_dir(follow_symlinks=False):
                continue  # read as a level of its own
            if not entry.is_file(follow_symlinks=False):
                foreign.append(rel + ("/" if entry.is_dir(follow_symlinks=False) else ""))
            elif rel == kind.marker:
                pass
            elif rel in written:
                size = written[rel]
                if isinstance(size, int) and entry.stat(follow_symlinks=False).st_size != size:
                    foreign.append(f"{rel} (changed since it was {kind.words.done})")
                else:
                    ours.append(Path(entry.path))
            elif (kind.derived is not None and kind.derived.fullmatch(rel)) or (
                extra is not None and extra.fullmatch(rel)
            ):
                ours.append(Path(entry.path))
            else:
                foreign.append(rel)
            if limit is not None and len(foreign) >= limit:
                return ours, foreign
    return ours, foreign


@dataclass(frozen=True)
class _Holding:
    """What an existing target holds, against what an earlier write made there."""

    kind: Literal["missing", "empty", "ours", "foreign"]
    foreign: list[str] = field(default_factory=list)


def _holding(kind: FolderKind, target: Path, legacy: Mapping[str, int | None]) -> _Holding:
    if target.is_symlink():
        raise PipelineError(
            f"{target}: is a symbolic link; {kind.words.is_folder}, give a path that is not a link"
        )
    if not target.exists():
        return _Holding("missing")
    if not target.is_dir():
        raise PipelineError(f"{target}: is a file, not a folder; {kind.words.elsewhere}")
    marker = read_marker(kind, target)
    written = marker["files"] if marker is not None and marker["complete"] is True else legacy
    foreign = scan(kind, target, written, None, limit=SHOWN + 1)[1]
    if foreign:
        return _Holding("foreign", foreign)
    with os.scandir(target) as entries:
        empty = next(entries, None) is None
    return _Holding("empty" if empty else "ours")


def _refuse_foreign(kind: FolderKind, target: Path, holding: _Holding, force: bool) -> None:
    if holding.kind == "foreign" and not force:
        shown = ", ".join(holding.foreign[:SHOWN])
        more = ", ..." if len(holding.foreign) > SHOWN else ""
        raise PipelineError(
            f"{target}: holds files no instructmix {kind.words.tool} wrote ({shown}{more}); "
            f"refusing to replace it: {kind.words.write_to} a new or empty folder, or pass "
            f"--force to move it aside to {target}.bak-N"
        )


def _leftover_is_ours(kind: FolderKind, folder: Path) -> bool:
    """A build or aside folder of the tool's: its marker's files and the tool's own names,
    or, before the marker was written, nothing but the marker's temporary."""
    marker = read_marker(kind, folder)
    if marker is None:
        marker_tmp = re.compile(re.escape(kind.marker) + r"\.[^/]+\.tmp")
        return not scan(kind, folder, {}, marker_tmp, limit=1)[1]
    return not scan(kind, folder, marker["files"], kind.layout, limit=1)[1]


def _remove_ours(kind: FolderKind, folder: Path) -> None:
    """Delete a folder of ours file by file (never a recursive delete), the marker last, so a
    removal cut short still leaves a folder recognisably ours. Best effort: what stays is
    cleaned by the next write."""
    marker = read_marker(kind, folder)
    ours, foreign = scan(kind, folder, marker["files"] if marker else {}, kind.layout)
    if foreign:
        return
    with suppress(OSError):
        for path in ours:
            path.unlink()
        for prefix in reversed(kind.levels[1:]):  # the deepest first
            if (folder / prefix).is_dir():
                (folder / prefix).rmdir()
        (folder / kind.marker).unlink(missing_ok=True)
        folder.rmdir()


def _rename(src: Path, dst: Path) -> None:
    # The swap's renames, in one place: the crash tests stop the process between them.
    os.rename(src, dst)


def _swap_in(kind: FolderKind, build: Path, target: Path, holding: _Holding) -> Path | None:
    """Rename the finished build into place. Returns where a foreign target was moved."""
    aside: Path | None = None
    backup: Path | None = None
    if holding.kind == "ours":
        # An empty folder reserves a unique name; rename replaces an empty folder atomically.
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.{kind.aside}", dir=target.parent))
        try:
            _rename(target, aside)
        except BaseException:
            with suppress(OSError):
                aside.rmdir()
            raise
    elif holding.kind == "foreign":
        backup = _free_backup(target)
        _rename(target, backup)
    try:
        _rename(build, target)
    except BaseException:
        moved = aside or backup
        if moved is not None:
            _rename(moved, target)
        raise
    if aside is not None:
        _remove_ours(kind, aside)
    return backup


def _free_backup(target: Path) -> Path:
    n = 1
    while os.path.lexists(f"{target}.bak-{n}"):
        n += 1
    return Path(f"{target}.bak-{n}")


def _recover(kind: FolderKind, target: Path) -> None:
    """Finish what a killed write left beside the target (we hold its lock, so no writer is
    running): put back an earlier folder renamed aside when the target is missing, then remove
    build and aside folders that are ours. Anything else matching the names is left alone."""
    pattern = re.compile(
        rf"\.{re.escape(target.name)}\.({re.escape(kind.build)}|{re.escape(kind.aside)})"
        r"[a-z0-9_]{8}"
    )
    with os.scandir(target.parent) as it:
        leftovers = sorted(
            (Path(e.path), m.group(1) == kind.aside)
            for e in it
            if (m := pattern.fullmatch(e.name)) and e.is_dir(follow_symlinks=False)
        )
    if not os.path.lexists(target):
        asides = [path for path, aside in leftovers if aside and _complete(kind, path)]
        if asides:
            latest = max(asides, key=lambda p: p.stat().st_ctime_ns)
            _rename(latest, target)
            leftovers = [(p, aside) for p, aside in leftovers if p != latest]
    for path, _ in leftovers:
        if _leftover_is_ours(kind, path):
            _remove_ours(kind, path)


def _complete(kind: FolderKind, folder: Path) -> bool:
    marker = read_marker(kind, folder)
    if marker is None or marker["complete"] is not True:
        return False
    return not scan(kind, folder, marker["files"], None, limit=1)[1]


@contextmanager
def _lock(kind: FolderKind, target: Path) -> Iterator[None]:
    """Hold the target for one writer. The lock file is removed on release; it is removed
    while still locked, and a waiter that locked a removed file tries again, so two
    writers never both hold a lock on one target."""
    path = target.parent / f".{target.name}.{kind.lock}"
    while True:
        fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the block
        holder = try_lock(fh)
        if holder is not None:
            raise PipelineError(
                f"{target}: in use by another instructmix {kind.words.writer} (pid {holder}); "
                f"wait for it to finish or {kind.words.write_to} another folder"
            )
        try:
            same = os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        fh.close()
    try:
        sign_lock(fh)
        yield
    finally:
        with suppress(OSError):
            path.unlink()
        fh.close()


def _environment_error(
    kind: FolderKind, exc: OSError, target: Path, build: Path | None
) -> PipelineError:
    """``path: cause``, with the build folder's paths shown as the target's."""
    name = os_filename(exc)
    where = Path(name) if name else target
    if build is not None and where.is_relative_to(build):
        where = target / where.relative_to(build)
    elif (
        kind.blame_parent
        and where.parent == target.parent
        and where.name.startswith(f".{target.name}.")
    ):
        where = target.parent  # the lock file or the build folder itself: the parent is at fault
    return PipelineError(
        f"{where}: {os_cause(exc)}; {kind.words.nothing_done}, {target} is as it was"
    )
