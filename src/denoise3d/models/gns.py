"""GNS and GNS-TAT (Zaidi et al. 2022, App. A.1 / A.2; Godwin et al. 2022; Sanchez-Gonzalez 2020).

**GNS.** Encoder / processor / decoder on the radius graph (edge ``(i, j)``: i receives)::

    encoder    v_i = Emb(z_i);   e_ij = MLP_enc(Bessel(d_ij) [| onehot(hop_ij)])
    processor  L interaction-network blocks, the whole stack applied ``iterations`` times with
               shared weights (Zaidi: 10 blocks × 3 iterations); block l:
               e_ij ← w_s e_ij + w_b φ_e^l([e_ij, v_i, v_j])
               v_i  ← w_s v_i  + w_b φ_v^l([v_i, Σ_j f_c(d_ij) e_ij])
    decoder    the heads (``s = v``; vertex- and graph-level readouts live in models/heads.py)

Each MLP (φ_e, φ_v, MLP_enc) has ``mlp_layers`` hidden layers of width ``mlp_hidden``. GNS uses
shifted softplus activations, a LayerNorm after the MLP and plain shortcut sums (w_s = w_b = 1).

**GNS-TAT** (:class:`GNSTAT`) changes, as stated in App. A.2:

* Tailored ReLU activations (:mod:`denoise3d.models.tat`) with η = 0.8, the negative slope solved
  on the "edge network" (edge encoder + the ``layers × iterations`` residual edge updates, whose
  shortcut sums are weighted): :func:`edge_network_subnet_max` (η = 0.8 at the Table 3 size
  gives α = 0.3177, the value the ``dks`` package computes for the same function);
* weighted shortcut sums, w_s = 0.9 and w_b = √(1 − 0.9²);
* LayerNorm moved before the first Linear of each MLP;
* Gaussian fan-in initialisation N(0, 1/fan_in) of all weights, zero biases;
* Edge-Delta: in the first Linear of every edge update φ_e the weights on the incoming vertex
  features v_i, v_j are zero at initialisation and are left out of its fan-in. (The LayerNorm
  over [e, v_i, v_j] still sees v through its statistics; A.2 footnote 6 ignores that.)

The first Linear of each edge update is computed without the (E, 3H) concatenation
(:meth:`GNSMLP.forward_pairs`; ``factorised = False`` runs the plain reference, same
parameters and outputs): 1.4-1.5x faster on CPU.

**Differences from the paper, and why.**

* Edge features. Zaidi et al. (A.1) featurise the displacement vector ``p_j − p_i``; GNS is
  not E(3)-invariant by design (their §2 cites Godwin et al. for "coordinates with respect to
  the principal axes of inertia", whose axis signs are arbitrary, and reflections flip them).
  Here edges see only the distance (Bessel basis, the "distance featurisation" of Zaidi
  Table 3), so node features are exactly invariant and pass the physics tests; per-atom vector
  outputs (noise, forces) come from the equivariant heads.
* The vertex update sums ``f_c(d_ij) e_ij`` (cosine cutoff) instead of ``e_ij``, so the output
  is continuous when atoms cross the cutoff (needed for −∇E forces). Zaidi's cap of 20 neighbours
  per vertex is not applied (it would make the energy discontinuous).
* Zaidi decode every processor iteration and average the losses; here only the last one is
  returned (their test-time prediction). Their mean decoder aggregation (GNS-TAT) is a property
  of the graph-level head, which here sums (shared heads for every backbone).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from denoise3d.data.elements import MAX_Z
from denoise3d.models.neighbours import radius_edges
from denoise3d.models.ops import safe_norm, scatter_sum, shifted_softplus
from denoise3d.models.radial import BesselRBF, cosine_cutoff, edge_feature_dim, with_edge_types
from denoise3d.models.tat import TailoredReLU, negative_slope

__all__ = ["GNS", "GNSTAT", "GraphNetSimulator", "GNSMLP", "ShiftedSoftplus",
           "edge_network_subnet_max"]


class ShiftedSoftplus(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shifted_softplus(x)


class GNSMLP(nn.Module):
    """``n_layers`` × (Linear → act), then Linear(n_out); LayerNorm after (GNS) or before (TAT)."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, n_layers: int, act: nn.Module,
                 norm_first: bool):
        super().__init__()
        self.norm_first = norm_first
        self.norm = nn.LayerNorm(n_in if norm_first else n_out)
        sizes = [n_in] + [n_hidden] * n_layers + [n_out]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._rest(self.linears[0](self.norm(x) if self.norm_first else x))

    def _rest(self, x: torch.Tensor) -> torch.Tensor:
        """Everything after the first Linear."""
        for k, lin in enumerate(self.linears):
            if k > 0:
                x = lin(self.act(x))
        return x if self.norm_first else self.norm(x)

    def forward_pairs(self, e: torch.Tensor, v: torch.Tensor, i: torch.Tensor,
                      j: torch.Tensor) -> torch.Tensor:
        """``forward([e, v_i, v_j])`` for e (E, H), v (n, H) without building the (E, 3H) input.

        The first Linear splits by columns, ``W c = W_e e + (v W_iᵀ)[i] + (v W_jᵀ)[j]``, so its
        vertex parts run on n rows instead of E (as in EGNN). With the LayerNorm first
        (``γ ⊙ (c − μ)/σ + β``), ``W LN(c) = (W_γ c − μ W_γ 1)/σ + W β`` with ``W_γ = W diag(γ)``,
        and μ, σ² of the 3H entries of c are assembled from per-part sums.
        """
        H, first = e.shape[1], self.linears[0]
        w = first.weight * self.norm.weight if self.norm_first else first.weight  # (M, 3H)
        pre = (e @ w[:, :H].t()).add_((v @ w[:, H:2 * H].t()).index_select(0, i))  # (E, M)
        pre = pre.add_((v @ w[:, 2 * H:].t()).index_select(0, j))
        if not self.norm_first:
            return self._rest(pre + first.bias)
        v1, v2 = v.sum(dim=1), v.square().sum(dim=1)  # (n,)
        mean = (e.sum(dim=1) + v1[i] + v1[j]) / (3 * H)  # (E,)
        var = (e.square().sum(dim=1) + v2[i] + v2[j]) / (3 * H) - mean.square()  # (E,)
        rstd = torch.rsqrt(var.clamp_min(0.0) + self.norm.eps).unsqueeze(-1)  # (E, 1)
        pre = (pre - mean.unsqueeze(-1) * w.sum(dim=1)) * rstd  # (E, M)
        return self._rest(pre + (first.weight @ self.norm.bias + first.bias))


class GraphNetSimulator(nn.Module):
    """The shared GNS body; :class:`GNS` and :class:`GNSTAT` fix activation, shortcut weights,
    LayerNorm position and initialisation. ``forward(batch) -> (s, None)``, s (n_atoms, hidden)
    invariant vertex latents. ``hidden`` = vertex/edge latent size, ``layers`` =
    interaction-network blocks (own weights), ``iterations`` = applications of the whole
    processor (shared weights)."""

    def __init__(self, hidden: int, layers: int, iterations: int, mlp_hidden: int,
                 mlp_layers: int, cutoff: float, num_rbf: int, edge_types: bool, max_z: int, *,
                 act: nn.Module, shortcut: tuple[float, float], norm_first: bool):
        super().__init__()
        self.hidden, self.iterations = hidden, iterations
        self.cutoff, self.edge_types = float(cutoff), bool(edge_types)
        self.w_skip, self.w_branch = shortcut
        self.factorised = True  # edge updates via GNSMLP.forward_pairs (False: the reference)

        def mlp(n_in):
            return GNSMLP(n_in, mlp_hidden, hidden, mlp_layers, act, norm_first)

        self.embedding = nn.Embedding(max_z + 1, hidden)
        self.rbf = BesselRBF(cutoff, num_rbf)
        self.edge_encoder = mlp(edge_feature_dim(num_rbf, edge_types))
        self.edge_updates = nn.ModuleList(mlp(3 * hidden) for _ in range(layers))  # [e, v_i, v_j]
        self.vertex_updates = nn.ModuleList(mlp(2 * hidden) for _ in range(layers))  # [v, Σe]

    @torch.jit.unused
    def forward(self, batch) -> tuple[torch.Tensor, None]:
        return self.latents(batch)[0], None

    def features(self, z: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                 vec: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(s, None)`` of the edges ``edge_index`` (2, E) with hop types (E,) and vectors
        ``vec = x_j + S·cell − x_i`` (E, 3) Å (:class:`~denoise3d.models.neighbours.RadiusGraph`)."""
        return self.edge_latents(z, edge_index, edge_type, vec)[0], None

    @torch.jit.unused
    def latents(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Final vertex latents (n, H) and edge latents (E, H) of the radius graph."""
        g = radius_edges(batch, self.cutoff)
        return self.edge_latents(batch.z, g.edge_index, g.edge_type, g.vec)

    def edge_latents(self, z: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                     vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`latents` of given edges (see :meth:`features`)."""
        i, j = edge_index[0], edge_index[1]
        dist = safe_norm(vec, dim=-1)  # (E,)
        env = cosine_cutoff(dist, self.cutoff).unsqueeze(-1)  # (E, 1)
        e = self.edge_encoder(with_edge_types(self.rbf(dist), edge_type, self.edge_types))
        v = self.embedding(z)  # (n, H)
        for _ in range(self.iterations):
            for phi_e, phi_v in zip(self.edge_updates, self.vertex_updates):
                if self.factorised:  # same parameters and result, no (E, 3H) concatenation
                    de = phi_e.forward_pairs(e, v, i, j)  # (E, H)
                else:
                    de = phi_e(torch.cat([e, v.index_select(0, i), v.index_select(0, j)], dim=-1))
                e = self.w_skip * e + self.w_branch * de  # (E, H)
                agg = scatter_sum(env * e, i, v.shape[0])  # (n, H)
                v = self.w_skip * v + self.w_branch * phi_v(torch.cat([v, agg], dim=-1))  # (n, H)
        return v, e


class GNS(GraphNetSimulator):
    """GNS: shifted softplus, LayerNorm after each MLP, plain shortcut sums, PyTorch init."""

    def __init__(self, hidden: int = 512, layers: int = 10, iterations: int = 3,
                 mlp_hidden: int = 1024, mlp_layers: int = 3, cutoff: float = 5.0,
                 num_rbf: int = 20, edge_types: bool = False, max_z: int = MAX_Z):
        super().__init__(hidden, layers, iterations, mlp_hidden, mlp_layers, cutoff, num_rbf,
                         edge_types, max_z, act=ShiftedSoftplus(), shortcut=(1.0, 1.0),
                         norm_first=False)


def edge_network_subnet_max(x: float, r, mlp_layers: int, n_blocks: int,
                            shortcut_weight: float) -> float:
    """TAT's subnetwork maximizing function M(x) of GNS-TAT's edge network (Zaidi footnote 6).

    Edge encoder (``mlp_layers`` nonlinear layers ``r``), then ``n_blocks`` = layers × iterations
    residual edge updates ``c ↦ w² c + (1 − w²) r^{mlp_layers}(c)``; the result is maximised with
    the subnetwork "encoder + one edge-update branch" (TAT App. B, as in dks' ResNet example).
    The LayerNorm before each MLP does not change c values of unit-q inputs, and with Edge-Delta
    the vertex features do not enter the edge network at initialisation.
    """
    def chain(c):
        for _ in range(mlp_layers):
            c = r(c)
        return c

    w2 = shortcut_weight ** 2
    c = chain(x)
    for _ in range(n_blocks):
        c = w2 * c + (1.0 - w2) * chain(c)
    return max(c, chain(chain(x)))


class GNSTAT(GraphNetSimulator):
    """GNS-TAT (Zaidi et al. App. A.2): TReLU(η), weighted shortcuts, LayerNorm first,
    Edge-Delta."""

    def __init__(self, hidden: int = 512, layers: int = 10, iterations: int = 3,
                 mlp_hidden: int = 1024, mlp_layers: int = 3, cutoff: float = 5.0,
                 num_rbf: int = 20, edge_types: bool = False, max_z: int = MAX_Z,
                 eta: float = 0.8, shortcut_weight: float = 0.9):
        if not 0.0 <= shortcut_weight < 1.0:
            raise ValueError(f"shortcut_weight must lie in [0, 1), got {shortcut_weight}")
        n_blocks = layers * iterations
        alpha = negative_slope(
            lambda x, r: edge_network_subnet_max(x, r, mlp_layers, n_blocks, shortcut_weight), eta)
        super().__init__(hidden, layers, iterations, mlp_hidden, mlp_layers, cutoff, num_rbf,
                         edge_types, max_z, act=TailoredReLU(alpha),
                         shortcut=(shortcut_weight, math.sqrt(1.0 - shortcut_weight ** 2)),
                         norm_first=True)
        self.eta, self.negative_slope = float(eta), alpha
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Gaussian fan-in init N(0, 1/fan_in), zero biases; Edge-Delta on each edge update's first
        Linear (columns ``[e | v_i | v_j]``): the v_i, v_j weights are zero and the e weights use
        the fan-in of the edge part alone."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 1.0 / math.sqrt(module.in_features))
                module.bias.zero_()
        H = self.hidden
        for phi_e in self.edge_updates:
            first = phi_e.linears[0]
            first.weight[:, :H].normal_(0.0, 1.0 / math.sqrt(H))
            first.weight[:, H:].zero_()
