"""The on-disk cache: atomic writes, cheap validation, reuse and rebuilds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from denoise3d.data import storage
from denoise3d.data.dataset import load_qm9
from denoise3d.data.qm9 import read_qm9_csv
from denoise3d.data.storage import (CacheInvalid, compute_hops, concat_ranges, default_cache_dir,
                                    load_or_build, open_cache, statistics, write_cache)

SOURCE = {"dataset": "test", "files": [["qm9_part1.csv", 1, 2]]}


@pytest.fixture
def small_arrays(small_csv):
    raw = read_qm9_csv([small_csv])
    raw["hops"], raw["hop_offset"] = compute_hops(raw["z"], raw["pos"], raw["atom_offset"])
    return raw


class Builder:
    """A build function that counts its calls."""

    def __init__(self, arrays):
        self.arrays, self.calls = arrays, 0

    def __call__(self):
        self.calls += 1
        return self.arrays, {"target_names": ["a"] * 12}


def test_concat_ranges():
    assert concat_ranges([5, 0, 10], [2, 0, 3]).tolist() == [5, 6, 10, 11, 12]
    assert concat_ranges([], []).tolist() == []


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DENOISE3D_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("DENOISE3D_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "denoise3d"


def test_write_and_open(tmp_path, small_arrays):
    write_cache(tmp_path / "c", small_arrays, SOURCE, {"target_names": ["x"]})
    arrays, manifest = open_cache(tmp_path / "c", SOURCE)
    assert isinstance(arrays["pos"], np.memmap) and arrays["pos"].dtype == np.float32
    assert arrays["z"].dtype == np.int8 and arrays["hops"].dtype == np.int8
    for k, v in small_arrays.items():
        np.testing.assert_array_equal(arrays[k], v)
    assert manifest["counts"]["molecules"] == 50 and manifest["meta"] == {"target_names": ["x"]}
    assert manifest["arrays"]["pos"]["shape"] == list(small_arrays["pos"].shape)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "src"]  # no temporary directory left
    with pytest.raises(CacheInvalid, match="source files or settings changed"):
        open_cache(tmp_path / "c", {**SOURCE, "files": [["qm9_part1.csv", 1, 3]]})


def test_reuse_and_rebuilds(tmp_path, small_arrays, capsys):
    path, build = tmp_path / "c", Builder(small_arrays)
    load_or_build(path, SOURCE, build)
    assert build.calls == 1 and "structures 50" in capsys.readouterr().err
    load_or_build(path, SOURCE, build)
    assert build.calls == 1 and capsys.readouterr().err == ""  # reused silently

    (path / "manifest.json").unlink()
    load_or_build(path, SOURCE, build)
    assert build.calls == 2 and "manifest missing" in capsys.readouterr().err

    with open(path / "hops.npy", "r+b") as f:  # truncate one array to half its size
        f.truncate(os.path.getsize(path / "hops.npy") // 2)
    load_or_build(path, SOURCE, build)
    assert build.calls == 3 and "hops.npy" in capsys.readouterr().err

    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = -1
    (path / "manifest.json").write_text(json.dumps(manifest))
    load_or_build(path, SOURCE, build)
    assert build.calls == 4 and "format version" in capsys.readouterr().err

    load_or_build(path, {**SOURCE, "files": []}, build)
    assert build.calls == 5 and "changed" in capsys.readouterr().err
    arrays, _ = load_or_build(path, {**SOURCE, "files": []}, build)
    assert build.calls == 5 and len(arrays["atom_offset"]) == 51


def test_inconsistent_arrays_rejected(tmp_path, small_arrays):
    bad = dict(small_arrays, hop_offset=small_arrays["hop_offset"][:-1])
    write_cache(tmp_path / "c", bad, SOURCE)
    with pytest.raises(CacheInvalid, match="inconsistent"):
        open_cache(tmp_path / "c")


def test_failed_build_leaves_nothing(tmp_path, small_arrays):
    def broken():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        load_or_build(tmp_path / "c", SOURCE, broken, verbose=False)
    arrays = {k: v for k, v in small_arrays.items() if k != "targets"}
    with pytest.raises(ValueError, match="missing arrays"):
        write_cache(tmp_path / "c", arrays, SOURCE)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["src"]


def test_killed_build_never_used(tmp_path, small_arrays):
    """A process killed (SIGKILL) in the middle of writing leaves only a temporary directory,
    which is never opened, and is removed by the next build."""
    np.savez(tmp_path / "arrays.npz", **small_arrays)
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from denoise3d.data import storage
        arrays = dict(np.load({str(tmp_path / 'arrays.npz')!r}))
        real_save, n = np.save, [0]
        def save(*a, **k):
            n[0] += 1
            if n[0] == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            real_save(*a, **k)
        np.save = save
        storage.write_cache({str(tmp_path / 'c')!r}, arrays, {SOURCE!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".c.tmp-")]
    assert len(leftovers) == 1 and not (tmp_path / "c").exists()
    # even a complete-looking temporary directory is never opened under the cache's name
    write_cache(tmp_path / "elsewhere", small_arrays, SOURCE)
    for f in (tmp_path / "elsewhere").iterdir():
        os.replace(f, leftovers[0] / f.name)
    with pytest.raises(CacheInvalid, match="no cache"):
        open_cache(tmp_path / "c", SOURCE)
    build = Builder(small_arrays)
    load_or_build(tmp_path / "c", SOURCE, build, verbose=False)
    assert build.calls == 1 and not leftovers[0].exists()  # dead pid's temp dir cleaned up


def test_live_temp_dirs_kept(tmp_path, small_arrays):
    live = tmp_path / f".c.tmp-{socket.gethostname()}-{os.getpid()}-abcd"
    live.mkdir()
    load_or_build(tmp_path / "c", SOURCE, Builder(small_arrays), verbose=False)
    assert live.exists()


def test_statistics(small_arrays):
    text = statistics(small_arrays)
    assert "structures 50" in text and "H " in text and "min 3" in text


def test_real_qm9_cache_reused(qm9_cache, capsys):
    manifest = json.loads((qm9_cache / "qm9" / "manifest.json").read_text())
    assert manifest["counts"] == {"molecules": 130_831, "atoms": 2_359_210,
                                  "hop_entries": manifest["counts"]["hop_entries"]}
    assert manifest["source"]["reader"] == "qm9pack-csv"
    assert [f[0] for f in manifest["source"]["files"]] == [f"qm9_part{k}.csv" for k in (1, 2, 3)]
    ds = load_qm9(cache_dir=qm9_cache)
    assert len(ds) == 130_831 and "building" not in capsys.readouterr().err


def test_bond_settings_are_part_of_the_fingerprint(qm9_cache):
    """Changing the bond rule (graphs.BOND_FACTOR, MAX_HOP) invalidates caches."""
    manifest = json.loads((qm9_cache / "qm9" / "manifest.json").read_text())
    assert manifest["source"]["hops"] == storage.HOP_SETTINGS
    assert storage.HOP_SETTINGS["bond_factor"] == storage.BOND_FACTOR
