"""MD17 / rMD17 trajectories (``.npz``): readers, the MD17-layout writer, splits, ``load_md17``.

One file = one molecule, ``n`` frames of ``N`` atoms. The layouts:

============  ======================  ==========================  ===========================
content       MD17 (sGDML) key        rMD17 key                   unit in the file
============  ======================  ==========================  ===========================
atomic nos.   ``z`` (N,)              ``nuclear_charges`` (N,)
positions     ``R`` (n, N, 3)         ``coords`` (n, N, 3)        Å (``r_unit``, if present)
energies      ``E`` (n, 1) or (n,)    ``energies`` (n,)           kcal/mol (``e_unit``)
forces        ``F`` (n, N, 3)         ``forces`` (n, N, 3)        kcal/mol/Å (``e_unit``/Å)
============  ======================  ==========================  ===========================

The readers convert to internal units on load (Å, eV, eV/Å); files that declare sGDML's
``r_unit`` / ``e_unit`` keys are converted from the units they declare. rMD17 ships five index
splits, ``splits/index_train_0k.csv`` / ``index_test_0k.csv`` (k = 1..5, 1,000 frames each);
:func:`rmd17_split` reads them. Trajectories generated here (:mod:`denoise3d.data.xtb`) are written
by :func:`write_md17` in the MD17 layout (kcal/mol, so other MD17 tools read them too) plus
provenance keys (``method``, ``temperature_K``, ``seed``, ...).

A trajectory becomes a :class:`~denoise3d.data.dataset.MolecularDataset` (one "molecule" per frame)
with the per-molecule target ``energy`` (eV) and per-atom ``forces`` (eV/Å). All frames share
one bond-hop matrix, perceived from the first frame (bonds do not change along a trajectory;
the official 3D-EMGP code does the same), stored once. Errors are one-line ``ValueError``\\ s
naming the file, the frame and the problem.

Precision: energies are kept in float64 in the dataset, but batches carry float32 targets (as for
every dataset). GFN2-xTB totals (valence electrons only; ethanol −310 eV) keep ~0.03 meV; DFT
totals of MD17 (aspirin −17,600 eV) are rounded to ±1 meV (0.02 kcal/mol), about a tenth of the
energy MAEs reported for MD17.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from denoise3d.data.elements import MAX_Z
from denoise3d.data.bonds import hop_matrix
from denoise3d.units import BOHR_ANGSTROM, TO_INTERNAL

LAYOUTS = {  # layout: (atomic numbers, positions, energies, forces)
    "md17": ("z", "R", "E", "F"),
    "rmd17": ("nuclear_charges", "coords", "energies", "forces"),
}
_LENGTH = {"ang": 1.0, "angstrom": 1.0, "å": 1.0, "a": 1.0, "bohr": BOHR_ANGSTROM}
_ENERGY = {"kcal/mol": "kcal/mol", "kcal mol-1": "kcal/mol", "ev": "eV", "mev": "meV",
           "ha": "Ha", "hartree": "Ha"}
RMD17_SPLITS = range(1, 6)


def _scalar(f, key: str, default=None):
    """A 0-d string/number entry of an npz as a Python value (``default`` if absent)."""
    if key not in f.files:
        return default
    value = f[key]
    return value.item() if value.ndim == 0 else value.tolist()


def _unit(f, key: str, table: dict, default: str, path: Path):
    raw = _scalar(f, key, default)
    try:
        return table[str(raw).strip().lower()]
    except KeyError:
        raise ValueError(f"{path.name}: unknown {key} {raw!r} (known: {', '.join(table)})") from None


def read_md17(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read an MD17 or rMD17 ``.npz`` (layout detected from its keys) into flat arrays.

    Returns (arrays, meta). ``arrays``: ``z`` (n·N,) int8, ``pos`` (n·N, 3) float32 Å,
    ``atom_offset`` (n + 1,) int64, ``hops`` (N²,) int8 (one block shared by all frames) with
    ``hop_offset`` (n + 1,) int64 (0 for every frame, then N²), ``targets`` (n, 1) float64
    energy in eV, ``forces`` (n·N, 3) float32 eV/Å, ``ids`` (n,) frame index.
    ``meta``: layout, molecule name, level of theory and any provenance keys of the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"MD17 file not found: {path}")
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path.name}: not a readable .npz file ({e})") from None
    with f:
        layout = next((k for k, keys in LAYOUTS.items() if set(keys) <= set(f.files)), None)
        if layout is None:
            raise ValueError(f"{path.name}: neither MD17 (R, z, E, F) nor rMD17 (coords, "
                             f"nuclear_charges, energies, forces); keys are {sorted(f.files)}")
        kz, kr, ke, kf = LAYOUTS[layout]
        z, r, e, frc = (np.asarray(f[k]) for k in (kz, kr, ke, kf))
        length = _unit(f, "r_unit", _LENGTH, "Ang", path)  # Å per file length unit
        energy = _unit(f, "e_unit", _ENERGY, "kcal/mol", path)
        meta = {"layout": layout, "file": str(path.resolve()),
                **{k: _scalar(f, k) for k in f.files
                   if k not in (kz, kr, ke, kf) and f[k].ndim == 0}}
        if "name" in f.files and f["name"].ndim:  # sGDML stores some strings as 1-element arrays
            meta["name"] = str(np.asarray(f["name"]).reshape(-1)[0])
    z, pos, e_ev, f_ev = _check_shapes(path, z, r, e, frc, (kz, kr, ke, kf))
    return _flat(z, pos * length, e_ev * TO_INTERNAL[energy],
                 f_ev * TO_INTERNAL[energy] / length), meta


def _check_shapes(path: Path, z, r, e, f, keys) -> tuple[np.ndarray, ...]:
    kz, kr, ke, kf = keys
    if z.ndim != 1 or not np.issubdtype(z.dtype, np.integer):
        raise ValueError(f"{path.name}: {kz} must be a 1-d integer array, got {z.shape} {z.dtype}")
    n_atoms = len(z)
    if n_atoms == 0 or z.min() < 1 or z.max() > MAX_Z:
        raise ValueError(f"{path.name}: {kz} holds unknown atomic numbers {sorted(set(z.tolist()))}")
    if r.ndim != 3 or r.shape[1:] != (n_atoms, 3):
        raise ValueError(f"{path.name}: {kr} has shape {r.shape}, expected (frames, {n_atoms}, 3)")
    n = r.shape[0]
    if n == 0:
        raise ValueError(f"{path.name}: no frames")
    e = e.reshape(n, -1) if e.size == n else e
    if e.shape not in ((n, 1), (n,)):
        raise ValueError(f"{path.name}: {ke} has shape {e.shape}, expected ({n},) or ({n}, 1)")
    if f.shape != r.shape:
        raise ValueError(f"{path.name}: {kf} has shape {f.shape}, expected {r.shape} like {kr}")
    for key, arr in ((kr, r), (ke, e), (kf, f)):
        bad = ~np.isfinite(arr.reshape(n, -1)).all(axis=1)
        if bad.any():
            raise ValueError(f"{path.name}: frame {int(np.argmax(bad))}: NaN/inf in {key}")
    return z.astype(np.int64), r.astype(np.float64), e.reshape(n).astype(np.float64), \
        f.astype(np.float64)


def _flat(z: np.ndarray, pos: np.ndarray, energy: np.ndarray, forces: np.ndarray) -> dict:
    """Flat dataset arrays of a trajectory (internal units in, see :func:`read_md17`)."""
    n, n_atoms = pos.shape[:2]
    hops = hop_matrix(z, pos[0]).reshape(-1)  # bonds of the first frame, shared by all frames
    hop_offset = np.zeros(n + 1, dtype=np.int64)
    hop_offset[-1] = len(hops)
    return {
        "z": np.tile(z.astype(np.int8), n),
        "pos": pos.reshape(n * n_atoms, 3).astype(np.float32),
        "atom_offset": np.arange(n + 1, dtype=np.int64) * n_atoms,
        "hops": hops, "hop_offset": hop_offset,
        "targets": energy.reshape(n, 1).astype(np.float64),
        "forces": forces.reshape(n * n_atoms, 3).astype(np.float32),
        "ids": np.arange(n, dtype=np.int64),
    }


def load_md17(path: str | Path):
    """An MD17 / rMD17 / generated trajectory as an in-memory ``MolecularDataset``.

    Targets: ``energy`` (eV) per frame and ``forces`` (eV/Å) per atom. ``dataset.meta`` holds
    the file's metadata (layout, name, theory, provenance).
    """
    from denoise3d.data.dataset import MolecularDataset

    arrays, meta = read_md17(path)
    ds = MolecularDataset(arrays, ["energy"], ["eV"])
    ds.meta = meta
    return ds


# --------------------------------------------------------------------------------- writing
def write_md17(path: str | Path, z: np.ndarray, pos: np.ndarray, energy: np.ndarray,
               forces: np.ndarray, **provenance) -> None:
    """Write a trajectory in the MD17 layout, atomically (temporary name, then ``os.replace``).

    ``z`` (N,), ``pos`` (n, N, 3) Å, ``energy`` (n,) eV, ``forces`` (n, N, 3) eV/Å (internal
    units in); the file holds ``R`` Å, ``E`` (n, 1) kcal/mol, ``F`` kcal/mol/Å, ``z``,
    ``r_unit``/``e_unit`` and the ``provenance`` entries (strings or numbers).
    """
    path = Path(path)
    kcal = TO_INTERNAL["kcal/mol"]
    arrays = {
        "R": np.asarray(pos, dtype=np.float64), "z": np.asarray(z, dtype=np.uint8),
        "E": np.asarray(energy, dtype=np.float64).reshape(-1, 1) / kcal,
        "F": np.asarray(forces, dtype=np.float64) / kcal,
        "r_unit": np.array("Ang"), "e_unit": np.array("kcal/mol"), "type": np.array("d"),
        **{k: np.array(v) for k, v in provenance.items()},
    }
    atomic_save(path, arrays)


def atomic_save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to a hidden temporary sibling, then rename: never a half-written ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------- splits
def frame_split(n_frames: int, train: int, valid: int, seed: int) -> dict[str, np.ndarray]:
    """3D-EMGP's MD17 split: a seeded random ``train`` / ``valid`` / rest (test) of the frames."""
    if train < 1 or valid < 0:
        raise ValueError(f"train_frames must be >= 1 and valid_frames >= 0, got {train}, {valid}")
    if train + valid >= n_frames:
        raise ValueError(f"train_frames + valid_frames = {train + valid} leaves no test frames "
                         f"of the trajectory's {n_frames}")
    perm = np.random.default_rng(seed).permutation(n_frames)
    parts = {"train": perm[:train], "valid": perm[train:train + valid], "test": perm[train + valid:]}
    return {k: np.sort(v).astype(np.int64) for k, v in parts.items()}


def rmd17_split_files(npz_path: str | Path, k: int) -> tuple[Path, Path]:
    """``index_train_0k.csv`` / ``index_test_0k.csv`` next to an rMD17 file (``../splits``,
    ``./splits`` or the file's own folder, as in the rMD17 download)."""
    if k not in RMD17_SPLITS:
        raise ValueError(f"rMD17 has splits 1..5, got {k}")
    folder = Path(npz_path).resolve().parent
    for d in (folder.parent / "splits", folder / "splits", folder):
        files = (d / f"index_train_0{k}.csv", d / f"index_test_0{k}.csv")
        if all(p.is_file() for p in files):
            return files
    raise ValueError(f"rMD17 split {k}: index_train_0{k}.csv / index_test_0{k}.csv not found in "
                     f"{folder.parent / 'splits'}, {folder / 'splits'} or {folder}")


def read_index_csv(path: Path, n_frames: int) -> np.ndarray:
    """Frame indices, one per line, checked against the trajectory length."""
    try:
        idx = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except ValueError as e:
        raise ValueError(f"{path.name}: not a list of integer frame indices ({e})") from None
    if idx.size and (idx.min() < 0 or idx.max() >= n_frames):
        raise ValueError(f"{path.name}: frame index {int(idx.max())} out of range for "
                         f"{n_frames} frames")
    return idx


def rmd17_split(npz_path: str | Path, k: int, n_frames: int, train: int, valid: int,
                seed: int) -> dict[str, np.ndarray]:
    """rMD17 split ``k``: its test indices; ``valid`` frames drawn (seeded) from its training
    indices, then ``train`` frames from the remainder."""
    train_file, test_file = rmd17_split_files(npz_path, k)
    pool = np.random.default_rng(seed).permutation(read_index_csv(train_file, n_frames))
    if train + valid > len(pool):
        raise ValueError(f"rMD17 split {k} has {len(pool)} training frames; train_frames + "
                         f"valid_frames = {train + valid} (e.g. set data.train_frames=950 "
                         f"data.valid_frames=50)")
    return {"train": np.sort(pool[valid:valid + train]), "valid": np.sort(pool[:valid]),
            "test": np.sort(read_index_csv(test_file, n_frames))}
