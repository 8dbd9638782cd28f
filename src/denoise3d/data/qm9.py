"""QM9 offline: the 12 targets with their units, atom reference energies, and two readers.

Sources (no downloads):

* the CSV files shipped by the PyPI package ``qm9pack`` (all 130,831 characterised molecules,
  properties in Hartree / Debye / bohr units, coordinates in Å, one SMILES per row);
* the original ``dsgdb9nsd_*.xyz`` files (a directory of them), for users who have them.

Both readers return the same raw arrays (see :func:`read_qm9_csv`), with targets already in
internal units (eV for energies, see :data:`TARGETS`). Errors are one-line ``ValueError``\\ s that
name the file, the molecule and the problem.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from denoise3d.data.elements import MAX_Z, Z_OF
from denoise3d.units import EV_MEV, HARTREE_EV


@dataclass(frozen=True)
class Target:
    """One QM9 property: where it is in the files, its unit, and how it is converted."""

    name: str  # short name used everywhere (``batch.targets[name]``)
    column: str  # qm9pack CSV column
    file_unit: str
    to_internal: float  # internal = file value * to_internal
    internal_unit: str
    report_unit: str  # customary unit for metrics (``homo_mae_meV``)
    report_factor: float  # report = internal value * report_factor


def _energy(name: str, column: str) -> Target:
    return Target(name, column, "Ha", HARTREE_EV, "eV", "meV", EV_MEV)


def _as_is(name: str, column: str, unit: str) -> Target:
    return Target(name, column, unit, 1.0, unit, unit, 1.0)


# Order = order of the properties in the xyz header line (after "gdb idx A B C").
TARGETS: dict[str, Target] = {t.name: t for t in (
    _as_is("mu", "Dipole_debye", "D"),
    _as_is("alpha", "Polarizability_bohr3", "a0^3"),
    _energy("homo", "HOMO_au"),
    _energy("lumo", "LUMO_au"),
    _energy("gap", "HOMO_LUMO_gap_au"),
    _as_is("r2", "R2_bohr2", "a0^2"),
    _energy("zpve", "ZPVE_au"),
    _energy("u0", "InternalEnergy_0K_au"),
    _energy("u", "InternalEnergy_298K_au"),
    _energy("h", "Enthalphy_298K_au"),  # sic: qm9pack's spelling
    _energy("g", "GibbsFreeEnergy_298K_au"),
    _as_is("cv", "Heatcapacity_Cv_cal_mol_K", "cal/mol/K"),
)}
TARGET_NAMES: tuple[str, ...] = tuple(TARGETS)
N_QM9 = 130_831  # characterised molecules (QM9 minus its 3,054 "uncharacterized" ones)

# QM9's atomref table (B3LYP/6-31G(2df,p) energies of the free atoms), Hartree.
_ATOMREF_HA = {  # z: (U0, U, H, G)
    1: (-0.500273, -0.498857, -0.497912, -0.510927),
    6: (-37.846772, -37.845355, -37.844411, -37.861317),
    7: (-54.583861, -54.582445, -54.581501, -54.598897),
    8: (-75.064579, -75.063162, -75.062219, -75.079532),
    9: (-99.718730, -99.717314, -99.716370, -99.733544),
}
_ATOMREF_COLUMN = {"u0": 0, "u": 1, "h": 2, "g": 3}


def atomref(name: str) -> np.ndarray:
    """(MAX_Z + 1,) per-atom reference energy of target ``name`` in eV; zeros where undefined.

    ``E_atomisation = E - atomref[z].sum()``; all zeros for targets without references.
    """
    if name not in TARGETS:
        raise ValueError(f"unknown QM9 target {name!r}; known: {', '.join(TARGET_NAMES)}")
    ref = np.zeros(MAX_Z + 1, dtype=np.float64)
    if name in _ATOMREF_COLUMN:
        for z, values in _ATOMREF_HA.items():
            ref[z] = values[_ATOMREF_COLUMN[name]] * HARTREE_EV
    return ref


_TO_INTERNAL = np.array([t.to_internal for t in TARGETS.values()])  # (12,)

# --------------------------------------------------------------------------------- qm9pack CSV
_CSV_COLUMNS = ("XYZ_file", "Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang")
_INSTALL_HINT = "install it with `pip install qm9pack` (offline data, no download at run time)"


def qm9pack_data_dir() -> Path:
    """The ``data/`` folder of the installed ``qm9pack`` (found without importing it)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"QM9 dataset not found: package qm9pack is not installed; "
                         f"{_INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def qm9pack_csv_files() -> list[Path]:
    """The three qm9pack CSV files, in order (molecules 1 … 133,885 minus uncharacterised)."""
    folder = qm9pack_data_dir()
    files = [folder / f"qm9_part{k}.csv" for k in (1, 2, 3)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"QM9 dataset not found: {', '.join(missing)} missing in {folder}; "
                         f"reinstall with `pip install --force-reinstall qm9pack`")
    return files


class _Rows:
    """CSV rows of several files plus where each came from (for error messages)."""

    def __init__(self, paths: Sequence[Path], progress: bool = False):
        csv.field_size_limit(sys.maxsize)
        self.progress = progress
        self.rows: list[list[str]] = []
        self.starts: list[int] = []  # index of each file's first row in ``rows``
        self.paths = [Path(p) for p in paths]
        for path in self.paths:
            self.starts.append(len(self.rows))
            self._read(path)
        if not self.rows:
            raise ValueError(f"{', '.join(p.name for p in self.paths)}: no molecules")

    def _read(self, path: Path) -> None:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None) or []
            missing = [c for c in _CSV_COLUMNS + tuple(t.column for t in TARGETS.values())
                       if c not in header]
            if missing:
                raise ValueError(f"{path.name}: not a qm9pack QM9 CSV, missing columns {missing}")
            if not hasattr(self, "col"):
                self.col = {c: header.index(c) for c in header}
            elif [self.col.get(c) for c in header] != list(range(len(header))):
                raise ValueError(f"{path.name}: columns differ from {self.paths[0].name}")
            from tqdm import tqdm

            for row in tqdm(reader, desc=f"reading {path.name}", unit=" rows", leave=False,
                            disable=not self.progress, mininterval=0.5):
                if len(row) != len(header):
                    self.rows.append(row)
                    raise ValueError(f"{self.where(len(self.rows) - 1)}: malformed row, "
                                     f"{len(row)} fields instead of {len(header)}")
                self.rows.append(row)

    def where(self, k: int) -> str:
        """'qm9_part1.csv row 17 (dsgdb9nsd_000017.xyz)' for global row ``k`` (rows from 1)."""
        f = int(np.searchsorted(self.starts, k, side="right")) - 1
        row = self.rows[k]
        name = row[self.col["XYZ_file"]] if len(row) > self.col["XYZ_file"] else "?"
        return f"{self.paths[f].name} row {k - self.starts[f] + 1} ({name})"

    def column(self, name: str) -> list[str]:
        c = self.col[name]
        return [r[c] for r in self.rows]


def _symbols_to_z(symbols: Iterable[str]) -> list[int]:
    """Atomic numbers, 0 for unknown symbols (reported by the caller)."""
    lut = {}
    out = []
    for s in symbols:
        z = lut.get(s)
        if z is None:
            z = lut[s] = Z_OF.get(s.strip().capitalize(), 0)
        out.append(z)
    return out


def _parse_row(rows: _Rows, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slow, strict parse of one CSV row: (z (n,), pos (n, 3) Å, targets (12,) internal units).

    Used to find and describe the first bad row when the vectorised parse fails.
    """
    row, col, where = rows.rows[k], rows.col, rows.where(k)
    try:
        n = int(row[col["N_atoms"]])
        symbols = row[col["Elements"]].strip("[] ").replace("'", "").replace('"', "").split(",")
        pos = np.array([float(x) for x in
                        row[col["XYZ_Ang"]].replace("[", "").replace("]", "").split(",")])
        targets = np.array([float(row[col[t.column]]) for t in TARGETS.values()])
    except ValueError as e:
        raise ValueError(f"{where}: malformed row ({e})") from None
    z = np.array(_symbols_to_z(symbols), dtype=np.int64)
    if n < 1 or len(symbols) != n or pos.size != 3 * n:
        raise ValueError(f"{where}: malformed row, N_atoms={n} but {len(symbols)} elements "
                         f"and {pos.size} coordinates")
    if (z == 0).any():
        raise ValueError(f"{where}: unknown element {symbols[int(np.argmin(z))].strip()!r}")
    if not np.isfinite(pos).all():
        raise ValueError(f"{where}: NaN/inf coordinates")
    if not np.isfinite(targets).all():
        raise ValueError(f"{where}: NaN/inf property values")
    return z, pos.reshape(n, 3), targets * _TO_INTERNAL


class _FastPathFailed(Exception):
    pass


def _fast_parse(rows: _Rows) -> dict[str, np.ndarray]:
    """Vectorised parse of all rows; raises ``_FastPathFailed`` on anything unexpected."""
    try:
        natoms = np.array(rows.column("N_atoms"), dtype=np.int64)
        el_col, xyz_col = rows.column("Elements"), rows.column("XYZ_Ang")
        n_el = np.array([s.count(",") + 1 for s in el_col])
        n_xyz = np.array([s.count(",") + 1 for s in xyz_col])
        if (natoms < 1).any() or (n_el != natoms).any() or (n_xyz != 3 * natoms).any():
            raise _FastPathFailed
        symbols = ",".join(el_col).replace("[", "").replace("]", "").replace("'", "")
        z = np.array(_symbols_to_z(symbols.split(",")), dtype=np.int8)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # fromstring warns when it stops at bad text
            pos = np.fromstring(",".join(xyz_col).replace("[", "").replace("]", ""), sep=",")
        targets = np.array([[r[rows.col[t.column]] for t in TARGETS.values()]
                            for r in rows.rows], dtype=np.float64)
    except (ValueError, DeprecationWarning, RuntimeWarning) as e:
        raise _FastPathFailed from e
    total = int(natoms.sum())
    if z.size != total or pos.size != 3 * total or (z == 0).any():
        raise _FastPathFailed
    if not (np.isfinite(pos).all() and np.isfinite(targets).all()):
        raise _FastPathFailed
    return {"z": z, "pos": pos.reshape(total, 3).astype(np.float32),
            "atom_offset": np.concatenate([[0], np.cumsum(natoms)]),
            "targets": targets * _TO_INTERNAL}


def read_qm9_csv(paths: Sequence[str | Path] | None = None,
                 progress: bool = False) -> dict[str, np.ndarray]:
    """Read qm9pack CSV files (default: all three) into flat arrays.

    Returns ``z`` (total_atoms,) int8, ``pos`` (total_atoms, 3) float32 Å, ``atom_offset``
    (n + 1,) int64, ``targets`` (n, 12) float64 internal units (columns :data:`TARGET_NAMES`),
    ``ids`` (n,) int64 QM9 index (1-based, as in the file names), ``names`` (n,) str
    ('dsgdb9nsd_000001'), ``smiles`` (n,) str.
    """
    rows = _Rows([Path(p) for p in paths] if paths is not None else qm9pack_csv_files(), progress)
    try:
        out = _fast_parse(rows)
    except _FastPathFailed:
        for k in range(len(rows.rows)):
            _parse_row(rows, k)  # raises the precise one-line error
        raise ValueError(f"{', '.join(p.name for p in rows.paths)}: could not be parsed") from None
    try:
        out["ids"] = np.array(rows.column("Index"), dtype=np.int64)
    except ValueError:
        bad = next(k for k, s in enumerate(rows.column("Index")) if not s.strip().isdigit())
        raise ValueError(f"{rows.where(bad)}: malformed row, Index not an integer") from None
    out["names"] = np.array([s.removesuffix(".xyz") for s in rows.column("XYZ_file")])
    out["smiles"] = np.array(rows.column("SMILES"))
    return out


# --------------------------------------------------------------------------- original xyz files
class _Malformed(Exception):
    pass


def _xyz_float(token: str) -> float:
    """Parse a number that may use Mathematica's exponent notation ('1.2*^-6')."""
    return float(token.replace("*^", "e"))


def read_xyz_file(path: str | Path) -> dict:
    """Read one ``dsgdb9nsd_*.xyz`` file.

    Returns ``z`` (n,) int64, ``pos`` (n, 3) float64 Å, ``targets`` (12,) internal units,
    ``id`` (int, QM9 index), ``smiles`` (GDB-17 SMILES, the first of the two on its line).
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path.name}: cannot read ({e})") from None
    line_no = 1
    try:
        n = int(lines[0].split()[0])
        line_no = 2
        header = lines[1].split()
        if header[0] != "gdb" or len(header) < 17:
            raise _Malformed("malformed, expected 'gdb idx A B C mu alpha ... G Cv'")
        idx = int(header[1])
        targets = np.array([_xyz_float(t) for t in header[5:17]]) * _TO_INTERNAL
        z, pos = np.zeros(n, dtype=np.int64), np.zeros((n, 3))
        for i in range(n):
            line_no = 3 + i
            tok = lines[2 + i].split()
            z[i] = Z_OF.get(tok[0].capitalize(), 0)
            if z[i] == 0:
                raise _Malformed(f"unknown element {tok[0]!r}")
            pos[i] = [_xyz_float(t) for t in tok[1:4]]
        line_no = n + 4
        smiles = lines[n + 3].split()[0]
    except _Malformed as e:
        raise ValueError(f"{path.name} line {line_no}: {e}") from None
    except (ValueError, IndexError) as e:
        raise ValueError(f"{path.name} line {line_no}: malformed ({e or 'line missing'})") from None
    if n < 1:
        raise ValueError(f"{path.name} line 1: malformed (natoms = {n})")
    if not np.isfinite(pos).all():
        raise ValueError(f"{path.name}: NaN/inf coordinates")
    if not np.isfinite(targets).all():
        raise ValueError(f"{path.name} line 2: NaN/inf property values")
    return {"z": z, "pos": pos, "targets": targets, "id": idx, "smiles": smiles}


def read_uncharacterized(path: str | Path) -> set[int]:
    """Indices listed in QM9's ``uncharacterized.txt`` (lines whose first token is an index)."""
    out = set()
    for line in Path(path).read_text().splitlines():
        tok = line.split()
        if len(tok) >= 4 and tok[0].isdigit():
            out.add(int(tok[0]))
    return out


def xyz_files(directory: str | Path) -> list[Path]:
    """Sorted ``dsgdb9nsd_*.xyz`` files of ``directory``; ``ValueError`` if there are none."""
    directory = Path(directory)
    files = sorted(directory.glob("dsgdb9nsd_*.xyz")) if directory.is_dir() else []
    if not files:
        raise ValueError(f"QM9 dataset not found: no dsgdb9nsd_*.xyz files in {directory}; "
                         f"use the qm9pack CSVs instead ({_INSTALL_HINT})")
    return files


def read_xyz_dir(directory: str | Path, exclude: Iterable[int] | None = None,
                 progress: bool = True) -> dict[str, np.ndarray]:
    """Read a directory of ``dsgdb9nsd_*.xyz`` files into the arrays of :func:`read_qm9_csv`.

    ``exclude``: QM9 indices to skip; default: those of ``uncharacterized.txt`` in the directory
    if present (the 3,054 molecules that QM9, EGNN and 3D-EMGP leave out), else none.
    """
    files = xyz_files(directory)
    if exclude is None:
        unc = Path(directory) / "uncharacterized.txt"
        exclude = read_uncharacterized(unc) if unc.is_file() else ()
    exclude = set(exclude)
    from tqdm import tqdm

    mols, names = [], []
    for f in tqdm(files, desc="reading QM9 xyz", disable=not progress or len(files) < 5000):
        mol = read_xyz_file(f)
        if mol["id"] not in exclude:
            mols.append(mol)
            names.append(f.stem)
    natoms = np.array([len(m["z"]) for m in mols], dtype=np.int64)
    return {
        "z": np.concatenate([m["z"] for m in mols]).astype(np.int8),
        "pos": np.concatenate([m["pos"] for m in mols]).astype(np.float32),
        "atom_offset": np.concatenate([[0], np.cumsum(natoms)]),
        "targets": np.stack([m["targets"] for m in mols]),
        "ids": np.array([m["id"] for m in mols], dtype=np.int64),
        "names": np.array(names),
        "smiles": np.array([m["smiles"] for m in mols]),
    }
