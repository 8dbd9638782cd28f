"""Labelled structure files: extxyz / xyz / ASE db (read by ASE), SDF (RDKit), CSV of SMILES.

Labels:

* per structure: ``atoms.info[key]``, else the stored calculator results (``atoms.calc.results``:
  what ASE writes for ``energy``), else an ASE db row's key-value pairs; SDF: the record's
  property tags (``> <gap>``);
* per atom: ``atoms.arrays[key]``, else the calculator results (ASE writes ``forces`` there);
* a CSV of property columns: each row's numeric columns label ``conformers`` seeded RDKit ETKDG
  + MMFF conformers of its SMILES (``smiles_column``), or the structure of a structure file
  (``structures``) named by its ``id_column`` (:func:`read_csv`).

Which labels: ``energy_key`` (stored as ``energy``) and ``forces_key`` (stored as ``forces``; ``-KEY``
reads minus a gradient ``KEY``, and a key named like a gradient, e.g. ``grad``, is refused without
the minus) when the first structure has them, plus ``targets`` (names; default: every numeric scalar or short
vector label of the first structure, except the bookkeeping keys that denoise3d's own writers
add: ``rattle_sigma``, ``source_frame``, ``conformer``, ``theory``; a per-structure vector ``mu``
of length k becomes the k
labels ``mu[0]`` ... ``mu[k-1]``). Every structure must then have every label, finite and of the right shape: a
missing, non-finite or mis-shaped label is a one-line ``ValueError`` naming the file, the frame
and the key.

Units are declared per label (``units = {"energy": "kcal/mol", "forces": "kcal/mol/Å",
"gap": "eV", "dipole": "D"}``) and converted once, here, with ``ase.units`` values: energies (eV,
meV, kcal/mol, kJ/mol, Hartree) to eV, lengths (Å, bohr) to Å, forces (energy/length) to eV/Å.
Defaults: ``energy`` eV and ``forces`` eV/Å (ASE's own units); any other label without a declared
unit is unitless. A declared unit that is not an energy, length or force is kept as it is (D).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from denoise3d.data.readers import (DB_SUFFIXES, SDF_SUFFIXES, XYZ_SUFFIXES, checked,
                                    file_suffix, periodic_cell, read_sdf_molecules, rdkit_structure,
                                    structure_files)
from denoise3d.data.storage import HOP_SETTINGS, fingerprint_files


def _energy_units() -> dict[str, float]:
    from ase import units

    return {"ev": 1.0, "mev": 1e-3, "kcal/mol": units.kcal / units.mol,
            "kj/mol": units.kJ / units.mol, "hartree": units.Hartree, "ha": units.Hartree}


def _length_units() -> dict[str, float]:
    from ase import units

    return {"å": 1.0, "a": 1.0, "ang": 1.0, "angstrom": 1.0, "bohr": units.Bohr}


ENERGY_WORDS = ("ev", "kcal", "kj", "hartree", "ha", "ry")  # the start of a mistyped energy unit


def convert(unit: str, where: str = "", kind: str | None = None) -> tuple[float, str]:
    """``(factor, internal unit)``: internal = file value × factor. Energies → eV, lengths → Å,
    forces (energy/length) → eV/Å; other units are kept (factor 1), "" = unitless.

    ``kind`` "energy" or "forces" requires that kind of unit; an unknown unit that looks like an
    energy (``kcal``, ``Hartrees``) is an error rather than a silent factor of 1.
    """
    u = unit.strip()
    key = u.lower().replace(" ", "")
    energy, length = _energy_units(), _length_units()
    known = (f"energies in {', '.join(energy)}; lengths in {', '.join(length)}; forces as "
             f"energy/length, e.g. kcal/mol/Å")
    head, _, tail = key.rpartition("/")
    if key in energy and kind != "forces":
        return energy[key], "eV"
    if head in energy and tail in length and kind != "energy":
        return energy[head] / length[tail], "eV/Å"
    if head in energy and tail == "atom" and kind is None:  # an energy per atom
        return energy[head], "eV/atom"
    if kind is not None:
        raise ValueError(f"{where}{unit!r} is not a{'n energy' if kind == 'energy' else ' force'} "
                         f"unit ({known})")
    if key in length:
        return length[key], "Å"
    if any(key.startswith(w) or f"/{w}" in key for w in ENERGY_WORDS):
        raise ValueError(f"{where}unknown unit {unit!r} ({known})")
    return 1.0, u


@dataclass(frozen=True)
class LabelSpec:
    """One label to read: its name in the dataset, its key in the file, per structure or atom,
    and the conversion of its declared unit to the internal one."""

    name: str
    key: str
    per: str  # "structure" | "atom"
    factor: float
    unit: str  # internal unit after conversion ("" = unitless)
    index: int | None = None  # a component of a per-structure vector label (name "key[i]")


@dataclass
class LabelledStructure:
    z: np.ndarray  # (n,) int64
    pos: np.ndarray  # (n, 3) float64, Å
    values: dict  # {key: raw value as stored in the file}
    name: str = ""
    smiles: str = ""
    atom_keys: frozenset = frozenset()  # keys of per-atom values (arrays, per-atom results)
    cell: np.ndarray | None = None  # (3, 3) Å, periodic structures only
    pbc: np.ndarray | None = None  # (3,) bool


def _scalar(value) -> bool:
    try:
        return np.ndim(value) == 0 and np.isfinite(float(value)) and not isinstance(value, bool)
    except (TypeError, ValueError):
        return False


def _from_atoms(atoms, name: str, where: str | None = None) -> LabelledStructure:
    values = {}
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    values.update({k: v for k, v in results.items()})
    values.update({k: v for k, v in atoms.arrays.items() if k not in ("numbers", "positions")})
    values.update(atoms.info)
    per_atom = {k for k in results if k in PER_ATOM_RESULTS} | set(atoms.arrays)
    return LabelledStructure(np.asarray(atoms.numbers), np.asarray(atoms.positions), values, name,
                             str(atoms.info.get("smiles", "")), frozenset(per_atom),
                             *periodic_cell(atoms, where or name))


PER_ATOM_RESULTS = {"forces", "charges", "magmoms", "energies", "stresses"}  # ASE's per-atom outputs


def read_frames(path: Path, smiles_column: str = "smiles", conformers: int = 1,
                structures: str | None = None, id_column: str = "id",
                embed_2d: bool = False) -> Iterator[LabelledStructure]:
    """Every structure of one file with all its stored values (raw, file units)."""
    suffix = file_suffix(path)
    if suffix in XYZ_SUFFIXES:
        import ase.io

        try:
            for k, atoms in enumerate(ase.io.iread(path, index=":")):
                yield _from_atoms(atoms, f"{path.name}:{k}", f"{path}: frame {k}")
        except Exception as e:  # noqa: BLE001 - ASE raises many kinds; one line
            if isinstance(e, ValueError) and str(e).startswith(str(path)):
                raise
            raise ValueError(f"{path}: not a readable xyz/extxyz file ({e})") from None
    elif suffix in DB_SUFFIXES:
        import ase.db

        with ase.db.connect(path) as db:
            for row in db.select():
                s = _from_atoms(row.toatoms(), str(row.get("name", row.id)), f"{path}: row {row.id}")
                s.values.update(row.key_value_pairs)
                yield s
    elif suffix in SDF_SUFFIXES:
        for k, mol in read_sdf_molecules(path):
            s = rdkit_structure(mol, f"{path}: record {k}", False, embed_2d, seed=k)
            values = {}
            for key, v in mol.GetPropsAsDict().items():
                try:
                    values[key] = float(v)
                except (TypeError, ValueError):
                    values[key] = v
            yield LabelledStructure(s.z, s.pos, values, s.name or f"{path.name}:{k}", s.smiles)
    elif suffix == ".csv":
        yield from read_csv(path, smiles_column, conformers, structures, id_column)
    else:
        raise ValueError(f"{path}: unknown structure file type")


def read_csv(path: Path, smiles_column: str = "smiles", k: int = 1,
             structures: str | None = None, id_column: str = "id") -> Iterator[LabelledStructure]:
    """A CSV of property columns and either SMILES or ids: without ``structures``, ``k`` seeded
    RDKit ETKDG + MMFF conformers per row (:func:`denoise3d.data.conformers.conformers`, seed =
    the row's index); with ``structures`` (a structure file or directory), the structure whose
    name (extxyz ``name``, SDF title, ASE db ``name``) equals the row's ``id_column``. The row's
    numeric columns label them; a SMILES RDKit cannot embed or an id without a structure is a
    one-line error naming the row."""
    import csv

    from denoise3d.data.conformers import conformers

    key_column = id_column if structures else smiles_column
    named = _structures_by_name(structures) if structures else {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or key_column not in reader.fieldnames:
            raise ValueError(f"{path}: no {key_column!r} column (columns: "
                             f"{', '.join(reader.fieldnames or [])}; data."
                             f"{'id_column' if structures else 'smiles_column'} names it)")
        for k_row, row in enumerate(reader):
            key = (row.pop(key_column) or "").strip()
            if structures:
                if key not in named:
                    raise ValueError(f"{path}: row {k_row}: no structure named {key!r} in "
                                     f"{structures}")
                s = named[key]
                found, smiles = [(s.z, s.pos, None)], s.smiles
            else:
                found, smiles = conformers(key, k=k, seed=k_row), key
                if not found:
                    raise ValueError(f"{path}: row {k_row}: RDKit cannot embed SMILES {key!r}")
            values = {}
            for name, v in row.items():
                try:
                    values[name] = float(v)
                except (TypeError, ValueError):
                    values[name] = v
            for z, pos, _ in found:
                yield LabelledStructure(z, pos, values, key if structures else f"{path.name}:{k_row}",
                                        smiles)


def _structures_by_name(path: str) -> dict:
    """{name: Structure} of a structure file or directory (names must be unique)."""
    out = {}
    for s in (s for f in structure_files(path) for s in read_frames(f)):
        name = str(s.values.get("name", s.name))  # extxyz / db "name"; SDF title
        if name in out:
            raise ValueError(f"{path}: two structures named {name!r}; data.id_column needs "
                             f"unique names")
        out[name] = s
    return out


# what denoise3d's own writers put in ``info`` beside the labels (``data xtb-label --rattle``: the
# displacement and the input frame; conformer numbers): never a default target
BOOKKEEPING = frozenset({"rattle_sigma", "source_frame", "conformer", "theory"})
# per-atom keys that hold a gradient dE/dx (= -forces): read only as ``data.forces_key=-KEY``
GRADIENT_KEYS = frozenset({"grad", "grads", "gradient", "gradients", "energy_gradient", "dedx"})


def label_specs(first: LabelledStructure, where: str, energy_key: str, forces_key: str,
                targets: list | None, units: dict) -> list[LabelSpec]:
    """The labels to read, decided from the first structure and the settings."""
    specs = []
    sign, forces_key = (-1.0, forces_key[1:]) if forces_key.startswith("-") else (1.0, forces_key)
    if sign > 0 and forces_key.lower() in GRADIENT_KEYS and forces_key in first.values:
        raise ValueError(f"{where}: data.forces_key={forces_key} names a gradient dE/dx, which is "
                         f"minus the forces: data.forces_key=-{forces_key} reads its negative "
                         f"(if {forces_key!r} holds the forces themselves, rename it)")
    if energy_key in first.values:
        specs.append(("energy", energy_key, "structure"))
    if forces_key in first.values:
        specs.append(("forces", forces_key, "atom"))
    skip = {energy_key, forces_key, "smiles", "name", *BOOKKEEPING}
    if targets is None:
        targets = [k for k, v in first.values.items() if k not in skip | first.atom_keys
                   and (_scalar(v) or _vector(v))]
    for t in targets:
        if t not in first.values:
            raise ValueError(f"{where}: frame 0: no label {t!r} (it has: "
                             f"{', '.join(sorted(first.values)) or 'none'})")
        if t not in (energy_key, forces_key):
            specs.append((t, t, "structure"))
    unknown = sorted(set(units) - {n for n, _, _ in specs})
    if unknown:
        raise ValueError(f"{where}: data.units names {', '.join(unknown)}, not a label read from "
                         f"the file (labels: {', '.join(n for n, _, _ in specs) or 'none'})")
    defaults = {"energy": "eV", "forces": "eV/Å"}
    out = []
    for name, key, per in specs:
        kind = name if name in defaults else None
        factor, unit = convert(str(units.get(name, defaults.get(name, ""))), f"{where}: {name}: ",
                               kind)
        if name == "forces":
            factor *= sign
        size = _vector(first.values[key]) if per == "structure" else 0
        if size:  # a per-structure vector (e.g. a dipole vector): one label per component
            out += [LabelSpec(f"{name}[{i}]", key, per, factor, unit, i) for i in range(size)]
        else:
            out.append(LabelSpec(name, key, per, factor, unit))
    return out


def _vector(value) -> int:
    """The length of a short numeric vector (2 to 9 values: a per-structure vector label), else 0."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return 0
    return a.shape[0] if a.ndim == 1 and 1 < a.shape[0] <= 9 else 0


def label_values(s: LabelledStructure, specs: list[LabelSpec], where: str):
    """(per-structure values (n_labels,) float64, per-atom forces (n, 3) or None), internal units."""
    scalars, forces = [], None
    for spec in specs:
        if spec.key not in s.values:
            raise ValueError(f"{where}: no label {spec.key!r}")
        try:
            value = np.asarray(s.values[spec.key], dtype=np.float64) * spec.factor
        except (TypeError, ValueError):
            raise ValueError(f"{where}: label {spec.key!r} is not numeric "
                             f"({s.values[spec.key]!r})") from None
        if spec.index is not None:  # a component of a vector label
            if value.ndim != 1 or len(value) <= spec.index:
                raise ValueError(f"{where}: label {spec.key!r} has shape {value.shape}, expected "
                                 f"a vector of at least {spec.index + 1} values")
            value = value[spec.index]
        shape = (len(s.z), 3) if spec.per == "atom" else ()
        if value.shape != shape and not (spec.per == "structure" and value.shape == (1,)):
            raise ValueError(f"{where}: label {spec.key!r} has shape {value.shape}, expected "
                             f"{shape or 'a scalar'}")
        if not np.isfinite(value).all():
            raise ValueError(f"{where}: label {spec.key!r} is not finite")
        if spec.per == "atom":
            forces = value
        else:
            scalars.append(float(value.reshape(-1)[0]))
    return np.array(scalars, dtype=np.float64), forces


def labelled_files(path: str | Path) -> list[Path]:
    """A CSV file itself, or the structure files of :func:`structure_files`."""
    p = Path(path)
    return [p] if p.is_file() and p.suffix.lower() == ".csv" else structure_files(p)


def read_labelled(path: str | Path, energy_key: str = "energy", forces_key: str = "forces",
                  targets: list | None = None, units: dict | None = None,
                  smiles_column: str = "smiles", conformers: int = 1,
                  structures: str | None = None, id_column: str = "id", embed_2d: bool = False,
                  theories: Counter | None = None):
    """``(specs, iterator of (z, pos, values, forces, name, smiles, cell, pbc))`` over every
    structure of a labelled file or directory; values in internal units (see the module
    docstring); ``cell`` (3, 3) Å and ``pbc`` (3,) for periodic frames (extxyz ``Lattice`` /
    ``pbc``, ASE db cells), else None. ``theories``: counts each structure's ``info["theory"]``
    (None where a structure has none) as the iterator runs."""
    files = labelled_files(path)
    csv_options = (smiles_column, conformers, structures, id_column, embed_2d)
    first = next(iter(read_frames(files[0], *csv_options)), None)
    if first is None:
        raise ValueError(f"{files[0]}: no structures")
    specs = label_specs(first, str(files[0]), energy_key, forces_key, targets, units or {})

    def records():
        for f in files:
            frame = "record" if file_suffix(f) in SDF_SUFFIXES else "frame"
            for k, s in enumerate(read_frames(f, *csv_options)):
                where = f"{f}: {frame} {k}"
                if (s.cell is None) != (first.cell is None):
                    raise ValueError(f"{where}: {'not ' if first.cell is not None else ''}periodic, "
                                     f"unlike the first structure ({files[0]}); keep periodic and "
                                     f"molecular data in separate datasets")
                z, pos = checked(s.z, s.pos, where)
                values, forces = label_values(s, specs, where)
                if theories is not None:
                    t = s.values.get("theory")
                    theories[t if isinstance(t, str) and t else None] += 1
                yield z, pos, values, forces, s.name, s.smiles, s.cell, s.pbc

    return specs, records()


def labelled_source(path: str | Path, settings: dict) -> dict:
    """Fingerprint of the files and of every setting that shapes the cache (label keys, units)."""
    files = labelled_files(path)
    fp = hashlib.sha1(repr(fingerprint_files(files)).encode()).hexdigest()
    return {"dataset": "files", "path": str(Path(path).resolve()), "n_files": len(files),
            "sha1": fp, "hops": HOP_SETTINGS, **settings}
