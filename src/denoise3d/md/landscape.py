"""The local energy landscape of a force field (3D-EMGP §4.4, Fig. 4).

Around a conformation X (N×3), two random directions D1, D2 (N×3, entries N(0, 1), each centred
so it does not translate the molecule, and scaled to an RMS atomic displacement of 1 Å) span
the plane ``X(i, j) = X + i·D1 + j·D2``; the model's energy ``E(i, j)`` is evaluated on a
``points × points`` grid of ``i, j ∈ [−extent, extent]`` (Å of RMS displacement) in batches.
The paper does not state its grid range or the scale of D; these choices are ours. A model that
learned the energy surface shows a smooth bowl with its minimum near X (an MD frame sits close
to, not at, a minimum); Fig. 4 shows rugged or flat surfaces for poorly pretrained models.
Outputs: a PNG (3D surface and contour map of E(i, j) − E(0, 0), in eV) and an ``.npz`` with the
raw grid, the directions and the structure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from denoise3d.data.batch import Molecule, collate
from denoise3d.data.bonds import hop_matrix


def random_directions(n_atoms: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two (N, 3) Gaussian directions, centred, RMS atomic displacement 1 Å each."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2):
        d = rng.standard_normal((n_atoms, 3))
        d -= d.mean(axis=0)
        out.append(d / np.sqrt((d ** 2).sum() / n_atoms))
    return out[0], out[1]


@torch.no_grad()
def energy_grid(backbone, objective, z: np.ndarray, pos: np.ndarray, d1: np.ndarray,
                d2: np.ndarray, extent: float = 0.2, points: int = 41, batch_size: int = 128,
                device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(ticks (points,), E (points, points) eV) with ``E[a, b] = E(X + t_a·D1 + t_b·D2)``.

    All grid structures share the bond topology of ``pos`` (as along an MD trajectory).
    """
    if points < 2 or extent <= 0:
        raise ValueError(f"need points >= 2 and extent > 0, got {points}, {extent}")
    backbone.eval(), objective.eval()
    dtype = next(backbone.parameters()).dtype
    ticks = np.linspace(-extent, extent, points)
    ii, jj = np.meshgrid(ticks, ticks, indexing="ij")  # (points, points)
    grid = pos[None] + ii.reshape(-1, 1, 1) * d1[None] + jj.reshape(-1, 1, 1) * d2[None]
    hops = hop_matrix(z, pos)
    energies = []
    for start in range(0, len(grid), batch_size):
        chunk = grid[start:start + batch_size]
        batch = collate([Molecule(z=z, pos=p, hops=hops) for p in chunk]).to(device, dtype)
        batch = batch.replace(pos=torch.as_tensor(chunk.reshape(-1, 3), dtype=dtype, device=device))
        s, _ = backbone(batch)
        energies.append(objective.energy(s, batch).double().cpu().numpy())
    return ticks, np.concatenate(energies).reshape(points, points)


def plot_landscape(ticks: np.ndarray, energy: np.ndarray, path: str | Path,
                   title: str = "") -> Path:
    """PNG of ``energy − energy at the centre`` (eV): 3D surface and contour map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rel = energy - energy[len(ticks) // 2, len(ticks) // 2]
    ii, jj = np.meshgrid(ticks, ticks, indexing="ij")
    fig = plt.figure(figsize=(11, 5.2))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    ax.plot_surface(ii, jj, rel, cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel("i (Å, along D1)")
    ax.set_ylabel("j (Å, along D2)")
    ax.set_zlabel("E − E(X) (eV)")
    ax.locator_params(axis="x", nbins=4)
    ax.locator_params(axis="y", nbins=4)
    ax2 = fig.add_subplot(1, 2, 2)
    cs = ax2.contourf(ii, jj, rel, levels=30, cmap="viridis")
    ax2.contour(ii, jj, rel, levels=15, colors="k", linewidths=0.4)
    ax2.plot([0], [0], "r+", markersize=12, label="X")
    ax2.set_xlabel("i (Å, along D1)")
    ax2.set_ylabel("j (Å, along D2)")
    ax2.set_aspect("equal")
    ax2.legend(loc="upper right", fontsize=8)
    fig.colorbar(cs, ax=ax2, label="E − E(X) (eV)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.subplots_adjust(bottom=0.13)  # room for the contour map's x label under the 3D axes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def landscape(backbone, objective, z: np.ndarray, pos: np.ndarray, out: str | Path,
              extent: float = 0.2, points: int = 41, seed: int = 0, device: str = "cpu",
              title: str = "") -> tuple[Path, Path]:
    """Evaluate, plot and save: ``<out>.png`` and ``<out>.npz``; returns both paths."""
    from denoise3d.data.md17 import atomic_save

    import copy

    out = Path(out)
    out = out.with_suffix("") if out.suffix in (".png", ".npz") else out
    # float64: absolute energies (−300 eV and below) leave float32 only ~3e-5 eV of resolution
    backbone, objective = copy.deepcopy(backbone).double(), copy.deepcopy(objective).double()
    d1, d2 = random_directions(len(z), seed)
    ticks, energy = energy_grid(backbone, objective, z, pos, d1, d2, extent, points,
                                device=device)
    png = plot_landscape(ticks, energy, out.with_name(out.name + ".png"), title)
    npz = out.with_name(out.name + ".npz")
    atomic_save(npz, {"i": ticks, "j": ticks, "energy_eV": energy, "D1": d1, "D2": d2,
                      "z": z, "pos": pos, "seed": np.array(seed)})
    return png, npz
