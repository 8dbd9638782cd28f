"""3D-EMGP pretraining objective (Jiao et al., AAAI 2023): EFP + INP.

One call does it all, so no other part of the code knows about the noise::

    l ~ U{0, …, L−1} per molecule,  σ = σ_l                     (σ_1 = 10 … σ_L = 0.01 Å)
    X̃ ~ Rie_σ(·|X)                                              (Langevin, Algorithm 1)
    E = EnergyHead(backbone(X̃)),  F̂ = −∂E/∂X̃                    (create_graph: double backward)
    L_EFP = mean_mol Σ_atoms,xyz σ² ‖F̂/σ − s/α‖²  =  mean_mol Σ ‖F̂ − t‖²,
            s = −(1/σ²)[(ỸỸᵀ)Ỹ − (ỸYᵀ)Y] (Eq. 11),   t = σ s/α = −[(ỸỸᵀ)Ỹ − (ỸYᵀ)Y]/(ασ)   (Eq. 12)
    L_INP = CE(ScaleHead([u ‖ ũ]), l),  u = Σ_i s_i(X),  ũ = Σ_i s_i(X̃)                (Eq. 13)
    L = λ1 L_EFP + λ2 L_INP                                                           (Eq. 14)

ũ reuses the node features of the noisy forward that produced F̂: two backbone calls per step
(one with λ2 = 0, the EFP-only ablation; no forces with λ1 = 0, the INP-only ablation).

**Ablations (Table 3) as parameters**, not copies: ``efp_weight=0`` (INP only), ``inp_weight=0``
(EFP only), and

* ``target="gaussian"``: X̃ = X + σε and the folded score of N(X, σ²I),
  ``t = −(Ỹ − Y)/σ`` (centred, see :func:`~denoise3d.objectives.noise.gaussian_target`);
* ``target="distance"``: X̃ = X + σε and, per edge (i, j) of the batch's graph (all pairs on the
  3D-EMGP graph), the folded distance score ``t_ij = (d_ij(X) − d_ij(X̃))/σ`` is predicted by an
  invariant, symmetric :class:`~denoise3d.models.heads.PairHead` on the noisy forward's features,
  ``L_dist = mean_mol Σ_{i<j} (ŷ_ij − t_ij)²`` (each unordered pair once). The paper adds the
  noise to the distance matrix itself; our backbones read positions, so the distance noise here
  is the one induced by position noise (a realisable distance matrix). No energy, no forces;
* ``force="direct"``: F̂ = VectorHead(s, v) of the noisy forward instead of −∂E/∂X̃ (no double
  backward). The paper writes F̂ = (φ_EGNN(X̃) − X̃)/σ for EGNN's raw coordinate update; our
  vector head's edge readout is normalised (O(1) at every σ, see
  :class:`~denoise3d.models.heads.VectorHead`), so F̂ is its output, without 1/σ.

``langevin_steps > 1`` only with the Riemann target (the other targets sample X + σε).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from denoise3d.models.heads import (ClassifierHead, EnergyHead, PairHead, VectorHead,
                                    energy_and_forces, graph_embedding)
from denoise3d.models.ops import scatter_sum
from denoise3d.objectives.noise import (
    distance_target, gaussian_target, langevin_riemann, riemann_residual_and_alpha, sigma_levels,
    sigma_per_atom,
)

__all__ = ["EMGP", "efp_target", "efp_loss"]

TARGETS = ("riemann", "gaussian", "distance")
FORCES = ("gradient", "direct")


@torch.no_grad()
def efp_target(noisy: torch.Tensor, clean: torch.Tensor, batch: torch.Tensor, n_graphs: int,
               sigma) -> torch.Tensor:
    """Folded EFP target ``t_i = −(M ỹ_i − C y_i)/(α σ) = σ s_i/α``, (n_atoms, 3), Å⁻¹·Å = 1.

    With it, ``σ²‖F̂/σ − s/α‖² = ‖F̂ − t‖²`` (how the official code writes Eq. 12).
    """
    r, alpha = riemann_residual_and_alpha(noisy, clean, batch, n_graphs)  # (n_atoms,3), (n_graphs,)
    sig = sigma_per_atom(sigma, batch, n_graphs, noisy)  # (n_atoms, 1)
    return -r / (alpha[batch].unsqueeze(-1) * sig)


def efp_loss(forces: torch.Tensor, target: torch.Tensor, batch: torch.Tensor,
             n_graphs: int) -> torch.Tensor:
    """``mean over molecules of Σ_{atoms, xyz} (F̂ − t)²``, a scalar."""
    per_atom = ((forces - target) ** 2).sum(-1)  # (n_atoms,)
    return scatter_sum(per_atom, batch, n_graphs).mean()


class EMGP(nn.Module):
    """3D-EMGP: equivariant force prediction (EFP) + invariant noise-scale prediction (INP).

    ``forward(backbone, batch) -> (loss, logs)``; ``backbone(batch) -> (s, v)`` with invariant
    node features ``s`` (n_atoms, hidden). The objective owns its heads (``scale_head`` and one
    of ``energy_head`` (default), ``vector_head`` (``force="direct"``) or ``distance_head``
    (``target="distance"``)) and its noise levels (buffer ``sigmas``, (L,) Å, descending).
    The log ``efp`` is the denoising term of whichever target is chosen.
    Randomness (levels and Langevin noise) comes from the global torch RNG.
    """

    def __init__(self, hidden: int, sigma_max: float = 10.0, sigma_min: float = 0.01,
                 num_levels: int = 50, efp_weight: float = 1.0, inp_weight: float = 0.2,
                 langevin_steps: int = 1, target: str = "riemann", force: str = "gradient"):
        super().__init__()
        if efp_weight < 0 or inp_weight < 0 or efp_weight == inp_weight == 0:
            raise ValueError(f"need efp_weight, inp_weight >= 0, not both 0; got "
                             f"{efp_weight}, {inp_weight}")
        if langevin_steps < 1:
            raise ValueError(f"langevin_steps must be >= 1, got {langevin_steps}")
        if target not in TARGETS or force not in FORCES:
            raise ValueError(f"target must be one of {TARGETS} and force one of {FORCES}; got "
                             f"{target!r}, {force!r}")
        if target == "distance" and force != "gradient":
            raise ValueError("target='distance' predicts pair scalars, not forces: leave force unset")
        if target != "riemann" and langevin_steps != 1:
            raise ValueError(f"langevin_steps > 1 needs target='riemann' (got {target!r})")
        self.efp_weight = float(efp_weight)
        self.inp_weight = float(inp_weight)
        self.langevin_steps = int(langevin_steps)
        self.target, self.force = target, force
        self.register_buffer("sigmas", sigma_levels(sigma_max, sigma_min, num_levels))
        if target == "distance":
            self.distance_head = PairHead(hidden)
        elif force == "direct":
            self.vector_head = VectorHead(hidden)
        else:
            self.energy_head = EnergyHead(hidden)
        self.scale_head = ClassifierHead(2 * hidden, hidden, num_levels)

    @property
    def num_levels(self) -> int:
        return self.sigmas.numel()

    def energy_model(self) -> nn.Module | None:
        """The head of the energy model E(X̃) whose −∇E learned the score, when the objective has
        one (``force="gradient"`` with a Riemann or Gaussian target), for fine-tuning a force
        field from it; None for the direct and distance ablations."""
        return getattr(self, "energy_head", None)

    def corrupt(self, batch):
        """Draw a level per molecule and X̃ ~ Rie_σl(·|X): ``(noisy_pos (n_atoms, 3), levels)``."""
        pos = batch.pos
        levels = torch.randint(0, self.num_levels, (batch.num_graphs,), device=pos.device)
        sigma = self.sigmas.to(pos.dtype)[levels]  # (n_graphs,)
        # T = 1 Langevin is exactly X + σε (same draw), so every target shares this sampler
        noisy = langevin_riemann(pos, batch.batch, batch.num_graphs, sigma, self.langevin_steps)
        return noisy, levels

    periodic = False  # the Riemann-Gaussian assumes the whole system can rotate
    periodic_reason = ("3D-EMGP's Riemann-Gaussian noise assumes the whole system can rotate, "
                       "which a crystal cannot; pretrain periodic data with objective denoise")

    def forward(self, backbone: nn.Module, batch):
        batch.require_full_graph("3D-EMGP", self.periodic_reason)
        noisy, levels = self.corrupt(batch)
        return self.loss_from_noisy(backbone, batch, noisy, levels)

    def loss_from_noisy(self, backbone: nn.Module, batch, noisy_pos: torch.Tensor,
                        levels: torch.Tensor):
        """The deterministic part: the loss given X̃ (n_atoms, 3) and levels (n_graphs,) int."""
        noisy = batch.replace(pos=noisy_pos.detach())
        loss, logs = 0.0, {}
        if self.efp_weight > 0:
            efp, s_noisy = self._efp(backbone, batch, noisy, levels)
            loss, logs["efp"] = self.efp_weight * efp, float(efp.detach())
        elif self.inp_weight > 0:
            s_noisy = backbone(noisy)[0]
        if self.inp_weight > 0:
            inp, acc = self._inp(backbone, batch, s_noisy, levels)
            loss = loss + self.inp_weight * inp
            logs["inp"], logs["inp_acc"] = float(inp.detach()), acc
        return loss, logs

    def _efp(self, backbone, batch, noisy, levels):
        """EFP loss (Eq. 12, folded; or an ablation's) and the noisy forward's features s (n_atoms, F)."""
        sigma = self.sigmas.to(batch.pos.dtype)[levels]  # (n_graphs,)
        if self.target == "distance":
            return self._distance(backbone, batch, noisy, sigma)
        if self.force == "direct":
            s, v = backbone(noisy)
            forces = self.vector_head(s, v, noisy)  # (n_atoms, 3)
        else:
            create_graph = self.training or torch.is_grad_enabled()
            with torch.enable_grad():  # forces need autograd even when evaluating under no_grad
                _, forces, s = energy_and_forces(backbone, self.energy_head, noisy, create_graph)
        make_target = efp_target if self.target == "riemann" else gaussian_target
        target = make_target(noisy.pos, batch.pos, batch.batch, batch.num_graphs, sigma)
        return efp_loss(forces, target, batch.batch, batch.num_graphs), s

    def _distance(self, backbone, batch, noisy, sigma):
        """Distance-denoising loss ``mean_mol Σ_{i<j} (ŷ_ij − t_ij)²`` and the features s."""
        s, _ = backbone(noisy)
        pred = self.distance_head(s, noisy)  # (n_edges,)
        edge_graph = batch.batch[batch.edge_index[0]]  # (n_edges,)
        target = distance_target(noisy.pos, batch.pos, batch.edge_index, sigma[edge_graph])
        # directed edges count each pair twice; head and target are symmetric in i, j
        per_graph = scatter_sum(0.5 * (pred - target) ** 2, edge_graph, batch.num_graphs)
        return per_graph.mean(), s

    def _inp(self, backbone, batch, s_noisy, levels):
        """INP cross-entropy (Eq. 13) and accuracy; one extra (clean) backbone forward."""
        s_clean, _ = backbone(batch)
        u = graph_embedding(s_clean, batch)  # (n_graphs, F)
        u_noisy = graph_embedding(s_noisy, batch)  # (n_graphs, F)
        logits = self.scale_head(torch.cat([u, u_noisy], dim=-1))  # (n_graphs, L)
        acc = float((logits.detach().argmax(-1) == levels).float().mean())
        return F.cross_entropy(logits, levels), acc
