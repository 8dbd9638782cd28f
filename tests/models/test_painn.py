"""PaiNN: physics (inherited, scalars and vectors), paper sizes, the smooth vector norm."""

import torch

from denoise3d.models import PaiNN
from denoise3d.models.painn import smooth_norm
from denoise3d.testing import BackbonePhysicsTests, molecule_batch


class TestPaiNNPhysics(BackbonePhysicsTests):
    # The carbon of methane has v ≈ 0 by symmetry, where ‖Vv‖ is smoothed on a 1e-4 scale
    # (√(‖·‖² + 1e-8)): the energy is smooth there but curved, FD needs a step below that scale.
    fd_step = 1e-6

    def make_backbone(self):
        return PaiNN(hidden=16, layers=2, num_rbf=10)


def test_paper_size_and_vector_features():
    model = PaiNN()
    assert len(model.messages) == 7 and model.hidden == 128
    assert model.messages[0].filter.weight.shape == (3 * 128, 20 + 4)  # 20 Bessel + 4 hop types
    batch = molecule_batch(dtype=torch.float32)
    s, v = model(batch)
    assert s.shape == (batch.num_atoms, 128) and v.shape == (batch.num_atoms, 3, 128)
    assert v.abs().max() > 0


def test_smooth_norm_has_exact_gradients_at_zero():
    x = torch.zeros(2, 3, 4, dtype=torch.float64, requires_grad=True)
    n = smooth_norm(x, dim=1)
    torch.testing.assert_close(n, torch.full((2, 4), 1e-4, dtype=torch.float64))
    (grad,) = torch.autograd.grad(n.sum(), x)
    assert torch.equal(grad, torch.zeros_like(grad))
    y = torch.tensor([[3.0], [4.0], [0.0]], dtype=torch.float64)
    torch.testing.assert_close(smooth_norm(y, dim=0), torch.tensor([5.0], dtype=torch.float64))
