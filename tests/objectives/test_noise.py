"""Riemann-Gaussian score, normaliser, Langevin sampler (3D-EMGP Eq. 9-11, App. A.2, A.5, A.6)."""

import math

import pytest
import torch

from denoise3d.models.ops import scatter_sum
from denoise3d.objectives.noise import (
    center, gaussian_score, langevin_riemann, riemann_alpha, riemann_residual,
    riemann_residual_and_alpha, riemann_score, riemann_terms, sigma_levels, sigma_per_atom,
)


def _noisy(b, gen, sigma):
    """X + σε with per-molecule σ (n_graphs,)."""
    eps = torch.randn(b.pos.shape, generator=gen, dtype=b.pos.dtype)
    return b.pos + sigma[b.batch].unsqueeze(-1) * eps


def _random_sigma(n, gen):
    """Per-molecule σ, log-uniform in [0.01, 10] Å."""
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    return torch.exp(math.log(0.01) + u * math.log(1000.0))


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_sigma_levels():
    s = sigma_levels()
    assert s.shape == (50,) and s.dtype == torch.get_default_dtype()
    assert s[0].item() == pytest.approx(10.0) and s[-1].item() == pytest.approx(0.01)
    ratio = s[1:] / s[:-1]
    assert torch.all(ratio < 1) and torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)
    with pytest.raises(ValueError):
        sigma_levels(0.01, 10.0)


def test_terms_match_dense_products(batch64, gen):
    b = batch64
    noisy = _noisy(b, gen, torch.full((b.num_graphs,), 0.7, dtype=torch.float64))
    m, c = riemann_terms(noisy, b.pos, b.batch, b.num_graphs)
    yt, y = center(noisy, b.batch, b.num_graphs), center(b.pos, b.batch, b.num_graphs)
    assert torch.allclose(scatter_sum(yt, b.batch, b.num_graphs), torch.zeros(1, 3, dtype=y.dtype),
                          atol=1e-12)
    for k in range(b.num_graphs):
        sel = b.batch == k  # rows = atoms, so the paper's ỸỸᵀ (3×N·N×3) is yt[sel].T @ yt[sel]
        assert torch.allclose(m[k], yt[sel].T @ yt[sel], rtol=1e-12, atol=1e-12)
        assert torch.allclose(c[k], yt[sel].T @ y[sel], rtol=1e-12, atol=1e-12)


def test_score_equals_autograd_of_gram_distance(batch64, gen):
    """s = ∇_X̃ [−‖G̃ − G‖²_F/(4σ²)], G = Y Yᵀ (N×N), several molecules, random σ per molecule."""
    b = batch64
    sigma = _random_sigma(b.num_graphs, gen)
    noisy = _noisy(b, gen, sigma).requires_grad_(True)
    logp = 0.0
    for k in range(b.num_graphs):  # dense O(N²) reference, molecule by molecule
        sel = b.batch == k
        yt, y = noisy[sel] - noisy[sel].mean(0), b.pos[sel] - b.pos[sel].mean(0)
        d2 = ((yt @ yt.T - y @ y.T) ** 2).sum()
        logp = logp - d2 / (4 * sigma[k] ** 2)
    (expected,) = torch.autograd.grad(logp, noisy)
    score = riemann_score(noisy.detach(), b.pos, b.batch, b.num_graphs, sigma)
    assert _rel(score, expected) < 1e-10
    # the same σ given per atom, in both accepted shapes
    per_atom = sigma[b.batch]
    for s in (per_atom, per_atom.unsqueeze(-1)):
        assert torch.equal(riemann_score(noisy.detach(), b.pos, b.batch, b.num_graphs, s), score)


def test_score_scalar_sigma(batch64, gen):
    b = batch64
    noisy = _noisy(b, gen, torch.full((b.num_graphs,), 0.3, dtype=torch.float64))
    r = riemann_residual(noisy, b.pos, b.batch, b.num_graphs)
    for sigma in (0.3, torch.tensor(0.3, dtype=torch.float64)):
        s = riemann_score(noisy, b.pos, b.batch, b.num_graphs, sigma)
        assert _rel(s, -r / 0.3**2) < 1e-14


def test_score_doubly_e3_invariant(batch64, gen, helpers):
    """g2 on X: score unchanged. g1 on X̃: score rotates with X̃ (translations drop out)."""
    b, n = batch64, batch64.num_graphs
    sigma = _random_sigma(n, gen)
    noisy = _noisy(b, gen, sigma)
    s = riemann_score(noisy, b.pos, b.batch, n, sigma)
    (r1, t1), g2 = helpers.random_e3(n, gen), helpers.random_e3(n, gen)
    clean_g = helpers.apply_e3(b.pos, b.batch, *g2)
    noisy_g = helpers.apply_e3(noisy, b.batch, r1, t1)
    assert _rel(riemann_score(noisy, clean_g, b.batch, n, sigma), s) < 1e-10
    s_g = riemann_score(noisy_g, b.pos, b.batch, n, sigma)
    assert _rel(s_g, torch.einsum("nab,nb->na", r1[b.batch], s)) < 1e-10
    s_gg = riemann_score(noisy_g, clean_g, b.batch, n, sigma)
    assert _rel(s_gg, torch.einsum("nab,nb->na", r1[b.batch], s)) < 1e-10


def test_score_vanishes_on_rigid_motions(batch64, gen, helpers):
    """X̃ = g·X has the same geometry as X: zero score (the Gaussian gives −(X̃−X)/σ² ≠ 0)."""
    b, n = batch64, batch64.num_graphs
    moved = helpers.apply_e3(b.pos, b.batch, *helpers.random_e3(n, gen))
    s = riemann_score(moved, b.pos, b.batch, n, 0.1)
    assert s.abs().max() < 1e-10
    assert gaussian_score(moved, b.pos, 0.1).abs().max() > 1.0


def test_score_and_alpha_permutation_equivariant(batch64, gen):
    """Shuffle all atoms of the batch (``batch`` need not be sorted): score rows follow, α fixed."""
    b, n = batch64, batch64.num_graphs
    sigma = _random_sigma(n, gen)
    noisy = _noisy(b, gen, sigma)
    perm = torch.randperm(b.num_atoms, generator=gen)
    s = riemann_score(noisy, b.pos, b.batch, n, sigma)
    s_p = riemann_score(noisy[perm], b.pos[perm], b.batch[perm], n, sigma)
    assert torch.allclose(s_p, s[perm], rtol=1e-10, atol=1e-12)
    a = riemann_alpha(noisy, b.pos, b.batch, n)
    assert torch.allclose(riemann_alpha(noisy[perm], b.pos[perm], b.batch[perm], n), a, rtol=1e-12)


def test_alpha_doubly_invariant_and_positive(batch64, gen, helpers):
    b, n = batch64, batch64.num_graphs
    sigma = _random_sigma(n, gen)
    noisy = _noisy(b, gen, sigma)
    a = riemann_alpha(noisy, b.pos, b.batch, n)
    m, c = riemann_terms(noisy, b.pos, b.batch, n)
    expected = 0.5 * (torch.linalg.matrix_norm(m) + torch.linalg.matrix_norm(c))
    real = b.natoms > 1
    assert torch.allclose(a[real], expected[real], rtol=1e-12)
    assert a.shape == (n,) and torch.all(a > 0) and torch.all(torch.isfinite(a))
    noisy_g = helpers.apply_e3(noisy, b.batch, *helpers.random_e3(n, gen))
    clean_g = helpers.apply_e3(b.pos, b.batch, *helpers.random_e3(n, gen))
    assert torch.allclose(riemann_alpha(noisy_g, clean_g, b.batch, n), a, rtol=1e-10)


def test_single_atom_molecule_is_finite(gen, helpers):
    b = helpers.make_batch(sizes=(1, 1, 4))
    noisy = b.pos + torch.randn(b.pos.shape, generator=gen, dtype=torch.float64)
    r, a = riemann_residual_and_alpha(noisy, b.pos, b.batch, b.num_graphs)
    assert torch.all(r[:2] == 0) and torch.all(a > 0)
    assert torch.all(torch.isfinite(r / a[b.batch].unsqueeze(-1)))


def test_langevin_one_step_is_plain_gaussian(batch64):
    """T = 1: the score at X̃₀ = X is zero, so X̃ = X + σε exactly (same draw of ε)."""
    b, n = batch64, batch64.num_graphs
    sigma = sigma_levels(dtype=torch.float64)[torch.arange(n) * 7]
    out = langevin_riemann(b.pos, b.batch, n, sigma, steps=1,
                           generator=torch.Generator().manual_seed(5))
    eps = torch.randn(b.pos.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.equal(out, b.pos + sigma[b.batch].unsqueeze(-1) * eps)


def _langevin_reference(clean, b, sigma, noise):
    """Algorithm 1 written literally with the public score and α, β_t = σ²·2⁻ᵗ."""
    x, sig = clean, sigma[b.batch].unsqueeze(-1)
    for t in range(1, noise.shape[0] + 1):
        beta = sig**2 * 2.0**-t
        s = riemann_score(x, clean, b.batch, b.num_graphs, sigma)
        a = riemann_alpha(x, clean, b.batch, b.num_graphs)[b.batch].unsqueeze(-1)
        x = x + beta * s / a + torch.sqrt(2 * beta) * noise[t - 1]
    return x


@pytest.mark.parametrize("steps", [2, 5])
def test_langevin_multi_step(batch64, gen, steps):
    b, n = batch64, batch64.num_graphs
    sigma = _random_sigma(n, gen)
    noise = torch.randn((steps,) + b.pos.shape, generator=gen, dtype=torch.float64)
    out = langevin_riemann(b.pos, b.batch, n, sigma, steps=steps, noise=noise)
    assert torch.all(torch.isfinite(out))
    assert _rel(out - b.pos, _langevin_reference(b.pos, b, sigma, noise) - b.pos) < 1e-10
    big = langevin_riemann(b.pos.float(), b.batch, n, 10.0, steps=steps, generator=gen)
    assert torch.all(torch.isfinite(big))


def test_langevin_equivariant(batch64, gen, helpers):
    """Rotating X and every ε_t by the same g gives g·X̃ (so the sampler is isotropic in law)."""
    b, n, steps = batch64, batch64.num_graphs, 3
    sigma = _random_sigma(n, gen)
    noise = torch.randn((steps,) + b.pos.shape, generator=gen, dtype=torch.float64)
    rot, shift = helpers.random_e3(n, gen)
    out = langevin_riemann(b.pos, b.batch, n, sigma, steps=steps, noise=noise)
    noise_g = torch.einsum("nab,tnb->tna", rot[b.batch], noise)
    clean_g = helpers.apply_e3(b.pos, b.batch, rot, shift)
    out_g = langevin_riemann(clean_g, b.batch, n, sigma, steps=steps, noise=noise_g)
    assert torch.allclose(out_g, helpers.apply_e3(out, b.batch, rot, shift), rtol=1e-10, atol=1e-10)


def test_gaussian_score(batch64, gen):
    b = batch64
    noisy = b.pos + torch.randn(b.pos.shape, generator=gen, dtype=torch.float64)
    assert torch.allclose(gaussian_score(noisy, b.pos, 0.5), -(noisy - b.pos) / 0.25)
    sig = torch.full((b.num_atoms,), 0.5, dtype=torch.float64)
    assert torch.allclose(gaussian_score(noisy, b.pos, sig), -(noisy - b.pos) / 0.25)


def test_sigma_per_atom_shapes(batch64):
    b = batch64
    per_mol = torch.arange(b.num_graphs, dtype=torch.float64)
    assert torch.equal(sigma_per_atom(per_mol, b.batch, b.num_graphs, b.pos)[:, 0],
                       per_mol[b.batch])
    assert sigma_per_atom(2.0, b.batch, b.num_graphs, b.pos).shape == (b.num_atoms, 1)
    with pytest.raises(ValueError):
        sigma_per_atom(torch.ones(b.num_atoms + 1), b.batch, b.num_graphs, b.pos)
