"""Pre-training via denoising (Zaidi et al. 2022), with optional atom-type masking.

One call, one backbone forward::

    ε ~ N(0, I) per atom, mean-centred per molecule (App. E)       (n_atoms, 3)
    X̃ = X + σ ε                                                    σ = 0.02 Å (Table 3)
    z̃_i = MASK_Z with probability p_mask, else z_i                  (p_mask = 0.75 in Table 3)
    (s, v) = backbone(z̃, X̃)
    ε̂ = VectorHead(s, v)              vector = "direct"
    ε̂ = +∂E/∂X̃, E = EnergyHead(s)     vector = "gradient"  (the learned force −∂E/∂X̃ = −ε̂
                                                            points from X̃ back to X, ∝ the score
                                                            −ε/σ of q_σ: Zaidi §3.2.1, Eq. 4)
    L = mean_{atoms, xyz} (ε̂ − ε)²  +  λ_type · CE(TypeHead(s_i), z_i) over masked atoms

λ_type = ``mask_weight`` (4.0 in Table 3). Masking shares the noisy forward pass, as in the
paper's recipe (both losses on one corrupted input), which is why it is an option of this
objective rather than a separate one. The denoising loss is the elementwise mean squared error
(``F.mse_loss``, as in the authors' TorchMD-NET code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from denoise3d.data.elements import MAX_Z
from denoise3d.models.heads import (VECTOR_MODES, ClassifierHead, EnergyHead, atom_vectors,
                                    vector_head)
from denoise3d.objectives.masking import mask_types, sample_bernoulli_mask, type_loss
from denoise3d.objectives.noise import gaussian_noise

__all__ = ["Denoise", "predict_noise"]


def predict_noise(backbone: nn.Module, head: nn.Module, batch):
    """``(ε̂ (n_atoms, 3), s)`` from one forward: the head's vector, or ``+∂E/∂X̃`` (gradient mode)."""
    vec, s = atom_vectors(backbone, head, batch)
    # atom_vectors returns −∂E/∂X̃ for an energy head; ε̂ = +∂E/∂X̃ (see the module docstring)
    return (-vec if isinstance(head, EnergyHead) else vec), s


class Denoise(nn.Module):
    """Coordinate denoising: predict the (centred) noise ε from X̃ = X + σε; MSE.

    Parameters: ``sigma`` (Å), ``vector`` ("direct" | "gradient"), ``centred`` (mean-centre ε per
    molecule), ``mask_prob`` (0 = no atom-type masking) and ``mask_weight`` (λ_type).
    Randomness comes from the global torch RNG.
    """

    def __init__(self, hidden: int, sigma: float = 0.02, vector: str = "direct",
                 centred: bool = True, mask_prob: float = 0.0, mask_weight: float = 4.0):
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if vector not in VECTOR_MODES:
            raise ValueError(f"vector must be one of {VECTOR_MODES}, got {vector!r}")
        if not 0.0 <= mask_prob <= 1.0 or mask_weight < 0:
            raise ValueError(f"need 0 <= mask_prob <= 1 and mask_weight >= 0, got "
                             f"{mask_prob}, {mask_weight}")
        self.sigma, self.vector, self.centred = float(sigma), vector, bool(centred)
        self.mask_prob, self.mask_weight = float(mask_prob), float(mask_weight)
        self.noise_head = vector_head(hidden, vector)
        self.type_head = ClassifierHead(hidden, hidden, MAX_Z + 1) if mask_prob > 0 else None

    def energy_model(self) -> nn.Module | None:
        """With ``vector="gradient"`` the noise head is an energy head whose −∂E/∂X̃ points back
        to the clean structure: a rough force field to fine-tune from; None otherwise."""
        return self.noise_head if isinstance(self.noise_head, EnergyHead) else None

    def corrupt(self, batch):
        """``(corrupted_batch, ε (n_atoms, 3), mask (n_atoms,) bool)``; never reads ``batch.z``."""
        eps = gaussian_noise(batch.pos, batch.batch, batch.num_graphs, self.centred)
        mask = sample_bernoulli_mask(batch.num_atoms, self.mask_prob, batch.pos.device)
        noisy = batch.replace(pos=batch.pos + self.sigma * eps, z=mask_types(batch.z, mask))
        return noisy, eps, mask

    def forward(self, backbone: nn.Module, batch):
        noisy, eps, mask = self.corrupt(batch)
        return self.loss_from_corrupted(backbone, batch, noisy, eps, mask)

    def loss_from_corrupted(self, backbone: nn.Module, batch, noisy, eps: torch.Tensor,
                            mask: torch.Tensor):
        """The deterministic part: the loss given the corrupted batch, ε and the mask."""
        eps_hat, s = predict_noise(backbone, self.noise_head, noisy)
        denoise = F.mse_loss(eps_hat, eps)
        logs = {"denoise": float(denoise.detach())}
        if self.type_head is None:
            return denoise, logs
        ce, acc = type_loss(self.type_head, s, batch.z, mask)
        logs.update(type_ce=float(ce.detach()), type_acc=acc)
        return denoise + self.mask_weight * ce, logs
