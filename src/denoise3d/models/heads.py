"""Heads that sit on a backbone's invariant node features ``s`` (n_atoms, F) (and vectors ``v``).

``E = MLP(Σ_i s_i)`` (3D-EMGP Eq. 2); forces ``F = -∂E/∂pos`` come from :func:`energy_and_forces`.
Per-atom equivariant vectors (noise, forces, displacements) come either from a :class:`VectorHead`
("direct") or as ``−∂E/∂pos`` of an :class:`EnergyHead` ("gradient"), see :func:`atom_vectors`;
per-pair invariant scalars from a :class:`PairHead`.
"""

from __future__ import annotations

import torch
from torch import nn

from denoise3d.data.elements import MAX_Z
from denoise3d.models.ops import safe_norm, scatter_mean, scatter_sum

VECTOR_MODES = ("direct", "gradient")  # how objectives turn a backbone into per-atom vectors


def mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_out))


READOUTS = ("sum", "mean")


def graph_embedding(s: torch.Tensor, batch, readout: str = "sum") -> torch.Tensor:
    """Pooled graph embedding u = Σ_i s_i (``sum``, 3D-EMGP Eq. 2) or its mean over atoms
    (``mean``, the decoder aggregation of Zaidi et al.'s GNS-TAT), (n_graphs, F)."""
    if readout == "mean":
        return scatter_mean(s, batch.batch, batch.num_graphs)
    return scatter_sum(s, batch.batch, batch.num_graphs)


class EnergyHead(nn.Module):
    """Invariant energy E = MLP(Σ_i s_i), (n_graphs,)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = mlp(hidden, hidden, 1)

    @torch.jit.unused
    def forward(self, s: torch.Tensor, batch) -> torch.Tensor:
        return self.energy_of(s, batch.z, batch.batch, batch.num_graphs)

    def energy_of(self, s: torch.Tensor, z: torch.Tensor, index: torch.Tensor,
                  num_graphs: int) -> torch.Tensor:
        """:meth:`forward` on tensors: atoms' graph ``index`` (n,) of ``num_graphs``; z unused."""
        return self.mlp(scatter_sum(s, index, num_graphs)).squeeze(-1)


class AtomwiseEnergyHead(nn.Module):
    """Extensive energy ``E = scale · Σ_i e(s_i) + Σ_i E0[z_i]`` (n_graphs,) float64, eV.

    ``e`` is an MLP of each atom's features (the official 3D-EMGP MD17 head is also a per-atom MLP
    summed over atoms); ``E0`` (MAX_Z + 1,) per-element reference energies and ``scale`` are
    buffers set from the training data (:func:`denoise3d.jobs.energy_force.energy_force_objective`),
    so far-apart fragments add up and an unseen molecule starts from its elements' energies.
    """

    def __init__(self, hidden: int, scale: float = 1.0, e0=None):
        super().__init__()
        self.mlp = mlp(hidden, hidden, 1)
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float64))
        ref = torch.zeros(MAX_Z + 1) if e0 is None else torch.as_tensor(e0)
        self.register_buffer("e0", ref.to(torch.float64))

    @torch.jit.unused
    def forward(self, s: torch.Tensor, batch) -> torch.Tensor:
        return self.energy_of(s, batch.z, batch.batch, batch.num_graphs)

    def energy_of(self, s: torch.Tensor, z: torch.Tensor, index: torch.Tensor,
                  num_graphs: int) -> torch.Tensor:
        """:meth:`forward` on tensors: atomic numbers z (n,), graph ``index`` (n,) of
        ``num_graphs``."""
        atomic = self.mlp(s).squeeze(-1).double()  # (n_atoms,); the sum in float64: thousands
        # of float32 atom energies would lose ~1 eV of a large structure's total (issue 18)
        learned = scatter_sum(atomic, index, num_graphs) * self.scale
        return learned + scatter_sum(self.e0[z], index, num_graphs)


class ClassifierHead(nn.Module):
    """Logits over ``n_classes`` from a feature vector, (n_graphs, n_classes)."""

    def __init__(self, n_in: int, hidden: int, n_classes: int):
        super().__init__()
        self.mlp = mlp(n_in, hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class PropertyHead(nn.Module):
    """Graph property ``y = std * MLP(Σ_i s_i) + mean + Σ_i atomref[z_i]`` in internal units.

    ``mean``/``std`` are statistics of ``y - Σ atomref`` on the *training* split; they are buffers,
    so they travel with the checkpoint. The output is float64: total energies such as QM9's U0
    (~ -10⁴ eV) would lose ~1 meV to float32 rounding; the network itself runs in its own dtype.
    """

    def __init__(self, hidden: int, mean: float = 0.0, std: float = 1.0,
                 atomref: torch.Tensor | None = None, readout: str = "sum"):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r} (known: {', '.join(READOUTS)})")
        self.readout = readout
        self.mlp = mlp(hidden, hidden, 1)
        self.register_buffer("mean", torch.tensor(float(mean), dtype=torch.float64))
        self.register_buffer("std", torch.tensor(float(std), dtype=torch.float64))
        ref = torch.zeros(MAX_Z + 1) if atomref is None else torch.as_tensor(atomref)
        self.register_buffer("atomref", ref.to(torch.float64))

    def baseline(self, batch) -> torch.Tensor:
        """Σ_i atomref[z_i] per molecule, (n_graphs,) float64."""
        return scatter_sum(self.atomref.double()[batch.z], batch.batch, batch.num_graphs)

    def standardised(self, s: torch.Tensor, batch) -> torch.Tensor:
        """The raw (standardised) output, (n_graphs,)."""
        return self.mlp(graph_embedding(s, batch, self.readout)).squeeze(-1)

    def forward(self, s: torch.Tensor, batch) -> torch.Tensor:
        """The property in internal units, (n_graphs,) float64."""
        out = self.standardised(s, batch).double()
        return out * self.std.double() + self.mean.double() + self.baseline(batch)


def energy_and_forces(backbone: nn.Module, head: EnergyHead, batch, create_graph: bool = False):
    """Energy (n_graphs,) and conservative forces ``F = -∂E/∂pos`` (n_atoms, 3).

    Also returns the node features ``s`` of the same forward pass. ``create_graph=True`` keeps the
    graph of the gradient so a loss on F can be trained (double backward). Works for every
    backbone (autograd w.r.t. positions); :func:`forces_from_squared_distances` is the same maths
    for distance-input backbones (EGNN), measured no faster (issue 8, ``benchmarks/RESULTS.md``).
    """
    pos = batch.pos if batch.pos.requires_grad else batch.pos.detach().requires_grad_(True)
    b = batch.replace(pos=pos)
    s, _ = backbone(b)
    energy = head(s, b)
    (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)
    return energy, -grad, s


def strained(batch, strain: torch.Tensor):
    """``batch`` under the homogeneous deformation ``x ↦ x (I + ε)``, ``cell ↦ cell (I + ε)`` with
    ``ε = (strain + strainᵀ) / 2`` (n_graphs, 3, 3) per structure (rows are vectors, as ``pos``
    and ``cell``); at ``strain = 0`` nothing moves but ``∂E/∂strain`` is the virial."""
    eps = 0.5 * (strain + strain.transpose(1, 2))  # (g, 3, 3) symmetric
    pos = batch.pos + torch.einsum("ni,nij->nj", batch.pos, eps.index_select(0, batch.batch))
    cell = batch.cell + torch.bmm(batch.cell, eps) if batch.cell is not None else None
    return batch.replace(pos=pos, cell=cell)


def voigt(stress: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) stress -> (..., 6) in ASE's Voigt order xx, yy, zz, yz, xz, xy."""
    return stress[..., [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]


def energy_forces_stress(backbone: nn.Module, head: nn.Module, batch, create_graph: bool = False):
    """Energy (n_graphs,) eV, forces ``−∂E/∂pos`` (n_atoms, 3) eV/Å and stress (n_graphs, 3, 3)
    eV/Å³, ``σ = (1/V) ∂E/∂ε`` at ε = 0 (:func:`strained`; ASE's sign: positive under tension),
    then the node features ``s``. Every structure needs a cell of nonzero volume
    (``batch.cell``, all three directions periodic); a ValueError otherwise.
    """
    if batch.pbc is None or not bool(batch.pbc.all()):
        raise ValueError("stress needs periodic structures (a cell, pbc in all three directions)")
    volume = torch.linalg.det(batch.cell.to(torch.float64)).abs()  # (g,) Å³
    if bool((volume < 1e-9).any()):
        raise ValueError("stress needs a cell of nonzero volume")
    pos = batch.pos.detach().requires_grad_(True)
    strain = torch.zeros(batch.num_graphs, 3, 3, dtype=pos.dtype, device=pos.device,
                         requires_grad=True)
    b = strained(batch.replace(pos=pos), strain)
    s, _ = backbone(b)
    energy = head(s, b)
    grad, virial = torch.autograd.grad(energy.sum(), (pos, strain), create_graph=create_graph)
    stress = virial.to(volume.dtype) / volume.view(-1, 1, 1)
    return energy, -grad, stress, s


def forces_from_squared_distances(backbone: nn.Module, head: EnergyHead, batch,
                                  create_graph: bool = False):
    """:func:`energy_and_forces` for a backbone that reads geometry only as ``d²_ij`` per edge.

    ``E`` depends on positions only through ``d²_ij = ‖x_i − x_j‖²`` (i = ``edge_index[0]``), so
    with ``g_ij = ∂E/∂d²_ij`` (autograd w.r.t. the (n_edges, 1) tensor ``d²``, a leaf here)::

        ∂E/∂x_k = Σ_{(k, j)} 2 g_kj (x_k − x_j) − Σ_{(i, k)} 2 g_ik (x_i − x_k)

    (both directions are separate edges with their own ``g``; ``E`` need not be symmetric in
    them). The differences are constants, so the graph the double backward traverses is the
    network's graph down to ``d²`` plus one product and two scatters per force, instead of also the
    per-edge gather, difference and square of the positions. Forces are not differentiable
    w.r.t. positions here (use :func:`energy_and_forces` for that). Measured on the issue-8
    pretraining step it is not faster than :func:`energy_and_forces` (×0.92–1.01), so nothing
    uses it by default; it is kept, tested, as the exact alternative.
    """
    if not getattr(backbone, "distance_input", False) or type(head) is not EnergyHead:
        raise TypeError(f"forces_from_squared_distances needs a backbone with distance_input "
                        f"(forward(batch, d2=...)) and a plain EnergyHead, got "
                        f"{type(backbone).__name__}, {type(head).__name__}")
    i, j = batch.edge_index
    pos = batch.pos.detach()
    diff = pos.index_select(0, i) - pos.index_select(0, j)  # (E, 3), as squared_distances
    d2 = diff.square().sum(dim=1, keepdim=True).requires_grad_(True)  # (E, 1), Å²
    s, _ = backbone(batch, d2=d2)
    energy = head(s, batch)
    (g,) = torch.autograd.grad(energy.sum(), d2, create_graph=create_graph, allow_unused=True)
    if g is None:  # no edges: E does not depend on positions
        g = torch.zeros_like(d2)
    w = (2.0 * g) * diff  # (E, 3): ∂E/∂x_i through edge (i, j); −w for x_j
    n = pos.shape[0]
    grad = scatter_sum(w, i, n) - scatter_sum(w, j, n)  # (n_atoms, 3)
    return energy, -grad, s


class VectorHead(nn.Module):
    """Per-atom equivariant vectors (n_atoms, 3) from any backbone's ``(s, v)``.

    With vector features ``v`` (n_atoms, 3, F) (PaiNN, TorchMD-ET): a gated equivariant readout
    (PaiNN's gated equivariant block with one output channel)::

        out_i = g_i · (v_i w),   g_i = MLP([s_i, ‖v_i W‖]),   W (F, F), w (F, 1), no biases

    Without (``v is None``: EGNN, SchNet): an EGNN-style coordinate-update readout over the batch's
    edges ``(i, j)`` (i receives), with distances from ``batch.pos``::

        out_i = Σ_j φ([s_i, s_j, d_ij]) (x_i − x_j) / (d_ij + 1)          φ: Linear→SiLU→Linear(1)

    The ``1/(d_ij + 1)`` (EGNN's normalised coordinate update) keeps the output O(1) however far
    apart noisy atoms are. Both are rotation/reflection-equivariant, translation-invariant and
    permutation-equivariant. Both parameter sets exist; the one a backbone does not use keeps its
    initial values (no gradient reaches it).
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.edge_in = nn.Linear(2 * hidden + 1, hidden)  # columns [s_i | s_j | d_ij]
        self.edge_out = nn.Linear(hidden, 1)
        self.vec_norm = nn.Linear(hidden, hidden, bias=False)  # W
        self.vec_out = nn.Linear(hidden, 1, bias=False)  # w
        self.gate = mlp(2 * hidden, hidden, 1)

    def forward(self, s: torch.Tensor, v: torch.Tensor | None, batch) -> torch.Tensor:
        return self.from_edges(s, batch) if v is None else self.from_vectors(s, v)

    def from_vectors(self, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Gated readout of vector features v (n_atoms, 3, F) -> (n_atoms, 3)."""
        norm = safe_norm(self.vec_norm(v), dim=1)  # (n, F), invariant
        g = self.gate(torch.cat([s, norm], dim=-1))  # (n, 1)
        return g * self.vec_out(v).squeeze(-1)  # (n, 3)

    def from_edges(self, s: torch.Tensor, batch) -> torch.Tensor:
        """Coordinate-update readout over ``batch.edge_index`` -> (n_atoms, 3)."""
        batch.require_full_graph("the edge readout of a vector head (for backbones without vector "
                                 "features)", "it runs over every pair of a molecule; set the "
                                 "objective's vector: gradient (finetune.noisy_nodes_vector="
                                 "gradient for Noisy Nodes) or use painn / torchmd_et")
        i, j = batch.edge_index
        diff = batch.pos.index_select(0, i) - batch.pos.index_select(0, j)  # (E, 3)
        d = safe_norm(diff, dim=-1, keepdim=True)  # (E, 1), Å; finite gradient at d = 0
        H, w = self.hidden, self.edge_in.weight  # (H, 2H+1)
        # first layer factorised per node (as in EGNN): (s W_iᵀ)[i] + (s W_jᵀ)[j] + d w_dᵀ + b
        pre = (s @ w[:, :H].t()).index_select(0, i) + (s @ w[:, H:2 * H].t()).index_select(0, j)
        pre = pre + d * w[:, 2 * H] + self.edge_in.bias  # (E, H)
        phi = self.edge_out(nn.functional.silu(pre))  # (E, 1)
        return scatter_sum(phi * diff / (d + 1.0), i, s.shape[0])  # (n, 3)


class PairHead(nn.Module):
    """Invariant scalar per edge ``(i, j)``, symmetric in i and j, (n_edges,)::

        y_ij = MLP([s_i + s_j, s_i ⊙ s_j, d_ij]),   d_ij = ‖x_i − x_j‖ (Å, from ``batch.pos``)
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = mlp(2 * hidden + 1, hidden, 1)

    def forward(self, s: torch.Tensor, batch) -> torch.Tensor:
        i, j = batch.edge_index
        si, sj = s.index_select(0, i), s.index_select(0, j)  # (E, F)
        d = safe_norm(batch.pos.index_select(0, i) - batch.pos.index_select(0, j), keepdim=True)
        return self.mlp(torch.cat([si + sj, si * sj, d], dim=-1)).squeeze(-1)  # (E,)


def vector_head(hidden: int, mode: str) -> nn.Module:
    """The head behind ``mode``: ``"direct"`` -> :class:`VectorHead`, ``"gradient"`` -> :class:`EnergyHead`."""
    if mode == "direct":
        return VectorHead(hidden)
    if mode == "gradient":
        return EnergyHead(hidden)
    raise ValueError(f"unknown vector mode {mode!r}; choose from {VECTOR_MODES}")


def atom_vectors(backbone: nn.Module, head: nn.Module, batch):
    """One backbone forward -> ``(vectors (n_atoms, 3), s (n_atoms, F))``.

    ``head`` a :class:`VectorHead` gives its output; an :class:`EnergyHead` gives ``F = −∂E/∂pos``
    (through :func:`energy_and_forces`, with ``create_graph`` whenever autograd is on, so a loss on
    the vectors trains; autograd is switched on for the gradient even under ``no_grad``).
    """
    if isinstance(head, EnergyHead):
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            _, forces, s = energy_and_forces(backbone, head, batch, create_graph=create_graph)
        return forces, s
    s, v = backbone(batch)
    return head(s, v, batch), s
