"""Output-folder locks: a file holding the pid (and start time) of the process that owns a folder.

A folder held by a live process is refused; a lock left by a dead holder (killed, crashed) is taken
over, so a killed run can be resumed in place. The lock file always appears complete: it is
written under a temporary name and linked (claim) or renamed (hand-over) into place, so no reader
sees it half-written, and takeovers of a dead holder's lock are serialised by an ``flock`` on a
side file, so of several processes racing for a folder exactly one wins. The holder's start time
(Linux ``/proc``) is recorded with its pid: a pid reused by another process does not hold the
lock. Locks are per machine (pids are checked locally).
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = "LOCK"


class FolderBusy(RuntimeError):
    """The output folder is held by another live process (one-line message)."""


def start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot; Linux), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 of proc(5), after "pid (comm)"


def alive(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` exists on this machine (and, if ``started`` is given and
    /proc knows it, is the process that started then, not a later one with a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    now = start_time(pid) if started else None
    return now is None or now == started


def holder(lock: Path) -> int | None:
    """The pid of the live process holding ``lock``, or None (no lock file, or a dead holder)."""
    try:
        fields = Path(lock).read_text().split()
        pid = int(fields[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if alive(pid, fields[1] if len(fields) > 1 else None) else None


def _written(lock: Path, pid: int) -> Path:
    """A complete lock file for ``pid`` under a temporary name beside ``lock``."""
    tmp = lock.with_name(f".{lock.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(f"{pid} {start_time(pid) or ''}".strip() + "\n")
    return tmp


@contextmanager
def _takeover(lock: Path):
    """Serialise takeovers of ``lock`` (an flock on a side file, released by the kernel on death)."""
    import fcntl

    with open(lock.with_name(f".{lock.name}.takeover"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def claim(lock: Path, pid: int | None = None) -> int | None:
    """Take ``lock`` for ``pid`` (default: this process); returns None when taken, or the pid of
    the live process that holds it. A dead holder's lock is taken over."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    tmp = _written(lock, os.getpid() if pid is None else pid)
    try:
        try:
            os.link(tmp, lock)  # atomic: fails if any lock file exists
            return None
        except FileExistsError:
            pass
        with _takeover(lock):
            other = holder(lock)
            if other is not None:
                return other
            os.replace(tmp, lock)  # the dead holder's file, replaced whole
            return None
    finally:
        tmp.unlink(missing_ok=True)


def hand_over(lock: Path, pid: int) -> None:
    """Make live process ``pid`` (e.g. a child doing the run) the holder of a lock we hold."""
    os.replace(_written(Path(lock), pid), lock)


def release(lock: Path) -> None:
    """Remove ``lock`` if this process holds it."""
    if holder(lock) == os.getpid():
        Path(lock).unlink(missing_ok=True)


@contextmanager
def output_folder(out: Path, take: bool = True):
    """Hold ``out`` for the block (created if missing): :class:`FolderBusy` if a live process holds
    it, which then stays untouched. ``take=False`` (other ranks of a data-parallel run, whose main
    process holds the folder) does nothing."""
    if not take:
        yield
        return
    if Path(out).exists() and not Path(out).is_dir():
        raise FolderBusy(f"train.out={out} is a file, not a folder")
    lock = Path(out) / LOCK_NAME
    other = claim(lock)
    if other is not None and other != os.getpid():
        raise FolderBusy(f"{out}: in use by a running denoise3d process (pid {other}); wait for "
                         f"it to finish or choose another train.out")
    try:
        yield
    finally:
        release(lock)
