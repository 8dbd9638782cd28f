"""Test-wide settings and fixtures: fixed seeds, one CPU thread, the real QM9 cache.

One thread keeps the many small tensors of the tests fast and steady: with two threads, any other
process on a 2-core machine makes torch's thread pool wait (seen: 40x slower steps).
"""

from pathlib import Path

import pytest
import torch

from denoise3d.data.dataset import MolecularDataset, load_qm9


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    yield


@pytest.fixture(scope="session")
def qm9_cache(tmp_path_factory) -> Path:
    """Cache root holding the real QM9 cache, built once per session (~15 s on 2 cores)."""
    root = tmp_path_factory.mktemp("cache")
    load_qm9(cache_dir=root, verbose=False)
    return root


@pytest.fixture(scope="session")
def qm9(qm9_cache) -> MolecularDataset:
    """All 130,831 QM9 molecules (memory-mapped)."""
    return load_qm9(cache_dir=qm9_cache, verbose=False)
