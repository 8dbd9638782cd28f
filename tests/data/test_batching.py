"""Dynamic batching (Zaidi et al.): limits respected, every molecule once per epoch, reproducible."""

import numpy as np
import pytest

from denoise3d.data.batching import DynamicBatchLoader, pack_batches


def test_pack_respects_limits_and_covers_every_molecule_once():
    rng = np.random.default_rng(0)
    natoms = rng.integers(1, 30, size=500)
    order = rng.permutation(500)
    batches = pack_batches(order, natoms, max_atoms=100, max_edges=1500, max_graphs=9)
    assert np.array_equal(np.concatenate(batches), order)  # in order, each once
    for b in batches:
        n = natoms[b]
        assert n.sum() <= 100 and (n * (n - 1)).sum() <= 1500 and len(b) <= 9
    for b, nxt in zip(batches[:-1], batches[1:]):  # greedy: the next molecule did not fit
        n = natoms[np.append(b, nxt[0])]
        assert n.sum() > 100 or (n * (n - 1)).sum() > 1500 or len(n) > 9


def test_a_molecule_larger_than_the_limit_is_an_error_naming_it():
    with pytest.raises(ValueError, match="molecule 2 has 12 atoms, more than data.max_atoms=10"):
        pack_batches(np.arange(3), np.array([3, 4, 12]), max_atoms=10)


def test_dynamic_loader_on_qm9_is_deterministic_per_epoch(qm9):
    idx = np.arange(2000)
    loader = DynamicBatchLoader(qm9, idx, max_atoms=300, max_edges=5000, shuffle=True, seed=1)
    loader.set_epoch(0)
    first = [b.copy() for b in loader.index_batches()]
    assert np.array_equal(np.sort(np.concatenate(first)), idx)
    loader.set_epoch(1)
    assert not np.array_equal(np.concatenate(loader.index_batches()), np.concatenate(first))
    loader.set_epoch(0)
    assert all(np.array_equal(a, b) for a, b in zip(first, loader.index_batches()))
    batch = next(iter(loader))
    assert batch.num_atoms <= 300 and batch.edge_index.shape[1] <= 5000
    assert np.array_equal(batch.ids.numpy(), first[0])
    dropped = DynamicBatchLoader(qm9, idx, max_graphs=64, shuffle=True, seed=1, drop_last=True)
    assert len(dropped) == 2000 // 64


def test_cli_trains_with_dynamic_batches(qm9_cache, tmp_path):
    import torch

    from denoise3d.cli import main

    out = tmp_path / "dyn"
    assert main(["pretrain", "configs/pretrain/emgp_cpu.yaml", "model.hidden=16", "model.layers=2",
                 f"data.cache_dir={qm9_cache}", "data.max_train=64", "data.max_valid=16",
                 "data.max_atoms=200", "data.max_graphs=16", "train.epochs=1", "train.threads=1",
                 "train.tensorboard=false", f"train.out={out}"]) == 0
    steps = torch.load(out / "pretrain.pt", weights_only=True)["step"]
    assert 64 * 9 // 200 <= steps <= 64 // 4  # QM9 molecules have 3..29 atoms (~18 on average)
