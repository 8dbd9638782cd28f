"""Radius graphs (models/neighbours.py) and distance featurisation (models/radial.py)."""

import math

import numpy as np
import torch

from denoise3d.data.batch import Molecule
from denoise3d.models.neighbours import radius_edges
from denoise3d.models.radial import (BesselRBF, ExpNormalRBF, GaussianRBF, cosine_cutoff,
                                     exp_without_subnormals, with_edge_types)
from denoise3d.testing import molecule_batch


def test_radius_edges_are_the_pairs_inside_the_cutoff():
    """Against a brute-force loop over all pairs of each molecule; hop types are carried along."""
    batch = molecule_batch()
    cutoff = 2.5
    g = radius_edges(batch, cutoff)
    full = {(int(i), int(j)): int(t) for (i, j), t in zip(batch.edge_index.t(), batch.edge_type)}
    want = set()
    pos = batch.pos
    for a in range(batch.num_atoms):
        for b in range(batch.num_atoms):
            if a != b and batch.batch[a] == batch.batch[b] and (pos[a] - pos[b]).norm() < cutoff:
                want.add((a, b))
    got = [(int(i), int(j)) for i, j in g.edge_index.t()]
    assert set(got) == want and len(got) == len(want)
    assert [full[e] for e in got] == g.edge_type.tolist()
    i, j = g.edge_index
    torch.testing.assert_close(g.vec, pos[j] - pos[i])  # x_j − x_i, i receives
    torch.testing.assert_close(g.dist, g.vec.norm(dim=1))
    assert 0 < len(got) < batch.edge_index.shape[1]  # the cutoff removed some edges


def test_radius_edges_follow_the_positions_and_stay_differentiable():
    """Moving an atom out of range removes its edges; coincident atoms give finite gradients."""
    water = Molecule(z=np.array([8, 1, 1]), pos=np.array([[0.0, 0, 0], [0.96, 0, 0], [0, 0.96, 0]]))
    batch = molecule_batch([water])
    assert radius_edges(batch, 2.0).edge_index.shape[1] == 6
    far = batch.pos.clone()
    far[2] += 10.0
    assert radius_edges(batch.replace(pos=far), 2.0).edge_index.shape[1] == 2
    same = batch.pos.clone()
    same[1] = same[0]
    pos = same.requires_grad_(True)
    g = radius_edges(batch.replace(pos=pos), 2.0)
    assert g.dist.min() > 0
    (grad,) = torch.autograd.grad((g.dist + g.vec.sum(1)).sum(), pos)
    assert torch.isfinite(grad).all()


def test_cosine_cutoff():
    d = torch.tensor([0.0, 2.5, 5.0, 6.0], dtype=torch.float64, requires_grad=True)
    fc = cosine_cutoff(d, 5.0)
    torch.testing.assert_close(fc, torch.tensor([1.0, 0.5, 0.0, 0.0], dtype=torch.float64))
    (grad,) = torch.autograd.grad(fc.sum(), d)
    assert abs(float(grad[2])) < 1e-15  # zero slope at the cutoff: forces continuous there


def test_radial_bases():
    d = torch.tensor([1e-6, 1.0, 4.999999], dtype=torch.float64)
    gauss = GaussianRBF(5.0, 11)(d)
    assert gauss.shape == (3, 11) and float(gauss[1, 2]) == 1.0  # centre 1.0 Å
    bessel = BesselRBF(5.0, 8)(d)
    k = torch.arange(1, 9, dtype=torch.float64)
    torch.testing.assert_close(bessel[0], math.sqrt(2 / 5) * k * math.pi / 5)  # the d → 0 limit
    assert bessel[2].abs().max() < 1e-4  # sin(kπ) = 0 at the cutoff
    expnorm = ExpNormalRBF(5.0, 16).double()(d)
    assert expnorm.shape == (3, 16) and expnorm[2].abs().max() < 1e-10  # vanishes at the cutoff


def test_with_edge_types():
    rbf = torch.zeros(3, 5)
    out = with_edge_types(rbf, torch.tensor([0, 3, 1]), True)
    assert out.shape == (3, 9) and out[:, 5:].tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]]
    assert with_edge_types(rbf, torch.tensor([0, 3, 1]), False) is rbf


def test_radial_bases_carry_no_subnormal_floats():
    """Far from their centres the Gaussian and exp-normal bases are exactly 0, never subnormal
    (subnormal float32 made the compiled edge matmuls ~8x slower); near them, exp unchanged."""
    d = torch.linspace(0.01, 5.0, 2000)
    tiny = torch.finfo(torch.float32).tiny  # smallest normal float32
    for rbf in (GaussianRBF(5.0, 50), ExpNormalRBF(5.0, 50)):
        out = rbf(d)
        assert out.dtype == torch.float32 and (out == 0).any()
        assert not ((out > 0) & (out < tiny)).any()
        x = d.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(rbf(x).sum(), x)
        assert torch.isfinite(grad).all()
    arg = torch.tensor([-1.0, -79.0, -81.0, -200.0], dtype=torch.float64)
    assert torch.equal(exp_without_subnormals(arg)[:2], torch.exp(arg[:2]))
    assert (exp_without_subnormals(arg)[2:] == 0).all()
