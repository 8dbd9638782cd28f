"""3D-EMGP Table 3 ablations as parameters: Gaussian and Distance targets, Direct forces."""

import pytest
import torch

import denoise3d.objectives.emgp as emgp_module
from denoise3d.models.ops import scatter_sum
from denoise3d.objectives import EMGP
from denoise3d.objectives.emgp import efp_loss
from denoise3d.objectives.noise import (center, distance_target, gaussian_score, gaussian_target,
                                        langevin_riemann)

HIDDEN = 16


def _objective(**kw):
    torch.manual_seed(1)
    return EMGP(HIDDEN, **kw).double()


def _sample(b, gen, obj):
    levels = torch.randint(0, obj.num_levels, (b.num_graphs,), generator=gen)
    sigma = obj.sigmas.double()[levels]
    noise = torch.randn((1,) + b.pos.shape, generator=gen, dtype=b.pos.dtype)
    return langevin_riemann(b.pos, b.batch, b.num_graphs, sigma, noise=noise), levels, sigma


def _rel(a, b):
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------------- Gaussian target
def test_gaussian_target_sign_scale_and_folding(batch64, gen):
    """t = σ·score of N(X, σ²I), centred: X̃ + σ t = X up to the (removed) mean translation."""
    b, n = batch64, batch64.num_graphs
    sigma = torch.rand(n, generator=gen, dtype=torch.float64) + 0.1
    noisy = b.pos + sigma[b.batch].unsqueeze(-1) * torch.randn(b.pos.shape, generator=gen,
                                                               dtype=torch.float64)
    t = gaussian_target(noisy, b.pos, b.batch, n, sigma)
    sig = sigma[b.batch].unsqueeze(-1)
    assert _rel(t, center(sig * gaussian_score(noisy, b.pos, sig), b.batch, n)) < 1e-12
    back = noisy + sig * t  # = X + mean(X̃ − X): the target undoes the noise, minus translation
    assert _rel(center(back, b.batch, n), center(b.pos, b.batch, n)) < 1e-12
    # the folded loss equals the paper's σ²‖F̂/σ − s‖² with the centred score
    forces = torch.randn(b.pos.shape, generator=gen, dtype=torch.float64)
    s_c = center(gaussian_score(noisy, b.pos, sig), b.batch, n)
    unfolded = scatter_sum((sig**2 * (forces / sig - s_c) ** 2).sum(-1), b.batch, n).mean()
    assert float(abs(efp_loss(forces, t, b.batch, n) - unfolded) / unfolded) < 1e-12


def test_gaussian_target_is_equivariant_and_translation_free(batch64, gen, helpers):
    b, n = batch64, batch64.num_graphs
    noisy = b.pos + 0.5 * torch.randn(b.pos.shape, generator=gen, dtype=torch.float64)
    t = gaussian_target(noisy, b.pos, b.batch, n, 0.5)
    assert scatter_sum(t, b.batch, n).abs().max() < 1e-12  # no translational component
    shift1, shift2 = helpers.random_e3(n, gen)[1], helpers.random_e3(n, gen)[1]
    t_shift = gaussian_target(noisy + shift1[b.batch], b.pos + shift2[b.batch], b.batch, n, 0.5)
    assert _rel(t_shift, t) < 1e-12  # translating X̃ and X independently changes nothing
    rot, shift = helpers.random_e3(n, gen)
    t_g = gaussian_target(helpers.apply_e3(noisy, b.batch, rot, shift),
                          helpers.apply_e3(b.pos, b.batch, rot, shift), b.batch, n, 0.5)
    assert _rel(t_g, torch.einsum("nab,nb->na", rot[b.batch], t)) < 1e-12  # rotates jointly
    # not doubly invariant (the point of the ablation): rotating X alone changes it
    t_x = gaussian_target(noisy, helpers.apply_e3(b.pos, b.batch, rot, shift), b.batch, n, 0.5)
    assert _rel(t_x, t) > 0.1


def test_gaussian_variant_uses_the_gaussian_target(batch64, gen, toy):
    b = batch64
    obj = _objective(target="gaussian", inp_weight=0.0)
    noisy, levels, sigma = _sample(b, gen, obj)
    loss, _ = obj.loss_from_noisy(toy, b, noisy, levels)
    _, forces, _ = emgp_module.energy_and_forces(toy, obj.energy_head, b.replace(pos=noisy))
    expected = efp_loss(forces, gaussian_target(noisy, b.pos, b.batch, b.num_graphs, sigma),
                        b.batch, b.num_graphs)
    assert float(abs(loss.detach() - expected) / expected) < 1e-10


# ------------------------------------------------------------------------- Distance target
def test_distance_target_sign_scale_and_invariance(batch64, gen, helpers):
    b, n = batch64, batch64.num_graphs
    i, j = b.edge_index
    # sign: stretch every molecule by 10 % about its centroid -> all d̃ > d -> targets < 0
    stretched = center(b.pos, b.batch, n) * 1.1
    t = distance_target(stretched, b.pos, b.edge_index, 0.2)
    d = (b.pos[i] - b.pos[j]).norm(dim=-1)
    torch.testing.assert_close(t, -0.1 * d / 0.2, rtol=1e-12, atol=1e-12)  # scale: (d − d̃)/σ
    # invariance: any E(3) map of X̃, another of X (per molecule); symmetric in i, j
    noisy = b.pos + 0.3 * torch.randn(b.pos.shape, generator=gen, dtype=torch.float64)
    t = distance_target(noisy, b.pos, b.edge_index, 0.3)
    t_g = distance_target(helpers.apply_e3(noisy, b.batch, *helpers.random_e3(n, gen)),
                          helpers.apply_e3(b.pos, b.batch, *helpers.random_e3(n, gen)),
                          b.edge_index, 0.3)
    assert _rel(t_g, t) < 1e-12
    torch.testing.assert_close(distance_target(noisy, b.pos, b.edge_index.flip(0), 0.3), t)


def test_distance_variant_loss_is_doubly_invariant_and_exact(batch64, gen, toy, helpers):
    b, n = batch64, batch64.num_graphs
    obj = _objective(target="distance")
    noisy, levels, sigma = _sample(b, gen, obj)
    loss, logs = obj.loss_from_noisy(toy, b, noisy, levels)
    g1, g2 = helpers.random_e3(n, gen), helpers.random_e3(n, gen)
    loss_g, _ = obj.loss_from_noisy(toy, b.replace(pos=helpers.apply_e3(b.pos, b.batch, *g2)),
                                    helpers.apply_e3(noisy, b.batch, *g1), levels)
    assert float(abs(loss_g - loss).detach() / loss.detach()) < 1e-10
    # the term is mean over molecules of Σ over unordered pairs (ŷ_ij − t_ij)²
    nb = b.replace(pos=noisy)
    pred = obj.distance_head(toy(nb)[0], nb)
    graph = b.batch[b.edge_index[0]]
    t = distance_target(noisy, b.pos, b.edge_index, sigma[graph])
    upper = b.edge_index[0] < b.edge_index[1]
    expected = scatter_sum(((pred - t) ** 2)[upper], graph[upper], n).mean()
    assert logs["efp"] == pytest.approx(expected.item(), rel=1e-10)


# ------------------------------------------------------------------------- Direct forces
def test_direct_uses_the_vector_head_and_is_doubly_invariant(batch64, gen, toy, helpers,
                                                             monkeypatch):
    def no_autograd_forces(*args, **kwargs):
        raise AssertionError("Direct must not differentiate an energy")

    monkeypatch.setattr(emgp_module, "energy_and_forces", no_autograd_forces)
    b, n = batch64, batch64.num_graphs
    obj = _objective(force="direct")
    assert not hasattr(obj, "energy_head")
    noisy, levels, _ = _sample(b, gen, obj)
    loss, logs = obj.loss_from_noisy(toy, b, noisy, levels)
    assert toy.calls == 2 and set(logs) == {"efp", "inp", "inp_acc"}
    g1, g2 = helpers.random_e3(n, gen), helpers.random_e3(n, gen)
    loss_g, _ = obj.loss_from_noisy(toy, b.replace(pos=helpers.apply_e3(b.pos, b.batch, *g2)),
                                    helpers.apply_e3(noisy, b.batch, *g1), levels)
    assert float(abs(loss_g - loss).detach() / loss.detach()) < 1e-10
    loss.backward()
    assert all(p.grad is not None for p in obj.vector_head.edge_in.parameters())


@pytest.mark.parametrize("params", [dict(target="gaussian"), dict(target="distance"),
                                    dict(force="direct")])
def test_each_variant_trains(params, helpers):
    torch.manual_seed(0)
    b = helpers.make_batch(sizes=(5, 4, 6), dtype=torch.float32)
    backbone, obj = helpers.ToyBackbone(hidden=HIDDEN), EMGP(HIDDEN, **params)
    losses = helpers.adam_losses(backbone, obj, b, steps=25)
    assert all(map(lambda v: v == v, losses)) and losses[-1] < 0.8 * losses[0], losses


def test_bad_combinations():
    for bad in (dict(target="distance", force="direct"), dict(target="gaussian", langevin_steps=2),
                dict(target="kabsch"), dict(force="both")):
        with pytest.raises(ValueError):
            EMGP(8, **bad)
