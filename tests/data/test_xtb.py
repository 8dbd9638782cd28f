"""xTB trajectory generation: MD17 layout and units, provenance, resuming, atomic output."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tblite")
pytest.importorskip("ase")

from denoise3d.data import xtb  # noqa: E402
from denoise3d.data.md17 import load_md17, read_md17  # noqa: E402
from denoise3d.units import KCALMOL_EV  # noqa: E402

SHORT = dict(smiles="CCO", frames=30, interval=2, equilibrate=10, seed=5, progress=False)


@pytest.fixture(scope="module")
def ethanol_traj(tmp_path_factory):
    return xtb.generate_trajectory(tmp_path_factory.mktemp("xtb") / "eth.npz", **SHORT)


def test_layout_units_and_provenance(ethanol_traj):
    with np.load(ethanol_traj) as f:
        assert f["R"].shape == (30, 9, 3) and f["E"].shape == (30, 1) and f["F"].shape == (30, 9, 3)
        assert str(f["theory"]) == "GFN2-xTB" and str(f["e_unit"]) == "kcal/mol"
        assert float(f["temperature_K"]) == 500.0 and float(f["timestep_fs"]) == 0.5
        assert int(f["seed"]) == 5 and str(f["smiles"]) == "CCO"
        R, E, F, z = f["R"], f["E"][:, 0], f["F"], f["z"]
    # the file's labels are GFN2-xTB's, in kcal/mol: recompute one frame directly
    from ase import Atoms

    atoms = Atoms(numbers=z, positions=R[17])
    atoms.calc = xtb.xtb_calculator()
    assert E[17] * KCALMOL_EV == pytest.approx(atoms.get_potential_energy(), abs=1e-5)
    # a fresh SCF here vs one restarted from the previous step's wavefunction in the MD: tblite's
    # default convergence leaves ~1e-4 eV/Å (0.1 meV/Å) of difference in the forces
    np.testing.assert_allclose(F[17] * KCALMOL_EV, atoms.get_forces(), atol=5e-4)
    # 500 K dynamics moves the atoms; the frames are distinct
    assert np.abs(np.diff(R, axis=0)).max() > 1e-3
    ds = load_md17(ethanol_traj)
    assert len(ds) == 30 and ds.meta["theory"] == "GFN2-xTB"


def test_interrupted_run_resumes_without_touching_the_output(tmp_path, monkeypatch,
                                                             ethanol_traj):
    out = tmp_path / "eth.npz"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(xtb, "write_md17", killed)
    with pytest.raises(KeyboardInterrupt):
        xtb.generate_trajectory(out, checkpoint_every=8, **SHORT)
    monkeypatch.undo()
    partial = tmp_path / ".eth.npz.partial.npz"
    assert not out.exists() and partial.is_file()
    with np.load(partial) as f:
        assert len(f["R"]) == 24  # saved at 8, 16, 24 frames
    xtb.generate_trajectory(out, checkpoint_every=8, **SHORT)
    assert not partial.exists()
    resumed, fresh = read_md17(out)[0], read_md17(ethanol_traj)[0]
    n = 24 * 9  # atoms of the frames before the interruption: identical
    np.testing.assert_array_equal(resumed["pos"][:n], fresh["pos"][:n])
    # continued from the same positions, momenta and thermostat noise (xTB's SCF start differs)
    np.testing.assert_allclose(resumed["pos"], fresh["pos"], atol=1e-4)
    with pytest.raises(ValueError, match="other settings"):
        np.savez(partial, settings=np.array('{"smiles": "C"}'))
        xtb.generate_trajectory(out, **SHORT)


def test_bad_requests():
    with pytest.raises(ValueError, match="exactly one"):
        xtb.generate_trajectory("x.npz", progress=False)
    with pytest.raises(ValueError, match="RDKit cannot parse"):
        xtb.generate_trajectory("x.npz", smiles="C1CC", progress=False)
    with pytest.raises(ValueError, match="unknown benchmark molecule"):
        xtb.generate_benchmark_set("/tmp/nowhere", molecules=["caffeine"])


def test_a_corrupted_partial_file_is_a_one_line_error(tmp_path):
    from denoise3d.data.xtb import _partial_path, generate_trajectory

    out = tmp_path / "w.npz"
    _partial_path(out).write_bytes(b"PK\x03\x04 truncated by a killed writer")
    with pytest.raises(ValueError, match="corrupted partial trajectory.*delete it to start over"):
        generate_trajectory(out, smiles="O", frames=4, equilibrate=2, progress=False)
