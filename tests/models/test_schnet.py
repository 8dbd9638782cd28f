"""SchNet: physics (inherited), paper sizes, the 3D-EMGP edge-type concatenation."""

import torch

from denoise3d.models import SchNet
from denoise3d.testing import BackbonePhysicsTests, molecule_batch


class TestSchNetPhysics(BackbonePhysicsTests):
    fd_step = 1e-5  # sharper radial features than EGNN: FD error ∝ h², 1e-4 Å is borderline

    def make_backbone(self):
        return SchNet(hidden=16, layers=2, num_rbf=12)


def test_paper_size_and_edge_type_concatenation():
    """3D-EMGP App. B.4: 7 blocks × 128, 50 Gaussians + the 4 hop types in the filter input."""
    model = SchNet()
    assert len(model.interactions) == 7 and model.hidden == 128
    assert model.interactions[0].filter_in.weight.shape == (128, 50 + 4)
    assert SchNet(edge_types=False).interactions[0].filter_in.weight.shape == (128, 50)
    assert model.interactions[0].in2f.bias is None
    s, v = model(molecule_batch(dtype=torch.float32))
    assert s.shape == (molecule_batch().num_atoms, 128) and v is None


def test_edge_types_change_the_output():
    torch.manual_seed(0)
    model = SchNet(hidden=16, layers=2).double()
    batch = molecule_batch()
    s1, _ = model(batch)
    s2, _ = model(batch.replace(edge_type=torch.full_like(batch.edge_type, 3)))
    assert not torch.allclose(s1, s2)
