"""GEOM-style pretraining sets from SMILES: RDKit ETKDGv3 + MMFF94, k conformers per molecule.

Per molecule: ``n_embed`` (default ``max(3k, 10)``) ETKDGv3 embeddings with hydrogens, each
MMFF94-optimised (at most 2,000 iterations); the ``k`` lowest-MMFF-energy conformers are kept
(after dropping near-duplicates: heavy-atom RMSD < 0.1 Å to a kept one, without alignment of
symmetric atoms — cheap and conservative). Optionally each kept conformer is relaxed further with
GFN2-xTB (``tblite`` ASE calculator, BFGS, fmax 0.05 eV/Å, ``xtb_steps`` steps).

Test-split exclusion (:class:`SplitFilter`): a molecule is dropped when its canonical SMILES,
its canonical SMILES without stereochemistry, or its InChIKey equals that of any molecule of the
downstream test split; ``--exclude-qm9-test`` uses the EGNN / 3D-EMGP QM9 test split.

The QM9-derived GEOM-like set of 3D-EMGP (QM9 training-split molecules, 10 conformers each)::

    denoise3d data conformers --qm9-train --k 10 --exclude-qm9-test --workers 2 --out geom_qm9

Molecules RDKit cannot parse or embed are skipped and counted (printed at the end).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from denoise3d.data.storage import HOP_SETTINGS

_RDLOG_OFF = False


def _quiet_rdkit() -> None:
    global _RDLOG_OFF
    if not _RDLOG_OFF:
        from rdkit import RDLogger

        RDLogger.DisableLog("rdApp.*")
        _RDLOG_OFF = True


def molecule_keys(smiles: str) -> tuple[str, ...]:
    """(canonical SMILES, canonical SMILES without stereo, InChIKey), or () if unparsable."""
    from rdkit import Chem

    _quiet_rdkit()
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return ()
    keys = (Chem.MolToSmiles(mol), Chem.MolToSmiles(mol, isomericSmiles=False))
    inchikey = Chem.MolToInchiKey(mol)
    return keys + ((f"inchikey:{inchikey}",) if inchikey else ())


class SplitFilter:
    """``filter(smiles)`` is True when the molecule belongs to the excluded (test) set."""

    def __init__(self, smiles: Iterable[str]):
        self.keys: set[str] = set()
        self.n = 0
        for s in smiles:
            self.keys.update(molecule_keys(s))
            self.n += 1

    def __call__(self, smiles: str) -> bool:
        return any(k in self.keys for k in molecule_keys(smiles))


def read_smiles_file(path: str | Path) -> list[str]:
    """First whitespace-separated token of each line; blank lines, ``#`` comments and a
    ``smiles`` header are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no SMILES file at {path}")
    out = []
    for line in path.read_text().splitlines():
        tok = line.split()[0] if line.split() else ""
        if tok and not tok.startswith("#") and tok.lower() != "smiles":
            out.append(tok)
    return out


def qm9_smiles(split: str, cache_dir: str | Path | None = None) -> list[str]:
    """SMILES of QM9's EGNN / 3D-EMGP split ``split`` (train, valid or test)."""
    from denoise3d.data.dataset import load_qm9
    from denoise3d.data.splits import qm9_split

    ds = load_qm9(cache_dir)
    idx = qm9_split(len(ds), seed=0, legacy_rng=True)[split]
    return [ds.smiles(int(i)) for i in idx]


def _xtb_relax(z: np.ndarray, pos: np.ndarray, steps: int) -> np.ndarray:
    from ase import Atoms
    from ase.optimize import BFGS

    from denoise3d.data.xtb import xtb_calculator

    atoms = Atoms(numbers=z, positions=pos)
    atoms.calc = xtb_calculator()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=steps)
    return atoms.get_positions()


def conformers(smiles: str, k: int = 10, n_embed: int | None = None, seed: int = 0,
               xtb_steps: int = 0) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Up to ``k`` (z (n,), pos (n, 3) Å, MMFF energy kcal/mol) of one molecule, lowest first.

    Empty if RDKit cannot parse, embed or parametrise it.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem

    _quiet_rdkit()
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return []
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n_embed or max(3 * k, 10), params=params))
    if not ids or not AllChem.MMFFHasAllMoleculeParams(mol):
        return []
    results = AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=2000)  # [(not converged, E)]
    order = sorted(ids, key=lambda i: results[i][1])
    heavy = Chem.RemoveHs(mol)
    kept: list[int] = []
    for i in order:
        if len(kept) == k:
            break
        if any(AllChem.GetConformerRMS(heavy, i, j) < 0.1 for j in kept):
            continue
        kept.append(i)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    out = []
    for i in kept:
        pos = mol.GetConformer(i).GetPositions()
        if xtb_steps:
            pos = _xtb_relax(z, pos, xtb_steps)
        out.append((z, pos, float(results[i][1])))
    return out


def _job(args):
    index, smiles, k, seed, xtb_steps = args
    try:
        return index, smiles, conformers(smiles, k, seed=seed + index, xtb_steps=xtb_steps)
    except Exception:  # noqa: BLE001 - one bad molecule must not stop a million-molecule run
        return index, smiles, []


def conformer_source(smiles: Sequence[str], k: int, seed: int, xtb_steps: int,
                     excluded: int) -> dict:
    digest = hashlib.sha1("\n".join(smiles).encode()).hexdigest()
    return {"dataset": "conformers", "smiles_sha1": digest, "n_smiles": len(smiles), "k": k,
            "seed": seed, "xtb_steps": xtb_steps, "excluded_keys": excluded,
            "method": "ETKDGv3+MMFF94", "hops": HOP_SETTINGS}


def generate(smiles: Sequence[str], out: str | Path, k: int = 10, workers: int = 1,
             exclude: SplitFilter | None = None, seed: int = 0, xtb_steps: int = 0,
             progress: bool = True) -> dict:
    """Write a conformer set for ``smiles`` as a cache directory ``out``; returns counts.

    ``exclude``: molecules it matches are dropped before embedding. ``workers`` processes embed
    molecules in parallel; results are written in input order (deterministic for a seed).
    """
    from tqdm import tqdm

    from denoise3d.data.writer import CacheWriter

    smiles = list(smiles)
    keep = [s for s in smiles if not (exclude is not None and exclude(s))]
    counts = {"smiles": len(smiles), "excluded": len(smiles) - len(keep), "failed": 0,
              "molecules": 0, "conformers": 0}
    source = conformer_source(keep, k, seed, xtb_steps, len(exclude.keys) if exclude else 0)
    jobs = [(i, s, k, seed, xtb_steps) for i, s in enumerate(keep)]
    with CacheWriter(out, source, {"dataset": "conformers", "target_names": [], **source},
                     strings=("names", "smiles")) as w:
        pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
        try:
            results = pool.imap(_job, jobs, chunksize=4) if pool else map(_job, jobs)
            for index, s, confs in tqdm(results, total=len(jobs), desc="conformers",
                                        unit="mol", disable=not progress):
                counts["failed"] += not confs
                counts["molecules"] += bool(confs)
                for c, (z, pos, energy) in enumerate(confs):
                    w.add(z, pos, names=f"{index}:{c}:{energy:.4f}", smiles=s)
                    counts["conformers"] += 1
        finally:
            if pool:
                pool.terminate()
        w.meta["counts"] = counts
    if progress:
        print(f"denoise3d: {counts}\n{w.statistics()}", file=sys.stderr)
    return counts
