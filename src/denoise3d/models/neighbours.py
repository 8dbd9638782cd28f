"""Radius graphs, computed inside a backbone's forward pass from the (possibly noisy) positions.

A :class:`~denoise3d.data.batch.Batch` carries the *fully connected* graph of each molecule with
its hop edge types. :func:`radius_edges` keeps the edges with ``d_ij < cutoff``::

    vec_ij = x_j − x_i                       (E, 3), Å    (i receives, j sends: row 0 / row 1)
    d_ij   = ‖vec_ij‖                        (E,),   Å    (NaN-safe: finite gradient at d = 0)
    keep   = d_ij < cutoff

so each radius edge keeps its hop type (1-, 2-, 3-hop, other) for free, and the neighbour set
follows the positions the backbone sees (denoising objectives perturb them). The filter is a step
function of ``d``; backbones multiply every message by a smooth cutoff ``f_c(d)`` that is zero at
``d = cutoff`` (:func:`denoise3d.models.radial.cosine_cutoff`), so their outputs stay continuous
as atoms cross the cutoff and forces ``−∂E/∂x`` are well defined.

Cost: O(Σ_molecules n²), fine for molecules of up to a few hundred atoms (QM9: ≤ 29). For large
systems a cell-list neighbour search (e.g. the ``vesin-torch`` package, which has wheels) can
replace the body of :func:`radius_edges` as long as it returns the same :class:`RadiusGraph`
(edge types would then be looked up, or set to "other" when a dataset has no bonds).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from denoise3d.models.ops import safe_norm

__all__ = ["RadiusGraph", "radius_edges"]


class RadiusGraph(NamedTuple):
    edge_index: torch.Tensor  # (2, E) int64, (receiver i, sender j)
    edge_type: torch.Tensor  # (E,) int64, hop type of the pair (see denoise3d.data.batch)
    vec: torch.Tensor  # (E, 3), Å, x_j − x_i
    dist: torch.Tensor  # (E,), Å, ‖x_j − x_i‖ (≥ 1e-6: NaN-safe norm)


def radius_edges(batch, cutoff: float) -> RadiusGraph:
    """The edges of ``batch`` (fully connected per molecule) shorter than ``cutoff`` (Å)."""
    i, j = batch.edge_index
    vec = batch.pos.index_select(0, j) - batch.pos.index_select(0, i)  # (E_full, 3)
    with torch.no_grad():
        keep = torch.nonzero(vec.square().sum(dim=1) < cutoff * cutoff).squeeze(1)  # (E,)
    vec = vec.index_select(0, keep)  # (E, 3)
    return RadiusGraph(batch.edge_index.index_select(1, keep),
                       batch.edge_type.index_select(0, keep), vec, safe_norm(vec, dim=-1))
