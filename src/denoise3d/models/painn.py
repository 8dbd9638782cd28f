"""PaiNN (Schütt, Unke & Gastegger 2021): scalar features s and vector features v.

On the radius graph, ``r̂_ij = (x_j − x_i)/d_ij``, per layer (F features, SiLU activations)::

    message   x_ij = φ(s_j) ⊙ W(e_ij) f_c(d_ij)                φ = Linear→SiLU→Linear(3F),
              (a, b, c) = split(x_ij)                         W = Linear(3F) of
              s_i ← s_i + Σ_j a_ij                            e_ij = [Bessel(d_ij) | onehot(hop)]
              v_i ← v_i + Σ_j (b_ij r̂_ij + c_ij ⊙ v_j)
    update    U v, V v                                        (Linear on F, no bias: equivariant)
              (a_vv, a_sv, a_ss) = split(MLP([s, ‖V v‖]))     MLP = Linear→SiLU→Linear(3F)
              v ← v + a_vv ⊙ U v
              s ← s + a_ss + a_sv ⊙ ⟨U v, V v⟩

``s⁰ = Embedding(z)``, ``v⁰ = 0``. Returns ``(s (n, F), v (n, 3, F))``: s invariant, v
rotates with the molecule (polar vectors only, no cross products, so reflections too). ‖·‖ is
the smooth norm √(‖·‖² + 10⁻⁸) (:func:`smooth_norm`; v⁰ = 0). Defaults: the PaiNN paper's
20 Bessel functions and 5 Å cutoff; the hop one-hot follows the 3D-EMGP recipe for its other
backbones (``edge_types``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from denoise3d.data.elements import MAX_Z
from denoise3d.models.ops import scatter_sum
from denoise3d.models.radial import BesselRBF, RadiusBackbone, edge_feature_dim

__all__ = ["PaiNN", "PaiNNMessage", "PaiNNUpdate", "smooth_norm"]


def smooth_norm(x: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    """``√(‖x‖² + ε)`` (SchNetPack's PaiNN, ε = 1e-8): smooth everywhere, so forces stay exact
    where a vector feature vanishes by symmetry (e.g. the carbon of methane), unlike a clamped
    norm whose gradient is zero there and a plain norm whose gradient is undefined."""
    return torch.sqrt(x.square().sum(dim=dim) + eps)


class PaiNNMessage(nn.Module):
    def __init__(self, hidden: int, n_edge_features: int):
        super().__init__()
        self.hidden = hidden
        self.phi = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 3 * hidden))
        self.filter = nn.Linear(n_edge_features, 3 * hidden)

    def forward(self, s, v, edge_index, edge_attr, env, unit):
        """Residual updates ``(Δs (n, F), Δv (n, 3, F))``; unit (E, 3), env (E,)."""
        j = edge_index[1]
        x = self.phi(s).index_select(0, j) * self.filter(edge_attr) * env.unsqueeze(-1)  # (E, 3F)
        a, b, c = torch.split(x, self.hidden, dim=-1)  # (E, F) each
        dv = b.unsqueeze(1) * unit.unsqueeze(-1) + c.unsqueeze(1) * v.index_select(0, j)  # (E,3,F)
        return scatter_sum(a, edge_index[0], s.shape[0]), scatter_sum(dv, edge_index[0], s.shape[0])


class PaiNNUpdate(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.mix = nn.Linear(hidden, 2 * hidden, bias=False)  # [U | V] on the feature axis
        self.mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 3 * hidden))

    def forward(self, s, v):
        """Residual updates ``(Δs (n, F), Δv (n, 3, F))``."""
        uv, vv = torch.split(self.mix(v), self.hidden, dim=-1)  # (n, 3, F) each
        a = self.mlp(torch.cat([s, smooth_norm(vv, dim=1)], dim=-1))  # (n, 3F)
        a_vv, a_sv, a_ss = torch.split(a, self.hidden, dim=-1)  # (n, F) each
        return a_ss + a_sv * (uv * vv).sum(dim=1), a_vv.unsqueeze(1) * uv


class PaiNN(RadiusBackbone):
    """PaiNN backbone: ``forward(batch) -> (s (n, F), v (n, 3, F))``."""

    vector_features = True  # forward returns (s, v): vector heads read v, not the edges

    def __init__(self, hidden: int = 128, layers: int = 7, cutoff: float = 5.0, num_rbf: int = 20,
                 edge_types: bool = True, max_z: int = MAX_Z):
        super().__init__()
        self.hidden, self.cutoff, self.edge_types = hidden, float(cutoff), bool(edge_types)
        self.embedding = nn.Embedding(max_z + 1, hidden)
        self.rbf = BesselRBF(cutoff, num_rbf)
        n_edge = edge_feature_dim(num_rbf, edge_types)
        self.messages = nn.ModuleList(PaiNNMessage(hidden, n_edge) for _ in range(layers))
        self.updates = nn.ModuleList(PaiNNUpdate(hidden) for _ in range(layers))

    def features(self, z: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                 vec: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(s, v)`` of the edges ``edge_index`` (2, E) with hop types (E,) and vectors
        ``vec = x_j + S·cell − x_i`` (E, 3) Å (:class:`~denoise3d.models.neighbours.RadiusGraph`)."""
        _, edge_attr, env, unit = self.edge_geometry(edge_type, vec)  # (E, K[+4]), (E,), (E, 3)
        s = self.embedding(z)  # (n, F)
        v = s.new_zeros(s.shape[0], 3, self.hidden)  # (n, 3, F)
        for message, update in zip(self.messages, self.updates):
            ds, dv = message(s, v, edge_index, edge_attr, env, unit)
            s, v = s + ds, v + dv
            ds, dv = update(s, v)
            s, v = s + ds, v + dv
        return s, v
