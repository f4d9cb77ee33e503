"""Keep a benchmark's own file deletions out of its measurements.

On ext4 without a journal (this project's test machine: `/` has no jbd2), the inode
allocator skips every free inode whose inode-table block is still cached and which was
freed less than 60 seconds ago, or less than 360 seconds ago (60 + 300) while that block is
dirty: `recently_deleted()` in the kernel's fs/ext4/ialloc.c. Each skipped inode is a
buffer-cache lookup, so after a large deletion every file or directory created nearby costs
a scan past all of those inodes. With perf, a 4 KiB PUT run right after a previous run's
data was deleted spent 17% of the whole machine's CPU in `find_inode_bit` (under 0.3%
otherwise), and `cairn bench compare --quick` started right after 200,000 files were
deleted gave put4k=2.11 against 2.74-3.07 without. The object servers of both systems
create two or three inodes per PUT, so the effect lands hardest on whichever system does
more PUTs per second.

So a comparison never deletes old data right before it measures: `set_aside` renames the
previous run's data directories out of the way (a rename frees no inode) and `purge` deletes
them, with this run's, once the measuring is over (each run's `logs/` directories are kept,
under `out/logs/<name>/`), syncs, and records when, in `out` and for the whole machine.
Waiting the deletion out is not practical: 70 s after a synced deletion of 200,000 files a
4 KiB PUT run still spent 8% of the machine in `find_inode_bit`, because the new files' inodes
dirty the same inode-table blocks again and a dirty block keeps its freed inodes skipped for
up to 360 s. So `recent_purge` only tells how long ago the last purge was, and a run that
starts within `QUIET_S` of it says so and records it. Deletions by other programs on the
machine are not under the benchmark's control: docs/performance.md says so.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from common.fsutil import atomic_write_bytes

__all__ = [
    "MACHINE_STAMP",
    "QUIET_S",
    "STAMP",
    "purge",
    "purge_warning",
    "recent_purge",
    "set_aside",
]

# ext4's RECENTCY_MIN (60 s) plus RECENTCY_DIRTY (300 s): after this long a deletion no
# longer slows new files down, whatever happened to the inode-table blocks since.
QUIET_S = 360.0
# In the output directory: when the last purge ended (seconds since the epoch, as text).
STAMP = ".freed-at"
# The same for the whole machine, so a run into another output directory learns of it too.
MACHINE_STAMP = Path(tempfile.gettempdir()) / "cairn-bench.freed-at"
# Set-aside directories are named `<prefix><name>-<ns>`: only the names a caller passes are
# ever picked up again, never another program's directories.
_ASIDE_PREFIX = ".fsquiet-aside-"
# Directories of these names, at most two levels into a purged tree, are kept.
_KEEP = "logs"


def set_aside(out: Path, names: Iterable[str]) -> list[Path]:
    """Rename the `names` directories under `out` that exist (a previous run's data) to
    hidden names, so this run starts on fresh paths without deleting anything now. Also
    returns what earlier interrupted runs left set aside under those names."""
    names = list(names)
    moved = sorted(p for name in names for p in out.glob(f"{_ASIDE_PREFIX}{name}-*") if p.is_dir())
    stamp = time.time_ns()
    for name in names:
        src = out / name
        if src.is_dir():
            dst = out / f"{_ASIDE_PREFIX}{name}-{stamp}"
            src.rename(dst)
            moved.append(dst)
    return moved


def _keep_logs(out: Path, tree: Path) -> None:
    """Move `tree`'s logs directories (at most two levels down) to `out`/logs/<name>/."""
    name = tree.name
    if name.startswith(_ASIDE_PREFIX):
        name = name[len(_ASIDE_PREFIX) :].rsplit("-", 1)[0]
    found = [p for p in (tree / _KEEP, *tree.glob(f"*/{_KEEP}")) if p.is_dir()]
    for i, logs in enumerate(found):
        dest = out / _KEEP / (name if i == 0 else f"{name}-{logs.parent.name}")
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)  # the previous run's logs: a few files
        dest.parent.mkdir(parents=True, exist_ok=True)
        logs.rename(dest)


def purge(
    out: Path,
    dirs: Iterable[Path],
    *,
    now: Callable[[], float] = time.time,
    sync: Callable[[], None] = os.sync,
    say: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    machine_stamp: Path | None = None,
) -> None:
    """Delete `dirs` (data no longer needed; their logs kept under `out`/logs), sync (the
    inode table written back: the 60-second rule applies, not the 360-second one), and
    record the time in `out`/STAMP and in `machine_stamp` (default MACHINE_STAMP), also when
    interrupted part-way."""
    present = [d for d in dirs if d.exists()]
    if not present:
        return
    say(f"deleting the benchmark's data ({', '.join(str(d) for d in present)})")
    try:
        for d in present:
            _keep_logs(out, d)
            shutil.rmtree(d, ignore_errors=True)
        sync()
    finally:
        when = f"{now():.3f}\n".encode()
        atomic_write_bytes(out / STAMP, when)
        shared = machine_stamp or MACHINE_STAMP
        try:
            atomic_write_bytes(shared, when)
        except OSError as e:  # shared /tmp not writable: the output directory's stamp stays
            say(f"could not record the deletion in {shared}: {e}")


def recent_purge(
    out: Path,
    *,
    now: Callable[[], float] = time.time,
    machine_stamp: Path | None = None,
) -> float | None:
    """Seconds since the last purge recorded in `out` or for the machine (`machine_stamp`,
    default MACHINE_STAMP), if less than QUIET_S; else None."""
    ages = []
    for stamp in (out / STAMP, machine_stamp or MACHINE_STAMP):
        try:
            ages.append(now() - float(stamp.read_text()))
        except (OSError, ValueError):
            continue
    age = min(ages, default=QUIET_S)
    return max(0.0, age) if age < QUIET_S else None


def purge_warning(age_s: float) -> str:
    return (
        f"note: a benchmark's data was deleted {age_s:.0f} s ago; on ext4 without a journal"
        f" new files skip inodes freed in the last {QUIET_S:.0f} s, which costs PUTs CPU"
        " (bench/fsquiet.py): for steadier PUT figures start a run later than that"
    )
