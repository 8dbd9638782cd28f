"""Fine-tuning objectives: a new head on a (pretrained) backbone."""

from __future__ import annotations

import torch
from torch import nn

from denoise3d.models.heads import PropertyHead


class PropertyRegression(nn.Module):
    """L1 loss on a standardised graph property: ``mean |ŷ - y| / std`` (3D-EMGP / EGNN recipe).

    ``mean``/``std`` are training-split statistics of ``y - Σ atomref`` (internal units); the
    head adds them back, so ``predict`` returns the property in internal units.
    """

    def __init__(self, hidden: int, target: str, mean: float = 0.0, std: float = 1.0,
                 atomref: torch.Tensor | None = None):
        super().__init__()
        self.target = target
        self.head = PropertyHead(hidden, mean, std, atomref)

    def predict(self, backbone: nn.Module, batch) -> torch.Tensor:
        s, _ = backbone(batch)
        return self.head(s, batch)  # (n_graphs,), internal units

    def forward(self, backbone: nn.Module, batch):
        y = batch.targets[self.target]
        err = (self.predict(backbone, batch) - y).abs()
        loss = err.mean() / self.head.std
        return loss, {"mae": float(err.detach().mean())}
