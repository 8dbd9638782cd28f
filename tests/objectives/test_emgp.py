"""The 3D-EMGP objective: EFP (Eq. 12) + INP (Eq. 13) with the toy invariant backbone."""

import pytest
import torch

import denoise3d.objectives.emgp as emgp_module
from denoise3d.models.ops import scatter_sum
from denoise3d.objectives import EMGP, OBJECTIVES, build_objective
from denoise3d.objectives.emgp import efp_loss, efp_target
from denoise3d.objectives.noise import langevin_riemann, riemann_alpha, riemann_score

HIDDEN = 16


def _objective(**kw):
    torch.manual_seed(1)
    return EMGP(HIDDEN, **kw).double()


def _fixed_noise(b, gen, obj):
    levels = torch.randint(0, obj.num_levels, (b.num_graphs,), generator=gen)
    noise = torch.randn((1,) + b.pos.shape, generator=gen, dtype=b.pos.dtype)
    return levels, noise


def test_efp_loss_equals_unfolded_eq12(batch64, gen):
    """σ²‖F̂/σ − s/α‖² summed over atoms and xyz, mean over molecules == ‖F̂ − t‖² form."""
    b, n = batch64, batch64.num_graphs
    sigma = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(-4.6, 2.3, generator=gen))
    noisy = langevin_riemann(b.pos, b.batch, n, sigma, steps=2, generator=gen)
    forces = torch.randn(b.pos.shape, generator=gen, dtype=torch.float64)
    s = riemann_score(noisy, b.pos, b.batch, n, sigma)
    a = riemann_alpha(noisy, b.pos, b.batch, n)[b.batch].unsqueeze(-1)
    sig = sigma[b.batch].unsqueeze(-1)
    per_atom = (sig**2 * (forces / sig - s / a) ** 2).sum(-1)
    unfolded = scatter_sum(per_atom, b.batch, n).mean()
    folded = efp_loss(forces, efp_target(noisy, b.pos, b.batch, n, sigma), b.batch, n)
    assert float(abs(folded - unfolded) / unfolded) < 1e-12


def test_loss_doubly_invariant(batch64, toy, gen, helpers):
    """For a fixed sample, L(g1·X̃, g2·X) = L(X̃, X) for any g1, g2 ∈ E(3) (per molecule).

    What is *not* invariant is the loss for a fixed seed when only X is rotated: X̃ = gX + σε is
    not g·X̃. It is invariant in distribution (ε is isotropic), and exactly so when ε rotates
    along, which the second half checks through the sampler.
    """
    b, n = batch64, batch64.num_graphs
    obj = _objective()
    levels, noise = _fixed_noise(b, gen, obj)
    sigma = obj.sigmas.double()[levels]
    noisy = langevin_riemann(b.pos, b.batch, n, sigma, noise=noise)
    loss, logs = obj.loss_from_noisy(toy, b, noisy, levels)
    g = [helpers.random_e3(n, gen) for _ in range(2)]
    clean_g = helpers.apply_e3(b.pos, b.batch, *g[1])
    noisy_g = helpers.apply_e3(noisy, b.batch, *g[0])
    loss_g, logs_g = obj.loss_from_noisy(toy, b.replace(pos=clean_g), noisy_g, levels)
    assert float(abs(loss_g - loss).detach() / loss.detach()) < 1e-10
    assert logs_g["efp"] == pytest.approx(logs["efp"], rel=1e-10)
    assert logs_g["inp"] == pytest.approx(logs["inp"], rel=1e-10)
    # joint: rotate X and the noise draw together -> the sampler gives g·X̃ -> same loss
    noise_g = torch.einsum("nab,tnb->tna", g[1][0][b.batch], noise)
    noisy_joint = langevin_riemann(clean_g, b.batch, n, sigma, noise=noise_g)
    loss_joint, _ = obj.loss_from_noisy(toy, b.replace(pos=clean_g), noisy_joint, levels)
    assert float(abs(loss_joint - loss).detach() / loss.detach()) < 1e-10


def test_forward_finite_and_gradients_reach_everything(batch64, toy):
    obj = _objective()
    obj.train()
    loss, logs = obj(toy, batch64)
    assert torch.isfinite(loss) and set(logs) == {"efp", "inp", "inp_acc"}
    assert all(isinstance(v, float) for v in logs.values())
    assert toy.calls == 2  # one noisy forward (forces + ũ) and one clean forward (u)
    loss.backward()
    for name, mod in (("backbone", toy), ("energy_head", obj.energy_head),
                      ("scale_head", obj.scale_head)):
        # the energy's output bias is a constant offset: F̂ = −∂E/∂X̃ does not see it
        grads = [p.grad for pname, p in mod.named_parameters()
                 if not (name == "energy_head" and pname == "mlp.2.bias")]
        assert all(g is not None and torch.all(torch.isfinite(g)) for g in grads), name
        assert all(g.abs().sum() > 0 for g in grads), name


def test_double_backward_matches_finite_difference(batch64, toy, gen):
    """EFP-only: d loss / d θ (through F̂ = −∂E/∂X̃) against central differences, float64."""
    b = batch64
    obj = _objective(inp_weight=0.0)
    levels, noise = _fixed_noise(b, gen, obj)
    noisy = langevin_riemann(b.pos, b.batch, b.num_graphs, obj.sigmas.double()[levels], noise=noise)
    params = list(toy.parameters())
    direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    loss, _ = obj.loss_from_noisy(toy, b, noisy, levels)
    grads = torch.autograd.grad(loss, params)
    analytic = sum((g * d).sum() for g, d in zip(grads, direction))
    h, values = 1e-6, []
    with torch.no_grad():
        for sign in (1, -1):
            for p, d in zip(params, direction):
                p.add_(sign * h * d)
            values.append(obj.loss_from_noisy(toy, b, noisy, levels)[0])
            for p, d in zip(params, direction):
                p.sub_(sign * h * d)
    numeric = (values[0] - values[1]) / (2 * h)
    assert float(abs(numeric - analytic) / abs(analytic)) < 1e-6


def test_efp_only_skips_clean_forward(batch64, toy):
    obj = _objective(inp_weight=0.0)
    loss, logs = obj(toy, batch64)
    assert toy.calls == 1 and set(logs) == {"efp"}
    loss.backward()
    assert all(p.grad is None for p in obj.scale_head.parameters())


def test_inp_only_computes_no_forces(batch64, toy, monkeypatch):
    def no_forces(*args, **kwargs):
        raise AssertionError("INP-only must not compute forces")

    monkeypatch.setattr(emgp_module, "energy_and_forces", no_forces)
    obj = _objective(efp_weight=0.0)
    loss, logs = obj(toy, batch64)
    assert toy.calls == 2 and set(logs) == {"inp", "inp_acc"}
    loss.backward()
    assert all(p.grad is None for p in obj.energy_head.parameters())
    assert all(p.grad is not None for p in obj.scale_head.parameters())


def test_eval_under_no_grad(batch64, toy):
    obj = _objective()
    obj.eval()
    with torch.no_grad():
        loss, logs = obj(toy, batch64)
    assert torch.isfinite(loss) and not loss.requires_grad and logs["efp"] > 0


def test_seed_controls_levels_and_noise(batch64, toy):
    obj = _objective(langevin_steps=3)
    out = []
    for _ in range(2):
        torch.manual_seed(7)
        out.append(obj(toy, batch64)[0].item())
    assert out[0] == out[1] and all(map(lambda v: v == v, out))


def test_loss_decreases_with_adam(helpers):
    """30 Adam steps on a fixed small batch (fixed noise: reseeded every step), float32."""
    torch.manual_seed(0)
    b = helpers.make_batch(sizes=(5, 4, 6), dtype=torch.float32)
    backbone, obj = helpers.ToyBackbone(hidden=HIDDEN), EMGP(HIDDEN)
    losses = helpers.adam_losses(backbone, obj, b, steps=30)
    assert losses[-1] < 0.7 * losses[0], losses


def test_build_objective():
    assert OBJECTIVES["emgp"] is EMGP
    obj = build_objective("emgp", 8, inp_weight=0.5, num_levels=10)
    assert isinstance(obj, EMGP) and obj.num_levels == 10 and obj.inp_weight == 0.5
    assert obj.sigmas[0].item() == pytest.approx(10.0) and "sigmas" in obj.state_dict()
    with pytest.raises(ValueError, match="unknown objective"):
        build_objective("nope", 8)
    with pytest.raises(ValueError, match="unknown parameter"):
        build_objective("emgp", 8, sigma=1.0)
    with pytest.raises(ValueError):
        EMGP(8, efp_weight=0.0, inp_weight=0.0)
