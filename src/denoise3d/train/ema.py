"""Exponential moving average of parameters (Zaidi et al. Tables 3-4: decay 0.9999).

After every optimiser step ``t`` (1, 2, ...)::

    d_t = min(decay, (1 + t) / (10 + t))          (warm-up of the decay, as TensorFlow's
    θ̄ ← d_t θ̄ + (1 − d_t) θ                        ExponentialMovingAverage with num_updates)

Without the warm-up, θ̄ would stay at the random initialisation for ~1/(1 − decay) = 10⁴ steps,
so a short run evaluated with EMA weights would evaluate an untrained network. Buffers (noise
levels, standardisation statistics) are not averaged; they are copied from the model.

The average lives in a full copy of the module (``ema.module``), so its weights can be saved or
evaluated without touching the training weights; :meth:`EMA.applied` swaps them in temporarily so
that code holding references to the model's submodules evaluates the average.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """EMA of ``model``'s parameters; call :meth:`update` after each optimiser step."""

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    def current_decay(self) -> float:
        """``d_t`` for the next update (t = num_updates + 1)."""
        t = self.num_updates + 1
        return min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        avg = list(self.module.parameters())
        raw = [p.detach() for p in model.parameters()]
        torch._foreach_mul_(avg, d)
        torch._foreach_add_(avg, raw, alpha=1.0 - d)
        for b_avg, b in zip(self.module.buffers(), model.buffers()):
            b_avg.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict:
        """The averaged model's state dict (tensors shared with ``self.module``)."""
        return self.module.state_dict()

    @contextmanager
    def applied(self, model: nn.Module):
        """Inside the block ``model`` holds the averaged weights; its own are restored after."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.module.state_dict())
        try:
            yield model
        finally:
            model.load_state_dict(backup)
