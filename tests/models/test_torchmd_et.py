"""TorchMD-ET: physics (inherited, scalars and vectors), paper sizes, attention heads."""

import pytest
import torch

from denoise3d.models import TorchMDET
from denoise3d.testing import BackbonePhysicsTests, molecule_batch


class TestTorchMDETPhysics(BackbonePhysicsTests):
    fd_step = 1e-5  # exp-normal RBF and attention: FD error ∝ h², 1e-4 Å is borderline

    def make_backbone(self):
        return TorchMDET(hidden=16, layers=2, num_rbf=10, num_heads=4)


def test_paper_size_and_vector_features():
    """3D-EMGP App. B.4: 7 layers × 128, 8 heads, 50 exp-normal RBF + 4 hop types."""
    model = TorchMDET()
    assert len(model.attention) == 7 and model.hidden == 128
    layer = model.attention[0]
    assert layer.heads == 8 and layer.dk_proj.weight.shape == (128, 50 + 4)
    assert layer.vec_proj.bias is None  # a bias on vector features would break equivariance
    assert isinstance(model.rbf.means, torch.nn.Parameter)  # trainable RBF, as in TorchMD-NET
    batch = molecule_batch(dtype=torch.float32)
    s, v = model(batch)
    assert s.shape == (batch.num_atoms, 128) and v.shape == (batch.num_atoms, 3, 128)


def test_heads_must_divide_hidden():
    with pytest.raises(ValueError, match="divisible"):
        TorchMDET(hidden=10, layers=1, num_heads=4)
