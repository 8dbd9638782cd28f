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
``cell``        (n_graphs, 3, 3) float   optional: lattice vectors (rows), Å; zeros if none
``pbc``         (n_graphs, 3) bool       optional: periodic directions (None: no structure is)
``edge_shift``  (n_edges, 3) int64       optional: the lattice shift S of each edge, whose
                                         vector is ``x_j + S·cell − x_i``
==============  =======================  =====================================================

Two forms of the edge list:

* **full** (``edge_shift`` None; ``collate(..., graph="full")`` and every dataset loader): every
  ordered pair of atoms of each molecule, in block order (molecule, then i, then j). EGNN and
  3D-EMGP are defined on it (their papers); its size is Σ n_i(n_i − 1).
* **bonded** (``edge_shift`` set; ``collate(..., graph="bonded")``): only the pairs within three
  covalent bonds (``edge_type`` 0-2), periodic images included, sorted by
  :func:`denoise3d.data.bonds.pair_keys`; linear in the number of atoms, for periodic cells and
  large structures. Radius backbones read the edge types of their own neighbour pairs from either
  form (:func:`denoise3d.models.neighbours.radius_edges`); every unlisted pair is "other".

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
    cell: np.ndarray | None = None  # (3, 3) float, Å, lattice vectors as rows
    pbc: np.ndarray | None = None  # (3,) bool, periodic directions (None: not periodic)


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
    cell: torch.Tensor | None = None  # (n_graphs, 3, 3), Å, rows the lattice vectors
    pbc: torch.Tensor | None = None  # (n_graphs, 3) bool
    edge_shift: torch.Tensor | None = None  # (n_edges, 3) int64: the bonded form's lattice shifts

    @property
    def periodic(self) -> bool:
        """Whether any structure of the batch is periodic in any direction."""
        return self.pbc is not None and bool(self.pbc.any())

    @property
    def full_graph(self) -> bool:
        """Whether ``edge_index`` is the fully connected graph of each molecule (else the
        bonded form: the pairs within three bonds, with ``edge_shift``)."""
        return self.edge_shift is None

    def require_full_graph(self, who: str, why: str) -> None:
        """A one-line ValueError unless this is a batch of whole molecules on the full graph."""
        if self.periodic:
            raise ValueError(f"{who} is not defined for periodic structures: {why}")
        if not self.full_graph:
            raise ValueError(f"{who} needs the fully connected graph of each molecule (this batch "
                             f"has the bonded form for large structures): {why}")

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
        out = {k: ({n: move(t) for n, t in v.items()} if k == "targets" else
                   None if v is None else v.to(device=device) if k == "edge_shift" else move(v))
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


def collate(mols: Sequence[Molecule], graph: str = "full") -> Batch:
    """Batch molecules (or periodic structures) with their hop edge types.

    ``graph`` "full": the fully connected graph of each molecule (refuses periodic structures);
    "bonded": the pairs within three bonds, periodic images included (see the module docstring).
    Structures without ``hops`` get bonds from covalent radii (see :mod:`denoise3d.data.bonds`);
    in the bonded form a structure's given ``hops`` are used only if it is not periodic. ``cell``
    and ``pbc`` are batched when any structure has them (zeros / False for the others).
    """
    from denoise3d.data.bonds import bonded_pairs, hop_matrix  # local: bonds imports storage

    if graph not in ("full", "bonded"):
        raise ValueError(f"unknown graph {graph!r} (full, bonded)")
    natoms = torch.tensor([len(m.z) for m in mols], dtype=torch.long)
    z = torch.from_numpy(np.concatenate([np.asarray(m.z, dtype=np.int64) for m in mols]))
    pos = torch.from_numpy(np.concatenate([np.asarray(m.pos, dtype=np.float32) for m in mols]))
    cell = pbc = edge_shift = None
    if any(m.cell is not None or m.pbc is not None for m in mols):
        cell = torch.from_numpy(np.stack([np.zeros((3, 3)) if m.cell is None else
                                          np.asarray(m.cell, np.float64).reshape(3, 3) for m in mols])
                                .astype(np.float32))
        pbc = torch.from_numpy(np.stack([np.zeros(3, bool) if m.pbc is None else
                                         np.asarray(m.pbc, bool).reshape(3) for m in mols]))
    if graph == "full":
        if pbc is not None and bool(pbc.any()):
            raise ValueError("the fully connected graph of a molecule has no periodic images: "
                             "collate periodic structures with graph='bonded'")
        hops = np.concatenate([
            (m.hops if m.hops is not None else hop_matrix(m.z, m.pos)).reshape(-1) for m in mols
        ])
        edge_index, pair_index = full_graph_edges(natoms)
        edge_type = hops_to_edge_type(torch.from_numpy(hops.astype(np.int64))[pair_index])
    else:
        parts, start = [], 0
        for m in mols:
            periodic = m.pbc is not None and bool(np.any(m.pbc))
            if m.hops is not None and not periodic:
                i, j = np.nonzero((m.hops >= 1) & (m.hops <= 3))  # sorted by (i, j)
                hop, shift = m.hops[i, j], np.zeros((len(i), 3), np.int64)
            else:
                i, j, shift, hop = bonded_pairs(m.z, m.pos, m.cell, m.pbc)
            parts.append((i + start, j + start, shift, hop))
            start += len(m.z)
        i, j, shift, hop = (np.concatenate(p) for p in zip(*parts)) if parts else \
            (np.zeros(0, np.int64),) * 2 + (np.zeros((0, 3), np.int64), np.zeros(0, np.int8))
        edge_index = torch.from_numpy(np.stack([i, j]).astype(np.int64))
        edge_type = hops_to_edge_type(torch.from_numpy(hop.astype(np.int64)))
        edge_shift = torch.from_numpy(shift.astype(np.int64))
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
        cell=cell, pbc=pbc, edge_shift=edge_shift,
    )
