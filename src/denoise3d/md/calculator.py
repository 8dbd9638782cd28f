"""An ASE calculator serving a fine-tuned force field (``finetune.task=energy_force``).

Energies in eV, forces in eV/Å (ASE's units, also ours). Each call builds the one-molecule
:class:`~denoise3d.data.batch.Batch` of the current positions: the fully connected graph with the
3D-EMGP hop edge types. The bond graph is checked on every call (covalent radii, a cheap distance
test): while the atomic numbers and the bonds stay the same the cached hop types are reused; when
either changes (another molecule, a bond formed, a bond stretched past ``BREAK_FACTOR``) the hops
are perceived again from the new geometry (:func:`denoise3d.data.bonds.covalent_bonds`). Structures with an element absent
from the training data are refused (``allow_unseen_elements=True`` lifts that); a composition
never seen in training is warned about once. Periodic cells are not supported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from denoise3d.data.batch import Molecule, collate
from denoise3d.data.bonds import BOND_FACTOR, covalent_bonds, hops_from_adjacency
from denoise3d.data.elements import COVALENT_RADII

__all__ = ["Denoise3DCalculator"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# A bond counts as broken only beyond 1.5 (r_i + r_j) (C-H: 1.6 Å), not at the perception
# threshold 1.15 (r_i + r_j) (C-H: 1.23 Å), which thermal C-H stretches cross at MD temperatures:
# with the threshold alone the hop types flickered during the 300 K NVE run of
# tests/md/test_dynamics.py and the total energy jumped (a discontinuous energy surface).
BREAK_FACTOR = 1.5


class Denoise3DCalculator(Calculator):
    """``Denoise3DCalculator(checkpoint, device="cpu")``: energy (eV) and forces (eV/Å).

    ``topology``: "auto" (default) re-perceives the hop types when the bond graph changes;
    "fixed" keeps the first structure's while the atomic numbers stay the same (MD of one
    molecule whose bonds must not change, as its force field was trained).

    ``dtype`` "float32" (default) or "float64" (e.g. for finite-difference checks). ``model``:
    a ``(backbone, objective)`` pair to serve instead of a checkpoint (tests, notebooks).
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, checkpoint: str | Path | None = None, device: str = "cpu",
                 dtype: str | torch.dtype = "float32", model: tuple | None = None,
                 allow_unseen_elements: bool = False, topology: str = "auto", **kwargs):
        super().__init__(**kwargs)
        if (checkpoint is None) == (model is None):
            raise ValueError("give either a checkpoint or model=(backbone, objective)")
        self.domain = None  # the training domain (checkpoints only)
        if model is None:
            from denoise3d.jobs.energy_force import load_force_field

            _, backbone, objective, self.domain = load_force_field(
                checkpoint, allow_unseen=allow_unseen_elements)
        else:
            backbone, objective = model
        self.dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        self.device = torch.device(device)
        self.backbone = backbone.to(self.device, self.dtype).eval()
        self.objective = objective.to(self.device, self.dtype).eval()
        if topology not in ("auto", "fixed"):
            raise ValueError(f"topology must be 'auto' or 'fixed', got {topology!r}")
        self.fixed = topology == "fixed"  # keep the first bond graph while the atoms are the same
        self.topology: tuple | None = None  # (z (N,), bonds (N, N) bool, hops (N, N))
        self.perceived = 0  # how many times the hop types were perceived (tests, diagnostics)

    def reset_topology(self) -> None:
        """Perceive bonds again from the next structure."""
        self.topology = None

    def bonds_changed(self, z: np.ndarray, pos: np.ndarray) -> bool:
        """Whether the atoms or the bond graph differ from the cached ones: a cached bond longer
        than ``BREAK_FACTOR`` (r_i + r_j), or a new pair closer than the perception threshold."""
        if self.topology is None or not np.array_equal(self.topology[0], z):
            return True
        if self.fixed:
            return False
        bonds = self.topology[1]
        d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)  # (N, N), Å
        r = COVALENT_RADII[z][:, None] + COVALENT_RADII[z][None, :]
        formed = (d < BOND_FACTOR * r) & ~bonds
        np.fill_diagonal(formed, False)
        return bool((bonds & (d > BREAK_FACTOR * r)).any() or formed.any())

    def hops(self, atoms) -> np.ndarray:
        """(N, N) bond hops of ``atoms``: the cached ones while the atomic numbers and the bond
        graph are unchanged (:meth:`bonds_changed`), else perceived again from this geometry
        (and the training domain checked)."""
        z, pos = atoms.get_atomic_numbers(), atoms.get_positions()
        if not self.bonds_changed(z, pos):
            return self.topology[2]
        bonds = covalent_bonds(z, pos)
        if self.domain is not None:
            from denoise3d.data.elements import MAX_Z

            self.domain.check(np.bincount(z, minlength=MAX_Z + 1), "Denoise3DCalculator")
        self.topology = (z.copy(), bonds, hops_from_adjacency(bonds))
        self.perceived += 1
        return self.topology[2]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.atoms.pbc.any():
            raise ValueError("Denoise3DCalculator: periodic systems are not supported")
        z, pos = self.atoms.get_atomic_numbers(), self.atoms.get_positions()
        batch = collate([Molecule(z=z, pos=pos, hops=self.hops(self.atoms))])
        batch = batch.to(self.device, self.dtype).replace(
            pos=torch.as_tensor(pos, dtype=self.dtype, device=self.device))  # full precision
        energy, forces = self.objective.predict(self.backbone, batch)
        self.results = {"energy": float(energy[0]),
                        "forces": forces.cpu().numpy().astype(np.float64)}
