"""The shipped physics helpers and mixin: transforms are right, and broken models are caught."""

import numpy as np
import pytest
import torch
from torch import nn

from denoise3d.data.batch import collate
from denoise3d.models.ops import scatter_sum
from denoise3d.testing import (BackbonePhysicsTests, apply_transform, fixture_molecules,
                               molecule_batch, permute_molecules, random_rotation, rotate_vectors)


@pytest.mark.parametrize("reflect", [False, True])
def test_random_rotation_is_orthogonal_with_the_right_determinant(reflect):
    g = torch.Generator().manual_seed(0)
    for rot in (random_rotation(torch.float64, reflect, generator=g),
                *random_rotation(torch.float64, reflect, n=8, generator=g)):
        torch.testing.assert_close(rot @ rot.T, torch.eye(3, dtype=torch.float64))
        assert torch.linalg.det(rot).item() == pytest.approx(-1.0 if reflect else 1.0)


def test_per_molecule_transform_matches_global_and_preserves_distances():
    batch = molecule_batch()
    g = torch.Generator().manual_seed(0)
    rot = random_rotation(n=batch.num_graphs, generator=g)
    shift = torch.randn(batch.num_graphs, 3, dtype=torch.float64, generator=g)
    out = apply_transform(batch.pos, rot, shift, batch.batch)
    for k in range(batch.num_graphs):
        m = batch.batch == k
        torch.testing.assert_close(out[m], apply_transform(batch.pos[m], rot[k], shift[k]))
        torch.testing.assert_close(torch.cdist(out[m], out[m]),
                                   torch.cdist(batch.pos[m], batch.pos[m]))
    v = torch.randn(batch.num_atoms, 3, 5, dtype=torch.float64, generator=g)
    torch.testing.assert_close(rotate_vectors(v, rot, batch.batch)[..., 2],
                               rotate_vectors(v[..., 2], rot, batch.batch))


def test_permutation_keeps_edge_types_consistent():
    mols = fixture_molecules()
    new_mols, perm = permute_molecules(mols, torch.Generator().manual_seed(0))
    old, new = collate(mols), collate(new_mols)
    assert torch.equal(new.z, old.z[perm]) and torch.equal(new.pos, old.pos[perm])
    type_of = {(int(i), int(j)): int(t) for (i, j), t in zip(old.edge_index.T, old.edge_type)}
    for (i, j), t in zip(new.edge_index.T, new.edge_type):
        assert type_of[int(perm[i]), int(perm[j])] == int(t)
    with_hops = [m.__class__(z=m.z, pos=m.pos, hops=np.eye(len(m.z), dtype=np.int8)) for m in mols]
    moved, p = permute_molecules(with_hops, torch.Generator().manual_seed(1))
    assert all((m.hops == np.eye(len(m.z))).all() for m in moved)  # permuted on both axes


# ------------------------------------------------------------------ mutation tests of the mixin
class ToyBackbone(nn.Module):
    """s_i = MLP(Σ_j exp(−d²_ij) ⊗ type) on the batch graph, with one optional, deliberate bug."""

    def __init__(self, bug: str | None = None, hidden: int = 8):
        super().__init__()
        self.bug = bug
        self.embed = nn.Embedding(20, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden + 3, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden))

    def forward(self, batch):
        i, j = batch.edge_index
        pos = batch.pos
        d2 = (pos[i] - pos[j]).square().sum(1, keepdim=True)  # (E, 1)
        if self.bug == "detached":  # part of the energy hides from autograd
            d2 = 0.5 * d2 + 0.5 * d2.detach()
        x = torch.cat([torch.exp(-d2), torch.exp(-0.1 * d2), batch.edge_type[:, None].to(d2)], 1)
        agg = scatter_sum(x, i, batch.num_atoms)  # (n, 3)
        if self.bug == "absolute":  # depends on absolute coordinates
            agg = agg + pos[:, :1]
        if self.bug == "cross_talk":  # every molecule sees the whole batch
            agg = agg + pos.square().sum() * 1e-2
        if self.bug == "index":  # depends on atom order
            agg = agg + torch.arange(batch.num_atoms, dtype=pos.dtype)[:, None] * 1e-2
        s = self.mlp(torch.cat([self.embed(batch.z), agg], 1))
        v = None
        if self.bug == "vector":  # translation-variant "vector" features
            v = pos[:, :, None] * s[:, None, :]
        return s, v


def _run(bug, test_name):
    class Suite(BackbonePhysicsTests):
        def make_backbone(self):
            return ToyBackbone(bug)
    getattr(Suite(), test_name)()


ALL = ["test_rotation", "test_reflection", "test_translation",
       "test_rotation_reflection_translation",
       "test_permutation", "test_forces_match_finite_differences",
       "test_no_cross_talk_between_molecules", "test_batch_equals_single_molecules"]


@pytest.mark.parametrize("test_name", ALL)
def test_mixin_passes_a_correct_model(test_name):
    _run(None, test_name)


@pytest.mark.parametrize("bug, test_name", [
    ("absolute", "test_rotation"), ("absolute", "test_translation"),
    ("cross_talk", "test_no_cross_talk_between_molecules"),
    ("cross_talk", "test_batch_equals_single_molecules"),
    ("index", "test_permutation"), ("detached", "test_forces_match_finite_differences"),
    ("vector", "test_translation"),
])
def test_mixin_catches_a_broken_model(bug, test_name):
    with pytest.raises(AssertionError):
        _run(bug, test_name)
