"""QM9 split (sizes, disjointness, reproducibility, saved and reused) and random_split."""

from __future__ import annotations

import numpy as np
import pytest

from denoise3d.data import splits as splits_mod
from denoise3d.data.splits import qm9_sizes, qm9_split, random_split

N = 130_831


def test_qm9_split(tmp_path):
    s = qm9_split(N, path=tmp_path)
    assert {k: len(v) for k, v in s.items()} == {"train": 100_000, "valid": 17_748, "test": 13_083}
    allidx = np.concatenate(list(s.values()))
    assert len(np.unique(allidx)) == N and allidx.min() == 0 and allidx.max() == N - 1
    assert all(v.dtype == np.int64 and (np.diff(v) > 0).all() for v in s.values())
    file = tmp_path / f"qm9_split_n{N}_seed42.npz"
    assert file.is_file()
    other = qm9_split(N, seed=7, path=tmp_path)
    assert not np.array_equal(other["test"], s["test"])
    fresh = qm9_split(N, path=tmp_path / "elsewhere")  # recomputed from the seed: same split
    assert all(np.array_equal(fresh[k], s[k]) for k in s)


def test_qm9_split_reused(tmp_path, monkeypatch):
    first = qm9_split(N, path=tmp_path / "split.npz")
    monkeypatch.setattr(splits_mod, "random_split", lambda *a, **k: pytest.fail("recomputed"))
    again = qm9_split(N, path=tmp_path / "split.npz")
    assert all(np.array_equal(first[k], again[k]) for k in first)
    with pytest.raises(ValueError, match="split made for n=130831, seed=42"):
        qm9_split(N, seed=1, path=tmp_path / "split.npz")
    with pytest.raises(ValueError, match="split made for n=130831"):
        qm9_split(N - 1, path=tmp_path / "split.npz")


def test_qm9_split_broken_file_rebuilt(tmp_path, capsys):
    file = tmp_path / "split.npz"
    file.write_bytes(b"not a zip file")
    s = qm9_split(N, path=file)
    assert len(s["train"]) == 100_000 and "rebuilding" in capsys.readouterr().err
    assert not list(tmp_path.glob(".*tmp*"))


def test_egnn_exact_split(tmp_path):
    """seed=0 + legacy RandomState = cormorant's gen_splits_gdb9 (used by EGNN and 3D-EMGP)."""
    s = qm9_split(N, seed=0, path=tmp_path, legacy_rng=True)
    perm = np.random.RandomState(0).permutation(N)  # = np.random.seed(0); np.random.permutation(N)
    train, valid, test, extra = np.split(perm, [100_000, 117_748, 130_831])
    assert len(extra) == 0
    for name, ref in (("train", train), ("valid", valid), ("test", test)):
        np.testing.assert_array_equal(s[name], np.sort(ref))


def test_qm9_sizes():
    assert qm9_sizes(N) == {"train": 100_000, "valid": 17_748, "test": 13_083}
    with pytest.raises(ValueError, match="random_split"):
        qm9_sizes(1000)


def test_random_split():
    s = random_split(10, [0.8, 0.1, 0.1], seed=1)
    assert {k: len(v) for k, v in s.items()} == {"train": 8, "valid": 1, "test": 1}
    assert len(np.unique(np.concatenate(list(s.values())))) == 10
    s = random_split(11, [0.5, 0.5])
    assert len(s["train"]) + len(s["valid"]) == 11 and list(s) == ["train", "valid"]
    s = random_split(100, {"a": 10, "b": 20}, seed=5)
    assert list(s) == ["a", "b"] and (len(s["a"]), len(s["b"])) == (10, 20)
    assert not set(s["a"]) & set(s["b"])
    assert all(np.array_equal(s[k], random_split(100, {"a": 10, "b": 20}, seed=5)[k]) for k in s)
    assert list(random_split(8, [2, 2, 2, 2])) == ["split0", "split1", "split2", "split3"]
    with pytest.raises(ValueError, match="add up to 12 > 10"):
        random_split(10, [6, 6])
    with pytest.raises(ValueError, match="sum to <= 1"):
        random_split(10, [0.7, 0.7])
    with pytest.raises(ValueError, match=">= 0"):
        random_split(10, [-1, 2])
