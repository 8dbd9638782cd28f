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
