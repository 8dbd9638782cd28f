"""Distance featurisation shared by the radius-graph backbones: cutoff, radial bases, edge types.

All take distances ``d`` (E,) in Å (≥ 1e-6, from :func:`denoise3d.models.neighbours.radius_edges`)
and return (E, K) features::

    cosine cutoff     f_c(d) = ½ (cos(π d / c) + 1)  for d < c, else 0        (SchNet, PaiNN, ET)
    Gaussian          exp(−(d − μ_k)² / (2 Δ²)),  μ_k = linspace(0, c, K), Δ = μ_1 − μ_0  (SchNet)
    exp-normal        f_c(d) exp(−β_k (exp(−α d) − μ_k)²),  α = 5/c,                 (TorchMD-ET)
                      μ_k = linspace(e^{−c}, 1, K), β_k = (2 (1 − e^{−c}) / K)^{−2}
    Bessel (j₀)       √(2/c) sin(k π d / c) / d,  k = 1..K                       (PaiNN, GNS)

:func:`with_edge_types` concatenates the 3D-EMGP hop one-hot (1-, 2-, 3-hop, other) to any of
them (3D-EMGP App. B.4: "the edge feature is concatenated with the RBF distance expansions").
Exponentials below 2e-35 are exactly 0 (:func:`exp_without_subnormals`: subnormal floats are slow
on CPUs). :class:`RadiusBackbone` is the base of the backbones that read these features on a radius graph.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from denoise3d.data.batch import N_EDGE_TYPES
from denoise3d.models.neighbours import radius_edges
from denoise3d.models.ops import safe_norm

__all__ = ["cosine_cutoff", "exp_without_subnormals", "GaussianRBF", "ExpNormalRBF", "BesselRBF", "with_edge_types",
           "edge_feature_dim", "RadiusBackbone"]


def cosine_cutoff(d: torch.Tensor, cutoff: float) -> torch.Tensor:
    """``½ (cos(π d / c) + 1)`` inside the cutoff, 0 outside; (E,). Zero value and slope at c."""
    return 0.5 * (torch.cos(d * (math.pi / cutoff)) + 1.0) * (d < cutoff).to(d.dtype)


def exp_without_subnormals(arg: torch.Tensor) -> torch.Tensor:
    """``exp(arg)``, exactly 0 where ``arg < −80`` (exp < 2e-35).

    A radial basis is mostly far from its centres, where exp underflows through the subnormal
    floats (float32: 1e-38 to 1e-45). A CPU computes on subnormals tens of times slower, and they
    spread through the edge matmuls and their backward: with them TorchMD-ET's aspirin
    inference was 1.4x slower (``benchmarks/inference_latency.py``). The change is below 2e-35
    in value and gradient.
    """
    return torch.where(arg > -80.0, torch.exp(arg), torch.zeros_like(arg))


class GaussianRBF(nn.Module):
    """SchNet's Gaussian expansion on ``[0, cutoff]`` (fixed centres and width)."""

    def __init__(self, cutoff: float, num_rbf: int):
        super().__init__()
        offset = torch.linspace(0.0, cutoff, num_rbf)
        self.coeff = -0.5 / float(offset[1] - offset[0]) ** 2 if num_rbf > 1 else -0.5
        self.register_buffer("offset", offset)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return exp_without_subnormals(self.coeff * (d.unsqueeze(-1) - self.offset).square())


class ExpNormalRBF(nn.Module):
    """TorchMD-ET's exp-normal expansion (PhysNet's initial values), trainable centres/widths."""

    def __init__(self, cutoff: float, num_rbf: int, trainable: bool = True):
        super().__init__()
        self.cutoff = cutoff
        self.alpha = 5.0 / cutoff
        start = math.exp(-cutoff)
        means = torch.linspace(start, 1.0, num_rbf)
        betas = torch.full((num_rbf,), (2.0 / num_rbf * (1.0 - start)) ** -2)
        if trainable:
            self.means, self.betas = nn.Parameter(means), nn.Parameter(betas)
        else:
            self.register_buffer("means", means)
            self.register_buffer("betas", betas)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        d = d.unsqueeze(-1)  # (E, 1)
        env = cosine_cutoff(d, self.cutoff)
        return env * exp_without_subnormals(
            -self.betas * (torch.exp(-self.alpha * d) - self.means).square())


class BesselRBF(nn.Module):
    """Zeroth-order spherical Bessel functions ``√(2/c) sin(kπd/c)/d`` (DimeNet, PaiNN).

    ``d ≥ 1e-6`` (NaN-safe norm), so ``sin(ad)/d`` needs no special case at 0 (it tends to a).
    """

    def __init__(self, cutoff: float, num_rbf: int):
        super().__init__()
        self.prefactor = math.sqrt(2.0 / cutoff)
        self.register_buffer("freq", torch.arange(1, num_rbf + 1) * (math.pi / cutoff))

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        d = d.unsqueeze(-1)  # (E, 1)
        return self.prefactor * torch.sin(self.freq * d) / d  # (E, K)


def with_edge_types(rbf: torch.Tensor, edge_type: torch.Tensor, enabled: bool,
                    n_types: int = N_EDGE_TYPES) -> torch.Tensor:
    """``[rbf | onehot(edge_type)]`` (E, K + 4) if ``enabled``, else ``rbf`` unchanged."""
    if not enabled:
        return rbf
    return torch.cat([rbf, F.one_hot(edge_type, n_types).to(rbf.dtype)], dim=-1)


def edge_feature_dim(num_rbf: int, edge_types: bool) -> int:
    """Width of :func:`with_edge_types`' output."""
    return num_rbf + (N_EDGE_TYPES if edge_types else 0)


class RadiusBackbone(nn.Module):
    """Base of the radius-graph backbones (SchNet, PaiNN, TorchMD-ET).

    A subclass sets ``cutoff`` (Å), ``edge_types`` (bool) and ``rbf`` (a radial basis above) and
    defines ``features(z, edge_index, edge_type, vec) -> (s (n, F), v (n, 3, F) | None)``, the
    tensor-only core that inference compiles and export scripts. ``forward(batch)`` builds the
    radius graph of the batch (:func:`~denoise3d.models.neighbours.radius_edges`) and calls it.
    """

    @torch.jit.unused
    def forward(self, batch) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        g = radius_edges(batch, self.cutoff)
        return self.features(batch.z, g.edge_index, g.edge_type, g.vec)

    def edge_geometry(self, edge_type: torch.Tensor, vec: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(d (E,), e (E, K[+4]), f_c(d) (E,), r̂ (E, 3))`` of the edge vectors ``vec`` (E, 3) Å:
        distance, ``[rbf(d) | onehot(hop)]`` (:func:`with_edge_types`), cosine cutoff and unit
        vector ``vec / d``."""
        dist = safe_norm(vec, dim=-1)  # (E,)
        edge_attr = with_edge_types(self.rbf(dist), edge_type, self.edge_types)
        return dist, edge_attr, cosine_cutoff(dist, self.cutoff), vec / dist.unsqueeze(-1)
