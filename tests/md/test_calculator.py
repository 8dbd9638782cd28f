"""The ASE calculator: units, F = −∇E against finite differences, topology checks, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from denoise3d.jobs.checkpoint import backbone_entry
from denoise3d.config import load_config, to_dict
from denoise3d.md.calculator import Denoise3DCalculator
from denoise3d.train.checkpoint import CheckpointError, save_checkpoint


def test_forces_match_finite_differences_of_the_energy(force_field, ethanol_atoms):
    calc = Denoise3DCalculator(model=force_field, dtype="float64")
    atoms = ethanol_atoms.copy()
    atoms.calc = calc
    forces = atoms.get_forces()
    assert forces.shape == (9, 3) and forces.dtype == np.float64 and np.abs(forces).max() > 0.05
    h = 1e-5  # Å
    fd = np.zeros_like(forces)
    for a in range(len(atoms)):
        for k in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[a, k] += sign * h
                moved.calc = calc
                energies.append(moved.get_potential_energy())
            fd[a, k] = -(energies[0] - energies[1]) / (2 * h)
    np.testing.assert_allclose(forces, fd, rtol=1e-6, atol=1e-8)


def test_energy_is_invariant_forces_rotate_and_float32_agrees(force_field, ethanol_atoms):
    calc64 = Denoise3DCalculator(model=force_field, dtype="float64")
    e, f = calc64.get_potential_energy(ethanol_atoms), calc64.get_forces(ethanol_atoms)
    c, s = np.cos(1.27), np.sin(1.27)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    moved = ethanol_atoms.copy()
    moved.positions = ethanol_atoms.positions @ rot.T + [3.0, -1.0, 2.0]
    assert calc64.get_potential_energy(moved) == pytest.approx(e, abs=1e-9)
    np.testing.assert_allclose(calc64.get_forces(moved), f @ rot.T, atol=1e-9)
    calc32 = Denoise3DCalculator(model=force_field)
    assert calc32.get_potential_energy(ethanol_atoms) == pytest.approx(e, abs=1e-3)


def test_topology_is_perceived_again_when_the_bonds_change(force_field, ethanol_atoms):
    """The bond graph is checked on every call: unchanged -> cached hops; a broken bond or
    another molecule -> perceived again from the new geometry."""
    calc = Denoise3DCalculator(model=force_field, dtype="float64")
    hops0 = calc.hops(ethanol_atoms).copy()
    moved = ethanol_atoms.copy()
    moved.positions += 0.02  # a small MD step: same bonds
    assert np.array_equal(calc.hops(moved), hops0) and calc.perceived == 1  # reused
    stretched = ethanol_atoms.copy()
    stretched.positions[3] += 0.6 * (stretched.positions[3] - stretched.positions[0])  # C-H 1.7 Å
    assert not np.array_equal(calc.hops(stretched), hops0) and calc.perceived == 2
    assert calc.hops(stretched)[0, 3] == 4  # the broken C-H: no longer bonded
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    assert calc.hops(water).shape == (3, 3) and calc.perceived == 3
    e = calc.get_potential_energy(ethanol_atoms)
    calc.reset_topology()
    assert calc.get_potential_energy(ethanol_atoms) == e


def test_egnn_refuses_periodic_cells(force_field, ethanol_atoms):
    atoms = ethanol_atoms.copy()
    atoms.set_cell([10, 10, 10])
    atoms.pbc = True
    with pytest.raises(ValueError, match="periodic"):
        Denoise3DCalculator(model=force_field).get_potential_energy(atoms)


def test_loads_a_force_field_checkpoint_and_refuses_others(force_field, ethanol_atoms, tmp_path):
    backbone, objective = force_field
    cfg = load_config(None, ["model.hidden=16", "model.layers=2", "finetune.task=energy_force"])
    payload = {"kind": "finetune", "config": to_dict(cfg), "step": 0, "metrics": {},
               "backbone": backbone_entry(cfg.model, backbone.state_dict()),
               "objectives": {"energy_force": {"weight": 1.0, "state": objective.state_dict(),
                                               "params": {"energy_weight": 0.2,
                                                          "force_weight": 0.8}}}}
    save_checkpoint(tmp_path / "ff.pt", payload)
    from_ckpt = Denoise3DCalculator(tmp_path / "ff.pt", dtype="float64")
    direct = Denoise3DCalculator(model=force_field, dtype="float64")
    assert from_ckpt.get_potential_energy(ethanol_atoms) == pytest.approx(
        direct.get_potential_energy(ethanol_atoms), abs=1e-12)
    payload["objectives"] = {"property": payload["objectives"]["energy_force"]}
    save_checkpoint(tmp_path / "prop.pt", payload)
    with pytest.raises(CheckpointError, match="not a force field"):
        Denoise3DCalculator(tmp_path / "prop.pt")
    assert torch.get_default_dtype() == torch.float32


def test_calculator_refuses_a_structure_with_overlapping_atoms(force_field, ethanol_atoms):
    """A new structure goes through the readers' check: two atoms within 0.1 Å is one line."""
    calc = Denoise3DCalculator(model=force_field, dtype="float64")
    bad = ethanol_atoms.copy()
    bad.positions[1] = bad.positions[0] + 0.01
    with pytest.raises(ValueError, match="atoms 0 and 1 coincide"):
        calc.get_potential_energy(bad)
