"""Objective-test fixtures: random molecules, an invariant toy backbone, random E(3) maps.

Helpers are handed out as fixtures (never ``from conftest import``: with several non-package
``conftest.py`` files in one session the module name ``conftest`` is ambiguous).
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from denoise3d.data.batch import Molecule, collate
from denoise3d.models.ops import safe_norm, scatter_sum

SIZES = (5, 1, 9, 3, 2, 7)  # includes a 1-atom (degenerate) and a 2-atom molecule


def make_batch(sizes=SIZES, seed=0, dtype=torch.float64, scale=1.5):
    """A batch of random molecules (C/N/O/H, positions ~ N(0, scale²) Å)."""
    rng = np.random.default_rng(seed)
    mols = [Molecule(z=rng.choice([1, 6, 7, 8], size=n), pos=scale * rng.standard_normal((n, 3)),
                     id=k) for k, n in enumerate(sizes)]
    b = collate(mols).to(dtype=dtype)
    # collate stores float32; redraw positions in full precision for float64 exactness tests
    pos = torch.from_numpy(np.concatenate([m.pos for m in mols])).to(dtype)
    return b.replace(pos=pos)


class ToyBackbone(nn.Module):
    """E(3)-invariant toy: s_i = MLP([embed(z_i), Σ_j RBF(|x_i − x_j|)]) over ``edge_index``.

    Counts its calls in ``self.calls``.
    """

    def __init__(self, hidden=16, n_rbf=12, cutoff=6.0):
        super().__init__()
        self.embed = nn.Embedding(10, hidden)
        self.register_buffer("centres", torch.linspace(0.0, cutoff, n_rbf))
        self.gamma = (n_rbf / cutoff) ** 2
        self.mlp = nn.Sequential(nn.Linear(hidden + n_rbf, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden))
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        i, j = batch.edge_index
        d = safe_norm(batch.pos[i] - batch.pos[j])  # (n_edges,)
        rbf = torch.exp(-self.gamma * (d.unsqueeze(-1) - self.centres) ** 2)  # (n_edges, n_rbf)
        agg = scatter_sum(rbf, i, batch.num_atoms)  # (n_atoms, n_rbf)
        s = self.mlp(torch.cat([self.embed(batch.z), agg], dim=-1))  # (n_atoms, hidden)
        return s, None


def random_orthogonal(n, generator, dtype=torch.float64):
    """n ≥ 2 random orthogonal 3×3 matrices (n, 3, 3), Haar on O(3); the first is a reflection
    (det −1), the second a proper rotation."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=generator, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar measure
    det = torch.linalg.det(q)
    sign = torch.ones(n, dtype=dtype)
    sign[0], sign[1] = -det[0], det[1]  # det(cQ) = c·det(Q) for c = ±1 in 3D
    return q * sign.view(n, 1, 1)


def random_e3(n, generator, scale=5.0, dtype=torch.float64):
    """Per-molecule ``(R (n, 3, 3), t (n, 3))``, see :func:`random_orthogonal`."""
    return random_orthogonal(n, generator, dtype), scale * torch.randn(n, 3, generator=generator,
                                                                       dtype=dtype)


def apply_e3(pos, batch, rot, shift):
    """x_i ↦ R_m x_i + t_m with per-molecule R (n_graphs, 3, 3) and t (n_graphs, 3)."""
    return torch.einsum("nab,nb->na", rot[batch], pos) + shift[batch]


def adam_losses(backbone, objective, batch, steps, lr=3e-3, noise_seed=42):
    """Losses of ``steps`` Adam steps on one fixed batch; the noise is reseeded every step, so
    each step sees the same corruption and the loss can only fall by learning."""
    opt = torch.optim.Adam(list(backbone.parameters()) + list(objective.parameters()), lr=lr)
    losses = []
    for _ in range(steps):
        torch.manual_seed(noise_seed)
        loss, _ = objective(backbone, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture
def helpers():
    """The helper functions above as attributes (``helpers.make_batch`` ...)."""
    return SimpleNamespace(make_batch=make_batch, ToyBackbone=ToyBackbone,
                           random_orthogonal=random_orthogonal, random_e3=random_e3,
                           apply_e3=apply_e3, adam_losses=adam_losses)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def batch64():
    return make_batch()


@pytest.fixture
def toy():
    torch.manual_seed(0)
    return ToyBackbone().double()
