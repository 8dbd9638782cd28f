"""The ASE calculator on periodic cells (issue 18): stress as ASE defines it, checked from outside
by finite differences of the energy under strain; forces; topology across the boundary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from denoise3d.md.calculator import Denoise3DCalculator
from denoise3d.models import build_backbone
from denoise3d.objectives.energy_force import EnergyForceRegression
from denoise3d.testing.molecules import water_box


@pytest.fixture
def radius_field():
    torch.manual_seed(0)
    backbone = build_backbone("painn", hidden=16, layers=2, cutoff=4.0, num_rbf=8)
    return backbone, EnergyForceRegression(16, std=1.0, head="atomwise", scale=1.0)


@pytest.fixture
def box_atoms():
    box = water_box(tilt=0.4)
    return Atoms(numbers=box.z, positions=box.pos, cell=box.cell, pbc=True)


def test_stress_matches_finite_differences_of_the_energy(radius_field, box_atoms):
    calc = Denoise3DCalculator(model=radius_field, dtype="float64")
    atoms = box_atoms.copy()
    atoms.calc = calc
    stress = atoms.get_stress(voigt=False)  # (3, 3) eV/Å³
    assert np.abs(stress).max() > 1e-4 and np.allclose(stress, stress.T)
    h, volume = 1e-5, atoms.get_volume()
    for a, b in [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]:
        energies = []
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = sign * h
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            strained.calc = calc
            energies.append(strained.get_potential_energy())
        fd = (energies[0] - energies[1]) / (2 * h) / volume / (1 if a == b else 2)
        assert fd == pytest.approx(stress[a, b], abs=1e-7 * np.abs(stress).max() + 1e-12), (a, b)
    voigt = atoms.get_stress()
    assert voigt.shape == (6,) and voigt[3] == pytest.approx(stress[1, 2])


def test_forces_match_finite_differences_across_the_boundary(radius_field, box_atoms):
    calc = Denoise3DCalculator(model=radius_field, dtype="float64")
    atoms = box_atoms.copy()
    atoms.calc = calc
    forces = atoms.get_forces()
    h = 1e-5
    for a, k in [(0, 0), (5, 1), (13, 2), (22, 0)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[a, k] += sign * h
            moved.calc = calc
            energies.append(moved.get_potential_energy())
        assert -(energies[0] - energies[1]) / (2 * h) == pytest.approx(forces[a, k], abs=1e-7)


def test_wrapping_and_images_change_nothing(radius_field, box_atoms):
    calc = Denoise3DCalculator(model=radius_field, dtype="float64")
    e, f = calc.get_potential_energy(box_atoms), calc.get_forces(box_atoms)
    moved = box_atoms.copy()
    moved.positions += np.random.default_rng(0).integers(-1, 2, (len(moved), 3)) @ moved.cell.array
    calc2 = Denoise3DCalculator(model=radius_field, dtype="float64")
    assert calc2.get_potential_energy(moved) == pytest.approx(e, abs=1e-9)
    np.testing.assert_allclose(calc2.get_forces(moved), f, atol=1e-9)
    moved.wrap()
    assert calc2.get_potential_energy(moved) == pytest.approx(e, abs=1e-9)


def test_topology_is_cached_and_perceived_again(radius_field, box_atoms):
    calc = Denoise3DCalculator(model=radius_field, dtype="float64")
    calc.get_potential_energy(box_atoms)
    step = box_atoms.copy()
    step.positions += 0.01
    calc.get_potential_energy(step)
    assert calc.perceived == 1
    broken = box_atoms.copy()
    broken.positions[1] += 0.8 * (broken.positions[1] - broken.positions[0])  # O-H to ~1.7 Å
    calc.get_potential_energy(broken)
    assert calc.perceived == 2
    bigger = box_atoms.copy()
    bigger.set_cell(box_atoms.cell.array * 1.01, scale_atoms=True)  # NPT: same bonds, other cell
    calc.get_potential_energy(bigger)
    assert calc.perceived == 3  # the broken O-H is back: perceived again
    calc.get_potential_energy(box_atoms)
    assert calc.perceived == 3


def test_egnn_refuses_a_periodic_cell_and_molecules_have_no_stress(force_field, ethanol_atoms,
                                                                    box_atoms, radius_field):
    with pytest.raises(ValueError, match="EGNN is not defined for periodic structures"):
        Denoise3DCalculator(model=force_field).get_potential_energy(box_atoms)
    from ase.calculators.calculator import PropertyNotImplementedError

    with pytest.raises(PropertyNotImplementedError, match="stress"):
        Denoise3DCalculator(model=radius_field).get_stress(ethanol_atoms)


def test_npt_and_nve_of_a_periodic_box(radius_field, box_atoms, tmp_path):
    """NPT (MTK barostat) moves the cell; NVE conserves energy (short, float64); frames keep
    their cell in the extxyz file."""
    import ase.io

    from denoise3d.md.dynamics import run_md

    calc = Denoise3DCalculator(model=radius_field, dtype="float64")
    npt = run_md(box_atoms, calc, tmp_path / "npt.extxyz", steps=20, timestep=0.5,
                 temperature=300, thermostat="npt", interval=10, progress=False, pressure=1000.0)
    frames = ase.io.read(tmp_path / "npt.extxyz", index=":")
    assert len(frames) == 3 and frames[-1].pbc.all()
    assert frames[-1].get_volume() != pytest.approx(box_atoms.get_volume(), rel=1e-9)
    assert npt["mean_density_g_cm3"] > 0 and npt["pressure_bar"] == 1000.0
    nve = run_md(box_atoms, calc, tmp_path / "nve.extxyz", steps=40, timestep=0.25,
                 temperature=300, thermostat="nve", interval=10, progress=False)
    assert calc.perceived == 1 and nve["total_energy_max_deviation_eV"] < 1e-4  # eV; forces ~0.3 eV/Å
    assert np.isfinite(nve["total_energy_drift_meV_per_atom_per_ps"])
    nvt = run_md(box_atoms, calc, tmp_path / "nvt.extxyz", steps=20, timestep=0.5,
                 temperature=300, thermostat="langevin", interval=10, progress=False)
    assert nvt["frames"] == 3 and nvt["total_energy_drift_meV_per_atom_per_ps"] is None
    assert ase.io.read(tmp_path / "nvt.extxyz", -1).pbc.all()
    with pytest.raises(ValueError, match="periodic in all three"):
        run_md(Atoms(numbers=[8, 1, 1], positions=box_atoms.positions[:3]), calc, tmp_path / "x.extxyz", steps=1, thermostat="npt", progress=False)


def test_bond_check_from_the_radius_pairs_equals_its_own_search(box_atoms):
    """The calculator checks the bonds on the pairs of its radius-graph search (one neighbour
    search per call): same answer as the bond check's own search, bonds kept, broken or new."""
    from denoise3d.md.calculator import Topology
    from denoise3d.models.neighbours import search_pairs

    a = box_atoms
    cell, pbc = np.asarray(a.cell.array), np.asarray(a.pbc)
    topo = Topology(a.numbers, a.positions, cell, pbc)
    rng = np.random.default_rng(0)
    answers = []
    for scale in (0.01, 0.1, 0.3, 0.6):
        for _ in range(5):
            pos = a.positions + rng.normal(0, scale, a.positions.shape)
            pairs = search_pairs(4.0, torch.as_tensor(pos), torch.as_tensor(cell), torch.as_tensor(pbc))
            own = topo.bonds_changed(pos, cell)
            assert topo.bonds_changed(pos, cell, tuple(t.numpy() for t in pairs)) == own
            answers.append(own)
    assert any(answers) and not all(answers)
