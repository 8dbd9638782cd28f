"""MD17 / rMD17 readers, the MD17 writer, trajectory datasets and their splits.

The files are written here (real MD17 files cannot be downloaded on these machines): they have
the exact key layout, dtypes and units of MD17 (sGDML ``.npz``: R, z, E (n, 1), F in kcal/mol)
and rMD17 (coords, nuclear_charges, energies (n,), forces, plus old_* keys and the splits/
folder), with synthetic values: ethanol's QM9 geometry plus noise.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from denoise3d.data.sources import load_data
from denoise3d.config import ConfigError, DataConfig
from denoise3d.data.batch import collate
from denoise3d.data.bonds import hop_matrix
from denoise3d.data.md17 import frame_split, load_md17, read_md17, write_md17
from denoise3d.testing.molecules import molecule
from denoise3d.units import BOHR_ANGSTROM, KCALMOL_EV

N_FRAMES = 40


def trajectory(rng, n=N_FRAMES):
    """z (9,), R (n, 9, 3) Å, E (n,) kcal/mol, F (n, 9, 3) kcal/mol/Å of a jiggled ethanol."""
    eth = molecule("ethanol")
    pos = eth.pos[None] + 0.03 * rng.standard_normal((n, len(eth.z), 3))
    energy = -97_000.0 + rng.standard_normal(n)  # kcal/mol, the size of MD17 DFT totals
    forces = 20.0 * rng.standard_normal((n, len(eth.z), 3))
    return eth.z.astype(np.uint8), pos, energy, forces


@pytest.fixture
def md17_file(tmp_path, rng):
    z, R, E, F = trajectory(rng)
    path = tmp_path / "ethanol_dft.npz"
    np.savez(path, R=R, z=z, E=E[:, None], F=F, name=np.array("ethanol"),
             theory=np.array("PBE+vdW-TS"), type=np.array("d"), md5=np.array("0" * 32))
    return path, (z, R, E, F)


@pytest.fixture
def rmd17_file(tmp_path, rng):
    """rMD17's download layout: npz_data/rmd17_ethanol.npz and splits/index_{train,test}_0k.csv."""
    z, R, E, F = trajectory(rng)
    (tmp_path / "npz_data").mkdir()
    (tmp_path / "splits").mkdir()
    path = tmp_path / "npz_data" / "rmd17_ethanol.npz"
    np.savez(path, nuclear_charges=z, coords=R, energies=E, forces=F,
             old_indices=np.arange(N_FRAMES), old_energies=E, old_forces=F)
    perm = rng.permutation(N_FRAMES)
    for k in range(1, 6):
        np.savetxt(tmp_path / "splits" / f"index_train_0{k}.csv", perm[:20], fmt="%d")
        np.savetxt(tmp_path / "splits" / f"index_test_0{k}.csv", perm[20:], fmt="%d")
    return path, (z, R, E, F), perm


@pytest.mark.parametrize("layout", ["md17", "rmd17"])
def test_readers_convert_to_internal_units(layout, md17_file, rmd17_file):
    path, (z, R, E, F) = (md17_file if layout == "md17" else rmd17_file[:2])
    arrays, meta = read_md17(path)
    n, m = R.shape[:2]
    assert meta["layout"] == layout
    np.testing.assert_array_equal(arrays["z"], np.tile(z, n))
    np.testing.assert_allclose(arrays["pos"], R.reshape(-1, 3), atol=1e-6)
    np.testing.assert_allclose(arrays["targets"][:, 0], E * KCALMOL_EV, rtol=1e-12)
    np.testing.assert_allclose(arrays["forces"], F.reshape(-1, 3) * KCALMOL_EV, rtol=1e-6)
    assert arrays["targets"].dtype == np.float64 and arrays["forces"].dtype == np.float32
    np.testing.assert_array_equal(arrays["atom_offset"], np.arange(n + 1) * m)
    # one hop block from the first frame, shared by every frame
    np.testing.assert_array_equal(arrays["hops"], hop_matrix(z, R[0]).reshape(-1))
    if layout == "md17":
        assert meta["name"] == "ethanol" and meta["theory"] == "PBE+vdW-TS"


def test_declared_units_are_honoured(tmp_path, rng):
    z, R, E, F = trajectory(rng, 3)
    path = tmp_path / "t.npz"
    np.savez(path, R=R / BOHR_ANGSTROM, z=z, E=E / 1000, F=F, r_unit="bohr", e_unit="eV")
    arrays, _ = read_md17(path)
    np.testing.assert_allclose(arrays["pos"], R.reshape(-1, 3), atol=1e-5)
    np.testing.assert_allclose(arrays["targets"][:, 0], E / 1000)
    np.testing.assert_allclose(arrays["forces"], (F / BOHR_ANGSTROM).reshape(-1, 3), rtol=1e-6)


def test_writer_round_trip_and_no_leftovers(tmp_path, rng):
    z, R, E, F = trajectory(rng, 5)
    path = tmp_path / "out" / "traj.npz"
    write_md17(path, z, R, E * KCALMOL_EV, F * KCALMOL_EV, method="test", seed=3)
    with np.load(path) as f:  # MD17 layout, kcal/mol in the file
        assert {"R", "z", "E", "F", "r_unit", "e_unit", "method", "seed"} <= set(f.files)
        assert f["E"].shape == (5, 1)
        np.testing.assert_allclose(f["E"][:, 0], E)
    arrays, meta = read_md17(path)
    np.testing.assert_allclose(arrays["targets"][:, 0], E * KCALMOL_EV)
    assert meta["method"] == "test" and meta["seed"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["traj.npz"]


def test_dataset_batches_energy_and_forces(md17_file):
    ds = load_md17(md17_file[0])
    assert len(ds) == N_FRAMES and ds.target_names == ("energy",)
    assert ds.atom_target_names == ("forces",)
    idx = [3, 0, 17]
    batch = ds.batch(idx)
    assert set(batch.targets) == {"energy", "forces"}
    assert batch.targets["forces"].shape == (27, 3) and batch.targets["energy"].shape == (3,)
    ref = collate([ds.molecule(i) for i in idx])
    for f in dataclasses.fields(batch):
        a, b = getattr(batch, f.name), getattr(ref, f.name)
        if f.name == "targets":
            assert all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()
        else:
            assert (a is None and b is None) or torch.equal(a, b), f.name
    np.testing.assert_allclose(batch.targets["forces"][9:18].numpy(),
                               ds.arrays["forces"][0:9])
    assert set(ds.batch(idx, targets=["forces"]).targets) == {"forces"}


def test_frame_split_is_3demgp_style():
    split = frame_split(100, 60, 10, seed=1)
    assert [len(split[k]) for k in ("train", "valid", "test")] == [60, 10, 30]
    assert len(np.unique(np.concatenate(list(split.values())))) == 100
    assert all(np.array_equal(split[k], frame_split(100, 60, 10, seed=1)[k]) for k in split)
    with pytest.raises(ValueError, match="leaves no test frames"):
        frame_split(100, 95, 5, seed=0)


def test_load_data_md17_and_rmd17_splits(md17_file, rmd17_file):
    cfg = DataConfig(dataset="md17", path=str(md17_file[0]), split="random", train_frames=25,
                     valid_frames=5)
    ds, split = load_data(cfg)
    assert [len(split[k]) for k in ("train", "valid", "test", "all")] == [25, 5, 10, 40]
    path, _, perm = rmd17_file
    cfg = DataConfig(dataset="md17", path=str(path), split="rmd17-2", train_frames=15,
                     valid_frames=5)
    ds, split = load_data(cfg)
    assert np.array_equal(split["test"], np.sort(perm[20:]))
    assert set(split["train"]) | set(split["valid"]) == set(perm[:20])
    with pytest.raises(ValueError, match="has 20 training frames"):
        load_data(dataclasses.replace(cfg, train_frames=19))
    with pytest.raises(ConfigError, match="not a split of a trajectory"):
        load_data(dataclasses.replace(cfg, split="egnn"))
    with pytest.raises(ConfigError, match="needs data.path"):
        load_data(DataConfig(dataset="md17", split="random"))


@pytest.mark.parametrize("change, words", [
    (lambda d: d.pop("F"), "neither MD17"),
    (lambda d: d.update(F=d["F"][:, :3]), "F has shape (40, 3, 3), expected (40, 9, 3)"),
    (lambda d: d["R"].__setitem__((7, 2, 0), np.nan), "frame 7: NaN/inf in R"),
    (lambda d: d.update(z=np.full(9, 200)), "unknown atomic numbers"),
    (lambda d: d.update(E=d["E"][:5]), "E has shape"),
    (lambda d: d.update(e_unit="furlongs"), "unknown e_unit 'furlongs'"),
])
def test_bad_files_are_one_line_errors(md17_file, change, words):
    path, (z, R, E, F) = md17_file
    data = {"R": R.copy(), "z": z, "E": E[:, None], "F": F}
    change(data)
    np.savez(path, **data)
    with pytest.raises(ValueError) as err:
        read_md17(path)
    assert words in str(err.value) and path.name in str(err.value)
    assert len(str(err.value).splitlines()) == 1
