"""``MolecularDataset`` over the flat cache arrays, a ``BatchLoader``, and ``load_qm9``.

``dataset.batch(indices)`` gathers a :class:`~denoise3d.data.batch.Batch` straight from the flat
(memory-mapped) arrays with numpy fancy indexing: atoms through ``atom_offset``, edge types through
the ``pair_index`` of the full graph (:func:`full_graph_edges_numpy`) into the concatenated hop
blocks. It equals
``collate([dataset.molecule(i) for i in indices])`` field by field, only faster.

Optional per-atom forces: an array ``forces`` (total_atoms, 3) float32 eV/Å aligned with ``pos``
fills ``batch.targets["forces"]`` (n_atoms, 3). Hop blocks may be shared: molecule ``i`` reads the
``n_i²`` entries from ``hop_offset[i]``, so all frames of a trajectory point at one block
(:mod:`denoise3d.data.md17`).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from denoise3d.data.batch import Batch, Molecule, hops_to_edge_type
from denoise3d.data.elements import MAX_Z
from denoise3d.data.storage import (HOP_SETTINGS, compute_hops, concat_ranges,
                                    default_cache_dir, fingerprint_files, load_or_build)


class MolecularDataset:
    """Molecules stored as flat arrays (see :mod:`denoise3d.data.storage` for the layout).

    ``arrays`` may be memory-mapped; nothing is copied until a molecule or batch is requested.
    """

    def __init__(self, arrays: dict[str, np.ndarray], target_names: Sequence[str],
                 target_units: Sequence[str] | None = None, path: Path | None = None):
        self.arrays = arrays
        self.target_names: tuple[str, ...] = tuple(target_names)
        self.target_units: tuple[str, ...] = tuple(target_units or ("",) * len(self.target_names))
        if arrays["targets"].shape[1:] != (len(self.target_names),):
            raise ValueError(f"targets have shape {arrays['targets'].shape}, "
                             f"expected (n, {len(self.target_names)}) for {self.target_names}")
        if "forces" in arrays and arrays["forces"].shape != arrays["pos"].shape:
            raise ValueError(f"forces have shape {arrays['forces'].shape}, expected "
                             f"{arrays['pos'].shape} like pos")
        self.path = path  # cache directory, if any
        self.meta: dict = {}  # free metadata of the source (e.g. a trajectory's provenance)
        self.labels: dict = {}  # {name: Label}, set by the dataset's source (data.sources)
        self._atom_offset = np.asarray(arrays["atom_offset"])  # (n + 1,) small: keep in memory
        self._hop_offset = np.asarray(arrays["hop_offset"])  # (n + 1,)
        self.natoms = np.diff(self._atom_offset)  # (n,) int64

    @classmethod
    def from_manifest(cls, arrays: dict[str, np.ndarray], manifest: dict,
                      path: Path | None = None) -> "MolecularDataset":
        meta = manifest.get("meta", {})
        return cls(arrays, meta["target_names"], meta.get("target_units"), path)

    def __len__(self) -> int:
        return len(self.natoms)

    def release_pages(self) -> None:
        """Drop the memory-mapped pages read so far from this process's resident set.

        Pages of a read-only file mapping stay in the OS page cache (reclaimable), but count in
        the process RSS until released; :class:`BatchLoader` calls this every ``release_every``
        batches so that an epoch over a multi-GB cache keeps a bounded RSS. (Random reads map
        ~64 kB around each touched page — the kernel's fault-around — so without this an epoch
        of a 4.5 GB cache reached 4.7 GB RSS; measured in ``benchmarks/storage_scale.py``.)
        """
        import mmap

        for arr in self.arrays.values():
            m = getattr(arr, "_mmap", None)
            if m is not None and hasattr(m, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                m.madvise(mmap.MADV_DONTNEED)

    def __repr__(self) -> str:
        return (f"MolecularDataset({len(self):,} structures, {int(self._atom_offset[-1]):,} atoms, "
                f"targets {', '.join(self.target_names + self.atom_target_names)})")

    @property
    def atom_target_names(self) -> tuple[str, ...]:
        """Per-atom targets stored beside ``pos``: ``("forces",)`` or ``()``."""
        return ("forces",) if "forces" in self.arrays else ()

    @property
    def targets(self) -> np.ndarray:
        """(n, n_targets) float64 labels in internal units, columns ``target_names``."""
        return self.arrays["targets"]

    def target(self, name: str) -> np.ndarray:
        """(n,) float64 column of one target, internal units."""
        return np.asarray(self.targets[:, self._column(name)])

    def per_molecule_sum(self, per_element: np.ndarray, indices=None) -> np.ndarray:
        """Σ_i per_element[z_i] for each molecule (e.g. atom reference energies), (n,) float64."""
        sums = np.add.reduceat(np.asarray(per_element, dtype=np.float64)[np.asarray(self.arrays["z"])],
                               self._atom_offset[:-1])
        return sums if indices is None else sums[np.asarray(indices)]

    def element_counts(self, indices=None) -> np.ndarray:
        """(n, MAX_Z + 1) int64: how many atoms of each element each structure has."""
        idx = np.arange(len(self)) if indices is None else self._check(indices)
        atoms = concat_ranges(self._atom_offset[idx], self.natoms[idx])
        rows = np.repeat(np.arange(len(idx)), self.natoms[idx])
        counts = np.zeros((len(idx), MAX_Z + 1), dtype=np.int64)
        np.add.at(counts, (rows, np.asarray(self.arrays["z"][atoms], dtype=np.int64)), 1)
        return counts

    def compositions(self, indices=None, chunk: int = 100_000) -> np.ndarray:
        """The distinct rows of :meth:`element_counts` over ``indices`` (m, MAX_Z + 1), computed
        ``chunk`` structures at a time (memory bounded for millions of structures)."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        rows = [np.unique(self.element_counts(idx[k:k + chunk]), axis=0)
                for k in range(0, len(idx), chunk)]
        return np.unique(np.concatenate(rows), axis=0) if rows else np.zeros((0, MAX_Z + 1), np.int64)

    def smiles(self, i: int) -> str:
        if "smiles" not in self.arrays:
            return ""
        s = self.arrays["smiles"][i]
        return s.decode() if isinstance(s, bytes) else str(s)  # 'S' columns: streamed caches

    def _column(self, name: str) -> int:
        try:
            return self.target_names.index(name)
        except ValueError:
            raise ValueError(f"unknown target {name!r}; dataset has "
                             f"{', '.join(self.target_names)}") from None

    def _check(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"molecule index out of range [0, {len(self)}): "
                             f"{int(idx.min() if idx.min() < 0 else idx.max())}")
        return idx

    @property
    def has_cells(self) -> bool:
        """Whether the dataset stores cells (``cell``, ``pbc``): its batches take the bonded form."""
        return "pbc" in self.arrays

    def molecule(self, i: int) -> Molecule:
        """Molecule ``i``: z (n,) int64, pos (n, 3) float32 Å, hops (n, n) int8 (None for a
        periodic structure), float targets (and ``forces`` (n, 3) float32 eV/Å if the dataset has
        them), cell (3, 3) and pbc (3,) if the dataset stores cells."""
        i = int(self._check(np.array([i]))[0])
        a, b = self._atom_offset[i], self._atom_offset[i + 1]
        n = b - a
        cell = pbc = None
        if self.has_cells:
            cell, pbc = np.array(self.arrays["cell"][i]), np.array(self.arrays["pbc"][i])
        size = 0 if pbc is not None and pbc.any() else n * n  # periodic: no hop block
        hops = np.asarray(self.arrays["hops"][self._hop_offset[i]:self._hop_offset[i] + size])
        targets = {k: float(v) for k, v in zip(self.target_names, self.targets[i])}
        if "forces" in self.arrays:
            targets["forces"] = np.array(self.arrays["forces"][a:b])
        return Molecule(
            z=np.asarray(self.arrays["z"][a:b], dtype=np.int64),
            pos=np.array(self.arrays["pos"][a:b]),
            hops=hops.reshape(n, n) if size else None,
            targets=targets,
            id=i, cell=cell, pbc=pbc,
        )

    def batch(self, indices: Sequence[int] | np.ndarray,
              targets: Sequence[str] | None = None) -> Batch:
        """Batch of molecules ``indices`` (fully connected, hop edge types), vectorised; a dataset
        with cells gives the bonded form (:mod:`denoise3d.data.batch`), built per structure.

        ``targets``: names to include (default all), each a (n_graphs,) float64 tensor (total
        energies need float64: ~1 meV steps in float32 at 10⁴ eV), or ``forces`` (n_atoms, 3) float32. ``ids`` are the dataset indices.
        """
        idx = self._check(indices)
        if self.has_cells:  # periodic structures: the bonded form (pairs by the minimum image)
            from denoise3d.data.batch import collate

            out = collate([self.molecule(i) for i in idx], graph="bonded")
            keep = self.target_names + self.atom_target_names if targets is None else tuple(targets)
            out.targets = {k: v for k, v in out.targets.items() if k in keep}
            return out
        nat = self.natoms[idx]  # (g,)
        atoms = concat_ranges(self._atom_offset[idx], nat)  # (n_atoms,)
        edge_index, pair_index = full_graph_edges_numpy(nat)
        pairs = concat_ranges(self._hop_offset[idx], nat * nat)  # (Σ n²,) into flat hops
        hops = self.arrays["hops"][pairs[pair_index]]  # (n_edges,) int8
        names = self.target_names + self.atom_target_names if targets is None else tuple(targets)
        per_atom = [k for k in names if k in self.atom_target_names]
        names = [k for k in names if k not in per_atom]
        cols = [self._column(k) for k in names]
        values = np.asarray(self.targets[idx][:, cols], dtype=np.float64)  # (g, len(names))
        out = {k: torch.from_numpy(values[:, c].copy()) for c, k in enumerate(names)}
        out.update({k: torch.from_numpy(np.asarray(self.arrays[k][atoms], dtype=np.float32))
                    for k in per_atom})  # (n_atoms, 3)
        return Batch(
            z=torch.from_numpy(self.arrays["z"][atoms].astype(np.int64)),
            pos=torch.from_numpy(np.ascontiguousarray(self.arrays["pos"][atoms])),
            batch=torch.from_numpy(np.repeat(np.arange(len(idx)), nat)),
            natoms=torch.from_numpy(nat),
            edge_index=torch.from_numpy(edge_index),
            edge_type=torch.from_numpy(_EDGE_TYPE[hops]),
            ids=torch.from_numpy(idx.copy()),
            targets=out,
        )


# edge type of each hop count 0..127 (int8 range), from the one definition in batch.py
_EDGE_TYPE = hops_to_edge_type(torch.arange(128)).numpy()


def full_graph_edges_numpy(natoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """numpy twin of :func:`denoise3d.data.batch.full_graph_edges` (same output, as int64 arrays).

    Used by :meth:`MolecularDataset.batch`: for the small index arrays of one batch, numpy is
    several times faster than torch's CPU ops (whose thread pool dominates at this size);
    ``tests/data/test_dataset.py`` checks that both agree.
    """
    natoms = np.asarray(natoms, dtype=np.int64)
    sq = natoms * natoms  # (g,)
    local = concat_ranges(np.zeros_like(sq), sq)  # (Σ n²,) index inside each n × n block
    n = np.repeat(natoms, sq)
    i, j = np.divmod(local, n)
    keep = i != j
    start = np.repeat(np.cumsum(natoms) - natoms, sq)[keep]
    edge_index = np.stack([i[keep] + start, j[keep] + start])
    return edge_index, np.flatnonzero(keep)


class BatchLoader:
    """Iterable of :class:`Batch` over ``indices`` of a dataset.

    With ``shuffle`` the order of epoch ``e`` is a permutation drawn from ``seed`` and ``e``
    (call :meth:`set_epoch` before each epoch), so runs are reproducible and resumable.
    """

    def __init__(self, dataset: MolecularDataset, indices: Sequence[int] | np.ndarray | None = None,
                 batch_size: int = 32, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, targets: Sequence[str] | None = None,
                 release_every: int = 16, epoch_size: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, np.int64)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.targets = drop_last, targets
        self.epoch_size = epoch_size  # samples per shuffled epoch (None = the indices once)
        self.epoch = 0
        self.release_every = release_every  # batches between dataset.release_pages() (0 = never)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        size = self.epoch_size if self.shuffle and self.epoch_size is not None else len(self.indices)
        n = size / self.batch_size
        return math.floor(n) if self.drop_last else math.ceil(n)

    def order(self) -> np.ndarray:
        """The molecule indices in this epoch's order."""
        if not self.shuffle:
            return self.indices
        return epoch_order(self.indices, self.seed, self.epoch, self.epoch_size)

    def index_batches(self) -> list[np.ndarray]:
        """This epoch's molecule indices, one array per batch (to shard across ranks and to
        resume mid-epoch without building the skipped batches)."""
        order = self.order()
        return [order[k * self.batch_size:(k + 1) * self.batch_size] for k in range(len(self))]

    def make(self, idx: np.ndarray) -> Batch:
        """The Batch of molecules ``idx`` (with this loader's targets); every ``release_every``
        batches the dataset's mapped pages are released (bounded RSS, whichever loader wraps this)."""
        return make_batch(self, idx)

    def __iter__(self) -> Iterator[Batch]:
        for idx in self.index_batches():
            yield self.make(idx)


def epoch_order(indices: np.ndarray, seed: int, epoch: int, size: int | None = None) -> np.ndarray:
    """Epoch ``epoch``'s shuffled order of ``indices``: one permutation drawn from ``(seed,
    epoch)``, or with ``size`` the first ``size`` samples of successive permutations from the same
    generator (each index once per pass; the first pass is the ``size=None`` order)."""
    rng = np.random.default_rng([seed, epoch])
    if size is None:
        return rng.permutation(indices)
    passes = -(-size // max(len(indices), 1))
    return np.concatenate([rng.permutation(indices) for _ in range(passes)])[:size]


def make_batch(loader, idx: np.ndarray) -> Batch:
    """``loader.dataset.batch(idx, loader.targets)``, releasing mapped pages every
    ``loader.release_every`` batches (see :meth:`MolecularDataset.release_pages`)."""
    loader._made = getattr(loader, "_made", 0) + 1
    every = getattr(loader, "release_every", 16)
    if every and loader._made % every == 0:
        loader.dataset.release_pages()
    return loader.dataset.batch(idx, loader.targets)


def _qm9_source(xyz_dir: str | Path | None) -> tuple[str, dict, list[Path]]:
    """(cache sub-directory, source fingerprint, files) for the qm9pack CSVs or an xyz directory."""
    from denoise3d.data.qm9 import TARGETS, qm9pack_csv_files, xyz_files

    common = {"dataset": "qm9", "hops": HOP_SETTINGS,
              "targets": [[t.name, t.column, t.to_internal] for t in TARGETS.values()]}
    if xyz_dir is None:
        files = qm9pack_csv_files()
        return "qm9", {**common, "reader": "qm9pack-csv", "files": fingerprint_files(files)}, files
    files = xyz_files(xyz_dir)
    unc = Path(xyz_dir) / "uncharacterized.txt"
    fp = fingerprint_files(files + ([unc] if unc.is_file() else []))
    digest = hashlib.sha1(repr(fp).encode()).hexdigest()
    summary = {"directory": str(Path(xyz_dir).resolve()), "n_files": len(files), "sha1": digest}
    return "qm9_xyz", {**common, "reader": "xyz", "files": summary}, files


def load_qm9(cache_dir: str | Path | None = None, xyz_dir: str | Path | None = None,
             verbose: bool = True) -> MolecularDataset:
    """QM9 as a :class:`MolecularDataset` (130,831 molecules from qm9pack, or your xyz files).

    Opens the processed cache under ``cache_dir`` (default ``$DENOISE3D_CACHE`` or
    ``~/.cache/denoise3d``), building it first if missing, stale or broken. Targets are in
    internal units, columns :data:`denoise3d.data.qm9.TARGET_NAMES`.
    """
    from denoise3d.data.qm9 import TARGETS, read_qm9_csv, read_xyz_dir

    sub, source, files = _qm9_source(xyz_dir)
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / sub

    def build():
        if xyz_dir is None:
            raw = read_qm9_csv(files, progress=verbose)
        else:
            raw = read_xyz_dir(xyz_dir, progress=verbose)
        raw["hops"], raw["hop_offset"] = compute_hops(raw["z"], raw["pos"], raw["atom_offset"],
                                                      progress=verbose)
        meta = {"dataset": "qm9", "target_names": list(TARGETS),
                "target_units": [t.internal_unit for t in TARGETS.values()]}
        return raw, meta

    arrays, manifest = load_or_build(path, source, build, verbose=verbose)
    return MolecularDataset.from_manifest(arrays, manifest, path)
