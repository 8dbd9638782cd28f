"""Atom masking: mask samplers, the mask token, and the AttrMask baseline (Hu et al. 2020).

Masked atoms get the atomic number ``MASK_Z = 0``, an embedding row that no real atom uses
(backbones embed ``z`` with ``nn.Embedding(MAX_Z + 1, ·)``), so the masked input carries no
trace of the masked label. What the input still carries is the geometry and the batch's
``edge_type`` (covalent hops perceived from the clean structure), as in 3D-EMGP's AttrMask
baseline on its 3D graph: the number of bonded neighbours hints at the element.

Two samplers, both without a Python loop over molecules:

* :func:`sample_fraction_mask` — exactly ``k_m = max(1, ⌊n_m · ratio⌋)`` atoms per molecule
  (capped at ``n_m − min_visible``), uniformly without replacement: the 3D-EMGP baselines
  (AttrMask, PosPred; mask ratio 0.15, App. B.2, as in their official code);
* :func:`sample_bernoulli_mask` — each atom independently with probability ``p``: Zaidi et al.'s
  atom-type masking (p = 0.75, Table 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from denoise3d.data.elements import MAX_Z
from denoise3d.models.heads import ClassifierHead

__all__ = ["MASK_Z", "AttrMask", "sample_fraction_mask", "sample_bernoulli_mask", "mask_types",
           "type_loss"]

MASK_Z = 0  # the mask token: atomic number 0 (symbol "X"), never a real atom


def sample_fraction_mask(batch: torch.Tensor, natoms: torch.Tensor, ratio: float,
                         min_visible: int = 0,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean mask (n_atoms,): ``max(1, ⌊n_m·ratio⌋)`` atoms per molecule, at most ``n_m − min_visible``.

    Uniform without replacement: atoms are ranked inside their molecule by a uniform random key
    (one sort over the whole batch by ``molecule + key``), and the lowest ranks are masked.
    """
    n = natoms.to(batch.device)
    k = torch.clamp(torch.floor(n.double() * ratio).long(), min=1)  # (n_graphs,)
    k = torch.minimum(k, (n - min_visible).clamp_min(0))
    key = batch.double() + torch.rand(batch.shape, generator=generator, dtype=torch.float64,
                                      device=batch.device)  # (n_atoms,), molecule m in [m, m+1)
    order = torch.argsort(key)
    start = torch.cumsum(n, 0) - n  # (n_graphs,) first sorted slot of each molecule
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=batch.device) - start[batch[order]]
    return rank < k[batch]


def sample_bernoulli_mask(n_atoms: int, prob: float, device=None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean mask (n_atoms,): every atom independently with probability ``prob``."""
    return torch.rand(n_atoms, generator=generator, device=device) < prob


def mask_types(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``z`` with masked atoms replaced by :data:`MASK_Z`, (n_atoms,)."""
    return torch.where(mask, torch.full_like(z, MASK_Z), z)


def type_loss(head: nn.Module, s: torch.Tensor, z: torch.Tensor, mask: torch.Tensor):
    """Cross-entropy of the masked atoms' true types from their node features, and accuracy.

    ``head`` maps (n_masked, F) to logits over ``MAX_Z + 1`` atomic numbers. With no masked atom
    the loss is an exact zero that still depends on ``s`` (so backward works) and accuracy is NaN.
    """
    if not bool(mask.any()):
        return s.sum() * 0.0, float("nan")
    logits = head(s[mask])  # (n_masked, MAX_Z + 1)
    label = z[mask]
    acc = float((logits.detach().argmax(-1) == label).float().mean())
    return F.cross_entropy(logits, label), acc


class AttrMask(nn.Module):
    """AttrMask baseline (3D-EMGP Table 1, App. B.1): mask atom types, predict them.

    ``mask_ratio`` of the atoms of every molecule (at least one) get ``z = MASK_Z``; the backbone
    sees the clean geometry; ``L = CE(TypeHead(s_i), z_i)`` averaged over masked atoms.
    """

    def __init__(self, hidden: int, mask_ratio: float = 0.15):
        super().__init__()
        if not 0.0 < mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}")
        self.mask_ratio = float(mask_ratio)
        self.type_head = ClassifierHead(hidden, hidden, MAX_Z + 1)

    def energy_model(self) -> None:
        """No energy model to fine-tune a force field from."""
        return None

    def corrupt(self, batch):
        """``(masked_batch, mask (n_atoms,) bool)``; the random draw never looks at ``batch.z``."""
        mask = sample_fraction_mask(batch.batch, batch.natoms, self.mask_ratio)
        return batch.replace(z=mask_types(batch.z, mask)), mask

    def forward(self, backbone: nn.Module, batch):
        masked, mask = self.corrupt(batch)
        return self.loss_from_masked(backbone, batch, masked, mask)

    def loss_from_masked(self, backbone: nn.Module, batch, masked, mask: torch.Tensor):
        s, _ = backbone(masked)
        loss, acc = type_loss(self.type_head, s, batch.z, mask)
        return loss, {"ce": float(loss.detach()), "acc": acc}
