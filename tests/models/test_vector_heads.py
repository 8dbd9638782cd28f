"""VectorHead (edge readout and gated vector readout), PairHead, atom_vectors: symmetries, float64."""

import pytest
import torch

from denoise3d.data.batch import collate
from denoise3d.models import EGNN, EnergyHead, energy_and_forces
from denoise3d.models.heads import PairHead, VectorHead, atom_vectors, vector_head
from denoise3d.testing import (assert_close_scaled, fixture_molecules, molecule_batch,
                               permute_molecules, random_transform, rotate_vectors,
                               transform_batch)

H = 8


def _setup():
    torch.manual_seed(0)
    return EGNN(hidden=H, layers=2).double(), VectorHead(H).double(), molecule_batch()


def _edge_vectors(backbone, head, batch):
    s, v = backbone(batch)
    assert v is None  # EGNN: the edge readout is the one under test
    return head(s, v, batch)


@pytest.mark.parametrize("reflect", [False, True])
def test_edge_readout_is_e3_equivariant(reflect):
    backbone, head, batch = _setup()
    out = _edge_vectors(backbone, head, batch)
    assert out.shape == (batch.num_atoms, 3) and out.abs().max() > 0
    rot, shift = random_transform(batch.num_graphs, reflect=reflect,
                                  generator=torch.Generator().manual_seed(1))
    out_g = _edge_vectors(backbone, head, transform_batch(batch, rot, shift))
    assert_close_scaled(out_g, rotate_vectors(out, rot, batch.batch), 1e-10, "vector head")


def test_edge_readout_permutation_and_batching():
    backbone, head, batch = _setup()
    mols = fixture_molecules()
    out = _edge_vectors(backbone, head, batch)
    new_mols, perm = permute_molecules(mols, torch.Generator().manual_seed(2))
    out_p = _edge_vectors(backbone, head, collate(new_mols).to(dtype=torch.float64))
    assert_close_scaled(out_p, out[perm], 1e-10, "permutation")
    one = _edge_vectors(backbone, head, collate(mols[1:2]).to(dtype=torch.float64))
    assert_close_scaled(one, out[batch.batch == 1], 1e-10, "batched = single molecule")


def test_edge_readout_is_finite_for_coincident_atoms():
    backbone, head, batch = _setup()
    pos = batch.pos.clone()
    pos[1] = pos[0]  # two atoms on top of each other (PosPred puts masked atoms together)
    pos = pos.requires_grad_(True)
    out = _edge_vectors(backbone, head, batch.replace(pos=pos))
    out.square().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(pos.grad).all()


def test_gated_readout_of_vector_features():
    torch.manual_seed(0)
    head = VectorHead(H).double()
    n = 7
    s, v = torch.randn(n, H, dtype=torch.float64), torch.randn(n, 3, H, dtype=torch.float64)
    out = head(s, v, None)  # no batch needed: no edges
    rot, _ = random_transform(n, reflect=True, generator=torch.Generator().manual_seed(3))
    atoms = torch.arange(n)  # one transform per atom: equivariance is per atom here
    assert out.shape == (n, 3)
    assert_close_scaled(head(s, rotate_vectors(v, rot, atoms), None),
                        rotate_vectors(out, rot, atoms), 1e-12, "gated readout")


def test_pair_head_invariant_and_symmetric():
    backbone, _, batch = _setup()
    head = PairHead(H).double()
    s, _ = backbone(batch)
    y = head(s, batch)
    assert y.shape == (batch.edge_index.shape[1],)
    rot, shift = random_transform(batch.num_graphs, reflect=True,
                                  generator=torch.Generator().manual_seed(4))
    moved = transform_batch(batch, rot, shift)
    assert_close_scaled(head(backbone(moved)[0], moved), y, 1e-10, "pair head invariance")
    swapped = batch.replace(edge_index=batch.edge_index.flip(0))  # (i, j) -> (j, i)
    torch.testing.assert_close(head(s, swapped), y, rtol=1e-12, atol=1e-12)


def test_atom_vectors_modes():
    backbone, head, batch = _setup()
    vec, s = atom_vectors(backbone, head, batch)
    torch.testing.assert_close(vec, _edge_vectors(backbone, head, batch))
    energy_head = vector_head(H, "gradient").double()
    assert isinstance(energy_head, EnergyHead)
    forces, _ = atom_vectors(backbone, energy_head, batch)
    torch.testing.assert_close(forces, energy_and_forces(backbone, energy_head, batch)[1])
    with torch.no_grad():  # the gradient mode works under no_grad too (evaluation)
        f2, _ = atom_vectors(backbone, energy_head, batch)
    torch.testing.assert_close(f2, forces)
    with pytest.raises(ValueError, match="unknown vector mode"):
        vector_head(H, "nope")
