"""MolecularDataset.batch against collate, and the BatchLoader."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from denoise3d.data.batch import collate, full_graph_edges
from denoise3d.data.dataset import BatchLoader, full_graph_edges_numpy


def assert_batches_equal(a, b):
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "targets":
            assert x.keys() == y.keys()
            for k in x:
                assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), k
        elif x is None or y is None:
            assert x is None and y is None, f.name
        else:
            assert x.dtype == y.dtype and torch.equal(x, y), f.name


@pytest.mark.parametrize("indices", [[0], [3, 3, 0], list(range(20)), "random"])
def test_batch_equals_collate(qm9, rng, indices):
    if indices == "random":
        indices = rng.choice(len(qm9), 64, replace=False)
    batch = qm9.batch(indices)
    assert_batches_equal(batch, collate([qm9.molecule(i) for i in indices]))
    assert batch.ids.tolist() == list(map(int, indices))
    assert batch.targets["homo"].dtype == torch.float64 and batch.targets["homo"].shape == (len(indices),)


def test_batch_equals_collate_with_bonds_from_coordinates(qm9):
    """Molecules without stored hops: collate computes them, and gets the same edge types."""
    mols = [dataclasses.replace(qm9.molecule(i), hops=None) for i in (13, 500, 100_000)]
    assert_batches_equal(qm9.batch([13, 500, 100_000]), collate(mols))


def test_batch_target_subset(qm9):
    b = qm9.batch([5, 7], targets=["gap", "mu"])
    assert list(b.targets) == ["gap", "mu"]
    np.testing.assert_array_equal(b.targets["gap"].numpy(), qm9.target("gap")[[5, 7]])
    with pytest.raises(ValueError, match="unknown target 'GAP'"):
        qm9.batch([5], targets=["GAP"])
    with pytest.raises(IndexError, match="out of range"):
        qm9.batch([len(qm9)])
    with pytest.raises(IndexError):
        qm9.molecule(-1)


def test_full_graph_edges_numpy(rng):
    for natoms in ([1], [2, 1, 3], rng.integers(1, 30, size=50)):
        natoms = np.asarray(natoms, dtype=np.int64)
        ei, pi = full_graph_edges_numpy(natoms)
        ref_ei, ref_pi = full_graph_edges(torch.from_numpy(natoms))
        np.testing.assert_array_equal(ei, ref_ei.numpy())
        np.testing.assert_array_equal(pi, ref_pi.numpy())


def test_batch_speed(qm9, rng):
    """Measured ~0.7 ms per batch of 64 QM9 molecules (~11 µs per molecule) on 2 busy cores."""
    idx = [rng.choice(len(qm9), 64, replace=False) for _ in range(20)]
    qm9.batch(idx[0])
    t0 = time.perf_counter()
    for i in idx:
        qm9.batch(i)
    per_molecule = (time.perf_counter() - t0) / (20 * 64)
    assert per_molecule < 1e-3  # generous: the brief's bound, robust to a loaded machine


def test_loader(qm9):
    indices = np.arange(100, 300)
    loader = BatchLoader(qm9, indices, batch_size=64, shuffle=True, seed=3)
    assert len(loader) == 4 and len(BatchLoader(qm9, indices, 64, drop_last=True)) == 3
    first = [b.ids for b in loader]
    assert [len(b) for b in first] == [64, 64, 64, 8]
    assert sorted(torch.cat(first).tolist()) == indices.tolist()  # every molecule exactly once
    assert all(torch.equal(a, b.ids) for a, b in zip(first, loader))  # same epoch, same order
    loader.set_epoch(1)
    second = torch.cat([b.ids for b in loader])
    assert not torch.equal(second, torch.cat(first))
    assert sorted(second.tolist()) == indices.tolist()
    again = BatchLoader(qm9, indices, batch_size=64, shuffle=True, seed=3)
    again.set_epoch(1)
    assert torch.equal(torch.cat([b.ids for b in again]), second)  # reproducible per epoch
    plain = BatchLoader(qm9, indices, batch_size=64, drop_last=True, targets=["u0"])
    batches = list(plain)
    assert torch.cat([b.ids for b in batches]).tolist() == list(range(100, 292))
    assert list(batches[0].targets) == ["u0"]
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(qm9, indices, batch_size=0)


def test_repr_and_target_column(qm9):
    assert "130,831 structures" in repr(qm9)
    assert qm9.target("u0").shape == (130_831,) and qm9.targets.shape == (130_831, 12)


def test_total_energies_keep_float64_precision(qm9):
    """U0 (~ -10⁴ eV) reaches the loss unrounded: float32 would move it by up to ~1 meV."""
    idx = [0, 1000, 50000]
    u0 = qm9.batch(idx).targets["u0"]
    assert u0.dtype == torch.float64
    assert torch.equal(u0, torch.as_tensor(qm9.target("u0")[idx]))


def test_epoch_size_repeats_shuffled_passes(qm9):
    """data.epoch_size: few labels, a 1,000-sample epoch (each molecule once per pass)."""
    indices = np.arange(100, 200)
    once = BatchLoader(qm9, indices, batch_size=32, shuffle=True, seed=3, drop_last=True)
    many = BatchLoader(qm9, indices, batch_size=32, shuffle=True, seed=3, drop_last=True,
                       epoch_size=1000)
    assert len(once) == 3 and len(many) == 31  # 1000 // 32, the budget of a 1,000-label epoch
    order = many.order()
    assert len(order) == 1000 and np.array_equal(order[:100], once.order())  # first pass unchanged
    for k in range(10):
        assert sorted(order[100 * k:100 * (k + 1)].tolist()) == indices.tolist()
    assert not np.array_equal(order[:100], order[100:200])
    ragged = BatchLoader(qm9, indices, batch_size=32, shuffle=True, seed=3, epoch_size=250)
    assert len(ragged.order()) == 250 and len(ragged) == 8
    plain = BatchLoader(qm9, indices, batch_size=32, epoch_size=1000)  # evaluation: ignored
    assert len(plain) == 4 and np.array_equal(plain.order(), indices)
