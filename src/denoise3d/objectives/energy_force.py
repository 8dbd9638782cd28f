"""Energy + force fine-tuning (3D-EMGP on MD17): a conservative force field on a backbone.

Two energy heads (``head``):

    atomwise:     E = scale · Σ_i e(s_i) + Σ_i E0[z_i]      (eV; AtomwiseEnergyHead, extensive)
    mlp_of_sum:   E = std · MLP(Σ_i s_i) + mean            (eV; EnergyHead, 3D-EMGP Eq. 2)
    F = −∂E/∂X                                             (eV/Å; autograd, ``create_graph`` in training)
    L = λ_E · mean|E − E*| / std + λ_F · mean|F − F*| / std  [+ λ_σ · mean|σ − σ*| / σ_scale]

``atomwise`` is extensive (two molecules far apart on a radius backbone add up) and fits any mix
of compositions: E0 from the training split (least squares), ``scale`` the RMS of its force
components. ``mlp_of_sum`` is the pretraining objectives' energy model, the one a pretrained
energy head can be loaded into; ``mean`` and ``std`` are then the training energies' statistics.
For both, ``std`` is the training split's std of E − Σ E0 (one molecule: of E); λ_E = 0.2,
λ_F = 0.8 (App. B.2). The official code takes the L1 losses in kcal/mol without the ``1/std``; with
Adam a constant factor on the loss changes nothing but the effective ε, and dividing by ``std``
makes the loss unit-free like the other objectives. Force errors are per Cartesian component
(MD17's convention).

Periodic data with stress labels (``stress[0]`` ... ``stress[5]``: ASE's Voigt order xx, yy, zz,
yz, xz, xy, eV/Å³, as ASE writes a calculator's stress) can also train the stress
``σ = (1/V) ∂E/∂ε`` (:func:`~denoise3d.models.heads.energy_forces_stress`) with
``stress_weight`` λ_σ > 0; ``stress_scale`` is the RMS of the training stress components.

**Noisy Nodes** for force fields (Godwin et al. 2022; Zaidi et al. §3.2.2 use it as the
fine-tuning regulariser), on when ``noisy_nodes_weight`` λ > 0 and only in training mode. The force
labels belong to the clean structure, so the energy and force loss stays on X, and a second forward
on X̃ = X + σε (ε centred per molecule, σ = ``noisy_nodes_sigma``) predicts the noise with its own
head (``noisy_nodes_vector``: "direct" vector head or "gradient", as in
:class:`~denoise3d.objectives.denoise.Denoise`)::

    L = [the loss above on X]  +  λ · mean_{atoms, xyz} (ε̂(X̃) − ε)²

The noise head is used in training only; predictions, the calculator and exported programs read
the energy head alone. Cost: one more forward and first-order backward per step ("direct").
"""

from __future__ import annotations

import torch
from torch import nn

from denoise3d.models.heads import (AtomwiseEnergyHead, EnergyHead, energy_and_forces,
                                    energy_forces_stress, vector_head, voigt)
from denoise3d.objectives.denoise import predict_noise
from denoise3d.objectives.noise import gaussian_noise
from denoise3d.objectives.property import check_noisy_nodes

HEADS = ("atomwise", "mlp_of_sum")

__all__ = ["EnergyForceRegression"]


class EnergyForceRegression(nn.Module):
    """``objective(backbone, batch) -> (loss, logs)``; needs targets ``energy`` and ``forces``."""

    target = "energy"

    def __init__(self, hidden: int, energy_weight: float = 0.2, force_weight: float = 0.8,
                 mean: float = 0.0, std: float = 1.0, head: str = "mlp_of_sum",
                 scale: float = 1.0, e0=None, stress_weight: float = 0.0, stress_scale: float = 1.0,
                 noisy_nodes_weight: float = 0.0, noisy_nodes_sigma: float = 0.05,
                 noisy_nodes_vector: str = "direct"):
        super().__init__()
        if std <= 0:
            raise ValueError(f"energy std must be > 0, got {std}")
        check_noisy_nodes(noisy_nodes_weight, noisy_nodes_sigma, noisy_nodes_vector)
        if head not in HEADS:
            raise ValueError(f"unknown energy head {head!r} (known: {', '.join(HEADS)})")
        self.energy_weight, self.force_weight = float(energy_weight), float(force_weight)
        self.stress_weight = float(stress_weight)
        if self.stress_weight > 0:  # a buffer only then: checkpoints without stress load as before
            self.register_buffer("stress_scale", torch.tensor(float(stress_scale), dtype=torch.float64))
        self.kind = head
        self.head = EnergyHead(hidden) if head == "mlp_of_sum" else AtomwiseEnergyHead(hidden, scale, e0)
        self.register_buffer("mean", torch.tensor(float(mean), dtype=torch.float64))  # eV
        self.register_buffer("std", torch.tensor(float(std), dtype=torch.float64))  # eV
        self.noisy_nodes_weight = float(noisy_nodes_weight)
        self.noisy_nodes_sigma = float(noisy_nodes_sigma)
        # only when on: checkpoints without Noisy Nodes keep their state dict
        self.noise_head = (vector_head(hidden, noisy_nodes_vector) if self.noisy_nodes_weight > 0
                           else None)

    def energy(self, s: torch.Tensor, batch) -> torch.Tensor:
        """E in eV from node features, (n_graphs,) float64 (total energies such as MD17's
        aspirin, -17,600 eV, would lose ~1 meV to float32 rounding)."""
        return self.energy_of(s, batch.z, batch.batch, batch.num_graphs)

    def energy_of(self, s: torch.Tensor, z: torch.Tensor, index: torch.Tensor,
                  num_graphs: int) -> torch.Tensor:
        """:meth:`energy` on tensors: atomic numbers z (n,), graph ``index`` (n,) of
        ``num_graphs`` (compiled and exported programs, :mod:`denoise3d.models.inference`)."""
        e = self.head.energy_of(s, z, index, num_graphs)
        if self.kind == "atomwise":
            return e
        return e.double() * self.std.double() + self.mean.double()

    def predict(self, backbone: nn.Module, batch, create_graph: bool = False):
        """(E (n_graphs,) eV, F (n_atoms, 3) eV/Å); works under ``no_grad`` too (autograd for F
        is switched on locally); without ``create_graph`` both are detached."""
        with torch.enable_grad():
            energy, forces, _ = energy_and_forces(backbone, self.energy, batch, create_graph)
        if not create_graph:
            energy, forces = energy.detach(), forces.detach()
        return energy, forces

    def predict_with_stress(self, backbone: nn.Module, batch):
        """(E (n_graphs,) eV, F (n_atoms, 3) eV/Å, σ (n_graphs, 3, 3) eV/Å³), detached; every
        structure periodic in all directions (:func:`~denoise3d.models.heads.energy_forces_stress`)."""
        with torch.enable_grad():
            energy, forces, stress, _ = energy_forces_stress(backbone, self.energy, batch)
        return energy.detach(), forces.detach(), stress.detach()

    def errors(self, backbone: nn.Module, batch, create_graph: bool = False):
        """Absolute errors |E − E*| (n_graphs,) eV and |F − F*| (n_atoms, 3) eV/Å."""
        energy, forces = self.predict(backbone, batch, create_graph)
        return (energy - batch.targets["energy"]).abs(), (forces - batch.targets["forces"]).abs()

    def combine(self, energy_mae: torch.Tensor, force_mae: torch.Tensor) -> torch.Tensor:
        """The weighted, standardised loss from the two mean absolute errors."""
        return (self.energy_weight * energy_mae + self.force_weight * force_mae) / self.std

    def stress_errors(self, backbone: nn.Module, batch, create_graph: bool = False):
        """|E − E*| (n_graphs,) eV, |F − F*| (n_atoms, 3) eV/Å and |σ − σ*| (n_graphs, 6) eV/Å³
        (Voigt) of periodic structures with stress labels."""
        with torch.enable_grad():
            energy, forces, stress, _ = energy_forces_stress(backbone, self.energy, batch,
                                                             create_graph)
        if not create_graph:
            energy, forces, stress = energy.detach(), forces.detach(), stress.detach()
        s = voigt(stress)  # (g, 6)
        return ((energy - batch.targets["energy"]).abs(), (forces - batch.targets["forces"]).abs(),
                (s - stress_targets(batch).to(s.dtype)).abs())

    @torch.jit.unused
    def forward(self, backbone: nn.Module, batch):
        create = self.training and torch.is_grad_enabled()
        if self.stress_weight > 0:
            e_err, f_err, s_err = self.stress_errors(backbone, batch, create)
        else:
            e_err, f_err = self.errors(backbone, batch, create)
        loss = self.combine(e_err.mean(), f_err.mean())
        logs = {"energy_mae_meV": float(e_err.detach().mean()) * 1000.0,
                "force_mae_meV_A": float(f_err.detach().mean()) * 1000.0}
        if self.stress_weight > 0:
            loss = loss + self.stress_weight * s_err.mean() / self.stress_scale
            logs["stress_mae_meV_A3"] = float(s_err.detach().mean()) * 1000.0
        if self.noise_head is not None and self.training:
            eps = gaussian_noise(batch.pos, batch.batch, batch.num_graphs)  # (n_atoms, 3), centred
            noisy = batch.replace(pos=batch.pos + self.noisy_nodes_sigma * eps)
            eps_hat, _ = predict_noise(backbone, self.noise_head, noisy)
            dtype = torch.promote_types(eps_hat.dtype, torch.float32)  # no half-precision error
            denoise = torch.nn.functional.mse_loss(eps_hat.to(dtype), eps.to(dtype))
            loss = loss + self.noisy_nodes_weight * denoise
            logs["denoise"] = float(denoise.detach())
        return loss, logs


STRESS_LABELS = tuple(f"stress[{k}]" for k in range(6))  # ASE's Voigt stress as the reader splits it


def stress_targets(batch) -> torch.Tensor:
    """The batch's stress labels (n_graphs, 6), eV/Å³, Voigt; a KeyError naming what is missing."""
    missing = [k for k in STRESS_LABELS if k not in batch.targets]
    if missing:
        raise KeyError(f"no stress labels in the batch (missing {', '.join(missing)})")
    return torch.stack([batch.targets[k] for k in STRESS_LABELS], dim=1)
