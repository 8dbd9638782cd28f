"""Dynamic batching (Zaidi et al.): batches bounded by atoms / edges / graphs, not a fixed count.

:func:`pack_batches` walks the molecules in the epoch's (shuffled) order and closes a batch just
before adding the next molecule would exceed a limit::

    atoms  Σ n_i        <= max_atoms
    edges  Σ n_i(n_i-1) <= max_edges      (the dataset's fully connected graph, both directions)
    graphs count        <= max_graphs

so every molecule is in exactly one batch per epoch, and the batches of epoch ``e`` depend only on
``(seed, e)``: runs are reproducible and resumable. A molecule that alone exceeds a limit is an
error (naming it), never dropped silently.

Both loaders (:class:`~denoise3d.data.dataset.BatchLoader` and :class:`DynamicBatchLoader`) expose
``index_batches()`` (the epoch's molecule indices, one array per batch) and ``make(idx)``
(a Batch), which :class:`~denoise3d.train.distributed.ShardedLoader` uses to split them across
ranks and the trainer uses to resume mid-epoch without building skipped batches.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from denoise3d.data.batch import Batch
from denoise3d.data.dataset import epoch_order, make_batch

__all__ = ["pack_batches", "DynamicBatchLoader"]


def pack_batches(order: np.ndarray, natoms: np.ndarray, max_atoms: int | None = None,
                 max_edges: int | None = None, max_graphs: int | None = None) -> list[np.ndarray]:
    """Greedy packing of ``order`` (molecule indices) into batches within the limits.

    ``natoms[i]`` is the atom count of molecule ``i``. Returns index arrays in order.
    """
    order = np.asarray(order, dtype=np.int64)
    n = np.asarray(natoms, dtype=np.int64)[order]  # (m,)
    e = n * (n - 1)
    inf = np.iinfo(np.int64).max
    lim_a, lim_e = max_atoms or inf, max_edges or inf
    lim_g = max_graphs or inf
    for what, values, lim in (("atoms", n, lim_a), ("edges", e, lim_e)):
        big = np.flatnonzero(values > lim)
        if big.size:
            i = int(order[big[0]])
            raise ValueError(f"molecule {i} has {int(values[big[0]])} {what}, more than "
                             f"data.max_{what}={lim}: raise the limit")
    batches, start, a, ed = [], 0, 0, 0
    for k in range(len(order)):  # sequential by nature; ~30 ms per 100k molecules
        nk, ek = int(n[k]), int(e[k])
        if k > start and (a + nk > lim_a or ed + ek > lim_e or k - start + 1 > lim_g):
            batches.append(order[start:k])
            start, a, ed = k, 0, 0
        a, ed = a + nk, ed + ek
    if start < len(order):
        batches.append(order[start:])
    return batches


class DynamicBatchLoader:
    """Iterable of :class:`Batch` packed by :func:`pack_batches`; same interface as BatchLoader.

    With ``drop_last`` the final (possibly small) batch of each epoch is dropped, as with
    fixed-size training batches.
    """

    def __init__(self, dataset, indices: Sequence[int] | np.ndarray | None = None,
                 max_atoms: int | None = None, max_edges: int | None = None,
                 max_graphs: int | None = None, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, targets: Sequence[str] | None = None,
                 epoch_size: int | None = None):
        if not any(v is not None for v in (max_atoms, max_edges, max_graphs)):
            raise ValueError("dynamic batching needs at least one of max_atoms, max_edges, max_graphs")
        for name, v in (("max_atoms", max_atoms), ("max_edges", max_edges), ("max_graphs", max_graphs)):
            if v is not None and v < 1:
                raise ValueError(f"data.{name} must be >= 1, got {v}")
        self.dataset = dataset
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, np.int64)
        self.limits = dict(max_atoms=max_atoms, max_edges=max_edges, max_graphs=max_graphs)
        self.shuffle, self.seed, self.drop_last, self.targets = shuffle, seed, drop_last, targets
        self.epoch_size = epoch_size  # samples per shuffled epoch (None = the indices once)
        self.epoch = 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        if not self.shuffle:
            return self.indices
        return epoch_order(self.indices, self.seed, self.epoch, self.epoch_size)

    def index_batches(self) -> list[np.ndarray]:
        if self._cache is None or self._cache[0] != self.epoch:
            batches = pack_batches(self.order(), self.dataset.natoms, **self.limits)
            if self.drop_last and len(batches) > 1:
                batches = batches[:-1]
            self._cache = (self.epoch, batches)
        return self._cache[1]

    def make(self, idx: np.ndarray) -> Batch:
        return make_batch(self, idx)  # also releases mapped pages every 16 batches

    def __len__(self) -> int:
        return len(self.index_batches())

    def __iter__(self) -> Iterator[Batch]:
        for idx in self.index_batches():
            yield self.make(idx)


def loader(ds, indices, cfg, train: bool, seed: int = 0):
    """The loader a job uses: for training (``train``: shuffled by ``seed``, last partial batch
    dropped; ``cfg.epoch_size`` samples an epoch if set), batches packed by atoms / edges /
    graphs when ``cfg`` (a DataConfig) sets max_atoms, max_edges or max_graphs, else
    ``cfg.batch_size`` molecules; for evaluation, ``cfg.eval_batch_size`` molecules in order."""
    from denoise3d.data.dataset import BatchLoader

    if train and any(v is not None for v in (cfg.max_atoms, cfg.max_edges, cfg.max_graphs)):
        return DynamicBatchLoader(ds, indices, cfg.max_atoms, cfg.max_edges, cfg.max_graphs,
                                  shuffle=True, seed=seed, drop_last=True,
                                  epoch_size=cfg.epoch_size)
    size = cfg.batch_size if train else cfg.eval_batch_size
    return BatchLoader(ds, indices, batch_size=size, shuffle=train, seed=seed, drop_last=train,
                       epoch_size=cfg.epoch_size if train else None)
