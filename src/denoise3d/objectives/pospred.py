"""PosPred baseline (3D-EMGP Table 1, App. B.1): move some atoms to the centroid, predict them back.

::

    M: max(1, ⌊0.15 n⌋) atoms per molecule (uniform, without replacement)
    X'_i = μ for i ∈ M, X'_i = X_i otherwise
    X̂_i = X'_i + Δ_i,   Δ = VectorHead(backbone(z, X'))  or  −∂E/∂X'    (``vector``)
    L = mean_{i ∈ M} ‖X̂_i − X_i‖²

**Centroid.** The paper (and its code) uses μ = mean of *all* clean positions, masked ones
included. That leaks the label: with one masked atom m (every QM9 molecule under 14 atoms),
``x_m − μ = Σ_{j∉M} (μ − x_j)``, i.e. exactly the EGNN coordinate-update readout with φ ≡ 1 on
the corrupted input. The default ``centroid="visible"`` uses the mean of the unmasked atoms,
which carries nothing about the masked positions (at least one atom per molecule stays visible).
``centroid="all"`` reproduces the paper.

**Coincident atoms.** Molecules with ≥ 14 atoms get ≥ 2 masked atoms, all on the same point.
The direct head is fine there (EGNN and its edge readout are smooth at d = 0), but
``vector="gradient"`` differentiates the backbone at d = 0, where backbones built on unit
vectors x_ij/d_ij (PaiNN, TorchMD-ET) have huge or undefined derivatives (measured: losses ~10⁸
with PaiNN). Use the direct head (the default) with those backbones.
"""

from __future__ import annotations

import torch
from torch import nn

from denoise3d.models.heads import VECTOR_MODES, atom_vectors, vector_head
from denoise3d.models.ops import scatter_mean, scatter_sum
from denoise3d.objectives.masking import sample_fraction_mask

__all__ = ["PosPred"]

CENTROIDS = ("visible", "all")


class PosPred(nn.Module):
    """Predict the positions of atoms moved to the centroid; squared error over masked atoms."""

    def __init__(self, hidden: int, mask_ratio: float = 0.15, vector: str = "direct",
                 centroid: str = "visible"):
        super().__init__()
        if not 0.0 < mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}")
        if vector not in VECTOR_MODES:
            raise ValueError(f"vector must be one of {VECTOR_MODES}, got {vector!r}")
        if centroid not in CENTROIDS:
            raise ValueError(f"centroid must be one of {CENTROIDS}, got {centroid!r}")
        self.mask_ratio, self.vector, self.centroid = float(mask_ratio), vector, centroid
        self.head = vector_head(hidden, vector)

    def energy_model(self) -> None:
        """No energy model to fine-tune a force field from."""
        return None

    def corrupt(self, batch):
        """``(moved_batch, mask (n_atoms,) bool)``: masked atoms sit at the centroid."""
        n = batch.num_graphs
        mask = sample_fraction_mask(batch.batch, batch.natoms, self.mask_ratio,
                                    min_visible=1 if self.centroid == "visible" else 0)
        if self.centroid == "all":
            mu = scatter_mean(batch.pos, batch.batch, n)  # (n_graphs, 3)
        else:
            vis = (~mask).to(batch.pos.dtype).unsqueeze(-1)  # (n_atoms, 1)
            mu = scatter_sum(batch.pos * vis, batch.batch, n) / \
                scatter_sum(vis, batch.batch, n).clamp_min(1.0)  # (n_graphs, 3)
        moved = torch.where(mask.unsqueeze(-1), mu[batch.batch], batch.pos)  # (n_atoms, 3)
        return batch.replace(pos=moved), mask

    periodic = False  # the centroid target depends on how the atoms happen to be wrapped
    periodic_reason = ("position prediction's target is relative to the centroid of the structure, "
                       "which a periodic cell does not define; use objective denoise")

    def forward(self, backbone: nn.Module, batch):
        moved, mask = self.corrupt(batch)
        return self.loss_from_moved(backbone, batch, moved, mask)

    def loss_from_moved(self, backbone: nn.Module, batch, moved, mask: torch.Tensor):
        disp, _ = atom_vectors(backbone, self.head, moved)  # (n_atoms, 3), Å
        err = ((moved.pos + disp - batch.pos) ** 2).sum(-1)  # (n_atoms,), Å²
        if not bool(mask.any()):
            loss = err.sum() * 0.0
        else:
            loss = err[mask].mean()
        return loss, {"mse": float(loss.detach())}
