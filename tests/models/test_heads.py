"""Heads: pooling, PropertyHead de-standardisation and atom references, forces through heads."""

import torch

from denoise3d.models import EGNN, ClassifierHead, EnergyHead, PropertyHead, energy_and_forces
from denoise3d.models.heads import graph_embedding
from denoise3d.testing import molecule_batch


def test_graph_embedding_sums_atoms_per_molecule():
    batch = molecule_batch()
    s = torch.randn(batch.num_atoms, 4, dtype=torch.float64)
    u = graph_embedding(s, batch)
    for g in range(batch.num_graphs):
        torch.testing.assert_close(u[g], s[batch.batch == g].sum(0))


def test_property_head_adds_std_mean_and_atomref():
    torch.manual_seed(0)
    batch = molecule_batch()
    atomref = torch.randn(55)
    head = PropertyHead(6, mean=-2.5, std=3.0, atomref=atomref).double()
    s = torch.randn(batch.num_atoms, 6, dtype=torch.float64)
    raw = head.mlp(graph_embedding(s, batch)).squeeze(-1)
    ref = torch.stack([atomref.double()[batch.z[batch.batch == g]].sum()
                       for g in range(batch.num_graphs)])
    torch.testing.assert_close(head.standardised(s, batch), raw)
    torch.testing.assert_close(head.baseline(batch), ref)
    torch.testing.assert_close(head(s, batch), 3.0 * raw - 2.5 + ref)
    state = head.state_dict()  # statistics travel with checkpoints
    assert float(state["mean"]) == -2.5 and float(state["std"]) == 3.0
    torch.testing.assert_close(state["atomref"], atomref.double())


def test_property_head_defaults_are_identity():
    batch = molecule_batch()
    head = PropertyHead(6).double()
    s = torch.randn(batch.num_atoms, 6, dtype=torch.float64)
    torch.testing.assert_close(head(s, batch), head.standardised(s, batch))


def test_heads_shapes():
    batch = molecule_batch()
    s = torch.randn(batch.num_atoms, 8, dtype=torch.float64)
    assert EnergyHead(8).double()(s, batch).shape == (batch.num_graphs,)
    x = torch.randn(3, 16, dtype=torch.float64)
    assert ClassifierHead(16, 8, 50).double()(x).shape == (3, 50)


def test_energy_and_forces_double_backward_reaches_all_parameters():
    """A loss on F = −∂E/∂x (create_graph=True) trains every backbone and head parameter."""
    torch.manual_seed(0)
    model, head = EGNN(hidden=8, layers=2).double(), EnergyHead(8).double()
    batch = molecule_batch()
    energy, forces, _ = energy_and_forces(model, head, batch, create_graph=True)
    forces.square().sum().backward()
    no_grad = [n for n, p in [*model.named_parameters(), *head.named_parameters()]
               if p.grad is None or p.grad.abs().max() == 0]
    # the head's last bias shifts E by a constant: no force depends on it
    assert no_grad == ["mlp.2.bias"], no_grad


def test_property_head_mean_readout():
    """``readout="mean"`` (GNS-TAT's decoder aggregation) averages node features per molecule."""
    import numpy as np
    import pytest

    from denoise3d.data.batch import Molecule, collate
    from denoise3d.models.heads import PropertyHead, graph_embedding

    mols = [Molecule(z=np.array([6, 1]), pos=np.zeros((2, 3)) + [[0, 0, 0], [1.1, 0, 0]]),
            Molecule(z=np.array([8, 1, 1]), pos=np.array([[0, 0, 0], [0.96, 0, 0], [0, 0.96, 0]]))]
    batch = collate(mols)
    s = torch.arange(10.0).reshape(5, 2)
    assert torch.equal(graph_embedding(s, batch, "mean"), torch.stack([s[:2].mean(0), s[2:].mean(0)]))
    head = PropertyHead(2, readout="mean")
    assert torch.allclose(head.standardised(s, batch), head.mlp(graph_embedding(s, batch, "mean")).squeeze(-1))
    with pytest.raises(ValueError, match="unknown readout 'max'"):
        PropertyHead(2, readout="max")
