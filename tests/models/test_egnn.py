"""EGNN: physics (inherited), factorised = reference edge layer, numerics, registry."""

import numpy as np
import pytest
import torch

from denoise3d.data.batch import N_EDGE_TYPES, Molecule
from denoise3d.models import BACKBONES, EGNN, EnergyHead, build_backbone, energy_and_forces
from denoise3d.models.egnn import EGNNLayer, squared_distances
from denoise3d.testing.physics import assert_factorised_matches_reference
from denoise3d.testing import BackbonePhysicsTests, fixture_molecules, molecule_batch


class TestEGNNPhysics(BackbonePhysicsTests):
    periodic = False  # defined on the full graph of a molecule: periodic input is refused

    def make_backbone(self):
        return EGNN(hidden=32, layers=3)


class TestEGNNWithRadialBasisPhysics(BackbonePhysicsTests):
    periodic = False

    def make_backbone(self):
        return EGNN(hidden=32, layers=3, num_rbf=16, cutoff=5.0)


def test_factorised_edge_layer_equals_concatenation():
    """(h W_iᵀ)[i] + (h W_jᵀ)[j] + (W_tᵀ + b)[e] + d² w_dᵀ == W [h_i, h_j, d², onehot(e)] + b."""
    torch.manual_seed(0)
    layer = EGNNLayer(hidden=16).double()
    batch = molecule_batch()
    assert set(batch.edge_type.tolist()) == set(range(N_EDGE_TYPES))  # every table row is used
    h = torch.randn(batch.num_atoms, 16, dtype=torch.float64)
    d2 = squared_distances(batch.pos, batch.edge_index)
    args = (h, batch.edge_index, batch.edge_type, d2)
    torch.testing.assert_close(layer.edge_input(*args), layer.edge_input_reference(*args),
                               rtol=1e-12, atol=1e-12)


def test_factorised_model_equals_reference_model():
    """Whole model in float64: features, energies, forces (first backward) and the parameter
    gradients of a force loss (double backward through the in-place gathers)."""
    torch.manual_seed(0)
    for kwargs in ({}, {"num_rbf": 16}):
        model, head = EGNN(hidden=32, layers=3, **kwargs).double(), EnergyHead(32).double()
        assert_factorised_matches_reference(model, head, molecule_batch())


def test_radial_basis_is_added_beside_d2():
    """num_rbf = K: the edge input is [h_i, h_j, d², rbf_K(d), onehot]; the d² column and the
    basis both reach the messages, and num_rbf = 0 keeps the official (checkpoint) layout."""
    torch.manual_seed(0)
    model = EGNN(hidden=8, layers=1, num_rbf=10, cutoff=4.0).double()
    assert model.layers[0].edge_mlp[0].weight.shape == (8, 2 * 8 + 1 + 10 + N_EDGE_TYPES)
    assert "rbf.offset" in model.state_dict()
    assert "rbf.offset" not in EGNN(hidden=8, layers=1).state_dict()
    batch = molecule_batch()
    base = model(batch)[0]
    w = model.layers[0].edge_mlp[0].weight
    for cols in (slice(16, 17), slice(17, 27)):  # d², then the basis
        with torch.no_grad():
            saved = w[:, cols].clone()
            w[:, cols] = 0.0
        assert not torch.allclose(model(batch)[0], base)
        with torch.no_grad():
            w[:, cols] = saved
    with pytest.raises(ValueError, match="num_rbf must be >= 0"):
        EGNN(num_rbf=-1)


def test_squared_distances():
    batch = molecule_batch()
    i, j = batch.edge_index
    d2 = squared_distances(batch.pos, batch.edge_index)
    assert d2.shape == (len(i), 1)
    torch.testing.assert_close(d2[:, 0], (batch.pos[i] - batch.pos[j]).norm(dim=1) ** 2)


def test_noisy_and_degenerate_inputs_are_finite():
    """float32, paper size, with and without the radial basis: σ = 10 Å noise, two atoms on one
    spot, an atom 1000 Å away, a one-atom molecule (no edges).

    Energies, forces and the double-backward parameter gradients (the EFP training path) stay
    finite; forces stay nonzero (nothing saturates to a dead zero everywhere).
    """
    torch.manual_seed(0)
    lone = Molecule(z=np.array([8]), pos=np.zeros((1, 3)))
    batch = molecule_batch([*fixture_molecules(), lone], dtype=torch.float32)
    noisy = batch.pos + 10.0 * torch.randn_like(batch.pos)
    degenerate = batch.pos.clone()
    degenerate[1] = degenerate[0]  # water: O and H coincide, d² = 0
    degenerate[5] += 1000.0  # a methane atom 1000 Å away, d² ≈ 10⁶ Å²
    for model, pos in [(m, pos) for m in (EGNN(), EGNN(num_rbf=50)) for pos in (noisy, degenerate)]:
        head = EnergyHead(128)
        energy, forces, s = energy_and_forces(model, head, batch.replace(pos=pos),
                                              create_graph=True)
        assert torch.isfinite(s).all() and torch.isfinite(energy).all()
        assert torch.isfinite(forces).all() and forces.abs().max() > 0
        model.zero_grad()
        (forces.square().sum() + energy.sum()).backward()
        for name, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_paper_defaults_and_state_dict_keys():
    """3D-EMGP B.2: 7 layers of 128; the key layout is what checkpoints rely on."""
    model = EGNN()
    assert len(model.layers) == 7 and model.hidden == 128
    s, v = model(molecule_batch(dtype=torch.float32))
    assert s.shape == (molecule_batch().num_atoms, 128) and v is None
    layer_keys = [k[len("layers.0."):] for k in model.state_dict() if k.startswith("layers.0.")]
    assert layer_keys == ["edge_mlp.0.weight", "edge_mlp.0.bias", "edge_mlp.2.weight",
                          "edge_mlp.2.bias", "gate.weight", "gate.bias", "node_mlp.0.weight",
                          "node_mlp.0.bias", "node_mlp.2.weight", "node_mlp.2.bias"]
    assert model.layers[0].edge_mlp[0].weight.shape == (128, 2 * 128 + 1 + N_EDGE_TYPES)
    assert "embedding.weight" in model.state_dict()


def test_out_of_range_edge_type_is_an_error():
    batch = molecule_batch()
    with pytest.raises(ValueError, match="edge_type 3 out of range for n_edge_types=3"):
        EGNN(hidden=8, layers=1, n_edge_types=3).double()(batch)


def test_build_backbone():
    assert "egnn" in BACKBONES
    assert isinstance(build_backbone("egnn", hidden=8, layers=1), EGNN)
    with pytest.raises(ValueError, match="unknown backbone 'nope'; known: egnn, gns"):
        build_backbone("nope")
    with pytest.raises(ValueError, match="unknown option.*hiden"):
        build_backbone("egnn", hiden=8)


def test_forces_from_squared_distances_equal_position_autograd():
    """F = −Σ 2 (∂E/∂d²_ij)(x_i − x_j) (both directions) == −∂E/∂pos by autograd, float64: energies,
    features, forces and the double-backward parameter gradients of a force loss."""
    from denoise3d.models.heads import forces_from_squared_distances

    torch.manual_seed(0)
    model, head = EGNN(hidden=32, layers=3, num_rbf=16).double(), EnergyHead(32).double()
    batch = molecule_batch()
    batch = batch.replace(pos=batch.pos + 0.3 * torch.randn_like(batch.pos))  # off equilibrium

    def run(fn):
        model.zero_grad(), head.zero_grad()
        energy, forces, s = fn(model, head, batch, create_graph=True)
        (forces.square().sum() + 0.1 * energy.sum()).backward()
        grads = [p.grad.clone() for p in [*model.parameters(), *head.parameters()]]
        return [energy.detach(), forces.detach(), s.detach(), *grads]

    fast, reference = run(forces_from_squared_distances), run(energy_and_forces)
    assert fast[1].abs().max() > 1e-3
    for a, b in zip(fast, reference):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    _, forces, _ = forces_from_squared_distances(model, head, batch)  # no create_graph: detached
    assert not forces.requires_grad
    torch.testing.assert_close(forces, reference[1], rtol=1e-10, atol=1e-10)
    with pytest.raises(TypeError, match="distance_input"):
        forces_from_squared_distances(build_backbone("schnet", hidden=8), EnergyHead(8), batch)


def test_forces_from_squared_distances_without_edges():
    torch.manual_seed(0)
    model, head = EGNN(hidden=8, layers=2).double(), EnergyHead(8).double()
    lone = Molecule(z=np.array([8]), pos=np.zeros((1, 3)))
    batch = molecule_batch([lone])
    from denoise3d.models.heads import forces_from_squared_distances

    energy, forces, _ = forces_from_squared_distances(model, head, batch, create_graph=True)
    assert forces.shape == (1, 3) and (forces == 0).all() and torch.isfinite(energy).all()
