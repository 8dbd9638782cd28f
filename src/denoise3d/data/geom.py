"""GEOM (Axelrod & Gómez-Bombarelli 2022) conformer files → top-k :class:`Structure` records.

Two released layouts are read (GEOM cannot be downloaded here: the tests use small files written
in the same layout):

* **rdkit_folder** — ``summary_qm9.json`` / ``summary_drugs.json`` map each SMILES to a record
  with ``pickle_path`` (relative to the folder); each pickle is a dict with ``"smiles"`` and
  ``"conformers"``: a list of dicts with ``"rd_mol"`` (an RDKit ``Mol`` with hydrogens and one
  conformer, Å), ``"boltzmannweight"``, ``"totalenergy"`` (Hartree), ``"geom_id"``, ...
  A directory of such pickles without a summary is read too.
* **msgpack** — ``qm9_crude.msgpack`` / ``drugs_crude.msgpack``: a stream of dicts
  ``{smiles: {"conformers": [{"xyz": [[Z, x, y, z], ...], "boltzmannweight": w, ...}], ...}}``
  (needs the ``msgpack`` package: ``pip install msgpack``).

Per molecule the ``k`` conformers of largest Boltzmann weight are kept (ties: file order), as
3D-EMGP's GEOM-QM9 set (top-10). ``exclude(smiles)`` drops molecules, e.g. a downstream test split
(:class:`denoise3d.data.conformers.SplitFilter`).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from denoise3d.data.readers import Structure, checked


def top_k(conformers: list[dict], k: int) -> list[dict]:
    """The ``k`` conformers of largest ``boltzmannweight`` (stable: file order on ties)."""
    w = np.array([float(c.get("boltzmannweight", 0.0)) for c in conformers])
    return [conformers[i] for i in np.argsort(-w, kind="stable")[:k]]


def _from_record(smiles: str, record: dict, k: int, where: str) -> Iterator[Structure]:
    confs = record.get("conformers")
    if not isinstance(confs, list):
        raise ValueError(f"{where}: molecule {smiles}: no 'conformers' list")
    for rank, c in enumerate(top_k(confs, k)):
        name = f"{smiles}#{c.get('geom_id', rank)}"
        if "rd_mol" in c:
            mol = c["rd_mol"]
            z = [a.GetAtomicNum() for a in mol.GetAtoms()]
            pos = mol.GetConformer().GetPositions()
        elif "xyz" in c:
            xyz = np.asarray(c["xyz"], dtype=np.float64).reshape(-1, 4)
            z, pos = xyz[:, 0].round().astype(np.int64), xyz[:, 1:]
        else:
            raise ValueError(f"{where}: molecule {smiles}: conformer without 'rd_mol' or 'xyz'")
        z, pos = checked(z, pos, f"{where}: molecule {smiles}")
        yield Structure(z, pos, name, smiles)


def _pickles(path: Path) -> Iterator[tuple[str, Path]]:
    summaries = sorted(path.glob("summary*.json")) if path.is_dir() else [path]
    if path.is_dir() and not summaries:
        for p in sorted(path.rglob("*.pickle")):
            yield "", p
        return
    for s in summaries:
        for smiles, info in json.loads(s.read_text()).items():
            if "pickle_path" in info:
                yield smiles, s.parent / info["pickle_path"]


def read_geom_rdkit(path: str | Path, k: int = 10,
                    exclude: Callable[[str], bool] | None = None) -> Iterator[Structure]:
    """GEOM's rdkit_folder (or one summary json, or a directory of pickles), top-k per molecule.

    Pickles are loaded with :mod:`pickle` (RDKit objects): only read files you trust.
    """
    for smiles, p in _pickles(Path(path)):
        if smiles and exclude is not None and exclude(smiles):
            continue
        try:
            with open(p, "rb") as f:
                record = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError) as e:
            raise ValueError(f"{p}: unreadable GEOM pickle ({e})") from None
        smiles = smiles or str(record.get("smiles", ""))
        if exclude is not None and exclude(smiles):
            continue
        yield from _from_record(smiles, record, k, str(p))


def read_geom_msgpack(path: str | Path, k: int = 10,
                      exclude: Callable[[str], bool] | None = None) -> Iterator[Structure]:
    """GEOM's ``*_crude.msgpack`` / ``*_featurized.msgpack`` stream, top-k per molecule."""
    try:
        import msgpack
    except ImportError:
        raise ValueError(f"{path}: reading GEOM msgpack files needs `pip install msgpack`") from None
    with open(path, "rb") as f:
        for chunk in msgpack.Unpacker(f, raw=False, strict_map_key=False):
            if not isinstance(chunk, dict):
                raise ValueError(f"{path}: not a GEOM msgpack file (item is {type(chunk).__name__})")
            for smiles, record in chunk.items():
                if exclude is not None and exclude(smiles):
                    continue
                yield from _from_record(smiles, record, k, str(path))


def read_geom(path: str | Path, k: int = 10,
              exclude: Callable[[str], bool] | None = None) -> Iterator[Structure]:
    """Either GEOM layout, chosen by the path (``.msgpack`` file, else rdkit_folder)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no GEOM file or folder at {path}")
    if path.suffix == ".msgpack":
        return read_geom_msgpack(path, k, exclude)
    return read_geom_rdkit(path, k, exclude)
