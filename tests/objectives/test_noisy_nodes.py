"""Noisy Nodes in PropertyRegression: off by default, one noisy forward in training, clean in eval."""

import pytest
import torch

from denoise3d.models.ops import scatter_sum
from denoise3d.objectives.property import PropertyRegression


def _batch(helpers):
    b = helpers.make_batch(sizes=(12, 9, 15, 6))
    b.targets["homo"] = torch.linspace(-1.0, 1.0, b.num_graphs, dtype=torch.float64)
    return b


class Spy(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, batch):
        self.seen.append(batch.pos.detach().clone())
        return self.inner(batch)


def test_off_by_default(helpers, toy):
    b = _batch(helpers)
    obj = PropertyRegression(16, "homo", std=2.0).double().train()
    assert obj.noise_head is None and obj.noisy_nodes_weight == 0.0
    spy = Spy(toy)
    loss, logs = obj(spy, b)
    assert torch.equal(spy.seen[0], b.pos) and set(logs) == {"mae"}
    expected = (obj.predict(toy, b) - b.targets["homo"]).abs().mean() / 2.0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("vector", ["direct", "gradient"])
def test_training_adds_weighted_denoising_on_one_noisy_forward(helpers, toy, vector):
    b = _batch(helpers)
    obj = PropertyRegression(16, "homo", noisy_nodes_sigma=0.05, noisy_nodes_weight=0.01,
                             noisy_nodes_vector=vector).double().train()
    spy = Spy(toy)
    torch.manual_seed(0)
    loss, logs = obj(spy, b)
    assert len(spy.seen) == 1  # property and noise from the same forward pass
    delta = (spy.seen[0] - b.pos) / 0.05  # = ε
    assert scatter_sum(delta, b.batch, b.num_graphs).abs().max() < 1e-10  # centred
    assert 0.7 < float(delta.std()) < 1.3
    assert set(logs) == {"mae", "denoise"}
    assert loss.item() == pytest.approx(logs["mae"] + 0.01 * logs["denoise"], rel=1e-10)
    loss.backward()
    assert all(p.grad is not None for p in obj.head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.noise_head.parameters())


def test_eval_sees_clean_structures(helpers, toy):
    b = _batch(helpers)
    obj = PropertyRegression(16, "homo", noisy_nodes_weight=0.01).double().eval()
    spy = Spy(toy)
    with torch.no_grad():
        loss, logs = obj(spy, b)
    assert torch.equal(spy.seen[0], b.pos) and set(logs) == {"mae"}


def test_bad_settings():
    with pytest.raises(ValueError):
        PropertyRegression(8, "homo", noisy_nodes_weight=0.01, noisy_nodes_sigma=0.0)
    with pytest.raises(ValueError):
        PropertyRegression(8, "homo", noisy_nodes_weight=-1.0)
    with pytest.raises(ValueError):
        PropertyRegression(8, "homo", noisy_nodes_vector="x")


# --- Noisy Nodes for energy + force fine-tuning (EnergyForceRegression) ---

def _labelled(helpers):
    b = helpers.make_batch(sizes=(12, 9, 15, 6))
    g = torch.Generator().manual_seed(3)
    return b.replace(targets={"energy": torch.randn(b.num_graphs, generator=g, dtype=torch.float64),
                              "forces": torch.randn(b.num_atoms, 3, generator=g,
                                                    dtype=torch.float64)})


@pytest.mark.parametrize("vector", ["direct", "gradient"])
def test_energy_force_adds_denoising_of_a_second_noisy_forward(helpers, toy, vector):
    """The E/F loss is that of the clean structure (its labels belong to it); a second forward on
    X̃ = X + σε adds λ·MSE(ε̂, ε), and both heads and the backbone get gradients."""
    from denoise3d.objectives.energy_force import EnergyForceRegression

    b = _labelled(helpers)
    plain = EnergyForceRegression(16, std=2.0, head="atomwise").double().train()
    obj = EnergyForceRegression(16, std=2.0, head="atomwise", noisy_nodes_weight=0.1,
                                noisy_nodes_sigma=0.02, noisy_nodes_vector=vector).double().train()
    obj.head.load_state_dict(plain.head.state_dict())
    spy = Spy(toy)
    torch.manual_seed(0)
    loss, logs = obj(spy, b)
    assert len(spy.seen) == 2 and torch.equal(spy.seen[0], b.pos)
    delta = (spy.seen[1] - b.pos) / 0.02  # = ε
    assert scatter_sum(delta, b.batch, b.num_graphs).abs().max() < 1e-10  # centred
    assert 0.7 < float(delta.std()) < 1.3
    clean, _ = plain(toy, b)
    assert set(logs) == {"energy_mae_meV", "force_mae_meV_A", "denoise"}
    assert loss.item() == pytest.approx(clean.item() + 0.1 * logs["denoise"], rel=1e-10)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.noise_head.parameters())


def test_energy_force_noisy_nodes_off_in_eval_and_by_default(helpers, toy):
    from denoise3d.objectives.energy_force import EnergyForceRegression

    b = _labelled(helpers)
    assert EnergyForceRegression(16).noise_head is None
    assert "noise_head" not in "".join(EnergyForceRegression(16).state_dict())
    obj = EnergyForceRegression(16, noisy_nodes_weight=0.1).double().eval()
    spy = Spy(toy)
    loss, logs = obj(spy, b)
    assert len(spy.seen) == 1 and "denoise" not in logs
    with pytest.raises(ValueError):
        EnergyForceRegression(8, noisy_nodes_weight=0.1, noisy_nodes_sigma=0.0)
    with pytest.raises(ValueError):
        EnergyForceRegression(8, noisy_nodes_weight=0.1, noisy_nodes_vector="x")


@pytest.mark.parametrize("override, words", [
    ("finetune.noisy_nodes_weight=-0.5", "noisy_nodes_weight=-0.5 must be >= 0"),
    ("finetune.noisy_nodes_sigma=0", r"noisy_nodes_sigma=0(\.0)? must be > 0"),
    ("finetune.noisy_nodes_vector=bogus", "noisy_nodes_vector=bogus must be direct or gradient"),
])
def test_bad_noisy_nodes_values_are_config_errors_for_every_task(override, words):
    from denoise3d.config import ConfigError, load_config

    for task in ("property", "energy_force"):
        with pytest.raises(ConfigError, match=words):
            load_config(None, [f"finetune.task={task}", override])
