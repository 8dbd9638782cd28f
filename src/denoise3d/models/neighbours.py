"""Radius graphs, computed inside a backbone's forward pass from the (possibly noisy) positions.

A cell-list neighbour search (``vesin-torch``: O(N) time and memory, periodic images) finds every
pair closer than ``cutoff`` in the positions (and cell) the backbone is given, then the edge
vectors are formed in torch so that they are differentiable through positions (forces) and
through the cell (stress)::

    vec_ij = x_j + S_ij · cell − x_i          (E, 3), Å    (i receives, j sends: row 0 / row 1)
    d_ij   = ‖vec_ij‖                        (E,),   Å    (NaN-safe: finite gradient at d = 0)

with the integer lattice shift ``S_ij`` of the image (zero for molecules). The search itself is
not differentiated (it only selects pairs). Molecules (non-periodic) of one batch go to one search,
each in its own slab of space far from the others (float64, so nothing crosses between
molecules); each periodic structure gets its own search.

Each edge takes its hop type (1-, 2-, 3-hop, other) from the batch: the batch's edge list, full
graph or bonded form (:mod:`denoise3d.data.batch`), is searched for ``(i, j, S)``
(:func:`denoise3d.data.bonds.pair_keys`); unlisted pairs are "other". Hop types thus come from
the structure the data layer perceived (the clean one, or the calculator's cached topology), never
from noisy positions.

The neighbour set is a step function of ``d``; backbones multiply every message by a smooth cutoff
``f_c(d)`` that is zero at ``d = cutoff`` (:func:`denoise3d.models.radial.cosine_cutoff`), so their
outputs stay continuous as atoms cross the cutoff and forces ``−∂E/∂x`` are well defined.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from denoise3d.data.bonds import pair_keys
from denoise3d.models.ops import safe_norm

__all__ = ["RadiusGraph", "radius_edges", "neighbour_pairs", "search_pairs", "edge_types_of"]

OTHER = 3  # edge type of a pair more than three bonds apart (denoise3d.data.batch)
_LISTS: dict = {}  # (cutoff, device) -> vesin NeighborList


class RadiusGraph(NamedTuple):
    edge_index: torch.Tensor  # (2, E) int64, (receiver i, sender j)
    edge_type: torch.Tensor  # (E,) int64, hop type of the pair (see denoise3d.data.batch)
    vec: torch.Tensor  # (E, 3), Å, x_j + S·cell − x_i
    dist: torch.Tensor  # (E,), Å, ‖vec‖ (≥ 1e-6: NaN-safe norm)
    shift: torch.Tensor  # (E, 3) int64, lattice shift S of the image of j


def search_pairs(cutoff: float, pos: torch.Tensor, box: torch.Tensor, periodic: torch.Tensor):
    """vesin's pairs ``(i, j, S)`` (E,), (E,), (E, 3) int64 of one structure: pos (n, 3), box
    (3, 3) rows the lattice vectors (zeros: none), periodic (3,) bool; float64 in, not
    differentiated."""
    from vesin_torch import NeighborList

    key = (float(cutoff), pos.device)
    if key not in _LISTS:
        _LISTS[key] = NeighborList(cutoff=float(cutoff), full_list=True, n_threads=1)
    try:
        i, j, s = _LISTS[key].compute(pos, box, periodic, "ijS")
    except RuntimeError:  # a device vesin cannot search on: search on the CPU, move the pairs
        if pos.device.type == "cpu":
            raise
        i, j, s = (t.to(pos.device) for t in search_pairs(cutoff, pos.cpu(), box.cpu(), periodic.cpu()))
    return i.long(), j.long(), s.long()


@torch.no_grad()
def neighbour_pairs(batch, cutoff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every ordered pair ``(i, j, S)`` of the batch with ``‖x_j + S·cell − x_i‖ < cutoff``, i ≠ j
    or S ≠ 0, never across structures: (E,), (E,) global atom indices and (E, 3) int64 shifts."""
    pos = batch.pos.detach().to(torch.float64)
    dev = pos.device
    periodic = (batch.pbc.any(dim=1) if batch.pbc is not None
                else torch.zeros(batch.num_graphs, dtype=torch.bool, device=dev))
    start = torch.cumsum(batch.natoms, 0) - batch.natoms  # (g,) first atom of each structure
    parts = []
    mol = ~periodic[batch.batch]  # atoms of the non-periodic structures
    if bool(mol.any()):
        # one search: each molecule moved along x into a slab of its own, cutoff + 1 Å apart
        idx = torch.nonzero(mol).squeeze(1)
        g = batch.batch[idx]
        p = pos[idx]
        lo = torch.full((batch.num_graphs,), float("inf"), dtype=pos.dtype, device=dev)
        hi = torch.full_like(lo, -float("inf"))
        lo = lo.scatter_reduce(0, g, p[:, 0], "amin")
        hi = hi.scatter_reduce(0, g, p[:, 0], "amax")
        width = torch.where(torch.isfinite(hi - lo), hi - lo, torch.zeros_like(lo)) + cutoff + 1.0
        slab = torch.cumsum(width, 0) - width - torch.where(torch.isfinite(lo), lo, torch.zeros_like(lo))
        p = p.clone()
        p[:, 0] += slab[g]
        i, j, s = search_pairs(cutoff, p, torch.zeros(3, 3, dtype=pos.dtype, device=dev),
                          torch.zeros(3, dtype=torch.bool, device=dev))
        parts.append((idx[i], idx[j], s))
    for k in torch.nonzero(periodic).squeeze(1).tolist():
        a, n = int(start[k]), int(batch.natoms[k])
        i, j, s = search_pairs(cutoff, pos[a:a + n], batch.cell[k].detach().to(torch.float64),
                          batch.pbc[k])
        parts.append((i + a, j + a, s))
    if not parts:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty, torch.zeros(0, 3, dtype=torch.long, device=dev)
    i, j, s = (torch.cat(x) for x in zip(*parts))
    return i, j, s


def edge_types_of(batch, i: torch.Tensor, j: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Hop types (E,) of the pairs ``(i, j, shift)`` looked up in the batch's typed edge list."""
    n = batch.num_atoms
    shifts = (torch.zeros(batch.edge_index.shape[1], 3, dtype=torch.long, device=i.device)
              if batch.edge_shift is None else batch.edge_shift)
    reach = max(int(shifts.abs().max()) if shifts.numel() else 0,
                int(shift.abs().max()) if shift.numel() else 0)
    listed = pair_keys(batch.edge_index[0], batch.edge_index[1], shifts, n, reach)  # (P,)
    types = batch.edge_type
    if listed.numel() > 1 and not bool((listed[1:] > listed[:-1]).all()):
        listed, order = torch.sort(listed)
        types = types[order]
    wanted = pair_keys(i, j, shift, n, reach)  # (E,)
    if listed.numel() == 0:
        return torch.full_like(wanted, OTHER)
    at = torch.searchsorted(listed, wanted).clamp(max=listed.numel() - 1)
    return torch.where(listed[at] == wanted, types[at], torch.full_like(wanted, OTHER))


def radius_edges(batch, cutoff: float) -> RadiusGraph:
    """The edges of ``batch`` shorter than ``cutoff`` (Å), periodic images included."""
    i, j, shift = neighbour_pairs(batch, cutoff)
    vec = batch.pos.index_select(0, j) - batch.pos.index_select(0, i)  # (E, 3)
    if batch.periodic:
        cell = batch.cell.index_select(0, batch.batch.index_select(0, i))  # (E, 3, 3)
        vec = vec + torch.einsum("ek,ekl->el", shift.to(vec.dtype), cell)
    return RadiusGraph(torch.stack([i, j]), edge_types_of(batch, i, j, shift), vec,
                       safe_norm(vec, dim=-1), shift)
