"""The streaming cache writer: equal to a one-shot build, bounded chunks, killed builds never used."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from denoise3d.data.dataset import MolecularDataset
from denoise3d.data.storage import CacheInvalid, compute_hops, open_cache, write_cache
from denoise3d.data.writer import CacheWriter, npy_header, stream_or_open

SOURCE = {"dataset": "synthetic-test"}


def chains(n: int, seed: int = 0):
    """``n`` synthetic chain molecules of 20-40 H/C/N/O atoms (the benchmark's generator)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        k = int(rng.integers(20, 41))
        steps = rng.normal(size=(k, 3))
        steps *= (rng.uniform(1.0, 1.5, size=k) / np.linalg.norm(steps, axis=1))[:, None]
        yield np.array([1, 6, 7, 8])[rng.integers(0, 4, size=k)], np.cumsum(steps, axis=0)


def test_npy_header_is_numpy_readable(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    with open(tmp_path / "a.npy", "wb") as f:
        f.write(npy_header(a.dtype, a.shape))
        f.write(a.tobytes())
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy", mmap_mode="r"), a)


def test_streamed_equals_one_shot(tmp_path):
    """20,000 molecules written in ~25 chunks give exactly the arrays of a one-shot build."""
    mols = list(chains(20_000))
    with CacheWriter(tmp_path / "s", SOURCE, chunk_atoms=25_000) as w:
        for z, pos in mols:
            w.add(z, pos)
    streamed, manifest = open_cache(tmp_path / "s", SOURCE)
    assert manifest["complete"] and manifest["counts"]["molecules"] == 20_000
    z = np.concatenate([m[0] for m in mols])
    pos = np.concatenate([m[1] for m in mols]).astype(np.float32)
    offset = np.concatenate([[0], np.cumsum([len(m[0]) for m in mols])])
    hops, hop_offset = compute_hops(z, pos, offset)
    one = {"z": z, "pos": pos, "atom_offset": offset, "hops": hops, "hop_offset": hop_offset,
           "targets": np.zeros((20_000, 0))}
    write_cache(tmp_path / "o", one, SOURCE, {"target_names": []})
    ref, _ = open_cache(tmp_path / "o", SOURCE)
    for k in one:
        assert streamed[k].dtype == ref[k].dtype, k
        np.testing.assert_array_equal(streamed[k], ref[k], err_msg=k)
    assert "structures 20,000" in w.statistics() and "min 20" in w.statistics()


def test_targets_forces_strings(tmp_path):
    with CacheWriter(tmp_path / "c", SOURCE, {"target_names": ["e"], "target_units": ["eV"]},
                     n_targets=1, forces=True, strings=("names", "smiles"), chunk_atoms=4) as w:
        w.add([8, 1, 1], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], [-1.5], np.ones((3, 3)),
              names="water", smiles="O")
        w.add([6, 1, 1, 1, 1], np.eye(5, 3) * 1.09, [2.0], np.zeros((5, 3)), names="methane",
              smiles="C")
    arrays, manifest = open_cache(tmp_path / "c", SOURCE)
    ds = MolecularDataset.from_manifest(arrays, manifest)
    assert len(ds) == 2 and ds.smiles(1) == "C" and arrays["names"][0] == b"water"
    b = ds.batch([1, 0])
    assert b.targets["e"].tolist() == [2.0, -1.5] and b.targets["forces"].shape == (8, 3)
    np.testing.assert_array_equal(ds.molecule(0).hops, [[0, 1, 1], [1, 0, 2], [1, 2, 0]])
    with pytest.raises(ValueError, match="1 targets, expected 0"):
        CacheWriter(tmp_path / "d", SOURCE).add([1], [[0, 0, 0]], [1.0])


def test_failed_build_leaves_nothing(tmp_path):
    def fill(w):
        w.add([1], [[0, 0, 0]])
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        stream_or_open(tmp_path / "c", SOURCE, fill, verbose=False)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_incomplete_or_truncated_cache_rejected(tmp_path):
    with CacheWriter(tmp_path / "c", SOURCE) as w:
        for z, pos in chains(10):
            w.add(z, pos)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    (tmp_path / "c" / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(CacheInvalid, match="not complete"):
        open_cache(tmp_path / "c")
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    with open(tmp_path / "c" / "hops.npy", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "c" / "hops.npy") - 100)
    with pytest.raises(CacheInvalid, match="hops.npy"):
        open_cache(tmp_path / "c")


def test_killed_streaming_build_never_trusted(tmp_path):
    """SIGKILL in the middle of a streamed build: no cache under the name; the next
    stream_or_open rebuilds it and removes the dead build's temporary directory."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_writer import chains, SOURCE
        from denoise3d.data.writer import CacheWriter
        with CacheWriter({str(tmp_path / 'c')!r}, SOURCE, chunk_atoms=3000) as w:
            for i, (z, pos) in enumerate(chains(10**6)):
                w.add(z, pos)
                if i == 500:
                    print("flushed", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"flushed"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".c.tmp-")]
    assert len(leftovers) == 1 and (leftovers[0] / "hops.npy").stat().st_size > 256
    assert not (tmp_path / "c").exists()
    with pytest.raises(CacheInvalid, match="no cache"):
        open_cache(tmp_path / "c", SOURCE)
    calls = []

    def fill(w):
        calls.append(1)
        for z, pos in chains(30):
            w.add(z, pos)

    arrays, manifest = stream_or_open(tmp_path / "c", SOURCE, fill, verbose=False)
    assert calls == [1] and manifest["counts"]["molecules"] == 30 and not leftovers[0].exists()
    stream_or_open(tmp_path / "c", SOURCE, fill, verbose=False)  # reused, not rebuilt
    assert calls == [1]


def test_release_pages_keeps_batches_equal(tmp_path):
    """Dropping mapped pages (BatchLoader.release_every) never changes what is read."""
    from denoise3d.data.dataset import BatchLoader

    with CacheWriter(tmp_path / "c", SOURCE, chunk_atoms=500) as w:
        for z, pos in chains(100):
            w.add(z, pos)
    ds = MolecularDataset.from_manifest(*open_cache(tmp_path / "c"))
    a = list(BatchLoader(ds, batch_size=8, shuffle=True, release_every=1))
    b = list(BatchLoader(ds, batch_size=8, shuffle=True, release_every=0))
    for x, y in zip(a, b):
        assert (x.pos == y.pos).all() and (x.edge_type == y.edge_type).all()


def test_a_killed_builds_temporary_folder_is_removed_by_the_next_build(tmp_path):
    """`denoise3d data build` writes with CacheWriter directly: its leftovers go too."""
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".cache.tmp-{socket.gethostname()}-{dead.pid}-deadbeef"
    leftover.mkdir()
    (leftover / "pos.npy").write_bytes(b"\0" * 1000)
    with CacheWriter(tmp_path / "cache", {"dataset": "x"}) as w:
        w.add([8, 1, 1], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    assert not leftover.exists() and (tmp_path / "cache").is_dir()
