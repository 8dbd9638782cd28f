"""Pretraining sets from structure files, GEOM files or ready caches (``data.dataset`` values
``structures`` and ``geom``), with their caches and a train/valid split.

* ``structures``: ``data.path`` is a processed cache directory (made by ``denoise3d data
  conformers`` or ``denoise3d data build``) used as is, or a structure file / directory
  (:mod:`denoise3d.data.readers`) streamed into a cache under ``data.cache_dir`` on first use.
* ``geom``: ``data.path`` is GEOM's rdkit_folder / a summary json / a ``.msgpack`` file
  (:mod:`denoise3d.data.geom`), ``data.top_k`` conformers per molecule, molecules of
  ``data.exclude`` dropped (``qm9-test`` or a SMILES file).

Split: a seeded (``data.split_seed``) permutation, 95 % train and 5 % valid (at least one
molecule when there are two or more), no test molecules (pretraining sets are unlabelled).
The first build prints the dataset statistics (counts, elements, atoms per molecule).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np

from denoise3d.data.dataset import MolecularDataset
from denoise3d.data.storage import MANIFEST, CacheInvalid, default_cache_dir, open_cache

VALID_FRACTION = 0.05


def _cache_path(cache_dir, kind: str, source: dict) -> Path:
    digest = hashlib.sha1(json.dumps(source, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"{kind}-{digest}"


def exclude_filter(spec: str | None):
    from denoise3d.data.conformers import SplitFilter, qm9_smiles, read_smiles_file

    if spec is None:
        return None
    if spec == "qm9-test":
        return SplitFilter(qm9_smiles("test"))
    return SplitFilter(read_smiles_file(spec))


def load_structures(path: str | Path, cache_dir=None, add_hydrogens: bool = False,
                    embed_2d: bool = False,
                    verbose: bool = True) -> MolecularDataset:
    """A cache directory as is, or structure files streamed into a cache (built once)."""
    from denoise3d.data import readers
    from denoise3d.data.writer import stream_or_open

    path = Path(path)
    if (path / MANIFEST).is_file():
        try:
            arrays, manifest = open_cache(path)
        except CacheInvalid as why:
            raise ValueError(f"{path}: not a usable cache ({why})") from None
        return MolecularDataset.from_manifest(arrays, manifest, path)
    source = readers.structures_source(path, add_hydrogens, embed_2d)
    out = _cache_path(cache_dir, "structures", source)
    structures = readers.read_structures(path, add_hydrogens, embed_2d)
    first = next(structures, None)  # a periodic first structure: the cache stores cells
    arrays, manifest = stream_or_open(
        out, source, lambda w: readers.write_structures(w, itertools.chain([first] if first else [],
                                                                            structures)),
        verbose=verbose, meta={"dataset": "structures", "target_names": []},
        strings=("names", "smiles"), cells=first is not None and first.cell is not None)
    return MolecularDataset.from_manifest(arrays, manifest, out)


def load_geom(path: str | Path, k: int = 10, exclude: str | None = None, cache_dir=None,
              verbose: bool = True) -> MolecularDataset:
    """GEOM files → top-k conformers per molecule (minus ``exclude``), cached on first use."""
    from denoise3d.data import geom, readers
    from denoise3d.data.storage import fingerprint_files
    from denoise3d.data.writer import stream_or_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no GEOM file or folder at {path}")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    fp = hashlib.sha1(repr(fingerprint_files(files)).encode()).hexdigest()
    ex = exclude if exclude in (None, "qm9-test") else fingerprint_files([exclude])
    source = {"dataset": "geom", "path": str(path.resolve()), "sha1": fp, "k": k, "exclude": ex}
    out = _cache_path(cache_dir, "geom", source)

    def fill(w):
        readers.write_structures(w, geom.read_geom(path, k, exclude_filter(exclude)))

    arrays, manifest = stream_or_open(out, source, fill, verbose=verbose,
                                      meta={"dataset": "geom", "target_names": []},
                                      strings=("names", "smiles"))
    return MolecularDataset.from_manifest(arrays, manifest, out)


def pretraining_split(n: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded 95 % / 5 % train / valid partition, empty test; sorted int64 indices."""
    perm = np.random.default_rng(seed).permutation(n)
    n_valid = min(max(int(round(n * VALID_FRACTION)), 1 if n > 1 else 0), max(n - 1, 0))
    return {"train": np.sort(perm[n_valid:]), "valid": np.sort(perm[:n_valid]),
            "test": np.zeros(0, dtype=np.int64)}
