"""Simulation-test fixtures: a small random force field (EGNN 16×2 + energy head) in float64.

A random model is enough for these tests: they check that energies and forces agree (finite
differences, energy conservation), not that the model is accurate. ``std = 10 eV`` gives forces
of ~0.2 eV/Å on ethanol, so MD moves the atoms and exchanges ~1 eV between kinetic and potential
energy within 100 fs.
"""

import pytest
import torch

from denoise3d.models import build_backbone
from denoise3d.objectives.energy_force import EnergyForceRegression


@pytest.fixture
def force_field():
    torch.manual_seed(0)
    backbone = build_backbone("egnn", hidden=16, layers=2)
    return backbone, EnergyForceRegression(16, mean=-300.0, std=10.0)


@pytest.fixture
def ethanol_atoms():
    from ase import Atoms

    from denoise3d.testing.molecules import molecule

    m = molecule("ethanol")
    return Atoms(numbers=m.z, positions=m.pos)
