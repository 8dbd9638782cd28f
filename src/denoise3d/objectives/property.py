"""Fine-tuning objectives: a new head on a (pretrained) backbone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from denoise3d.models.heads import VECTOR_MODES, PropertyHead, vector_head
from denoise3d.objectives.denoise import predict_noise
from denoise3d.objectives.noise import gaussian_noise


def check_noisy_nodes(weight: float, sigma: float, vector: str) -> None:
    """ValueError unless ``weight >= 0``, ``sigma > 0`` when on, and ``vector`` a known mode
    (the Noisy Nodes settings of every fine-tuning objective)."""
    if weight < 0 or (weight > 0 and sigma <= 0):
        raise ValueError(f"need noisy_nodes_weight >= 0 and, when on, noisy_nodes_sigma > 0; "
                         f"got {weight}, {sigma}")
    if vector not in VECTOR_MODES:
        raise ValueError(f"noisy_nodes_vector must be one of {VECTOR_MODES}, got {vector!r}")


class PropertyRegression(nn.Module):
    """L1 loss on a standardised graph property: ``mean |ŷ - y| / std`` (3D-EMGP / EGNN recipe).

    ``mean``/``std`` are training-split statistics of ``y - Σ atomref`` (internal units); the
    head adds them back, so ``predict`` returns the property in internal units.

    **Noisy Nodes** (Godwin et al. 2022; Zaidi et al. §3.2.2, Table 4), on when
    ``noisy_nodes_weight > 0`` and only in training mode: the input is X̃ = X + σε (ε centred per
    molecule, σ = ``noisy_nodes_sigma``), and one forward on X̃ gives both the property and the
    noise prediction ε̂ (``noisy_nodes_vector``: "direct" vector head or "gradient", as in
    :class:`~denoise3d.objectives.denoise.Denoise`)::

        L = mean |ŷ(X̃) − y| / std  +  λ · mean_{atoms, xyz} (ε̂ − ε)²        (λ = weight, 0.01)

    Evaluation (:meth:`predict`, eval mode) always sees the clean structure.
    """

    def __init__(self, hidden: int, target: str, mean: float = 0.0, std: float = 1.0,
                 atomref: torch.Tensor | None = None, noisy_nodes_sigma: float = 0.05,
                 noisy_nodes_weight: float = 0.0, noisy_nodes_vector: str = "direct",
                 readout: str = "sum"):
        super().__init__()
        check_noisy_nodes(noisy_nodes_weight, noisy_nodes_sigma, noisy_nodes_vector)
        self.target = target
        self.head = PropertyHead(hidden, mean, std, atomref, readout)
        self.noisy_nodes_sigma = float(noisy_nodes_sigma)
        self.noisy_nodes_weight = float(noisy_nodes_weight)
        self.noise_head = vector_head(hidden, noisy_nodes_vector) if noisy_nodes_weight > 0 else None

    def predict(self, backbone: nn.Module, batch) -> torch.Tensor:
        s, _ = backbone(batch)
        return self.head(s, batch)  # (n_graphs,), internal units

    def forward(self, backbone: nn.Module, batch):
        y = batch.targets[self.target]
        if self.noise_head is None or not self.training:
            err = (self.predict(backbone, batch) - y).abs()
            return err.mean() / self.head.std, {"mae": float(err.detach().mean())}
        eps = gaussian_noise(batch.pos, batch.batch, batch.num_graphs)  # (n_atoms, 3), centred
        noisy = batch.replace(pos=batch.pos + self.noisy_nodes_sigma * eps)
        eps_hat, s = predict_noise(backbone, self.noise_head, noisy)  # one forward for both
        err = (self.head(s, noisy) - y).abs()
        denoise = F.mse_loss(eps_hat, eps)
        loss = err.mean() / self.head.std + self.noisy_nodes_weight * denoise
        return loss, {"mae": float(err.detach().mean()), "denoise": float(denoise.detach())}
