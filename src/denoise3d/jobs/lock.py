"""Output-folder locks: a file holding the pid of the process that owns the folder.

A folder held by a live process is refused; a lock left by a dead holder (killed, crashed) is taken
over, so a killed run can be resumed in place. Creation is atomic (``O_CREAT | O_EXCL``): of two
processes racing for a free folder exactly one wins. Locks are per machine (pids are checked
locally); a folder shared by several machines needs a scheduler's own exclusion.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = "LOCK"


class FolderBusy(RuntimeError):
    """The output folder is held by another live process (one-line message)."""


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def holder(lock: Path) -> int | None:
    """The pid of the live process holding ``lock``, or None (no lock file, or a dead holder)."""
    try:
        pid = int(Path(lock).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if alive(pid) else None


def claim(lock: Path, pid: int | None = None) -> int | None:
    """Take ``lock`` for ``pid`` (default: this process); returns None when taken, or the pid of
    the live process that holds it. A dead holder's lock is taken over."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            other = holder(lock)
            if other is not None:
                return other
            lock.unlink(missing_ok=True)  # a dead holder's: take over (a racer may win instead)
            continue
        os.write(fd, f"{os.getpid() if pid is None else pid}\n".encode())
        os.close(fd)
        return None


@contextmanager
def output_folder(out: Path, take: bool = True):
    """Hold ``out`` for the block (created if missing): :class:`FolderBusy` if a live process holds
    it, which then stays untouched. ``take=False`` (other ranks of a data-parallel run, whose main
    process holds the folder) does nothing."""
    if not take:
        yield
        return
    lock = Path(out) / LOCK_NAME
    other = claim(lock)
    if other == os.getpid():  # this process already holds it (a job run twice in one process)
        other = None
    if other is not None:
        raise FolderBusy(f"{out}: in use by a running denoise3d process (pid {other}); wait for "
                         f"it to finish or choose another train.out")
    try:
        yield
    finally:
        if holder(lock) == os.getpid():
            lock.unlink(missing_ok=True)
