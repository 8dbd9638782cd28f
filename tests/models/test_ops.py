"""ops.silu: same values, first and second derivatives as torch's SiLU."""

import torch
from torch.nn import functional as F

from denoise3d.models.ops import silu


def test_silu_matches_torch_to_second_order():
    torch.manual_seed(0)
    x = (5 * torch.randn(64, 3, dtype=torch.float64)).requires_grad_(True)
    x.data[0, 0] = 0.0

    def derivatives(fn):
        y = fn(x)
        (g,) = torch.autograd.grad((y.square() + y).sum(), x, create_graph=True)
        (gg,) = torch.autograd.grad(g.sin().sum(), x)
        return y.detach(), g.detach(), gg

    for a, b in zip(derivatives(silu), derivatives(F.silu)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(silu, (x,))
    assert torch.autograd.gradgradcheck(silu, (x,))


def test_silu_first_backward_without_graph():
    x = torch.linspace(-30, 30, 101, dtype=torch.float64, requires_grad=True)
    silu(x).sum().backward()
    g = x.grad.clone()
    x.grad = None
    F.silu(x).sum().backward()
    torch.testing.assert_close(g, x.grad, rtol=0, atol=0)
