"""GNS and GNS-TAT: physics (inherited), and GNS-TAT against the statements of Zaidi et al. A.2."""

import math

import numpy as np
import pytest
import torch

from denoise3d.models import GNS, GNSTAT, EnergyHead
from denoise3d.models.gns import edge_network_subnet_max
from denoise3d.models.tat import TailoredReLU, leaky_relu_cmap, negative_slope
from denoise3d.testing.physics import assert_factorised_matches_reference
from denoise3d.testing import BackbonePhysicsTests, molecule_batch

# small, but deep enough for η = 0.8: the edge network must reach C_f(0) ≥ 0.8 with ReLUs
TAT_SMALL = dict(hidden=16, layers=3, iterations=3, mlp_hidden=16, mlp_layers=3, num_rbf=10)


class TestGNSPhysics(BackbonePhysicsTests):
    fd_step = 1e-5  # FD error ∝ h², 1e-4 Å is borderline

    def make_backbone(self):
        return GNS(hidden=16, layers=2, iterations=2, mlp_hidden=16, mlp_layers=2, num_rbf=10)


class TestGNSTATPhysics(BackbonePhysicsTests):
    # TReLU is piecewise linear: the energy is smooth only between kinks, which sit ~1e-5 Å apart
    # along a random direction here; the central difference must not straddle one.
    fd_step = 1e-8

    def make_backbone(self):
        return GNSTAT(**TAT_SMALL)


def test_gns_structure():
    """A.1: shifted softplus, LayerNorm after each MLP, processor applied `iterations` times."""
    model = GNS(hidden=16, layers=2, iterations=3, mlp_hidden=32, mlp_layers=3, num_rbf=10)
    assert (model.w_skip, model.w_branch) == (1.0, 1.0)
    mlp = model.edge_updates[0]
    assert not mlp.norm_first and mlp.norm.normalized_shape == (16,)
    assert [lin.out_features for lin in mlp.linears] == [32, 32, 32, 16]  # 3 hidden layers
    assert float(mlp.act(torch.zeros(1))) == 0.0  # ssp(0) = log(½ + ½) = 0
    calls = []
    model.edge_updates[0].linears[1].register_forward_hook(lambda *a: calls.append(1))
    s, v = model(molecule_batch(dtype=torch.float32))
    assert len(calls) == 3 and v is None and s.shape[1] == 16


def test_tailored_relu_preserves_q_and_follows_its_c_map():
    """Monte Carlo over unit Gaussians: E[φ(x)²] = 1 and E[φ(x)φ(y)] = C_α(c) for corr(x, y) = c."""
    g = torch.Generator().manual_seed(0)
    act = TailoredReLU(0.3)
    x, w = torch.randn(2, 400_000, dtype=torch.float64, generator=g)
    assert abs(float(act(x).square().mean()) - 1.0) < 0.01
    for c in (0.0, 0.5, 0.9):
        y = c * x + math.sqrt(1 - c * c) * w
        assert abs(float((act(x) * act(y)).mean()) - leaky_relu_cmap(c, 0.3)) < 0.01


def test_negative_slope_for_the_paper_model():
    """Table 3 (10 blocks × 3 iterations, 3-layer MLPs, w = 0.9, η = 0.8). Golden value from the
    ``dks`` package (0.1.2): ``dks.base.activation_transform.get_transformed_activations(
    ["leaky_relu"], method="TAT", tat_params={"c_val_0_target": 0.8}, subnet_max_func=M)``
    with M = edge_network_subnet_max(·, ·, 3, 30, 0.9); regenerate by running that."""
    def m(x, r):
        return edge_network_subnet_max(x, r, 3, 30, 0.9)

    alpha = negative_slope(m, 0.8)
    assert alpha == pytest.approx(0.3176594078540802, abs=1e-8)
    assert m(0.0, lambda c: leaky_relu_cmap(c, alpha)) == pytest.approx(0.8, abs=1e-9)


def test_negative_slope_matches_dks():
    at = pytest.importorskip("dks.base.activation_transform")
    for k, n in ((3, 30), (2, 30), (3, 12)):
        def m(x, r):
            return edge_network_subnet_max(x, r, k, n, 0.9)

        act = at.get_transformed_activations(["leaky_relu"], method="TAT",
                                             tat_params={"c_val_0_target": 0.8},
                                             subnet_max_func=m)["leaky_relu"]
        ours = TailoredReLU(negative_slope(m, 0.8))
        for x in (-1.0, 1.0):
            assert float(ours(torch.tensor(x))) == pytest.approx(float(act(np.array(x))), abs=1e-6)


def test_unreachable_eta_is_a_clear_error():
    with pytest.raises(ValueError, match="eta=0.8 is above"):
        GNSTAT(hidden=8, layers=1, iterations=1, mlp_hidden=8, mlp_layers=2)


def test_gns_tat_statements_of_appendix_a2():
    """TReLU with TAT's slope, weighted shortcuts 0.9 / √(1 − 0.9²), LayerNorm before the MLP,
    Gaussian fan-in init with zero biases, Edge-Delta on the edge updates' first layers."""
    torch.manual_seed(0)
    model = GNSTAT(hidden=32, layers=3, iterations=3, mlp_hidden=64, mlp_layers=3)
    assert model.eta == 0.8
    assert (model.w_skip, model.w_branch) == (0.9, pytest.approx(math.sqrt(1 - 0.81)))
    want = negative_slope(lambda x, r: edge_network_subnet_max(x, r, 3, 9, 0.9), 0.8)
    for mlp in [model.edge_encoder, *model.edge_updates, *model.vertex_updates]:
        assert mlp.norm_first and isinstance(mlp.act, TailoredReLU)
        assert mlp.act.alpha == want == model.negative_slope
        assert mlp.norm.normalized_shape == (mlp.linears[0].in_features,)
        for lin in mlp.linears:
            assert torch.count_nonzero(lin.bias) == 0
    H = 32
    for phi_e in model.edge_updates:
        w = phi_e.linears[0].weight  # columns [e | v_i | v_j]
        assert torch.count_nonzero(w[:, H:]) == 0  # Edge-Delta: incoming vertex weights zero
        assert w[:, :H].std().item() == pytest.approx(1 / math.sqrt(H), rel=0.1)  # fan-in H only
    for phi_v in model.vertex_updates:
        w = phi_v.linears[1].weight
        assert w.std().item() == pytest.approx(1 / math.sqrt(64), rel=0.1)


def test_edge_delta_edges_ignore_vertices_at_initialisation():
    """With Edge-Delta the edge network runs independently of the vertex features (A.2): the only
    remaining path is the LayerNorm over [e, v_i, v_j], whose statistics see v (footnote 6: it
    can be ignored when q(v) = 1). With those LayerNorms made the identity, changing the atom
    types changes the vertex latents but not a single edge latent."""
    torch.manual_seed(0)
    model = GNSTAT(**TAT_SMALL).double()
    model.factorised = False  # the plain MLP on [e, v_i, v_j], whose LayerNorm we can remove
    for phi_e in model.edge_updates:
        phi_e.norm = torch.nn.Identity()
    batch = molecule_batch()
    other = batch.replace(z=torch.where(batch.z == 1, 9, 6))
    v1, e1 = model.latents(batch)
    v2, e2 = model.latents(other)
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    assert not torch.allclose(v1, v2)
    with torch.no_grad():  # once the vertex weights move away from zero, edges see vertices
        model.edge_updates[0].linears[0].weight[:, 16:].normal_()
    assert not torch.allclose(model.latents(other)[1], e1)


def test_gns_tat_keeps_q_values_near_one_at_initialisation():
    """The point of TAT: signals neither explode nor vanish with depth at initialisation."""
    torch.manual_seed(0)
    model = GNSTAT(hidden=64, layers=4, iterations=3, mlp_hidden=64, mlp_layers=3)
    with torch.no_grad():
        v, e = model.latents(molecule_batch(dtype=torch.float32))
    assert 0.3 < float(e.square().mean()) < 3.0
    assert 0.3 < float(v.square().mean()) < 3.0


@pytest.mark.parametrize("cls, kw", [(GNS, dict(layers=2, iterations=2, mlp_layers=2)),
                                     (GNSTAT, dict(layers=3, iterations=3, mlp_layers=3))])
def test_factorised_edge_update_equals_concatenation(cls, kw):
    """GNSMLP.forward_pairs == the MLP on [e, v_i, v_j] (LayerNorm after, or first through per-part
    statistics): energies, forces and the parameter gradients of a force loss, float64, with
    parameters moved off their initial values (Edge-Delta zeros, unit LayerNorm gains)."""
    torch.manual_seed(0)
    model = cls(hidden=16, mlp_hidden=24, num_rbf=10, **kw).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    head = EnergyHead(16).double()
    batch = molecule_batch()
    assert_factorised_matches_reference(model, head, batch)
