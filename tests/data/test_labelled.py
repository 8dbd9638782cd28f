"""Labelled structure files (data.dataset=files): ASE extxyz / db and RDKit SDF written at test
time, labels with units, one-line errors naming file, frame and key, the cache key, splits."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units as ase_units

from denoise3d.config import ConfigError, load_config
from denoise3d.data.labelled import convert
from denoise3d.data.sources import load_data
from denoise3d.testing.molecules import labelled_frames


@pytest.fixture(scope="module")
def frames():
    return labelled_frames()


@pytest.fixture(scope="module")
def extxyz(frames, tmp_path_factory):
    import ase.io

    path = tmp_path_factory.mktemp("files") / "mixed.extxyz"
    ase.io.write(path, frames)
    return path


def cfg(path, tmp_path, *more):
    return load_config(None, ["data.dataset=files", f"data.path={path}",
                              f"data.cache_dir={tmp_path / 'cache'}", *more]).data


def test_extxyz_labels_in_internal_units(frames, extxyz, tmp_path):
    ds, split = load_data(cfg(extxyz, tmp_path))
    assert set(ds.labels) == {"energy", "mu", "forces"}
    assert ds.labels["energy"].unit == "eV" and ds.labels["mu"].unit == ""  # unitless
    assert ds.labels["forces"].per == "atom" and ds.labels["forces"].report_unit == "meV/Å"
    assert sum(len(v) for k, v in split.items() if k != "all") == len(frames) == 18
    batch = ds.batch([0, 7])
    np.testing.assert_allclose(batch.targets["energy"].numpy(),
                               [frames[0].get_potential_energy(), frames[7].get_potential_energy()])
    np.testing.assert_allclose(batch.targets["forces"][:3].numpy(), frames[0].get_forces(), atol=1e-5)
    assert batch.targets["mu"][1] == pytest.approx(frames[7].info["mu"])


def test_declared_units_are_converted_once(frames, extxyz, tmp_path):
    """kcal/mol energies, Hartree/bohr forces and D read back in eV, eV/Å and D."""
    import ase.io

    kcal = ase_units.kcal / ase_units.mol
    ha_bohr = ase_units.Hartree / ase_units.Bohr
    other = []
    for a in frames:
        b = a.copy()
        b.info = {"E_kcal": a.get_potential_energy() / kcal, "mu": a.info["mu"]}
        b.arrays["F_au"] = a.get_forces() / ha_bohr
        other.append(b)
    path = tmp_path / "units.extxyz"
    ase.io.write(path, other)
    ds, _ = load_data(cfg(path, tmp_path, "data.energy_key=E_kcal", "data.forces_key=F_au",
                          "data.units={energy: kcal/mol, forces: Hartree/bohr, mu: D}"))
    assert ds.labels["mu"].unit == "D" and ds.labels["energy"].unit == "eV"
    batch = ds.batch([4])
    assert float(batch.targets["energy"][0]) == pytest.approx(frames[4].get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(batch.targets["forces"].numpy(), frames[4].get_forces(), atol=1e-5)
    assert convert("kJ/mol") == (pytest.approx(ase_units.kJ / ase_units.mol), "eV")
    assert convert("bohr") == (pytest.approx(ase_units.Bohr), "Å")
    with pytest.raises(ValueError, match="unknown unit"):
        convert("kcal/mol/furlong")
    for typo in ("kcal", "Hartrees"):  # a mistyped energy unit is never taken as a factor of 1
        with pytest.raises(ValueError, match="unknown unit"):
            convert(typo)
    with pytest.raises(ValueError, match="'eV' is not a force unit"):
        convert("eV", kind="forces")
    assert convert("D") == (1.0, "D") and convert("cal/mol/K") == (1.0, "cal/mol/K")


def test_changing_a_unit_rebuilds_the_cache(extxyz, tmp_path):
    a, _ = load_data(cfg(extxyz, tmp_path))
    b, _ = load_data(cfg(extxyz, tmp_path, "data.units={energy: kcal/mol}"))
    assert a.path != b.path
    assert float(b.target("energy")[0]) == pytest.approx(
        float(a.target("energy")[0]) * ase_units.kcal / ase_units.mol)


def test_ase_db_and_sdf_tags(frames, tmp_path):
    import ase.db
    from rdkit import Chem
    from rdkit.Chem import AllChem

    with ase.db.connect(tmp_path / "set.db") as db:
        for a in frames[:6]:
            db.write(a, mu=a.info["mu"])
    ds, _ = load_data(cfg(tmp_path / "set.db", tmp_path, "data.fractions=[0.5, 0.25, 0.25]"))
    assert {"energy", "forces", "mu"} <= set(ds.labels)
    assert float(ds.target("energy")[0]) == pytest.approx(frames[0].get_potential_energy())

    writer = Chem.SDWriter(str(tmp_path / "mols.sdf"))
    for k, smiles in enumerate(["CCO", "CO", "CCN", "CC=O"]):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(mol, randomSeed=k)
        mol.SetProp("gap", str(5.0 + k))
        writer.write(mol)
    writer.close()
    ds, split = load_data(cfg(tmp_path / "mols.sdf", tmp_path, "data.units={gap: eV}",
                              "data.fractions=[0.5, 0.25, 0.25]"))
    assert ds.labels["gap"].unit == "eV" and ds.labels["gap"].report_unit == "meV"
    np.testing.assert_allclose(ds.target("gap"), [5.0, 6.0, 7.0, 8.0])
    assert ds.smiles(0) == "CCO"


@pytest.mark.parametrize("spoil, words", [
    (lambda fr: fr[5].info.pop("mu"), "frame 5: no label 'mu'"),
    (lambda fr: fr[3].info.update(mu=float("nan")), "frame 3: label 'mu' is not finite"),
    (lambda fr: fr[2].info.update(mu="big"), "frame 2: label 'mu' is not numeric"),
    (lambda fr: fr[4].info.update(mu=[1.0, 2.0]), "frame 4: label 'mu' has shape (2,)"),
])
def test_bad_labels_are_one_line_errors_naming_file_frame_and_key(frames, tmp_path, spoil, words):
    import ase.io

    bad = [a.copy() for a in frames]
    for a, b in zip(frames, bad):
        b.calc = a.calc
    spoil(bad)
    path = tmp_path / "bad.extxyz"
    ase.io.write(path, bad)
    with pytest.raises(ValueError) as e:
        load_data(cfg(path, tmp_path))
    assert str(path) in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


def test_split_by_molecule_keeps_each_molecule_on_one_side(extxyz, tmp_path):
    ds, split = load_data(cfg(extxyz, tmp_path, "data.split_by=molecule",
                              "data.fractions=[0.34, 0.33, 0.33]"))
    sides = {name: {ds.smiles(i) for i in idx} for name, idx in split.items() if name != "all"}
    assert all(len(s) == 1 for s in sides.values())  # one molecule (6 frames) per side
    assert len(set.union(*sides.values())) == 3
    _, split = load_data(cfg(extxyz, tmp_path, "data.split_by=molecule"))  # 0.8 / 0.1 / 0.1
    assert [len(split[k]) for k in ("train", "valid", "test")] == [6, 6, 6]  # one molecule each
    import ase.io

    ase.io.write(tmp_path / "two.extxyz", ase.io.read(extxyz, ":12"))  # water and methanol
    with pytest.raises(ConfigError, match="test split.*would be empty.*2 molecules"):
        load_data(cfg(tmp_path / "two.extxyz", tmp_path, "data.split_by=molecule"))


def test_csv_of_smiles_gets_seeded_conformers_and_its_columns(tmp_path):
    (tmp_path / "props.csv").write_text("smiles,gap,name\nCCO,7.1,ethanol\nCO,7.9,methanol\n"
                                        "CC=O,5.2,acetaldehyde\nCCN,6.3,ethylamine\n")
    ds, split = load_data(cfg(tmp_path / "props.csv", tmp_path, "data.units={gap: eV}",
                              "data.fractions=[0.5, 0.25, 0.25]"))
    assert list(ds.labels) == ["gap"] and ds.labels["gap"].unit == "eV"  # "name": not numeric
    np.testing.assert_allclose(ds.target("gap"), [7.1, 7.9, 5.2, 6.3])
    assert ds.smiles(2) == "CC=O" and ds.natoms[0] == 9  # hydrogens added
    again, _ = load_data(cfg(tmp_path / "props.csv", tmp_path / "other", "data.units={gap: eV}",
                             "data.fractions=[0.5, 0.25, 0.25]"))
    np.testing.assert_array_equal(np.asarray(ds.arrays["pos"]), np.asarray(again.arrays["pos"]))
    (tmp_path / "bad.csv").write_text("smiles,gap\nCCO,1\nC1CC,2\n")
    with pytest.raises(ValueError, match=r"bad.csv: row 1: RDKit cannot embed SMILES 'C1CC'"):
        load_data(cfg(tmp_path / "bad.csv", tmp_path))


def test_csv_joined_by_id_to_a_structure_file(frames, tmp_path):
    import ase.io

    named = []
    for k, a in enumerate(frames[:6]):
        b = a.copy()
        b.info = {"name": f"conf{k}"}
        named.append(b)
    ase.io.write(tmp_path / "structs.extxyz", named)
    (tmp_path / "labels.csv").write_text("id,gap\n" + "".join(
        f"conf{k},{4.0 + k}\n" for k in (5, 0, 3, 1, 2, 4)))
    ds, _ = load_data(cfg(tmp_path / "labels.csv", tmp_path,
                          f"data.structures={tmp_path / 'structs.extxyz'}",
                          "data.fractions=[0.5, 0.25, 0.25]"))
    np.testing.assert_allclose(ds.target("gap"), [9.0, 4.0, 7.0, 5.0, 6.0, 8.0])
    np.testing.assert_allclose(np.asarray(ds.molecule(0).pos), frames[5].positions, atol=1e-5)
    (tmp_path / "missing.csv").write_text("id,gap\nconf9,1.0\n")
    with pytest.raises(ValueError, match="missing.csv: row 0: no structure named 'conf9'"):
        load_data(cfg(tmp_path / "missing.csv", tmp_path,
                      f"data.structures={tmp_path / 'structs.extxyz'}"))


def test_a_vector_label_becomes_one_label_per_component(frames, tmp_path):
    import ase.io

    with_vectors = []
    for a in frames:
        b = a.copy()
        b.calc = a.calc
        b.info["mu_vec"] = np.array([a.info["mu"], -a.info["mu"], 0.5])  # D
        with_vectors.append(b)
    ase.io.write(tmp_path / "vec.extxyz", with_vectors)
    ds, _ = load_data(cfg(tmp_path / "vec.extxyz", tmp_path, "data.units={mu_vec: D}"))
    assert {"mu_vec[0]", "mu_vec[1]", "mu_vec[2]"} <= set(ds.labels)
    assert ds.labels["mu_vec[1]"].unit == "D"
    np.testing.assert_allclose(ds.target("mu_vec[1]"), [-a.info["mu"] for a in frames])


def test_the_level_of_theory_is_read_from_every_structure(frames, tmp_path, capsys):
    """One stated level of theory is reported as it is; mixed ones (or some structures without
    one) are all named, most frequent first, with a warning (was: the first frame's alone)."""
    import ase.io

    def write(name, theories):
        out = []
        for a, t in zip(frames, theories):
            b = a.copy()
            b.calc = a.calc
            if t:
                b.info["theory"] = t
            out.append(b)
        ase.io.write(tmp_path / name, out)
        return tmp_path / name

    n = len(frames)
    ds, _ = load_data(cfg(write("one.extxyz", ["GFN2-xTB"] * n), tmp_path))
    assert ds.meta["theory"] == "GFN2-xTB" and "theory" not in ds.labels
    assert "levels of theory" not in capsys.readouterr().err
    ds, _ = load_data(cfg(write("two.extxyz", ["GFN2-xTB"] * (n - 2) + ["PBE", None]), tmp_path))
    assert ds.meta["theory"] == f"GFN2-xTB ({n - 2:,} structures) + PBE (1) + none stated (1)"
    assert "two.extxyz: the structures carry different levels of theory" in capsys.readouterr().err
    again, _ = load_data(cfg(tmp_path / "two.extxyz", tmp_path))  # from the cache: the same
    assert again.meta["theory"] == ds.meta["theory"]
    ds, _ = load_data(cfg(write("none.extxyz", [None] * n), tmp_path))
    assert ds.meta["theory"] is None
