"""Output-folder locks (jobs/lock.py): exclusive while the holder lives, taken over after."""

import os
import subprocess
import sys

import pytest

from denoise3d.jobs.lock import LOCK_NAME, FolderBusy, claim, holder, output_folder


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_claim_is_exclusive_while_the_holder_lives(tmp_path):
    lock = tmp_path / "run" / LOCK_NAME
    assert claim(lock) is None and holder(lock) == os.getpid()
    assert claim(lock) == os.getpid()  # held by a live process: refused, pid reported
    lock.write_text(f"{dead_pid()}\n")
    assert holder(lock) is None and claim(lock) is None  # a dead holder's lock is taken over
    assert holder(lock) == os.getpid()


def test_output_folder_refuses_a_live_holder_and_releases(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(f"{sleeper.pid}\n")
        with pytest.raises(FolderBusy, match=f"pid {sleeper.pid}"):
            with output_folder(tmp_path):
                pass
        assert (tmp_path / LOCK_NAME).read_text() == f"{sleeper.pid}\n"  # untouched
    finally:
        sleeper.kill()
        sleeper.wait()
    with output_folder(tmp_path):  # its holder is gone: ours
        assert holder(tmp_path / LOCK_NAME) == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()  # released at the end
    with pytest.raises(RuntimeError, match="boom"), output_folder(tmp_path):
        raise RuntimeError("boom")
    assert not (tmp_path / LOCK_NAME).exists()  # released on failure too
