"""Heads that sit on a backbone's invariant node features ``s`` (n_atoms, F).

``E = MLP(Σ_i s_i)`` (3D-EMGP Eq. 2); forces ``F = -∂E/∂pos`` come from :func:`energy_and_forces`.
"""

from __future__ import annotations

import torch
from torch import nn

from denoise3d.data.elements import MAX_Z
from denoise3d.models.ops import scatter_sum


def mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_out))


def graph_embedding(s: torch.Tensor, batch) -> torch.Tensor:
    """Sum-pooled graph embedding u = Σ_i s_i, (n_graphs, F)."""
    return scatter_sum(s, batch.batch, batch.num_graphs)


class EnergyHead(nn.Module):
    """Invariant energy E = MLP(Σ_i s_i), (n_graphs,)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = mlp(hidden, hidden, 1)

    def forward(self, s: torch.Tensor, batch) -> torch.Tensor:
        return self.mlp(graph_embedding(s, batch)).squeeze(-1)


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
    so they travel with the checkpoint.
    """

    def __init__(self, hidden: int, mean: float = 0.0, std: float = 1.0,
                 atomref: torch.Tensor | None = None):
        super().__init__()
        self.mlp = mlp(hidden, hidden, 1)
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        ref = torch.zeros(MAX_Z + 1) if atomref is None else torch.as_tensor(atomref, dtype=torch.float32)
        self.register_buffer("atomref", ref)

    def baseline(self, batch) -> torch.Tensor:
        """Σ_i atomref[z_i] per molecule, (n_graphs,)."""
        return scatter_sum(self.atomref.to(batch.pos.dtype)[batch.z], batch.batch, batch.num_graphs)

    def standardised(self, s: torch.Tensor, batch) -> torch.Tensor:
        """The raw (standardised) output, (n_graphs,)."""
        return self.mlp(graph_embedding(s, batch)).squeeze(-1)

    def forward(self, s: torch.Tensor, batch) -> torch.Tensor:
        return self.standardised(s, batch) * self.std + self.mean + self.baseline(batch)


def energy_and_forces(backbone: nn.Module, head: EnergyHead, batch, create_graph: bool = False):
    """Energy (n_graphs,) and conservative forces ``F = -∂E/∂pos`` (n_atoms, 3).

    Also returns the node features ``s`` of the same forward pass. ``create_graph=True`` keeps the
    graph of the gradient so a loss on F can be trained (double backward).
    """
    pos = batch.pos if batch.pos.requires_grad else batch.pos.detach().requires_grad_(True)
    b = batch.replace(pos=pos)
    s, _ = backbone(b)
    energy = head(s, b)
    (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)
    return energy, -grad, s
