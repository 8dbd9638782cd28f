"""Small molecules written in code, for tests: real QM9 geometries (B3LYP/6-31G(2df,p), Å).

Source: QM9 (Ramakrishnan et al. 2014) rows ``dsgdb9nsd_{000001, 000003, 000014, 001000,
002000}.xyz`` as shipped by the ``qm9pack`` CSV, coordinates rounded from 10 to 6 decimals.
"""

from __future__ import annotations

import numpy as np
import torch

from denoise3d.data.batch import Batch, Molecule, collate
from denoise3d.data.elements import atomic_number

__all__ = ["MOLECULES", "molecule", "fixture_molecules", "molecule_batch", "labelled_frames",
           "water_box"]

# name -> (element symbols, positions in Å)
MOLECULES: dict[str, tuple[str, list[list[float]]]] = {
    "methane": ("C H H H H", [  # QM9 #1, CH4
        [-0.012698, 1.085804, 0.008001], [0.002150, -0.006031, 0.001976],
        [1.011731, 1.463751, 0.000277], [-0.540815, 1.447527, -0.876644],
        [-0.523814, 1.437933, 0.906397]]),
    "water": ("O H H", [  # QM9 #3, H2O
        [-0.034360, 0.977540, 0.007602], [0.064766, 0.020572, 0.001535],
        [0.871790, 1.300792, 0.000693]]),
    "ethanol": ("C C O H H H H H H", [  # QM9 #14, CCO
        [-0.008605, 1.502038, -0.006812], [0.010993, -0.017649, -0.013770],
        [0.680888, -0.440418, -1.193132], [1.011533, 1.896620, -0.019202],
        [-0.531599, 1.880761, -0.889747], [-0.516746, 1.876118, 0.887107],
        [0.523771, -0.389123, 0.888241], [-1.020275, -0.405073, 0.016907],
        [0.695296, -1.401796, -1.201485]]),
    "dimethylimidazole": ("C N C N C C C H H H H H H H H", [  # QM9 #1000, CN1C=NC=C1C
        [0.023250, 1.443453, 0.035584], [0.006058, -0.003454, 0.027403],
        [-0.031526, -0.808809, -1.076662], [-0.038441, -2.082687, -0.765647],
        [-0.003643, -2.109319, 0.608789], [0.024519, -0.840142, 1.131181],
        [0.066232, -0.338071, 2.533988], [0.928913, 1.826797, 0.516907],
        [0.001256, 1.802709, -0.994971], [-0.847528, 1.847665, 0.562095],
        [-0.052222, -0.395457, -2.075061], [-0.000556, -3.041087, 1.155447],
        [0.962040, 0.261896, 2.738705], [-0.803473, 0.282899, 2.783672],
        [0.073724, -1.185208, 3.223715]]),
    "oxiranylpropanol": ("C C O C C C O H H H H H H H H H H", [  # QM9 #2000, CC(O)CC1CO1
        [0.041088, 1.525605, 0.027174], [0.053314, -0.000433, -0.050887],
        [-1.254691, -0.538510, 0.148009], [0.518979, -0.511915, -1.416088],
        [0.637955, -2.015520, -1.453906], [1.661185, -2.698788, -2.252359],
        [1.808156, -2.571136, -0.837270], [1.045111, 1.936807, -0.120972],
        [-0.624753, 1.942456, -0.735393], [-0.313784, 1.861444, 1.008235],
        [0.742267, -0.396821, 0.711797], [-1.534316, -0.320207, 1.042189],
        [-0.202612, -0.182768, -2.175116], [1.489757, -0.066932, -1.658607],
        [-0.278715, -2.555442, -1.221170], [1.482976, -3.709887, -2.616614],
        [2.357923, -2.110477, -2.849442]]),
}


def molecule(name: str) -> Molecule:
    """One fixture molecule as a :class:`Molecule` (hops from covalent radii at collate)."""
    symbols, pos = MOLECULES[name]
    z = np.array([atomic_number(s) for s in symbols.split()], dtype=np.int64)
    return Molecule(z=z, pos=np.array(pos, dtype=np.float64))


def fixture_molecules(names=None) -> list[Molecule]:
    """The fixture molecules (all of them by default), in ``MOLECULES`` order."""
    return [molecule(n) for n in (names or MOLECULES)]


def molecule_batch(mols=None, dtype: torch.dtype = torch.float64) -> Batch:
    """``collate`` the molecules (default: all fixtures) and convert to ``dtype``."""
    return collate(fixture_molecules() if mols is None else mols).to(dtype=dtype)


def water_box(n: int = 2, spacing: float = 3.1, seed: int = 0, tilt: float = 0.3) -> Molecule:
    """A periodic box of n³ water molecules (the fixture's QM9 water, randomly rotated, on a grid
    ``spacing`` Å apart, then wrapped into the cell): a slightly triclinic cell (``tilt`` Å of the
    second lattice vector along x), pbc in all directions. With the default 2³ = 8 molecules the
    cell (6.2 Å) is shorter than twice a 5 Å cutoff, so atoms see several images of each other."""
    from denoise3d.testing.physics import random_rotation

    rng = np.random.default_rng(seed)
    water = molecule("water")
    centred = water.pos - water.pos.mean(axis=0)
    g = torch.Generator().manual_seed(seed)
    z, pos = [], []
    for a in range(n):
        for b in range(n):
            for c in range(n):
                rot = random_rotation(n=1, generator=g)[0].numpy()
                pos.append(centred @ rot.T + spacing * np.array([a, b, c]) + rng.normal(0, 0.05, 3))
                z.append(water.z)
    cell = np.diag([spacing * n] * 3)
    cell[1, 0] = tilt
    pos = np.concatenate(pos)
    frac = np.linalg.solve(cell.T, pos.T).T % 1.0  # wrap: some molecules cross the boundary
    return Molecule(z=np.concatenate(z), pos=frac @ cell, cell=cell, pbc=np.ones(3, bool))


def labelled_frames(n_per=6, seed=0):
    """GFN2-xTB energies and forces (tblite) of displaced water, methanol and ethanol, with the
    dipole norm (D) in ``info["mu"]`` (ASE reserves "dipole" for calculator results) and the
    molecule's SMILES."""
    from ase import units
    from ase.build import molecule
    from ase.calculators.singlepoint import SinglePointCalculator
    from tblite.ase import TBLite

    rng = np.random.default_rng(seed)
    frames = []
    for name, smiles in (("H2O", "O"), ("CH3OH", "CO"), ("CH3CH2OH", "CCO")):
        for _ in range(n_per):
            atoms = molecule(name)
            atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
            atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
            e, f = atoms.get_potential_energy(), atoms.get_forces()
            mu = float(np.linalg.norm(atoms.calc.results["dipole"])) / units.Debye
            atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
            atoms.info.update(mu=mu, smiles=smiles)
            frames.append(atoms)
    return frames
