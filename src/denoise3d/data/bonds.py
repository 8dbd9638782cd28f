"""Covalent bonds from coordinates and shortest-path hop matrices (edge types of 3D-EMGP).

Bonds: atoms i, j are bonded when ``d_ij < factor * (r_i + r_j)`` with single-bond covalent
radii ``r`` (Cordero 2008) and ``factor = 1.15`` — RDKit's
``rdDetermineBonds.DetermineConnectivity(mol, useVdw=True, covFactor=1.15)``. It needs only
coordinates, so it works for any structure (also noisy or SMILES-less ones) and keeps atom order.
Measured on all 130,831 QM9 molecules against the bonds of their SMILES (bond multiset by element
pair): factor 1.15 agrees for 99.97 % of molecules, 1.10 for 99.80 %, 1.2 for 98.7 %, while 1.3
(RDKit's covFactor default) and RDKit's default connect-the-dots method agree for only ~94.6 %:
they add cross-ring bonds in strained small rings. ``tests/data/test_bonds.py`` checks both.
Hops: ``hops[i, j]`` = length of the shortest bond path, 0 on the diagonal, capped at 4
("other"; also used for atoms in different fragments).
"""

from __future__ import annotations

import numpy as np

from denoise3d.data.elements import COVALENT_RADII, MAX_Z

BOND_FACTOR = 1.15  # see the module docstring for how it was chosen
MAX_HOP = 4


def covalent_bonds(z: np.ndarray, pos: np.ndarray, factor: float = BOND_FACTOR) -> np.ndarray:
    """(n, n) bool adjacency matrix of covalent bonds."""
    z = np.asarray(z, dtype=np.int64)
    if z.size and (z.min() < 1 or z.max() > MAX_Z):
        raise ValueError(f"unknown element: atomic number {int(z.max() if z.max() > MAX_Z else z.min())}")
    pos = np.asarray(pos, dtype=np.float64)
    r = COVALENT_RADII[z]
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    adj = d < factor * (r[:, None] + r[None, :])
    np.fill_diagonal(adj, False)
    return adj


def hops_from_adjacency(adj: np.ndarray) -> np.ndarray:
    """Shortest-path hops capped at ``MAX_HOP`` for (n, n) or padded (b, n, n) adjacencies."""
    adj = np.asarray(adj, dtype=bool)
    n = adj.shape[-1]
    hops = np.full(adj.shape, MAX_HOP, dtype=np.int8)
    eye = np.broadcast_to(np.eye(n, dtype=bool), adj.shape)
    hops[eye] = 0
    reach = eye.copy()  # pairs reachable in <= k hops
    step = adj.astype(np.float32)
    frontier = eye.astype(np.float32)
    for k in range(1, MAX_HOP):
        frontier = (frontier @ step) > 0
        new = frontier & ~reach
        hops[new] = k
        reach |= frontier
        frontier = frontier.astype(np.float32)
    return hops


def hop_matrix(z: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """(n, n) int8 hop matrix of one molecule from its coordinates."""
    return hops_from_adjacency(covalent_bonds(z, pos))


# ------------------------------------------------------------------ linear-scaling, periodic
def pair_keys(i, j, shift, n_atoms: int, reach: int):
    """One int64 key per (i, j, shift) pair, for shifts within ±``reach`` cells: sorted keys order
    pairs by i, then j, then shift. Works on numpy arrays and torch tensors alike."""
    base = 2 * reach + 1
    key = i * n_atoms + j
    for k in range(3):
        key = key * base + (shift[:, k] + reach)
    return key


def bond_search_cutoff(z: np.ndarray, factor: float = BOND_FACTOR) -> float:
    """The distance (Å) within which :func:`bond_list` looks for bonds among the elements ``z``:
    ``factor · 2 · max r``."""
    return factor * 2.0 * float(COVALENT_RADII[np.asarray(z, dtype=np.int64)].max()) if len(z) else 0.0


def bond_list(z: np.ndarray, pos: np.ndarray, cell: np.ndarray | None = None,
              pbc: np.ndarray | None = None, factor: float = BOND_FACTOR):
    """Covalent bonds ``d_ij < factor (r_i + r_j)`` between atoms and periodic images, in time and
    memory linear in the number of atoms: a neighbour list (vesin) gives every pair ``(i, j, S)``
    with ``x_j + S·cell − x_i`` shorter than the largest threshold, so a molecule wrapped across
    the boundary keeps its bonds and an image pair is bonded only through the image that is close.

    ``cell`` (3, 3) Å, rows the lattice vectors; ``pbc`` (3,) bool (None: not periodic).
    Returns ``(i, j, shift, d)``: (B,) int64, (B,) int64, (B, 3) int64, (B,) float64 Å, both
    directions of each bond.
    """
    import torch
    from vesin_torch import NeighborList

    z = np.asarray(z, dtype=np.int64)
    if len(z) and (z.min() < 1 or z.max() > MAX_Z):
        raise ValueError(f"unknown element: atomic number {int(z.max() if z.max() > MAX_Z else z.min())}")
    periodic = np.zeros(3, bool) if pbc is None else np.asarray(pbc, bool).reshape(3)
    box = np.zeros((3, 3)) if cell is None else np.asarray(cell, np.float64).reshape(3, 3)
    if len(z) < 2 and not periodic.any():
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64),
                np.zeros(0))
    r = COVALENT_RADII[z]
    nl = NeighborList(cutoff=bond_search_cutoff(z, factor), full_list=True, n_threads=1)
    i, j, shift, d = nl.compute(torch.as_tensor(np.asarray(pos, np.float64)),
                                torch.as_tensor(box), torch.as_tensor(periodic), "ijSd")
    i, j, shift, d = i.long().numpy(), j.long().numpy(), shift.long().numpy(), d.numpy()
    bond = d < factor * (r[i] + r[j])
    return i[bond], j[bond], shift[bond], d[bond]


def hops_from_bonds(n: int, bi: np.ndarray, bj: np.ndarray, bs: np.ndarray,
                    max_hop: int = MAX_HOP - 1):
    """The pairs within ``max_hop`` bonds of a bond list (:func:`bond_list`): shortest bond paths,
    composing the lattice shifts along the path, as :func:`hops_from_adjacency` for a molecule
    (``tests/data/test_bonds.py`` checks both agree). Linear in the number of atoms.

    Returns ``(i, j, shift, hop)``: (P,) int64, (P,) int64, (P, 3) int64, (P,) int8 with
    1 <= hop <= max_hop, both directions, sorted by :func:`pair_keys`.
    """
    from denoise3d.data.storage import concat_ranges

    if not len(bi):
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64),
                np.zeros(0, np.int8))
    reach = max_hop * int(np.abs(bs).max())  # shifts of paths of up to max_hop bonds
    order = np.argsort(bi, kind="stable")
    bi, bj, bs = bi[order], bj[order], bs[order]
    start = np.searchsorted(bi, np.arange(n + 1))  # CSR: bonds of atom a are start[a]:start[a+1]
    atoms = np.arange(n)
    seen = pair_keys(atoms, atoms, np.zeros((n, 3), np.int64), n, reach)  # hop 0: each atom itself
    out = []
    src, dst, s = bi, bj, bs  # hop 1
    for hop in range(1, max_hop + 1):
        keys = pair_keys(src, dst, s, n, reach)
        keys, first = np.unique(keys, return_index=True)
        new = ~np.isin(keys, seen)
        src, dst, s, keys = src[first[new]], dst[first[new]], s[first[new]], keys[new]
        out.append((src, dst, s, np.full(len(src), hop, np.int8), keys))
        seen = np.union1d(seen, keys)
        if hop == max_hop or not len(src):
            break
        counts = start[dst + 1] - start[dst]  # extend each path by every bond of its end atom
        rows = np.repeat(np.arange(len(src)), counts)
        b = concat_ranges(start[dst], counts)
        src, dst, s = src[rows], bj[b], s[rows] + bs[b]
    i, j, shift, hop, keys = (np.concatenate(parts) for parts in zip(*out))
    order = np.argsort(keys)
    return i[order], j[order], shift[order], hop[order]


def bonded_pairs(z: np.ndarray, pos: np.ndarray, cell: np.ndarray | None = None,
                 pbc: np.ndarray | None = None):
    """The pairs within three bonds of a structure, periodic or not, in linear time and memory:
    :func:`hops_from_bonds` of :func:`bond_list`. Returns ``(i, j, shift, hop)``."""
    bi, bj, bs, _ = bond_list(z, pos, cell, pbc)
    return hops_from_bonds(len(z), bi, bj, bs)
