"""SchNet (Schütt et al. 2017) as used by 3D-EMGP (App. B.4): continuous-filter convolutions.

On the radius graph (``d_ij < cutoff``, :func:`~denoise3d.models.neighbours.radius_edges`), per
interaction block, for every edge ``(i, j)`` (i receives)::

    e_ij = [Gaussian_RBF(d_ij) | onehot(hop_ij)]             (onehot only if edge_types)
    W_ij = (Linear → ssp → Linear)(e_ij) · f_c(d_ij)          filter network, cosine cutoff
    m_i  = Σ_j (h_j W₁ᵀ) ⊙ W_ij                              W₁ without bias (cfconv "in2f")
    h_i ← h_i + Linear(ssp(Linear(m_i)))                     ssp(x) = log(½eˣ + ½)

``h⁰ = Embedding(z)``; returns ``(h, None)`` (invariant, no vector features). The atom-wise output
MLP of SchNet lives in the heads. 3D-EMGP uses 7 blocks of 128 features, 50 Gaussians and a
10 Å cutoff (their code, on the fully connected graph); the library default is 5 Å, the
SchNetPack QM9 setting, and both are one config key (``model.cutoff``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from denoise3d.data.elements import MAX_Z
from denoise3d.models.ops import scatter_sum, shifted_softplus
from denoise3d.models.radial import GaussianRBF, RadiusBackbone, edge_feature_dim

__all__ = ["SchNet", "SchNetInteraction"]


class SchNetInteraction(nn.Module):
    """One interaction block; returns the residual update (n, F)."""

    def __init__(self, hidden: int, n_edge_features: int):
        super().__init__()
        self.filter_in = nn.Linear(n_edge_features, hidden)
        self.filter_out = nn.Linear(hidden, hidden)
        self.in2f = nn.Linear(hidden, hidden, bias=False)
        self.f2out = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor,
                env: torch.Tensor) -> torch.Tensor:
        w = self.filter_out(shifted_softplus(self.filter_in(edge_attr)))  # (E, F)
        w = w * env.unsqueeze(-1)  # cosine cutoff
        msg = self.in2f(h).index_select(0, edge_index[1]) * w  # (E, F)
        m = scatter_sum(msg, edge_index[0], h.shape[0])  # (n, F)
        return self.out(shifted_softplus(self.f2out(m)))  # (n, F)


class SchNet(RadiusBackbone):
    """SchNet backbone: ``forward(batch) -> (s, None)``, s (n_atoms, hidden) invariant."""

    def __init__(self, hidden: int = 128, layers: int = 7, cutoff: float = 5.0, num_rbf: int = 50,
                 edge_types: bool = True, max_z: int = MAX_Z):
        super().__init__()
        self.hidden, self.cutoff, self.edge_types = hidden, float(cutoff), bool(edge_types)
        self.embedding = nn.Embedding(max_z + 1, hidden)
        self.rbf = GaussianRBF(cutoff, num_rbf)
        n_edge = edge_feature_dim(num_rbf, edge_types)
        self.interactions = nn.ModuleList(SchNetInteraction(hidden, n_edge) for _ in range(layers))

    def features(self, z: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                 vec: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(s, None)`` of the edges ``edge_index`` (2, E) with hop types (E,) and vectors
        ``vec = x_j + S·cell − x_i`` (E, 3) Å (:class:`~denoise3d.models.neighbours.RadiusGraph`)."""
        _, edge_attr, env, _ = self.edge_geometry(edge_type, vec)  # (E, K[+4]), (E,)
        h = self.embedding(z)  # (n, F)
        for block in self.interactions:
            h = h + block(h, edge_index, edge_attr, env)
        return h, None
