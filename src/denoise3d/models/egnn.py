"""EGNN backbone (Satorras et al. 2021) as used by 3D-EMGP: invariant features, coordinates fixed.

One layer, for every directed edge ``(i, j)`` of the batch (``i`` receives, ``j`` sends)::

    d²_ij = ‖x_i − x_j‖²                                    (raw squared distance, Å²)
    r_ij  = [d²_ij]  or  [d²_ij, rbf(d_ij)]                 (``num_rbf`` = 0 or K, see below)
    m_ij  = φ_e([h_i, h_j, r_ij, onehot(e_ij)])             φ_e = Linear→SiLU→Linear→SiLU
    m_ij ← m_ij · sigmoid(w_g·m_ij + b_g)                   (gated messages)
    m_i   = Σ_j m_ij
    h_i  ← h_i + φ_h([h_i, m_i])                            φ_h = Linear→SiLU→Linear

``e_ij`` ∈ {1-hop, 2-hop, 3-hop, other} on the covalent graph. The positions never change
(3D-EMGP B.2), so ``d²`` and the one-hot are computed once per forward pass and every node
feature ``h`` is E(3)-invariant; forces come from autograd through ``d²``.

**Radial basis (``num_rbf`` > 0; not in 3D-EMGP).** ``rbf(d)`` is SchNet's Gaussian expansion
(K centres on [0, ``cutoff``], width their spacing; SchNet's defaults K = 50, 5 Å: 0.1 Å), added
beside the raw d², which stays for every pair; the graph stays fully connected. Why: a bond's
restoring force needs an energy whose slope in d changes sign within a few hundredths of an Å of
the bond length, a curvature the raw d² column reaches only once its weights have grown far, and
energy + force training from scratch sits on the zero-force plateau until then (our reading of
the measurements, issue 17, ``benchmarks/RESULTS.md``: with d² alone aspirin never leaves it in
the benefit runner's 3,100 steps and ethanol after ~2,000; with d² and 50 Gaussians on 5 Å
aspirin is at 14.0 kcal/mol/Å after 620 steps and 5.5 after 3,100, against 19.8 for zero
forces; a coarse 0.32 Å basis or a graph of the 1-3-hop pairs only do not leave it in 930). ``num_rbf=0`` (the class default) is the official form every shipped
EGNN checkpoint has; the force-field configs set ``num_rbf: 50``.

**Factorised first edge layer.** With ``W = [W_i | W_j | w_d | W_t]`` (split by input columns),

    W[h_i, h_j, r, onehot(e)] + b = (h W_iᵀ)[i] + (h W_jᵀ)[j] + (W_tᵀ + b)[e] + r W_rᵀ

so the two H×H matmuls run on the n_atoms rows and are gathered per edge (the receiver and
edge-type terms as one lookup in an (n_atoms, n_edge_types, H) table, see
:meth:`EGNNLayer.edge_input`) and the distance term is an outer product (a (E, 1+K) · (1+K, H)
matmul with the basis), instead of one ``(n_edges × (2H+5)) · (2H+5 × H)`` matmul on a concatenation that must be built first
(on a fully connected QM9 batch n_edges ≈ 17 n_atoms). The straightforward form is kept
(``factorised=False``) as the reference the tests compare to; both read the same
``edge_mlp.0`` parameters, so state dicts are identical.

**Twice-differentiable SiLU.** The two SiLUs of φ_e on the (n_edges, H) messages use
:func:`denoise3d.models.ops.silu` (same values and derivatives as ``F.silu``): forces need the
first backward with ``create_graph`` and training differentiates it again, and torch's own SiLU
records a five-node composite there; ours is one fused kernel with an explicit second derivative
(issue 8: ×1.09–1.24 on the 3D-EMGP pretraining step, see ``benchmarks/RESULTS.md``). The
reference path keeps ``nn.SiLU``.

**Large distances.** ``d²`` enters raw, as in the paper and its code; with σ = 10 Å noise,
``d²`` reaches ~10⁴ Å² and node features grow roughly linearly with it (SiLU is linear for large
inputs, the gate saturates at 0 or 1): at initialisation max|s| ≈ 3 on clean QM9 molecules,
≈ 150 at σ = 10 Å, ≈ 3·10⁶ at σ = 1000 Å. This stays far inside float32's range (see
``tests/models/test_egnn.py::test_noisy_and_degenerate_inputs_are_finite``). What keeps it NaN-free:
``d²`` is a sum of squares of differences (no ``sqrt``, so coincident atoms have the finite
gradient ``2(x_i − x_j) = 0``; no ``‖x_i‖² + ‖x_j‖² − 2 x_i·x_j`` cancellation), and ``sigmoid`` /
``silu`` are the saturating torch kernels (no ``exp`` overflow).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from denoise3d.data.batch import N_EDGE_TYPES
from denoise3d.data.elements import MAX_Z
from denoise3d.models.ops import scatter_sum, silu
from denoise3d.models.radial import GaussianRBF

__all__ = ["EGNN", "EGNNLayer", "squared_distances"]


def squared_distances(pos: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """``d²_ij = ‖x_i − x_j‖²`` per edge, (n_edges, 1), Å²; a sum of squared differences."""
    diff = pos.index_select(0, edge_index[0]) - pos.index_select(0, edge_index[1])  # (E, 3)
    return diff.square().sum(dim=1, keepdim=True)  # (E, 1)


class EGNNLayer(nn.Module):
    """One E_GCL layer without the coordinate update (equations in the module docstring).

    Parameters (state-dict keys): ``edge_mlp.{0,2}`` (φ_e; ``edge_mlp.0.weight`` has columns
    ``[h_i | h_j | r | onehot]``, r = d² and the ``n_radial − 1`` basis functions), ``gate``
    (w_g, b_g), ``node_mlp.{0,2}`` (φ_h; columns ``[h_i | m_i]``).
    """

    def __init__(self, hidden: int, n_edge_types: int = N_EDGE_TYPES, n_radial: int = 1):
        super().__init__()
        self.hidden = hidden
        self.n_radial = n_radial
        self.edge_mlp = nn.Sequential(
            nn.Linear(2 * hidden + n_radial + n_edge_types, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
        )
        self.gate = nn.Linear(hidden, 1)
        self.node_mlp = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
        )

    def edge_input(self, h: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                   r: torch.Tensor) -> torch.Tensor:
        """First φ_e layer, factorised: ``P[i, e] + (h W_jᵀ)[j] + r W_rᵀ`` (r: (E, n_radial)).

        ``P[i, e] = (h W_iᵀ)_i + (W_tᵀ + b)_e`` is a small (n, T, H) table, so the receiver term,
        the one-hot term and the bias cost one gather per edge (key ``i·T + e``); with the
        sender gather and the outer product that is three passes over (E, H) memory.
        """
        H, R = self.hidden, self.n_radial
        w, b = self.edge_mlp[0].weight, self.edge_mlp[0].bias  # (H, 2H+R+T), (H,)
        table = w[:, 2 * H + R:].t() + b  # (T, H)
        p = (torch.mm(h, w[:, :H].t()).unsqueeze(1) + table).reshape(-1, H)  # (n·T, H)
        out = p.index_select(0, edge_index[0] * table.shape[0] + edge_type)  # (E, H)
        out.add_(torch.mm(h, w[:, H:2 * H].t()).index_select(0, edge_index[1]))  # (E, H)
        return out.addmm_(r, w[:, 2 * H:2 * H + R].t())  # (E, H)

    def edge_input_reference(self, h: torch.Tensor, edge_index: torch.Tensor,
                             edge_type: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """First φ_e layer on the explicit concatenation ``[h_i, h_j, r, onehot(e)]``."""
        n_types = self.edge_mlp[0].in_features - 2 * self.hidden - self.n_radial
        onehot = F.one_hot(edge_type, n_types).to(h.dtype)  # (E, T)
        cat = torch.cat([h[edge_index[0]], h[edge_index[1]], r, onehot], dim=1)  # (E, 2H+R+T)
        return self.edge_mlp[0](cat)  # (E, H)

    @torch.jit.unused
    def _reference_messages(self, h, edge_index, edge_type, r):
        return self.edge_mlp[1:](self.edge_input_reference(h, edge_index, edge_type, r))

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                r: torch.Tensor, factorised: bool = True) -> torch.Tensor:
        """Updated node features (n_atoms, H) from h (n, H), edges (2, E), types (E,) and the
        radial input r (E, n_radial): d² (Å²), then any basis functions."""
        if factorised:
            a = self.edge_input(h, edge_index, edge_type, r)  # (E, H)
            m = silu(self.edge_mlp[2](silu(a)))  # (E, H)
        else:
            m = self._reference_messages(h, edge_index, edge_type, r)
        m = m * torch.sigmoid(self.gate(m))  # (E, H)
        agg = scatter_sum(m, edge_index[0], h.shape[0])  # (n, H)
        return h + self.node_mlp(torch.cat([h, agg], dim=1))  # (n, H)


class EGNN(nn.Module):
    """EGNN backbone: ``forward(batch) -> (s, None)``, s (n_atoms, hidden) invariant.

    ``h⁰ = Embedding(z)``, then ``layers`` × :class:`EGNNLayer` on the batch's graph
    (3D-EMGP: fully connected, ``hidden=128``, ``layers=7``). ``num_rbf`` > 0 adds SchNet's
    Gaussian basis of the distance on [0, ``cutoff``] Å beside d² (module docstring; 0 = the
    official form). ``factorised=False`` selects the reference (per-edge concatenation) first
    edge layer: same parameters, same outputs, slower.
    """

    full_graph = True  # needs the batch's fully connected graph (no periodic cells)

    def __init__(self, hidden: int = 128, layers: int = 7, num_rbf: int = 0, cutoff: float = 5.0,
                 n_edge_types: int = N_EDGE_TYPES, max_z: int = MAX_Z, factorised: bool = True):
        super().__init__()
        if num_rbf < 0 or (num_rbf and cutoff <= 0):
            raise ValueError(f"EGNN: model.num_rbf must be >= 0 and model.cutoff > 0 (the range of "
                             f"its Gaussians), got num_rbf={num_rbf}, cutoff={cutoff}")
        self.hidden = hidden
        self.n_edge_types = n_edge_types
        self.factorised = factorised
        self.rbf = GaussianRBF(cutoff, num_rbf) if num_rbf else None
        self.embedding = nn.Embedding(max_z + 1, hidden)
        self.layers = nn.ModuleList(EGNNLayer(hidden, n_edge_types, 1 + num_rbf)
                                    for _ in range(layers))

    #: ``forward(batch, d2=...)`` takes the edges' squared distances as its only geometric input,
    #: so :func:`~denoise3d.models.heads.forces_from_squared_distances` can differentiate
    #: w.r.t. ``d2``
    distance_input = True

    @torch.jit.unused
    def forward(self, batch, d2: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        """``(s, None)``; ``d2`` (n_edges, 1) replaces :func:`squared_distances` of ``batch.pos``."""
        batch.require_full_graph("EGNN", "its messages run over every pair of atoms of one molecule "
                                 "(3D-EMGP), which a periodic cell or a large system does not "
                                 "have; use a radius backbone (schnet, painn, torchmd_et, gns)")
        if batch.edge_type.numel() and int(batch.edge_type.max()) >= self.n_edge_types:
            # the factorised lookup would silently read another atom's row, so fail loudly
            raise ValueError(f"edge_type {int(batch.edge_type.max())} out of range for "
                             f"n_edge_types={self.n_edge_types}")
        if d2 is None:
            d2 = squared_distances(batch.pos, batch.edge_index)  # (E, 1), Å²
        return self.from_squared_distances(batch.z, batch.edge_index, batch.edge_type, d2)

    def features(self, z: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                 vec: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(s, None)`` of the edges ``edge_index`` (2, E) of the full graph with hop types (E,)
        and vectors ``vec = x_j − x_i`` (E, 3) Å (the radius backbones' signature; no checks)."""
        return self.from_squared_distances(z, edge_index, edge_type,
                                           vec.square().sum(dim=1, keepdim=True))

    def from_squared_distances(self, z: torch.Tensor, edge_index: torch.Tensor,
                               edge_type: torch.Tensor,
                               d2: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(s, None)`` from the edges' squared distances d2 (E, 1) Å²."""
        r = d2
        if self.rbf is not None:  # d from d² (clamped: coincident atoms keep a finite gradient)
            r = torch.cat([d2, self.rbf(d2.clamp_min(1e-12).sqrt().squeeze(1))], dim=1)  # (E, 1+K)
        h = self.embedding(z)  # (n, H)
        for layer in self.layers:
            h = layer(h, edge_index, edge_type, r, self.factorised)  # (n, H)
        return h, None
