"""Generic structure readers (XYZ, extxyz, SDF, ASE db, directories of them) → the on-disk cache.

Every reader yields :class:`Structure` records one at a time, so a file of millions of molecules
is streamed into :class:`~denoise3d.data.writer.CacheWriter` with bounded memory.

==========================  ===================================================================
file                        reader
==========================  ===================================================================
``.xyz``, ``.extxyz``       ASE (``ase.io.iread``: every frame of a multi-frame file), Å
``.sdf``, ``.mol``,         RDKit (``ForwardSDMolSupplier``, ``removeHs=False``,
``.sdf.gz``                 ``sanitize=False``): the file's atoms exactly as given, Å
``.db``                     ASE database (every row)
a directory                 every file above inside it (recursively, sorted by path)
==========================  ===================================================================

Hydrogens (SDF). PCQM4Mv2's ``pcqm4m-v2-train.sdf`` (3,378,606 DFT geometries) ships heavy atoms
only (OGB: "we do not provide atom H", snap-stanford/ogb#336). By default we keep a file's atoms
as given — PCQM4Mv2 is then pretrained on heavy atoms, as Zaidi et al. did. ``add_hydrogens=True``
adds them with RDKit (``Chem.AddHs(mol, addCoords=True)``: geometric placement, not DFT
positions; molecules RDKit cannot sanitise are an error naming the file and record).

Errors are one-line ``ValueError``\\ s naming the file, the record and the problem.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from denoise3d.data.elements import MAX_Z
from denoise3d.data.storage import HOP_SETTINGS, fingerprint_files

XYZ_SUFFIXES = (".xyz", ".extxyz")
SDF_SUFFIXES = (".sdf", ".mol", ".sdf.gz")
DB_SUFFIXES = (".db",)
SUFFIXES = XYZ_SUFFIXES + SDF_SUFFIXES + DB_SUFFIXES


@dataclass
class Structure:
    """One molecule or periodic structure: ``z`` (n,) int64, ``pos`` (n, 3) float64 Å, a name,
    (if known) SMILES, and for a periodic frame ``cell`` (3, 3) Å and ``pbc`` (3,) bool."""

    z: np.ndarray
    pos: np.ndarray
    name: str = ""
    smiles: str = ""
    cell: np.ndarray | None = None
    pbc: np.ndarray | None = None


def file_suffix(path: Path) -> str:
    name = path.name.lower()
    return ".sdf.gz" if name.endswith(".sdf.gz") else path.suffix.lower()


def structure_files(path: str | Path) -> list[Path]:
    """``path`` itself if a file, else every structure file below the directory (sorted)."""
    path = Path(path)
    if path.is_file():
        if file_suffix(path) not in SUFFIXES:
            raise ValueError(f"{path}: unknown structure file type (known: {', '.join(SUFFIXES)})")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no structure file or directory at {path}")
    files = sorted(p for p in path.rglob("*") if p.is_file() and file_suffix(p) in SUFFIXES)
    if not files:
        raise ValueError(f"{path}: no structure files ({', '.join(SUFFIXES)}) in the directory")
    return files


MIN_DISTANCE = 0.1  # Å: two atoms closer than this are one atom written twice


def checked(z, pos, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The structure check every entry point runs: atoms present, supported elements, finite
    coordinates, no two atoms within ``MIN_DISTANCE``; one-line ``ValueError`` naming ``where``."""
    from scipy.spatial import cKDTree

    z = np.asarray(z, dtype=np.int64)
    pos = np.asarray(pos, dtype=np.float64)
    if len(z) == 0:
        raise ValueError(f"{where}: no atoms")
    if z.min() < 1 or z.max() > MAX_Z:
        raise ValueError(f"{where}: unsupported element, atomic number "
                         f"{int(z.min() if z.min() < 1 else z.max())} (1..{MAX_Z} supported)")
    if not np.isfinite(pos).all():
        raise ValueError(f"{where}: non-finite coordinates")
    close = cKDTree(pos).query_pairs(MIN_DISTANCE, output_type="ndarray")
    if len(close):
        i, j = close[0]
        raise ValueError(f"{where}: atoms {i} and {j} coincide (closer than {MIN_DISTANCE} Å)")
    return z, pos


def read_xyz(path: str | Path) -> Iterator[Structure]:
    """Every frame of an XYZ / extxyz file (ASE). A plain xyz file whose comment line is free
    text that ASE's extxyz parser misreads (words like ``Properties``) is read as plain xyz
    (:func:`read_plain_xyz`), which also names the frame of an unknown element symbol. Periodic
    frames keep their cell (``Lattice``, ``pbc``): bonds are then perceived by the minimum image."""
    import ase.io

    path = Path(path)
    try:
        frames = list(ase.io.iread(path, index=":"))
    except Exception as e:  # noqa: BLE001 - ASE raises many kinds; try plain xyz, else one line
        try:
            yield from read_plain_xyz(path)
            return
        except _NotPlainXyz:
            raise ValueError(f"{path}: not a readable xyz/extxyz file ({e})") from None
    for k, atoms in enumerate(frames):
        where = f"{path}: frame {k}"
        z, pos = checked(atoms.numbers, atoms.positions, where)
        yield Structure(z, pos, f"{path.name}:{k}", str(atoms.info.get("smiles", "")),
                        *periodic_cell(atoms, where))


def periodic_cell(atoms, where: str) -> tuple:
    """``(cell (3, 3), pbc (3,))`` of a periodic ``Atoms``, ``(None, None)`` for a molecule; a
    one-line error if a periodic direction has no cell vector."""
    if not atoms.pbc.any():
        return None, None
    if atoms.cell.rank < int(atoms.pbc.sum()):
        raise ValueError(f"{where}: pbc={atoms.pbc.tolist()} but the cell "
                         f"{np.round(atoms.cell.array, 4).tolist()} has no length in a periodic direction")
    return np.array(atoms.cell.array), np.array(atoms.pbc)


class _NotPlainXyz(Exception):
    pass


def read_plain_xyz(path: Path) -> Iterator[Structure]:
    """Plain xyz: per frame an atom count, a free-text comment, then ``symbol x y z`` lines (Å).
    Raises ``_NotPlainXyz`` if the file is not laid out so; an unknown element symbol is a
    one-line ``ValueError`` naming the frame."""
    from denoise3d.data.elements import atomic_number

    lines = path.read_text().splitlines()
    i, k = 0, 0
    out = []
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i].split()[0])
            rows = [ln.split() for ln in lines[i + 2:i + 2 + n]]
            if len(rows) != n or any(len(r) < 4 for r in rows):
                raise ValueError
            pos = [[float(v) for v in r[1:4]] for r in rows]
        except (ValueError, IndexError):
            raise _NotPlainXyz from None
        try:
            z = [int(r[0]) if r[0].isdigit() else atomic_number(r[0]) for r in rows]
        except ValueError as e:
            raise ValueError(f"{path}: frame {k}: {e}") from None
        out.append(Structure(*checked(z, pos, f"{path}: frame {k}"), f"{path.name}:{k}"))
        i, k = i + 2 + n, k + 1
    yield from out


def rdkit_structure(mol, where: str, add_hydrogens: bool, embed_2d: bool = False,
                    seed: int = 0) -> Structure:
    """A molfile record as a Structure; 2D records are refused, or with ``embed_2d`` replaced by
    one seeded RDKit ETKDG + MMFF conformer of their molecule (hydrogens added)."""
    from rdkit import Chem

    if add_hydrogens:
        try:
            Chem.SanitizeMol(mol)
            mol = Chem.AddHs(mol, addCoords=True)
        except Exception as e:  # RDKit raises several types
            raise ValueError(f"{where}: cannot add hydrogens ({e})") from None
    if mol.GetNumConformers() == 0:
        raise ValueError(f"{where}: no coordinates")
    if not mol.GetConformer().Is3D() and mol.GetNumAtoms() > 1:
        if not embed_2d:
            raise ValueError(f"{where}: 2D coordinates (a 2D molfile, all z = 0): these models "
                             f"need 3D structures (data.embed_2d=true embeds a 3D conformer)")
        from denoise3d.data.conformers import conformers

        name = mol.GetProp("_Name") if mol.HasProp("_Name") else ""
        try:
            smiles = Chem.MolToSmiles(mol)
        except Exception:  # noqa: BLE001 - RDKit raises several types
            smiles = ""
        found = conformers(smiles, k=1, seed=seed) if smiles else []
        if not found:
            raise ValueError(f"{where}: 2D record that RDKit cannot embed in 3D")
        z, pos, _ = found[0]
        return Structure(*checked(z, pos, where), name, Chem.MolToSmiles(Chem.MolFromSmiles(smiles)))
    z = [a.GetAtomicNum() for a in mol.GetAtoms()]
    z, pos = checked(z, mol.GetConformer().GetPositions(), where)
    try:
        smiles = Chem.MolToSmiles(Chem.RemoveHs(mol))
    except Exception:  # unsanitisable records keep their atoms, just no SMILES
        smiles = ""
    name = mol.GetProp("_Name") if mol.HasProp("_Name") else ""
    return Structure(z, pos, name, smiles)


def read_sdf_molecules(path: str | Path) -> Iterator[tuple[int, object]]:
    """``(record index, RDKit Mol)`` of every record of an SDF / MOL file (optionally gzipped),
    atoms exactly as given (``removeHs=False``, ``sanitize=False``), property tags kept."""
    from rdkit import Chem

    path = Path(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        supplier = Chem.ForwardSDMolSupplier(f, removeHs=False, sanitize=False)
        for k, mol in enumerate(supplier):
            if mol is None:
                raise ValueError(f"{path}: record {k}: not a valid molfile record")
            yield k, mol


def read_sdf(path: str | Path, add_hydrogens: bool = False,
             embed_2d: bool = False) -> Iterator[Structure]:
    """Every record of an SDF / MOL file (optionally gzipped); see the module docstring for H."""
    for k, mol in read_sdf_molecules(path):
        yield rdkit_structure(mol, f"{path}: record {k}", add_hydrogens, embed_2d, seed=k)


def read_ase_db(path: str | Path) -> Iterator[Structure]:
    """Every row of an ASE database (``ase.db``)."""
    import ase.db

    path = Path(path)
    with ase.db.connect(path) as db:
        for row in db.select():
            where = f"{path}: row {row.id}"
            z, pos = checked(row.numbers, row.positions, where)
            yield Structure(z, pos, str(row.get("name", row.id)), str(row.get("smiles", "")),
                            *periodic_cell(row.toatoms(), where))


def read_structures(path: str | Path, add_hydrogens: bool = False,
                    embed_2d: bool = False) -> Iterator[Structure]:
    """Every molecule of a structure file, or of all structure files in a directory."""
    for f in structure_files(path):
        suffix = file_suffix(f)
        if suffix in XYZ_SUFFIXES:
            yield from read_xyz(f)
        elif suffix in SDF_SUFFIXES:
            yield from read_sdf(f, add_hydrogens, embed_2d)
        else:
            yield from read_ase_db(f)


def structures_source(path: str | Path, add_hydrogens: bool = False,
                      embed_2d: bool = False) -> dict:
    """Fingerprint of a structure file / directory and the settings that shape the cache."""
    files = structure_files(path)
    fp = fingerprint_files(files)
    return {"dataset": "structures", "path": str(Path(path).resolve()), "n_files": len(files),
            "sha1": hashlib.sha1(repr(fp).encode()).hexdigest(), "add_hydrogens": add_hydrogens,
            **({"embed_2d": True} if embed_2d else {}),
            "hops": HOP_SETTINGS}


def write_structures(writer, structures: Iterable[Structure]) -> None:
    """Append ``structures`` to a :class:`~denoise3d.data.writer.CacheWriter` (names, SMILES;
    cells if the writer stores them; periodic and molecular structures do not mix)."""
    for s in structures:
        if (s.cell is not None) != writer.cells:
            raise ValueError(f"{s.name}: {'not ' if writer.cells else ''}periodic, unlike the "
                             f"first structure; keep periodic and molecular data in separate datasets")
        writer.add(s.z, s.pos, cell=s.cell, pbc=s.pbc, names=s.name, smiles=s.smiles)
