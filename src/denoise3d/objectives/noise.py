"""Noise for denoising pretraining: σ schedules, the Riemann-Gaussian of 3D-EMGP, Langevin sampling.

Pure functions, batched over the molecules of a :class:`~denoise3d.data.batch.Batch` by scattering
over its ``batch`` vector: O(N) per molecule, no Python loop over molecules.

Notation (3D-EMGP, Jiao et al. 2023, §3.2 and Appendix A). For one molecule with N atoms, ``X``
(N, 3) clean and ``X̃`` (N, 3) noisy positions in Å, rows are atoms. The paper writes the same
arrays as 3×N (columns are atoms); where it writes ``ỸỸᵀ`` and ``ỸYᵀ`` we build the 3×3 matrices

    Y = X − mean(X),   Ỹ = X̃ − mean(X̃)                       centred positions, (N, 3)
    M = ỸỸᵀ = Σ_i ỹ_i ỹ_iᵀ,   C = ỸYᵀ = Σ_i ỹ_i y_iᵀ          per molecule, (3, 3)

The Riemann-Gaussian (Eq. 9-10) is ``p_σ(X̃|X) ∝ exp(−d²/(4σ²))`` with ``d² = ‖G̃ − G‖²_F``,
``G̃ = Ỹ Ỹᵀ`` and ``G = Y Yᵀ`` the N×N Gram matrices of the centred rows. Its score (Eq. 11) is,
per atom i,

    s_i = ∇_{x̃_i} log p_σ(X̃|X) = −(1/σ²) (M ỹ_i − C y_i)          (N, 3)

Everywhere ``sigma`` may be a float, a 0-d tensor, a per-molecule ``(n_graphs,)`` tensor or a
per-atom ``(n_atoms,)`` / ``(n_atoms, 1)`` tensor (see :func:`sigma_per_atom`).
"""

from __future__ import annotations

import math

import torch

from denoise3d.models.ops import safe_norm, scatter_mean, scatter_sum

__all__ = [
    "sigma_levels", "sigma_per_atom", "center", "riemann_terms", "riemann_residual",
    "riemann_residual_and_alpha", "riemann_score", "riemann_alpha", "langevin_riemann",
    "gaussian_score", "gaussian_noise", "gaussian_target", "distance_target",
]


def sigma_levels(sigma_max: float = 10.0, sigma_min: float = 0.01, num_levels: int = 50,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """Noise scales σ_1 > … > σ_L, log-spaced from ``sigma_max`` down to ``sigma_min``, (L,) Å.

    3D-EMGP (App. B.2): σ_1 = 10, σ_L = 0.01, L = 50.
    """
    if not 0 < sigma_min <= sigma_max or num_levels < 1:
        raise ValueError(f"need 0 < sigma_min <= sigma_max and num_levels >= 1, got "
                         f"{sigma_min}, {sigma_max}, {num_levels}")
    logs = torch.linspace(math.log(sigma_max), math.log(sigma_min), num_levels, dtype=torch.float64)
    return logs.exp().to(dtype or torch.get_default_dtype())


def sigma_per_atom(sigma, batch: torch.Tensor, n_graphs: int, like: torch.Tensor) -> torch.Tensor:
    """Broadcast ``sigma`` (scalar, (n_graphs,), (n_atoms,) or (n_atoms, 1)) to (n_atoms, 1).

    A 1-d tensor of length ``n_graphs`` is read as per molecule (checked first), otherwise a
    tensor of length ``n_atoms`` as per atom. Dtype and device follow ``like``.
    """
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    n_atoms = like.shape[0]
    if sigma.numel() == 1:
        return sigma.reshape(1, 1).expand(n_atoms, 1)
    if sigma.dim() == 1 and sigma.numel() == n_graphs:
        return sigma[batch].unsqueeze(-1)
    if sigma.shape in ((n_atoms,), (n_atoms, 1)):
        return sigma.reshape(n_atoms, 1)
    raise ValueError(f"sigma of shape {tuple(sigma.shape)} is neither scalar, per molecule "
                     f"({n_graphs},) nor per atom ({n_atoms},)")


def center(pos: torch.Tensor, batch: torch.Tensor, n_graphs: int) -> torch.Tensor:
    """Y = X − mean(X) per molecule, (n_atoms, 3)."""
    return pos - scatter_mean(pos, batch, n_graphs)[batch]


def _centred_terms(noisy, clean, batch, n_graphs):
    """Centred ỹ, y (n_atoms, 3) and M = Σ ỹỹᵀ, C = Σ ỹyᵀ (n_graphs, 3, 3)."""
    yt = center(noisy, batch, n_graphs)  # (n_atoms, 3)
    y = center(clean, batch, n_graphs)  # (n_atoms, 3)
    m = scatter_sum(yt.unsqueeze(2) * yt.unsqueeze(1), batch, n_graphs)  # (n_graphs, 3, 3)
    c = scatter_sum(yt.unsqueeze(2) * y.unsqueeze(1), batch, n_graphs)  # (n_graphs, 3, 3)
    return yt, y, m, c


def riemann_terms(noisy: torch.Tensor, clean: torch.Tensor, batch: torch.Tensor, n_graphs: int):
    """The per-molecule 3×3 matrices ``(M, C)``, each (n_graphs, 3, 3), Å².

    ``M[a, b] = Σ_i ỹ_ia ỹ_ib`` (paper ỸỸᵀ, symmetric), ``C[a, b] = Σ_i ỹ_ia y_ib`` (paper ỸYᵀ),
    from the centred noisy and clean positions.
    """
    _, _, m, c = _centred_terms(noisy, clean, batch, n_graphs)
    return m, c


def riemann_residual_and_alpha(noisy: torch.Tensor, clean: torch.Tensor, batch: torch.Tensor,
                               n_graphs: int):
    """``(r, α)``: r_i = M ỹ_i − C y_i (n_atoms, 3) and α (n_graphs,) from one pass.

    See :func:`riemann_residual` and :func:`riemann_alpha`.
    """
    yt, y, m, c = _centred_terms(noisy, clean, batch, n_graphs)
    r = torch.einsum("nab,nb->na", m[batch], yt) - torch.einsum("nab,nb->na", c[batch], y)
    # ‖·‖_F with a floor (safe_norm: ≥ 1e-6) so a 1-atom molecule (M = C = 0) gets α > 0.
    alpha = 0.5 * (safe_norm(m.flatten(1)) + safe_norm(c.flatten(1)))  # (n_graphs,)
    return r, alpha


def riemann_residual(noisy: torch.Tensor, clean: torch.Tensor, batch: torch.Tensor,
                     n_graphs: int) -> torch.Tensor:
    """The bracket of Eq. 11, ``r_i = M ỹ_i − C y_i``, (n_atoms, 3), Å³.

    ``r = ∇_X̃ d²/4`` (it is already a centred, translation-free vector field), so the score is
    ``−r/σ²`` and the folded EFP target is ``−r/(ασ)``.
    """
    return riemann_residual_and_alpha(noisy, clean, batch, n_graphs)[0]


def riemann_score(noisy: torch.Tensor, clean: torch.Tensor, batch: torch.Tensor, n_graphs: int,
                  sigma) -> torch.Tensor:
    """Score of the Riemann-Gaussian, Eq. 11: ``s_i = −(1/σ²)(M ỹ_i − C y_i)``, (n_atoms, 3), Å⁻¹.

    Equals ``∇_X̃ [−‖G̃ − G‖²_F / (4σ²)]`` exactly (``tests/objectives/test_noise.py``). Doubly
    E(3)-invariant: unchanged under any g ∈ E(3) applied to ``clean``; rotates with ``noisy``;
    invariant to translations of either; permutation-equivariant.
    """
    sig = sigma_per_atom(sigma, batch, n_graphs, noisy)  # (n_atoms, 1)
    return -riemann_residual(noisy, clean, batch, n_graphs) / sig**2


def riemann_alpha(noisy: torch.Tensor, clean: torch.Tensor, batch: torch.Tensor,
                  n_graphs: int) -> torch.Tensor:
    """Normaliser ``α = (‖M‖_F + ‖C‖_F)/2`` per molecule (App. A.5), (n_graphs,), Å².

    Doubly E(3)-invariant (Prop. 3). Each norm is floored at 1e-6 (``safe_norm``) so degenerate
    molecules (one atom: M = C = 0) give a finite ``score/α = 0`` instead of 0/0; for any real
    molecule the floor is many orders of magnitude below the norms and changes nothing.
    """
    return riemann_residual_and_alpha(noisy, clean, batch, n_graphs)[1]


@torch.no_grad()
def langevin_riemann(clean: torch.Tensor, batch: torch.Tensor, n_graphs: int, sigma,
                     steps: int = 1, generator: torch.Generator | None = None,
                     noise: torch.Tensor | None = None) -> torch.Tensor:
    """Sample X̃ ~ Rie_σ(·|X) by Langevin dynamics (3D-EMGP Algorithm 1), (n_atoms, 3), Å.

    ::

        X̃_0 = X
        for t = 1..T:   β_t = σ² · 2⁻ᵗ
                        s_t = −(1/σ²)[(Ỹ_{t−1}Ỹ_{t−1}ᵀ)Ỹ_{t−1} − (Ỹ_{t−1}Yᵀ)Y]      (Eq. 11)
                        α_t = (‖Ỹ_{t−1}Ỹ_{t−1}ᵀ‖_F + ‖Ỹ_{t−1}Yᵀ‖_F)/2
                        X̃_t = X̃_{t−1} + β_t s_t/α_t + √(2β_t) ε_t,    ε_t ~ N(0, I)

    Step size: the extracted paper text reads "β_t ← σ²/2t", which is ambiguous between σ²/(2t)
    and σ²/2ᵗ. We follow the official implementation (``perturb`` in jiaor17/3D-EMGP), which uses
    ``β_t = σ²·2⁻ᵗ``; the two readings agree at t = 1 and only differ for T ≥ 2. At the default
    T = 1 the score at X̃_0 = X is exactly zero (M = C), so X̃ = X + σε exactly: the Riemann
    geometry then enters only through the EFP target. The noise scale is computed as
    ``σ·2^((1−t)/2) = √(2β_t)`` so that this holds bit for bit.

    ``noise``: optional pre-drawn ε, (steps, n_atoms, 3); otherwise drawn with ``torch.randn``
    from ``generator`` (the global RNG when None). Runs without autograd.
    """
    if steps < 1:
        raise ValueError(f"langevin steps must be >= 1, got {steps}")
    if noise is not None and noise.shape != (steps,) + tuple(clean.shape):
        raise ValueError(f"noise must have shape {(steps,) + tuple(clean.shape)}, got "
                         f"{tuple(noise.shape)}")
    sig = sigma_per_atom(sigma, batch, n_graphs, clean)  # (n_atoms, 1)
    x = clean
    for t in range(1, steps + 1):
        eps = noise[t - 1] if noise is not None else torch.randn(
            clean.shape, generator=generator, dtype=clean.dtype, device=clean.device)
        r, alpha = riemann_residual_and_alpha(x, clean, batch, n_graphs)
        # β_t s_t / α_t = σ² 2⁻ᵗ · (−r/σ²) / α = −2⁻ᵗ r / α  (σ cancels; no 1/σ² blow-up)
        drift = -(0.5**t) * r / alpha[batch].unsqueeze(-1)  # (n_atoms, 3)
        x = x + drift + sig * (2.0 ** ((1 - t) / 2)) * eps
    return x


def gaussian_score(noisy: torch.Tensor, clean: torch.Tensor, sigma) -> torch.Tensor:
    """Score of the isotropic Gaussian N(X, σ²I): ``−(X̃ − X)/σ²``, (n_atoms, 3), Å⁻¹.

    Not E(3)-invariant (the 3D-EMGP "Gaussian" ablation). ``sigma``: scalar or per atom
    ((n_atoms,) or (n_atoms, 1)); for per-molecule σ expand with :func:`sigma_per_atom` first.
    """
    sig = torch.as_tensor(sigma, dtype=noisy.dtype, device=noisy.device)
    if sig.dim() == 1 and sig.numel() == noisy.shape[0]:
        sig = sig.unsqueeze(-1)
    return -(noisy - clean) / sig**2


def gaussian_noise(pos: torch.Tensor, batch: torch.Tensor, n_graphs: int, centred: bool = True,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """ε ~ N(0, I), (n_atoms, 3); mean-centred per molecule when ``centred`` (Zaidi et al. App. E).

    Centred noise lies in the subspace V = {Σ_i ε_i = 0} on which the (translation-invariant)
    physical distribution is normalisable: a translation is impossible to predict, so no target
    should contain one. X̃ = X + σε then has the same centroid as X.
    """
    eps = torch.randn(pos.shape, generator=generator, dtype=pos.dtype, device=pos.device)
    return center(eps, batch, n_graphs) if centred else eps


@torch.no_grad()
def gaussian_target(noisy: torch.Tensor, clean: torch.Tensor, batch: torch.Tensor, n_graphs: int,
                    sigma) -> torch.Tensor:
    """Folded target of the 3D-EMGP "Gaussian" ablation, ``t = σ·s = −(Ỹ − Y)/σ``, (n_atoms, 3).

    ``s = −(X̃ − X)/σ²`` is the score of N(X, σ²I) (:func:`gaussian_score`); as for EFP,
    ``σ²‖F̂/σ − s‖² = ‖F̂ − σs‖²``. Computed from the centred positions Ỹ, Y, so t is
    translation-free (Σ_i t_i = 0 per molecule, unchanged by translating X̃ or X): −∇E of an
    invariant energy sums to zero, so a translational component would only add an unlearnable
    constant to the loss. Rotates when X̃ and X rotate together (not doubly invariant: that is
    what the ablation tests). No α normaliser (the official code uses none for this target).
    """
    sig = sigma_per_atom(sigma, batch, n_graphs, noisy)  # (n_atoms, 1)
    return -(center(noisy, batch, n_graphs) - center(clean, batch, n_graphs)) / sig


@torch.no_grad()
def distance_target(noisy: torch.Tensor, clean: torch.Tensor, edge_index: torch.Tensor,
                    sigma_edge) -> torch.Tensor:
    """Folded distance-denoising target ``t_ij = (d_ij(X) − d_ij(X̃))/σ`` per edge, (n_edges,).

    The score of N(d̃; d, σ²) on one distance is ``−(d̃ − d)/σ²`` (ConfGF's distance score); with
    the σ² loss weighting folded in as for EFP, the target is σ times it. Invariant under any
    E(3) map of X̃ and (separately) of X; symmetric in i and j. ``sigma_edge``: scalar or (n_edges,).
    """
    i, j = edge_index
    d_clean = (clean[i] - clean[j]).norm(dim=-1)  # (E,)
    d_noisy = (noisy[i] - noisy[j]).norm(dim=-1)  # (E,)
    return (d_clean - d_noisy) / torch.as_tensor(sigma_edge, dtype=noisy.dtype, device=noisy.device)
