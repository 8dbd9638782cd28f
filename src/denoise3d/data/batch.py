"""The one batch container and its ``collate``.

Field names, shapes and units are defined here once:

==============  =======================  =====================================================
field           shape, dtype             meaning
==============  =======================  =====================================================
``z``           (n_atoms,) int64         atomic numbers
``pos``         (n_atoms, 3) float       positions, Å
``batch``       (n_atoms,) int64         index of the molecule each atom belongs to
``natoms``      (n_graphs,) int64        atoms per molecule
``edge_index``  (2, n_edges) int64       directed edges ``(i, j)``: row 0 receives, row 1 sends
``edge_type``   (n_edges,) int64         0, 1, 2 = 1-, 2-, 3-hop on the covalent graph, 3 = other
``ids``         (n_graphs,) int64        index of each molecule in its dataset (for messages)
``targets``     dict of tensors          labels in internal units (eV, Å, ...), per molecule
                                         ``(n_graphs, ...)`` or per atom ``(n_atoms, ...)``
==============  =======================  =====================================================

New labels go into ``targets``; they never add constructor parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

N_EDGE_TYPES = 4  # 1-hop, 2-hop, 3-hop, other
PER_ATOM_TARGETS = frozenset({"forces"})  # (n_atoms, 3) eV/Å; every other target is per molecule


@dataclass
class Molecule:
    """One molecule as numpy arrays (used by readers and ``collate``)."""

    z: np.ndarray  # (n,) int, atomic numbers
    pos: np.ndarray  # (n, 3) float, Å
    hops: np.ndarray | None = None  # (n, n) int8 shortest-path bond hops, 0 on the diagonal
    targets: dict[str, np.ndarray | float] = field(default_factory=dict)  # internal units
    id: int = -1


@dataclass
class Batch:
    z: torch.Tensor  # (n_atoms,) int64
    pos: torch.Tensor  # (n_atoms, 3), Å
    batch: torch.Tensor  # (n_atoms,) int64
    natoms: torch.Tensor  # (n_graphs,) int64
    edge_index: torch.Tensor  # (2, n_edges) int64, (receiver i, sender j)
    edge_type: torch.Tensor  # (n_edges,) int64 in [0, N_EDGE_TYPES)
    ids: torch.Tensor  # (n_graphs,) int64
    targets: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_graphs(self) -> int:
        return int(self.natoms.numel())

    @property
    def num_atoms(self) -> int:
        return int(self.z.numel())

    def replace(self, **changes) -> "Batch":
        """A shallow copy with some fields replaced (e.g. noisy ``pos``)."""
        return dataclasses.replace(self, **changes)

    def to(self, device=None, dtype=None) -> "Batch":
        """Move to ``device``; ``dtype`` converts floating tensors (positions and targets)."""

        def move(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out = {k: ({n: move(t) for n, t in v.items()} if k == "targets" else move(v))
               for k, v in out.items()}
        return Batch(**out)


def full_graph_edges(natoms: torch.Tensor) -> torch.Tensor:
    """All ordered pairs ``(i, j)``, ``i != j``, inside each molecule, without a Python loop.

    Returns ``(edge_index, pair_index)``: global atom indices (2, n_edges) and the index of each
    edge in the flattened per-molecule ``n × n`` blocks (for gathering per-pair features).
    """
    natoms = natoms.long()
    sq = natoms * natoms  # (n_graphs,)
    n_pairs = int(sq.sum())
    graph = torch.repeat_interleave(torch.arange(natoms.numel(), device=natoms.device), sq)
    pair_start = torch.cumsum(sq, 0) - sq
    atom_start = torch.cumsum(natoms, 0) - natoms
    local = torch.arange(n_pairs, device=natoms.device) - pair_start[graph]
    n = natoms[graph]
    i, j = local // n, local % n
    keep = i != j
    edge_index = torch.stack([i[keep], j[keep]]) + atom_start[graph[keep]]
    pair_index = torch.nonzero(keep).squeeze(1)
    return edge_index, pair_index


def hops_to_edge_type(hops: torch.Tensor) -> torch.Tensor:
    """Map shortest-path hop counts (1, 2, 3, ≥4 or unconnected = 0/-1) to edge types 0..3."""
    hops = hops.long()
    return torch.where((hops >= 1) & (hops <= 3), hops - 1, torch.full_like(hops, 3))


def collate(mols: Sequence[Molecule]) -> Batch:
    """Batch molecules into one fully connected graph with hop edge types.

    Molecules without ``hops`` get bonds from covalent radii (see :mod:`denoise3d.data.bonds`).
    """
    from denoise3d.data.bonds import hop_matrix  # local import: graphs imports this module

    natoms = torch.tensor([len(m.z) for m in mols], dtype=torch.long)
    z = torch.from_numpy(np.concatenate([np.asarray(m.z, dtype=np.int64) for m in mols]))
    pos = torch.from_numpy(np.concatenate([np.asarray(m.pos, dtype=np.float32) for m in mols]))
    hops = np.concatenate([
        (m.hops if m.hops is not None else hop_matrix(m.z, m.pos)).reshape(-1) for m in mols
    ])
    edge_index, pair_index = full_graph_edges(natoms)
    edge_type = hops_to_edge_type(torch.from_numpy(hops.astype(np.int64))[pair_index])
    targets = {}
    for key in mols[0].targets if mols else ():
        vals = [np.asarray(m.targets[key]) for m in mols]
        arr = np.concatenate(vals) if key in PER_ATOM_TARGETS else np.stack(vals)
        dtype = np.float32 if key in PER_ATOM_TARGETS else np.float64  # as MolecularDataset.batch
        targets[key] = torch.from_numpy(np.asarray(arr, dtype=dtype))
    return Batch(
        z=z, pos=pos,
        batch=torch.repeat_interleave(torch.arange(len(mols)), natoms),
        natoms=natoms, edge_index=edge_index, edge_type=edge_type,
        ids=torch.tensor([m.id for m in mols], dtype=torch.long), targets=targets,
    )
