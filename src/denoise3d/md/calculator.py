"""An ASE calculator serving a fine-tuned force field (``finetune.task=energy_force``).

Energies in eV, forces in eV/Å (ASE's units, also ours). Each call builds the one-molecule
:class:`~denoise3d.data.batch.Batch` of the current positions: the fully connected graph with the
3D-EMGP hop edge types. The bond topology is **fixed** from the first structure the calculator
sees (covalent radii, :mod:`denoise3d.data.bonds`) and reused while the atomic numbers stay the
same: bonds must not flip during MD (a stretched C–H crossing the bond threshold would change the
edge types, hence the energy, discontinuously), and training saw one topology per trajectory too.
:meth:`Denoise3DCalculator.reset_topology` forgets it. Periodic cells are not supported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from denoise3d.data.batch import Molecule, collate
from denoise3d.data.bonds import hop_matrix

__all__ = ["Denoise3DCalculator"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class Denoise3DCalculator(Calculator):
    """``Denoise3DCalculator(checkpoint, device="cpu")``: energy (eV) and forces (eV/Å).

    ``dtype`` "float32" (default) or "float64" (e.g. for finite-difference checks). ``model``:
    a ``(backbone, objective)`` pair to serve instead of a checkpoint (tests, notebooks).
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, checkpoint: str | Path | None = None, device: str = "cpu",
                 dtype: str | torch.dtype = "float32", model: tuple | None = None, **kwargs):
        super().__init__(**kwargs)
        if (checkpoint is None) == (model is None):
            raise ValueError("give either a checkpoint or model=(backbone, objective)")
        if model is None:
            from denoise3d.jobs.energy_force import load_force_field

            _, backbone, objective = load_force_field(checkpoint)
        else:
            backbone, objective = model
        self.dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        self.device = torch.device(device)
        self.backbone = backbone.to(self.device, self.dtype).eval()
        self.objective = objective.to(self.device, self.dtype).eval()
        self.topology: tuple[np.ndarray, np.ndarray] | None = None  # (z (N,), hops (N, N))

    def reset_topology(self) -> None:
        """Perceive bonds again from the next structure."""
        self.topology = None

    def hops(self, atoms) -> np.ndarray:
        """(N, N) bond hops, perceived once from the first structure with these atoms."""
        z = atoms.get_atomic_numbers()
        if self.topology is None or not np.array_equal(self.topology[0], z):
            self.topology = (z.copy(), hop_matrix(z, atoms.get_positions()))
        return self.topology[1]

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
