"""QM9 readers, the targets table and atom references, against known QM9 rows."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from denoise3d.data import qm9 as qm9mod
from denoise3d.data.dataset import load_qm9
from denoise3d.data.elements import MAX_Z
from denoise3d.data.qm9 import (N_QM9, TARGET_NAMES, TARGETS, atomref, read_qm9_csv,
                                read_xyz_dir, read_xyz_file)
from denoise3d.units import HARTREE_EV

# dsgdb9nsd_000001.xyz, verbatim (tabs and the trailing tab as in the original file)
METHANE_XYZ = """5
gdb 1\t157.7118\t157.70997\t157.70699\t0.\t13.21\t-0.3877\t0.1171\t0.5048\t35.3641\t0.044749\t-40.47893\t-40.476062\t-40.475117\t-40.498597\t6.469\t
C\t-0.0126981359\t 1.0858041578\t 0.0080009958\t-0.535689
H\t 0.002150416\t-0.0060313176\t 0.0019761204\t 0.133921
H\t 1.0117308433\t 1.4637511618\t 0.0002765748\t 0.133922
H\t-0.540815069\t 1.4475266138\t-0.8766437152\t 0.133923
H\t-0.5238136345\t 1.4379326443\t 0.9063972942\t 0.133923
1341.307\t1341.3284\t1341.365\t1562.6731\t1562.7453\t3038.3205\t3151.6034\t3151.6788\t3151.7078
C\tC\t
InChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4
"""
# dsgdb9nsd_000003.xyz (water) rewritten with Mathematica '*^' exponents, as some QM9 files have
WATER_XYZ = """3
gdb 3\t799.58812\t437.90386\t282.94545\t1.8511\t6.31\t-2.928*^-1\t0.0687\t0.3615\t19.0002\t2.1375*^-2\t-76.404702\t-76.401867\t-76.400922\t-76.422349\t6.002\t
O\t-3.43604951*^-2\t 0.9775395708\t 7.6015923*^-3\t-0.589706
H\t 6.47664923*^-2\t 2.05721989*^-2\t 1.5346341*^-3\t 0.294853
H\t 0.8717903737\t 1.3007924048\t 6.931336*^-4\t 0.294853
1671.4222\t3803.6305\t3907.698
O\tO\t
InChI=1S/H2O/h1H2\tInChI=1S/H2O/h1H2
"""


def test_full_dataset_and_methane(qm9):
    assert len(qm9) == N_QM9 == 130_831
    assert qm9.target_names == TARGET_NAMES
    m = qm9.molecule(0)  # row 0 = methane, dsgdb9nsd_000001
    assert m.z.tolist() == [6, 1, 1, 1, 1]
    np.testing.assert_array_equal(m.pos[2], np.float32([1.0117308433, 1.4637511618, 0.0002765748]))
    assert m.targets["homo"] == pytest.approx(-0.3877 * HARTREE_EV, rel=1e-12)  # -10.5499 eV
    assert m.targets["homo"] == pytest.approx(-10.54985, abs=1e-5)
    assert m.targets["u0"] == pytest.approx(-40.47893 * HARTREE_EV, rel=1e-12)
    assert m.targets["mu"] == 0.0 and m.targets["alpha"] == 13.21 and m.targets["cv"] == 6.469
    assert qm9.smiles(0) == "C" and str(qm9.arrays["names"][0]) == "dsgdb9nsd_000001"
    ids = np.asarray(qm9.arrays["ids"])
    assert ids[0] == 1 and ids[-1] == 133_885 and (np.diff(ids) > 0).all()


def test_known_rows(qm9):
    water, acetylene, ethanol = qm9.molecule(2), qm9.molecule(3), qm9.molecule(13)
    assert water.z.tolist() == [8, 1, 1] and qm9.smiles(2) == "O"
    assert acetylene.z.tolist() == [6, 6, 1, 1]
    np.testing.assert_array_equal(acetylene.pos[0], np.float32([0.5995394918, 0.0, 1.0]))
    assert ethanol.z.tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1] and qm9.smiles(13) == "CCO"
    first_of_part2 = qm9.molecule(43_610)  # dsgdb9nsd_044747.xyz, 15 atoms
    assert int(qm9.arrays["ids"][43_610]) == 44_747 and len(first_of_part2.z) == 15
    np.testing.assert_array_equal(first_of_part2.pos[0],
                                  np.float32([0.0052264067, 0.1154499981, 0.5693715273]))
    assert qm9.natoms.min() == 3 and qm9.natoms.max() == 29
    assert set(np.unique(np.asarray(qm9.arrays["z"]))) == {1, 6, 7, 8, 9}


def test_targets_table():
    assert TARGET_NAMES == ("mu", "alpha", "homo", "lumo", "gap", "r2", "zpve",
                            "u0", "u", "h", "g", "cv")
    for name in ("homo", "lumo", "gap", "zpve", "u0", "u", "h", "g"):
        t = TARGETS[name]
        assert (t.file_unit, t.internal_unit, t.report_unit) == ("Ha", "eV", "meV")
        assert t.to_internal == HARTREE_EV and t.report_factor == 1000.0
    for name, unit in (("mu", "D"), ("alpha", "a0^3"), ("r2", "a0^2"), ("cv", "cal/mol/K")):
        t = TARGETS[name]
        assert (t.file_unit, t.internal_unit, t.report_unit, t.to_internal, t.report_factor) == \
            (unit, unit, unit, 1.0, 1.0)


def test_atomref():
    u0 = atomref("u0")
    assert u0.shape == (MAX_Z + 1,)
    assert u0[1] == pytest.approx(-0.500273 * HARTREE_EV) and u0[9] == pytest.approx(-99.718730 * HARTREE_EV)
    assert atomref("g")[8] == pytest.approx(-75.079532 * HARTREE_EV)
    assert atomref("h")[7] == pytest.approx(-54.581501 * HARTREE_EV)
    assert np.count_nonzero(u0) == 5 and not atomref("homo").any() and not atomref("cv").any()
    with pytest.raises(ValueError, match="unknown QM9 target 'U0'"):
        atomref("U0")


def test_csv_slice_matches_full(qm9, small_csv):
    raw = read_qm9_csv([small_csv])
    assert len(raw["ids"]) == 50 and raw["atom_offset"][-1] == qm9.natoms[:50].sum()
    np.testing.assert_array_equal(raw["pos"], qm9.arrays["pos"][:raw["atom_offset"][-1]])
    np.testing.assert_array_equal(raw["targets"], qm9.targets[:50])


def test_xyz_reader(tmp_path, qm9):
    (tmp_path / "dsgdb9nsd_000001.xyz").write_text(METHANE_XYZ)
    (tmp_path / "dsgdb9nsd_000003.xyz").write_text(WATER_XYZ)
    methane = read_xyz_file(tmp_path / "dsgdb9nsd_000001.xyz")
    assert methane["id"] == 1 and methane["smiles"] == "C" and methane["z"].tolist() == [6, 1, 1, 1, 1]
    np.testing.assert_allclose(methane["targets"], qm9.targets[0], rtol=1e-15)
    water = read_xyz_file(tmp_path / "dsgdb9nsd_000003.xyz")  # '*^' exponents
    np.testing.assert_allclose(water["pos"], qm9.molecule(2).pos, atol=1e-7)
    np.testing.assert_allclose(water["targets"], qm9.targets[2], rtol=1e-12)
    raw = read_xyz_dir(tmp_path, progress=False)
    assert raw["ids"].tolist() == [1, 3] and raw["names"].tolist() == ["dsgdb9nsd_000001", "dsgdb9nsd_000003"]
    assert raw["atom_offset"].tolist() == [0, 5, 8] and raw["z"].dtype == np.int8
    (tmp_path / "uncharacterized.txt").write_text("header\n  3  O  O  1.0  2.0\n")
    assert read_xyz_dir(tmp_path, progress=False)["ids"].tolist() == [1]


def test_load_qm9_from_xyz(tmp_path):
    xyz = tmp_path / "xyz"
    xyz.mkdir()
    (xyz / "dsgdb9nsd_000001.xyz").write_text(METHANE_XYZ)
    (xyz / "dsgdb9nsd_000003.xyz").write_text(WATER_XYZ)
    ds = load_qm9(cache_dir=tmp_path / "cache", xyz_dir=xyz, verbose=False)
    assert len(ds) == 2 and (tmp_path / "cache" / "qm9_xyz" / "manifest.json").is_file()
    assert ds.batch([0, 1]).edge_index.shape == (2, 5 * 4 + 3 * 2)


# ------------------------------------------------------------------------------ bad input
def _edit_row(path, row: int, old: str, new: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    assert old in lines[row]
    lines[row] = lines[row].replace(old, new, 1)
    path.write_text("".join(lines))


@pytest.mark.parametrize("old, new, problem", [
    ("['N','H','H','H']", "['Xx','H','H','H']", "unknown element 'Xx'"),
    ("[[-0.0404260543,", "[[nan,", "NaN/inf coordinates"),
    ("[[-0.0404260543,", "[[inf,", "NaN/inf coordinates"),
    (',"InChI=1S/H3N/h1H3"', "", "malformed row, 24 fields instead of 25"),
    (",4,\"[3,0,1,0,0]\"", ",5,\"[3,0,1,0,0]\"", "malformed row, N_atoms=5 but 4 elements"),
    ("[[-0.0404260543,1.0241077531,", "[[-0.0404260543,1.02x,", "malformed row"),
    (",-0.257,", ",abc,", "malformed row"),
])
def test_csv_errors(small_csv, old, new, problem):
    _edit_row(small_csv, 2, old, new)  # line 2 = row 2 = ammonia, dsgdb9nsd_000002
    with pytest.raises(ValueError) as err:
        read_qm9_csv([small_csv])
    msg = str(err.value)
    assert msg.startswith("qm9_part1.csv row 2 (dsgdb9nsd_000002.xyz): " + problem), msg
    assert "\n" not in msg


def test_csv_not_qm9(tmp_path):
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"^other.csv: not a qm9pack QM9 CSV, missing columns"):
        read_qm9_csv([bad])


def test_missing_dataset(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(qm9mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == "qm9pack" else real(name, *a))
    with pytest.raises(ValueError, match="pip install qm9pack"):
        load_qm9(cache_dir=tmp_path, verbose=False)
    with pytest.raises(ValueError, match=r"no dsgdb9nsd_\*.xyz files in"):
        load_qm9(cache_dir=tmp_path, xyz_dir=tmp_path, verbose=False)


@pytest.mark.parametrize("old, new, problem", [
    ("H\t 1.0117308433", "Xx\t 1.0117308433", " line 5: unknown element 'Xx'"),
    ("\t 1.4637511618\t", "\tnan\t", ": NaN/inf coordinates"),
    ("\t 1.4637511618\t", "\t1.46x\t", " line 5: malformed"),
    ("gdb 1\t", "gdc 1\t", " line 2: malformed"),
    ("C\tC\t\nInChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4\n", "", " line 9: malformed"),
])
def test_xyz_errors(tmp_path, old, new, problem):
    path = tmp_path / "dsgdb9nsd_000001.xyz"
    assert old in METHANE_XYZ
    path.write_text(METHANE_XYZ.replace(old, new, 1))
    with pytest.raises(ValueError) as err:
        read_xyz_file(path)
    assert str(err.value).startswith("dsgdb9nsd_000001.xyz" + problem), str(err.value)
    assert "\n" not in str(err.value)


def test_csv_lines_helper(qm9_csv_lines):
    csv_lines = qm9_csv_lines
    assert csv_lines(2)[0].startswith("XYZ_file,Index,SMILES") and len(csv_lines(2)) == 3
