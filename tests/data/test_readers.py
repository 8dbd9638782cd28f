"""Structure readers (xyz, extxyz, sdf, ASE db, directories) and GEOM's two layouts, on small
files written here. GEOM cannot be downloaded in this environment: its files are recreated in the
released layout (summary json + per-molecule pickles with ``rd_mol`` / ``boltzmannweight``;
msgpack stream of ``{smiles: {"conformers": [{"xyz": [[Z, x, y, z], ...], ...}]}}``)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from denoise3d.data import geom, readers
from denoise3d.data.pretraining import load_geom, load_structures, pretraining_split

WATER_XYZ = "3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"


def ethanol_mol(n_confs: int = 1, hydrogens: bool = True):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMultipleConfs(mol, n_confs, randomSeed=0)
    return mol if hydrogens else Chem.RemoveHs(mol)


def test_xyz_and_extxyz(tmp_path):
    (tmp_path / "w.xyz").write_text(WATER_XYZ * 2)  # two frames
    (tmp_path / "w.extxyz").write_text(
        '3\nProperties=species:S:1:pos:R:3 smiles=O\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n')
    frames = list(readers.read_xyz(tmp_path / "w.xyz"))
    assert len(frames) == 2 and frames[1].z.tolist() == [8, 1, 1]
    np.testing.assert_allclose(frames[0].pos[1], [0.96, 0, 0])
    ext = list(readers.read_xyz(tmp_path / "w.extxyz"))
    assert ext[0].smiles == "O" and ext[0].pos.shape == (3, 3)
    (tmp_path / "bad.xyz").write_text("3\nx\nO 0 0\n")
    with pytest.raises(ValueError, match="bad.xyz"):
        list(readers.read_xyz(tmp_path / "bad.xyz"))


def test_sdf_keeps_atoms_or_adds_hydrogens(tmp_path):
    """PCQM4Mv2-like heavy-atom SDF: atoms kept as given by default, H added on request."""
    from rdkit import Chem

    with Chem.SDWriter(str(tmp_path / "heavy.sdf")) as w:
        w.write(ethanol_mol(hydrogens=False))
        w.write(ethanol_mol(hydrogens=True))
    as_given = list(readers.read_sdf(tmp_path / "heavy.sdf"))
    assert [len(s.z) for s in as_given] == [3, 9] and as_given[0].smiles == "CCO"
    with_h = list(readers.read_sdf(tmp_path / "heavy.sdf", add_hydrogens=True))
    assert [len(s.z) for s in with_h] == [9, 9]
    np.testing.assert_allclose(with_h[0].pos[:3], as_given[0].pos, atol=1e-4)
    (tmp_path / "bad.sdf").write_text("not a molfile\n$$$$\n")
    with pytest.raises(ValueError, match="bad.sdf: record 0"):
        list(readers.read_sdf(tmp_path / "bad.sdf"))


def test_ase_db_and_directory(tmp_path):
    import ase.db
    from ase import Atoms

    (tmp_path / "d").mkdir()
    with ase.db.connect(tmp_path / "d" / "m.db") as db:
        db.write(Atoms("OH2", [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]), name="water")
        db.write(Atoms("CH4", [[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                               [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]]))  # no coinciding atoms
    (tmp_path / "d" / "sub").mkdir()
    (tmp_path / "d" / "sub" / "w.xyz").write_text(WATER_XYZ)
    (tmp_path / "d" / "notes.txt").write_text("ignored")
    rows = list(readers.read_ase_db(tmp_path / "d" / "m.db"))
    assert [len(r.z) for r in rows] == [3, 5] and rows[0].name == "water"
    assert [len(s.z) for s in readers.read_structures(tmp_path / "d")] == [3, 5, 3]
    ds = load_structures(tmp_path / "d", cache_dir=tmp_path / "cache", verbose=False)
    assert len(ds) == 3 and ds.natoms.tolist() == [3, 5, 3]
    assert ds.path == load_structures(tmp_path / "d", tmp_path / "cache", verbose=False).path
    assert len(load_structures(ds.path)) == 3  # a cache directory is used as is
    with pytest.raises(ValueError, match="no structure files"):
        readers.structure_files(tmp_path / "cache")


def _geom_rdkit_folder(root):
    """GEOM rdkit_folder layout: summary_qm9.json + qm9/<name>.pickle."""
    (root / "qm9").mkdir(parents=True)
    mol = ethanol_mol(n_confs=4)
    from rdkit import Chem

    confs = []
    for i, w in enumerate([0.1, 0.4, 0.2, 0.3]):
        one = Chem.Mol(mol, confId=mol.GetConformers()[i].GetId())
        confs.append({"rd_mol": one, "boltzmannweight": w, "totalenergy": -150.0 - i, "geom_id": i})
    summary = {}
    for smiles, name in [("CCO", "ethanol"), ("OCC", "ethanol2")]:
        with open(root / "qm9" / f"{name}.pickle", "wb") as f:
            pickle.dump({"smiles": smiles, "conformers": confs, "uniqueconfs": 4}, f)
        summary[smiles] = {"pickle_path": f"qm9/{name}.pickle", "uniqueconfs": 4}
    (root / "summary_qm9.json").write_text(json.dumps(summary))
    return mol


def test_geom_rdkit_folder_top_k_and_exclusion(tmp_path):
    from denoise3d.data.conformers import SplitFilter

    mol = _geom_rdkit_folder(tmp_path / "rdkit_folder")
    got = list(geom.read_geom(tmp_path / "rdkit_folder", k=2))
    assert [s.name for s in got] == ["CCO#1", "CCO#3", "OCC#1", "OCC#3"]  # weights 0.4, 0.3
    np.testing.assert_allclose(got[0].pos, mol.GetConformer(mol.GetConformers()[1].GetId())
                               .GetPositions())
    assert len(got[0].z) == 9
    only = list(geom.read_geom(tmp_path / "rdkit_folder", k=10, exclude=SplitFilter(["OCC"])))
    assert only == []  # CCO and OCC are the same molecule: both excluded
    ds = load_geom(tmp_path / "rdkit_folder", k=3, cache_dir=tmp_path / "cache", verbose=False)
    assert len(ds) == 6 and ds.smiles(0) == "CCO"


def test_geom_msgpack(tmp_path):
    import msgpack

    xyz = [[8, 0, 0, 0], [1, 0.96, 0, 0], [1, -0.24, 0.93, 0]]
    chunks = [{"O": {"conformers": [{"xyz": xyz, "boltzmannweight": w, "geom_id": i}
                                    for i, w in enumerate([0.2, 0.5, 0.3])], "charge": 0}},
              {"C": {"conformers": [{"xyz": [[6, 0, 0, 0]] + [[1, *r] for r in np.array(
                  [[1, 1, 1], [-1, -1, 1], [-1, 1, -1], [1, -1, -1]]) * 0.63],  # tetrahedral CH4
                                     "boltzmannweight": 1.0}]}}]
    with open(tmp_path / "qm9_crude.msgpack", "wb") as f:
        for c in chunks:
            f.write(msgpack.packb(c))
    got = list(geom.read_geom(tmp_path / "qm9_crude.msgpack", k=2))
    assert [s.name for s in got] == ["O#1", "O#2", "C#0"]
    assert got[0].z.tolist() == [8, 1, 1] and got[2].z.tolist() == [6, 1, 1, 1, 1]


def test_pretraining_split():
    s = pretraining_split(100, seed=1)
    assert len(s["train"]) == 95 and len(s["valid"]) == 5 and len(s["test"]) == 0
    assert sorted(np.concatenate([s["train"], s["valid"]]).tolist()) == list(range(100))
    assert len(pretraining_split(2, 0)["valid"]) == 1 and len(pretraining_split(1, 0)["train"]) == 1


def test_geom_through_config_and_cli(tmp_path, capsys):
    from denoise3d.data.sources import load_data
    from denoise3d.cli import main
    from denoise3d.config import DataConfig

    _geom_rdkit_folder(tmp_path / "rf")
    ds, split = load_data(DataConfig(dataset="geom", path=str(tmp_path / "rf"), top_k=2,
                                     cache_dir=str(tmp_path / "cache")))
    assert len(ds) == 4 and len(split["train"]) == 3 and len(split["valid"]) == 1
    assert main(["data", "build", str(tmp_path / "rf"), "--geom", "--top-k", "1",
                 "--out", str(tmp_path / "built")]) == 0
    assert "structures 2" in capsys.readouterr().out
    assert len(load_structures(tmp_path / "built")) == 2


def test_inputs_from_bug_reports_are_read_or_refused_in_one_line(tmp_path):
    """Free-text xyz comments read as plain xyz; unknown symbols, coinciding atoms, a periodic
    direction without a cell vector and 2D molfiles are one-line errors naming the frame; a
    periodic frame keeps its cell."""
    from ase import Atoms
    from rdkit import Chem

    from denoise3d.data.readers import read_structures

    (tmp_path / "free.xyz").write_text("3\nwater Properties are nice\nO 0 0 0\nH 0.96 0 0\n"
                                       "H -0.24 0.93 0\n")
    assert list(next(read_structures(tmp_path / "free.xyz")).z) == [8, 1, 1]
    cases = {
        "xx.xyz": ("2\n\nH 0 0 0\nH 0.74 0 0\n2\n\nXx 0 0 0\nH 1 0 0\n", "frame 1: unknown element 'Xx'"),
        "twice.xyz": ("2\n\nC 0 0 0\nC 0 0 0.01\n", "frame 0: atoms 0 and 1 coincide"),
    }
    for name, (text, words) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=words) as e:
            list(read_structures(tmp_path / name))
        assert "\n" not in str(e.value)
    import ase.io

    ase.io.write(tmp_path / "box.extxyz", Atoms("H2", [[0, 0, 0], [0.74, 0, 0]], cell=[5, 5, 5],
                                                pbc=True))
    box = next(read_structures(tmp_path / "box.extxyz"))
    assert box.cell.tolist() == np.diag([5.0, 5, 5]).tolist() and box.pbc.all()
    ase.io.write(tmp_path / "flat.extxyz", Atoms("H2", [[0, 0, 0], [0.74, 0, 0]], cell=[5, 5, 0],
                                                 pbc=True))
    with pytest.raises(ValueError, match="frame 0: pbc=.* no length in a periodic direction"):
        list(read_structures(tmp_path / "flat.extxyz"))
    mol = Chem.MolFromSmiles("CCO")  # 2D: RDKit computes 2D coordinates for the molfile
    Chem.MolToMolFile(mol, str(tmp_path / "flat.mol"))
    with pytest.raises(ValueError, match="record 0: 2D coordinates"):
        list(read_structures(tmp_path / "flat.mol"))


def test_a_2d_molfile_is_embedded_in_3d_only_when_asked(tmp_path):
    from rdkit import Chem

    from denoise3d.config import load_config
    from denoise3d.data.sources import load_data

    writer = Chem.SDWriter(str(tmp_path / "flat.sdf"))
    for smiles in ("CCO", "CC=O"):
        writer.write(Chem.MolFromSmiles(smiles))  # 2D depictions
    writer.close()
    cfg = load_config(None, ["data.dataset=structures", f"data.path={tmp_path / 'flat.sdf'}",
                             f"data.cache_dir={tmp_path}"]).data
    with pytest.raises(ValueError, match="record 0: 2D coordinates.*data.embed_2d=true"):
        load_data(cfg)
    ds, _ = load_data(load_config(None, ["data.dataset=structures", "data.embed_2d=true",
                                         f"data.path={tmp_path / 'flat.sdf'}",
                                         f"data.cache_dir={tmp_path}"]).data)
    assert ds.natoms.tolist() == [9, 7]  # hydrogens added, 3D coordinates
    assert np.ptp(np.asarray(ds.arrays["pos"])[:, 2]) > 0.5
