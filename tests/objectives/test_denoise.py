"""Zaidi et al. denoising (+ atom-type masking): noise sign/scale/centring, heads, masking, training."""

import pytest
import torch

from denoise3d.models.ops import scatter_sum
from denoise3d.objectives import OBJECTIVES, Denoise, build_objective
from denoise3d.objectives.denoise import predict_noise
from denoise3d.objectives.masking import MASK_Z

HIDDEN = 16


class Spy(torch.nn.Module):
    """Wraps a backbone and records the batches it is given."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, batch):
        self.seen.append(batch)
        return self.inner(batch)


def _objective(**kw):
    torch.manual_seed(1)
    return Denoise(HIDDEN, **kw).double()


def test_noise_is_centred_and_target_points_back_to_clean(helpers):
    b = helpers.make_batch(sizes=(30, 25, 40, 2))
    obj = _objective(sigma=0.3)
    noisy, eps, mask = obj.corrupt(b)
    assert not mask.any() and torch.equal(noisy.z, b.z)
    # centred (App. E): the noise of each molecule sums to zero; the centroid does not move
    assert scatter_sum(eps, b.batch, b.num_graphs).abs().max() < 1e-12
    # sign and scale: X̃ = X + σε exactly, so X̃ − σ·target recovers X
    torch.testing.assert_close(noisy.pos - 0.3 * eps, b.pos, rtol=0, atol=1e-14)
    assert 0.8 < float(eps.std()) < 1.2  # unit-variance ε (σ carries the scale)
    _, eps_raw, _ = _objective(sigma=0.3, centred=False).corrupt(b)
    assert scatter_sum(eps_raw, b.batch, b.num_graphs).abs().max() > 1e-3


def test_target_is_equivariant(helpers, gen, toy):
    """Rotating X and the draw of ε together rotates X̃ and the target: the loss is invariant."""
    b, n = helpers.make_batch(), helpers.make_batch().num_graphs
    obj = _objective(sigma=0.1, vector="direct")
    torch.manual_seed(3)
    noisy, eps, mask = obj.corrupt(b)
    loss, _ = obj.loss_from_corrupted(toy, b, noisy, eps, mask)
    rot, shift = helpers.random_e3(n, gen)
    rotate = lambda x: torch.einsum("nab,nb->na", rot[b.batch], x)  # noqa: E731
    b_g = b.replace(pos=helpers.apply_e3(b.pos, b.batch, rot, shift))
    noisy_g = noisy.replace(pos=helpers.apply_e3(noisy.pos, b.batch, rot, shift))
    loss_g, _ = obj.loss_from_corrupted(toy, b_g, noisy_g, rotate(eps), mask)
    assert float(abs(loss_g - loss).detach() / loss.detach()) < 1e-10


def test_gradient_mode_predicts_plus_grad_energy(helpers, toy):
    """ε̂ = +∂E/∂X̃, so the learned force −∂E/∂X̃ = −ε̂ points from X̃ back to X."""
    b = helpers.make_batch()
    obj = _objective(vector="gradient")
    pos = b.pos.clone().requires_grad_(True)
    s, _ = toy(b.replace(pos=pos))
    (grad_e,) = torch.autograd.grad(obj.noise_head(s, b).sum(), pos)
    eps_hat, _ = predict_noise(toy, obj.noise_head, b)
    torch.testing.assert_close(eps_hat, grad_e)


@pytest.mark.parametrize("vector", ["direct", "gradient"])
def test_loss_is_mse_and_trains_everything(helpers, toy, vector):
    b = helpers.make_batch()
    obj = _objective(vector=vector)
    torch.manual_seed(5)
    noisy, eps, mask = obj.corrupt(b)
    loss, logs = obj.loss_from_corrupted(toy, b, noisy, eps, mask)
    eps_hat, _ = predict_noise(toy, obj.noise_head, noisy)
    assert loss.item() == pytest.approx(((eps_hat - eps) ** 2).mean().item(), rel=1e-12)
    assert set(logs) == {"denoise"} and toy.calls == 2
    loss.backward()
    skip = {"mlp.2.bias"} if vector == "gradient" else {"vec_norm.weight", "vec_out.weight",
                                                      "gate.0.weight", "gate.0.bias",
                                                      "gate.2.weight", "gate.2.bias"}
    for name, p in obj.named_parameters():  # unused: the energy offset; the v-readout (v=None)
        assert (p.grad is not None and p.grad.abs().sum() > 0) == (name.split(".", 1)[1] not in skip), name


def test_masking_never_leaks_the_label(helpers, toy):
    """Masked atoms reach the backbone as MASK_Z; what the backbone sees (and so the logits)
    does not depend on the true types of the masked atoms; the label is the true type."""
    b = helpers.make_batch(sizes=(30, 20, 9))
    obj = _objective(mask_prob=0.75)
    spy = Spy(toy)
    torch.manual_seed(11)
    loss, logs = obj(spy, b)
    seen, = spy.seen
    mask = seen.z == MASK_Z
    assert 0.6 < float(mask.float().mean()) < 0.9  # p = 0.75
    assert torch.equal(seen.z[~mask], b.z[~mask]) and (b.z != MASK_Z).all()
    # other true types at the masked atoms, same random draws -> identical input and logits
    other = b.replace(z=torch.where(mask, (b.z % 9) + 1, b.z))
    assert not torch.equal(other.z, b.z)
    spy.seen.clear()
    torch.manual_seed(11)
    loss2, logs2 = obj(spy, other)
    assert torch.equal(spy.seen[0].z, seen.z) and torch.equal(spy.seen[0].pos, seen.pos)
    assert logs2["denoise"] == logs["denoise"]  # same input, same noise prediction
    assert logs2["type_ce"] != logs["type_ce"]  # ... but scored against the other labels
    assert set(logs) == {"denoise", "type_ce", "type_acc"}
    assert loss.item() == pytest.approx(logs["denoise"] + 4.0 * logs["type_ce"], rel=1e-10)


def test_loss_decreases_with_adam(helpers):
    """Noise reseeded every step (a fixed corruption), 30 Adam steps, float32."""
    torch.manual_seed(0)
    b = helpers.make_batch(sizes=(5, 4, 6), dtype=torch.float32)
    backbone, obj = helpers.ToyBackbone(hidden=HIDDEN), Denoise(HIDDEN, sigma=0.1, mask_prob=0.5)
    losses = helpers.adam_losses(backbone, obj, b, steps=30)
    assert losses[-1] < 0.7 * losses[0], losses


def test_registry_and_bad_parameters():
    assert OBJECTIVES["denoise"] is Denoise
    obj = build_objective("denoise", 8, sigma=0.05, mask_prob=0.75, mask_weight=4.0)
    assert obj.sigma == 0.05 and obj.type_head is not None
    assert build_objective("denoise", 8).type_head is None  # masking off by default
    for bad in ({"sigma": 0.0}, {"vector": "both"}, {"mask_prob": 1.5}, {"mask_weight": -1.0}):
        with pytest.raises(ValueError):
            Denoise(8, **bad)
