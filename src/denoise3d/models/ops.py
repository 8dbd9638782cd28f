"""Pure-torch scatter and NaN-safe operations (no compiled add-ons)."""

import torch


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` (n, ...) into ``dim_size`` buckets given by ``index`` (n,)."""
    out = src.new_zeros([dim_size] + list(src.shape[1:]))
    return out.index_add_(0, index, src)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    count = torch.zeros(dim_size, dtype=src.dtype, device=src.device)
    count.index_add_(0, index, torch.ones_like(index, dtype=src.dtype))
    shape = (dim_size,) + (1,) * (src.dim() - 1)
    return scatter_sum(src, index, dim_size) / count.clamp_min(1).view(shape)


def safe_norm(x: torch.Tensor, dim: int = -1, eps: float = 1e-12, keepdim: bool = False):
    """Euclidean norm with a finite gradient at zero (sqrt of a clamped sum of squares)."""
    return torch.sqrt((x * x).sum(dim=dim, keepdim=keepdim).clamp_min(eps))


def shifted_softplus(x: torch.Tensor) -> torch.Tensor:
    """``ssp(x) = log(½ eˣ + ½) = softplus(x) − log 2`` (SchNet, GNS); ssp(0) = 0."""
    return torch.nn.functional.softplus(x) - 0.6931471805599453


class _SiLU(torch.autograd.Function):
    """``silu(x) = x σ(x)`` with a compact, twice-differentiable backward (see :func:`silu`)."""

    @staticmethod
    def forward(x):
        return torch.nn.functional.silu(x)

    @staticmethod
    def setup_context(ctx, inputs, output):  # the torch.func-compatible form
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a graph of one node, see _SiLUBackward
            return _SiLUBackward.apply(grad, x, y.detach())
        return torch.ops.aten.silu_backward(grad, x)


class _SiLUBackward(torch.autograd.Function):
    """``z = g · silu'(x)`` (the fused ``aten.silu_backward`` kernel) as one autograd node.

    Derivatives: ``∂z/∂g = silu'(x)`` (the same kernel again) and ``∂z/∂x = g · silu''(x)`` with
    ``silu''(x) = σ(1 − σ)(2 + x(1 − 2σ)) = σ(1 − σ)(x + 2 − 2 silu(x))``; ``y = silu(x)`` is
    the forward's output (a constant here).
    """

    @staticmethod
    def forward(grad, x, y):
        return torch.ops.aten.silu_backward(grad, x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gz):
        grad, x, y = ctx.saved_tensors
        d_grad = torch.ops.aten.silu_backward(gz, x) if ctx.needs_input_grad[0] else None
        d_x = None
        if ctx.needs_input_grad[1]:
            # gz·g·σ(1 − σ) by the fused sigmoid_backward kernel, times (x + 2 − 2y)
            d_x = torch.ops.aten.sigmoid_backward(gz * grad, torch.sigmoid(x))
            d_x.mul_(torch.add(x, y, alpha=-2.0).add_(2.0))
        return d_grad, d_x, None


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU with the same values and derivatives as ``torch.nn.functional.silu``, cheaper to
    differentiate twice.

    With ``create_graph=True`` (forces by autograd, then a loss on them), torch differentiates its
    ``silu`` backward as the composite ``g σ(x)(1 + x(1 − σ(x)))``: five recorded element-wise
    nodes over the (n_edges, H) activations, whose own backward takes about a dozen more passes.
    Here the first backward is one node running the fused ``silu_backward`` kernel, with an
    explicit second derivative. Third derivatives are not supported (``once_differentiable``).
    Compiled and TorchScript programs (inference: one backward at most) use ``F.silu`` itself.
    """
    if torch.jit.is_scripting():
        return torch.nn.functional.silu(x)
    if torch.compiler.is_compiling():
        return torch.nn.functional.silu(x)
    return _silu_function(x)


@torch.jit.unused
def _silu_function(x: torch.Tensor) -> torch.Tensor:
    return _SiLU.apply(x)
