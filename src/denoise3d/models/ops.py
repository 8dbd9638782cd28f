"""Pure-torch scatter and NaN-safe operations (no compiled add-ons)."""

import torch


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` (n, ...) into ``dim_size`` buckets given by ``index`` (n,)."""
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
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
