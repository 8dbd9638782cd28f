"""Energy landscape (3D-EMGP Fig. 4): the grid, the directions and the PNG."""

from __future__ import annotations

import numpy as np
import pytest

from denoise3d.md.calculator import Denoise3DCalculator
from denoise3d.md.landscape import landscape, random_directions


def test_directions_are_centred_unit_rms_and_seeded():
    d1, d2 = random_directions(9, seed=3)
    for d in (d1, d2):
        np.testing.assert_allclose(d.mean(axis=0), 0, atol=1e-12)
        assert np.sqrt((d ** 2).sum(axis=1).mean()) == pytest.approx(1.0)
    assert np.array_equal(d1, random_directions(9, seed=3)[0]) and not np.allclose(d1, d2)


def test_grid_png_and_raw_data(force_field, ethanol_atoms, tmp_path):
    backbone, objective = force_field
    z, pos = ethanol_atoms.get_atomic_numbers(), ethanol_atoms.get_positions()
    png, npz = landscape(backbone, objective, z, pos, tmp_path / "eth", extent=0.1, points=9,
                         seed=2, title="test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with np.load(npz) as f:
        assert f["energy_eV"].shape == (9, 9) and np.allclose(f["i"], np.linspace(-0.1, 0.1, 9))
        grid, d1, d2 = f["energy_eV"], f["D1"], f["D2"]
    calc = Denoise3DCalculator(model=force_field, dtype="float64")
    assert grid[4, 4] == pytest.approx(calc.get_potential_energy(ethanol_atoms), abs=1e-9)
    corner = ethanol_atoms.copy()
    corner.positions = pos + 0.1 * d1 - 0.1 * d2
    assert grid[8, 0] == pytest.approx(calc.get_potential_energy(corner), abs=1e-9)
    # grid spacing: first-order change along D1 equals −F·D1 · step
    slope = (grid[5, 4] - grid[3, 4]) / 0.05
    assert slope == pytest.approx(-(calc.get_forces(ethanol_atoms) * d1).sum(), rel=1e-2)
