"""Tailored ReLU (TReLU) of Tailored Activation Transformation (Zhang et al. 2022, "Deep learning
without shortcuts: transforming leaky ReLUs"), as used by GNS-TAT (Zaidi et al. App. A.2).

TReLU is a leaky ReLU rescaled to keep q values (dimension-normalised squared norms) at 1::

    φ_α(x) = √(2 / (1 + α²)) · (max(x, 0) + α min(x, 0))

For unit-q inputs with cosine similarity c, its local C map (the output cosine similarity) is::

    C_α(c) = c + (1 − α)² / (π (1 + α²)) · (√(1 − c²) − c · arccos c)

TAT picks the negative slope α so that the C map of the whole network, evaluated at c = 0,
equals η (< 1; "c_val_0_target" in the ``dks`` package): with c∞ = 1 for a deep leaky-ReLU
network, η < 1 keeps inputs distinguishable at initialisation. For a network with shortcuts the
C map is composed with the "subnetwork maximizing function" M (TAT App. B): nonlinear layers
apply C_α, a weighted sum ``w·shortcut + √(1 − w²)·branch`` of independent branches gives
``w² c_shortcut + (1 − w²) c_branch``, and α solves ``max_subnetworks M(0) = η``. M(0) falls
monotonically from its ReLU value (α = 0) to 0 (α = 1, linear), so bisection finds α.

:func:`negative_slope` reproduces ``dks.base.activation_transform`` (checked against it in
``tests/models/test_tat.py``) without its run-time dependency on ``autograd``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["leaky_relu_cmap", "negative_slope", "TailoredReLU"]


def leaky_relu_cmap(c: float, alpha: float) -> float:
    """Local C map of the normalised leaky ReLU with negative slope ``alpha``."""
    c = min(max(c, -1.0), 1.0)
    k = (1.0 - alpha) ** 2 / (math.pi * (1.0 + alpha ** 2))
    return c + k * (math.sqrt(1.0 - c * c) - c * math.acos(c))


def negative_slope(subnet_max: Callable[[float, Callable[[float], float]], float], eta: float,
                   tol: float = 1e-12) -> float:
    """α ∈ [0, 1) with ``subnet_max(0, C_α) = eta``; ``subnet_max(x, r)`` is the network's M."""
    if not 0.0 < eta < 1.0:
        raise ValueError(f"TAT eta must lie in (0, 1), got {eta}")

    def m0(alpha: float) -> float:
        return subnet_max(0.0, lambda c: leaky_relu_cmap(c, alpha))

    if m0(0.0) < eta:
        raise ValueError(f"eta={eta} is above the C_f(0)={m0(0.0):.4f} of a ReLU network of this "
                         "depth: no leaky ReLU reaches it (use a smaller eta or a deeper network)")
    lo, hi = 0.0, 1.0  # m0(lo) ≥ eta > m0(hi) = 0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if m0(mid) >= eta else (lo, mid)
    return 0.5 * (lo + hi)


class TailoredReLU(nn.Module):
    """``φ_α(x) = √(2/(1+α²)) · leaky_relu(x, α)``; α is fixed (not trained)."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = float(alpha)
        self.scale = math.sqrt(2.0 / (1.0 + self.alpha ** 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.leaky_relu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:.6f}, scale={self.scale:.6f}"
