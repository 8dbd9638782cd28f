"""Processed on-disk cache of a dataset of many molecules: flat ``.npy`` arrays + ``manifest.json``.

Layout of a cache directory (molecule ``i`` owns atoms ``atom_offset[i]:atom_offset[i+1]``):

===============  ==========================  ================================================
file             shape, dtype                meaning
===============  ==========================  ================================================
``z``            (total_atoms,) int8         atomic numbers
``pos``          (total_atoms, 3) float32    positions, Å
``atom_offset``  (n + 1,) int64              first atom of each molecule, then total_atoms
``hops``         (Σ n_i²,) int8              row-major n_i × n_i bond-hop matrices, concatenated
``hop_offset``   (n + 1,) int64              first entry of each molecule's hop block
``targets``      (n, n_targets) float64      labels in internal units (names in the manifest)
``ids``          (n,) int64                  optional: the source's own molecule index
``names``        (n,) str                    optional: the source's molecule names
``smiles``       (n,) str                    optional
===============  ==========================  ================================================

``manifest.json`` holds the format version, a fingerprint of the source (file names, sizes,
mtimes, and the settings that shaped the arrays), every array's shape and dtype, counts, and free
metadata (target names and units). A cache is written into a temporary sibling directory and
renamed into place with ``os.replace`` only when complete, so a killed build never leaves a
directory that passes validation. Opening memory-maps the arrays (``np.load(mmap_mode="r")``):
memory stays bounded by what is touched, whatever the dataset size.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from denoise3d.data.elements import COVALENT_RADII, MAX_Z, SYMBOLS
from denoise3d.data.bonds import BOND_FACTOR, MAX_HOP, hops_from_adjacency

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED = {"z": "int8", "pos": "float32", "atom_offset": "int64", "hops": "int8",
            "hop_offset": "int64", "targets": "float64"}
HOP_SETTINGS = {"bond_factor": BOND_FACTOR, "max_hop": MAX_HOP, "radii": "cordero2008"}


class CacheInvalid(Exception):
    """A cache directory that must not be used (missing, stale or broken); ``str`` says why."""


def default_cache_dir() -> Path:
    """``$DENOISE3D_CACHE`` if set, else ``~/.cache/denoise3d``."""
    env = os.environ.get("DENOISE3D_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "denoise3d"


def fingerprint_files(paths: Iterable[str | Path]) -> list[list]:
    """[[name, size in bytes, mtime in ns], ...] of the source files: cheap change detection."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([Path(p).name, st.st_size, st.st_mtime_ns])
    return out


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for each (s, l), without a Python loop. int64."""
    starts, lengths = np.asarray(starts, np.int64), np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    first = np.cumsum(lengths) - lengths  # position of each range in the output
    return np.arange(total, dtype=np.int64) + np.repeat(starts - first, lengths)


# ------------------------------------------------------------------------------ hop matrices
def covalent_bonds_padded(z: np.ndarray, pos: np.ndarray, valid: np.ndarray,
                          factor: float = BOND_FACTOR) -> np.ndarray:
    """(b, m, m) bool bonds of a zero-padded stack: ``z`` (b, m), ``pos`` (b, m, 3) Å, ``valid``
    (b, m) bool. Same rule and arithmetic as :func:`denoise3d.data.bonds.covalent_bonds`."""
    r = COVALENT_RADII[z]  # (b, m)
    d = np.linalg.norm(pos[:, :, None, :] - pos[:, None, :, :], axis=-1)  # (b, m, m)
    adj = d < factor * (r[:, :, None] + r[:, None, :])
    adj &= valid[:, :, None] & valid[:, None, :]
    adj[:, np.arange(z.shape[1]), np.arange(z.shape[1])] = False
    return adj


def _size_sorted_chunks(natoms: np.ndarray, pair_budget: int) -> list[np.ndarray]:
    """Molecule indices sorted by size, cut into chunks of <= ``pair_budget`` padded pairs."""
    order = np.argsort(natoms, kind="stable")
    chunks, start = [], 0
    while start < len(order):
        stop = start + 1
        while (stop < len(order)
               and (stop - start + 1) * int(natoms[order[stop]]) ** 2 <= pair_budget):
            stop += 1
        chunks.append(order[start:stop])
        start = stop
    return chunks


def compute_hops(z: np.ndarray, pos: np.ndarray, atom_offset: np.ndarray,
                 pair_budget: int = 1 << 22,
                 progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Covalent-bond hop matrices of all molecules, vectorised over padded chunks.

    Molecules are sorted by size and processed in chunks of at most ``pair_budget`` padded pairs
    (bounded memory), with :func:`covalent_bonds_padded` and the batched ``hops_from_adjacency``.
    ``pos`` is used as stored (float32) and promoted to float64, exactly as ``collate`` would.
    Returns ``hops`` (Σ n_i²,) int8 and ``hop_offset`` (n + 1,) int64.
    """
    if z.size and (int(z.min()) < 1 or int(z.max()) > MAX_Z):
        bad = int(np.argmax((z < 1) | (z > MAX_Z)))
        mol = int(np.searchsorted(atom_offset, bad, side="right")) - 1
        raise ValueError(f"molecule {mol}: unknown element, atomic number {int(z[bad])}")
    natoms = np.diff(atom_offset)
    hop_offset = np.concatenate([[0], np.cumsum(natoms * natoms)]).astype(np.int64)
    hops = np.empty(int(hop_offset[-1]), dtype=np.int8)
    from tqdm import tqdm

    for mols in tqdm(_size_sorted_chunks(natoms, pair_budget), desc="bond hops", unit="chunk",
                     disable=not progress):
        nat = natoms[mols]
        m = int(nat.max())
        valid = np.arange(m)[None, :] < nat[:, None]  # (b, m)
        atoms = concat_ranges(atom_offset[mols], nat)
        zp = np.zeros(valid.shape, dtype=np.int64)
        zp[valid] = z[atoms]
        pp = np.zeros(valid.shape + (3,), dtype=np.float64)
        pp[valid] = pos[atoms]
        block = hops_from_adjacency(covalent_bonds_padded(zp, pp, valid))  # (b, m, m)
        pair_valid = valid[:, :, None] & valid[:, None, :]  # (b, m, m); row-major = block order
        hops[concat_ranges(hop_offset[mols], nat * nat)] = block[pair_valid]
    return hops, hop_offset


# ------------------------------------------------------------------------------ write / open
def _describe(arrays: dict[str, np.ndarray]) -> dict:
    return {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in arrays.items()}


def write_cache(path: str | Path, arrays: dict[str, np.ndarray], source: dict,
                meta: dict | None = None) -> None:
    """Write ``arrays`` + manifest to ``path`` atomically (temporary sibling, then ``os.replace``).

    ``source``: JSON-able fingerprint compared on open; ``meta``: free JSON-able metadata.
    """
    path = Path(path)
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise ValueError(f"cache {path}: missing arrays {missing}")
    arrays = {k: np.ascontiguousarray(v, dtype=REQUIRED.get(k)) for k, v in arrays.items()}
    arrays = {k: v.astype(str) if v.dtype == object else v for k, v in arrays.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    tmp.mkdir()
    try:
        for k, v in arrays.items():
            np.save(tmp / f"{k}.npy", v, allow_pickle=False)
        n = len(arrays["atom_offset"]) - 1
        manifest = {
            "format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "source": source, "meta": meta or {}, "arrays": _describe(arrays),
            "counts": {"molecules": n, "atoms": int(arrays["atom_offset"][-1]),
                       "hop_entries": int(arrays["hop_offset"][-1])},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))  # written last
        _install(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op once installed


def _sibling(path: Path, kind: str) -> Path:
    """A hidden sibling ``.<name>.<kind>-<host>-<pid>-<random>`` (see ``_remove_leftovers``)."""
    tag = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return path.parent / f".{path.name}.{kind}-{tag}"


def _install(tmp: Path, path: Path) -> None:
    """Rename the finished ``tmp`` to ``path``, moving an old cache aside first."""
    old = None
    if path.exists():
        old = _sibling(path, "old")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def open_cache(path: str | Path, source: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Memory-map a cache and validate it cheaply; ``CacheInvalid`` (with the reason) if unusable.

    Checks: manifest present and readable, format version, ``source`` fingerprint (if given),
    every array present with the manifest's shape and dtype (a truncated file fails here), and the
    offsets' consistency. Returns (arrays, manifest).
    """
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        why = "manifest missing" if path.exists() else f"no cache at {path}"
        raise CacheInvalid(why) from None
    except (OSError, ValueError) as e:
        raise CacheInvalid(f"manifest unreadable ({e})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CacheInvalid(f"format version {manifest.get('format_version')} != {FORMAT_VERSION}")
    if manifest.get("complete") is False:  # streaming writer: written last, must be true
        raise CacheInvalid("build not complete")
    if source is not None and manifest.get("source") != json.loads(json.dumps(source)):
        raise CacheInvalid("source files or settings changed")
    arrays = {}
    for name, desc in manifest.get("arrays", {}).items():
        try:
            arr = np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise CacheInvalid(f"{name}.npy unreadable ({e})") from None
        if list(arr.shape) != desc["shape"] or arr.dtype.str != desc["dtype"]:
            raise CacheInvalid(f"{name}.npy has shape {arr.shape} {arr.dtype}, manifest says "
                               f"{tuple(desc['shape'])} {desc['dtype']}")
        arrays[name] = arr
    _check_consistency(arrays)
    return arrays, manifest


def _check_consistency(a: dict[str, np.ndarray]) -> None:
    missing = [k for k in REQUIRED if k not in a]
    if missing:
        raise CacheInvalid(f"arrays {missing} missing")
    n = len(a["atom_offset"]) - 1
    ok = (n >= 0 and len(a["hop_offset"]) == n + 1 and a["targets"].shape[0] == n
          and a["atom_offset"][0] == 0 and a["atom_offset"][-1] == len(a["z"]) == len(a["pos"])
          and a["hop_offset"][0] == 0 and a["hop_offset"][-1] == len(a["hops"])
          and all(len(a[k]) == n for k in ("ids", "names", "smiles") if k in a))
    if not ok:
        raise CacheInvalid("array sizes are inconsistent")


# ------------------------------------------------------------------------------ build or open
@contextlib.contextmanager
def _build_lock(path: Path):
    """Exclusive lock so that parallel processes (DDP ranks) build a cache only once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the atomic rename still keeps the cache sound
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_leftovers(path: Path) -> None:
    """Delete temporary/old directories of ``path`` left by killed processes on this host."""
    host = socket.gethostname()
    for p in path.parent.glob(f".{path.name}.*-{host}-*"):
        try:
            pid = int(p.name.split(f"-{host}-")[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            pass


def load_or_build(path: str | Path, source: dict,
                  build: Callable[[], tuple[dict[str, np.ndarray], dict]],
                  verbose: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Open the cache at ``path`` if valid for ``source``, else ``build()`` and write it.

    ``build`` returns (arrays, meta). Prints why a cache is rebuilt, how long the build took and
    the dataset statistics (to stderr) when ``verbose``. Returns (memory-mapped arrays, manifest).
    """
    path = Path(path)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if verbose else (lambda msg: None)
    try:
        return open_cache(path, source)
    except CacheInvalid as why:
        reason = str(why)
    with _build_lock(path):
        try:  # another process may have built it while we waited for the lock
            return open_cache(path, source)
        except CacheInvalid:
            pass
        _remove_leftovers(path)
        say(f"denoise3d: building cache {path} ({reason})")
        t0 = time.perf_counter()
        arrays, meta = build()
        write_cache(path, arrays, source, meta)
        say(f"denoise3d: built in {time.perf_counter() - t0:.1f} s\n{statistics(arrays)}")
        return open_cache(path, source)


def statistics(arrays: dict[str, np.ndarray]) -> str:
    """Multi-line summary: structures (molecules, frames or cells), atoms, element counts, atoms
    per structure min/mean/max."""
    natoms = np.diff(arrays["atom_offset"])
    counts = np.bincount(np.asarray(arrays["z"], dtype=np.int64), minlength=MAX_Z + 1)
    elements = ", ".join(f"{SYMBOLS[z]} {c:,}" for z, c in enumerate(counts) if c)
    if not len(natoms):
        return "  0 structures"
    return (f"  structures {len(natoms):,}   atoms {int(natoms.sum()):,}\n"
            f"  elements  {elements}\n"
            f"  atoms per structure  min {natoms.min()}  mean {natoms.mean():.2f}  "
            f"max {natoms.max()}")
