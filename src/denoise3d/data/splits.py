"""Train / valid / test splits: seeded random splits and the QM9 split of EGNN and 3D-EMGP.

3D-EMGP "follow[s] the data split in Anderson et al. (2019) and Satorras et al. (2021)": of the
130,831 characterised QM9 molecules, 100,000 train, 10 % (13,083) test, the rest (17,748) valid,
from one random permutation. ``qm9_split(n, seed=0, legacy_rng=True)`` reproduces their exact
split (cormorant's ``np.random.seed(0); np.random.permutation(n)``, split in the order train, valid,
test) for molecules in QM9 index order, which is the order of :func:`denoise3d.data.load_qm9`.
The default (``seed=42``, numpy's ``default_rng``) is a split of the same sizes from our own seed.
Splits are saved as ``.npz`` so they survive changes in numpy's random streams.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from denoise3d.data.storage import default_cache_dir

SPLIT_NAMES = ("train", "valid", "test")
QM9_TRAIN = 100_000


def _permutation(n: int, seed: int, legacy_rng: bool) -> np.ndarray:
    if legacy_rng:  # RandomState streams are frozen across numpy versions
        return np.random.RandomState(seed).permutation(n)
    return np.random.default_rng(seed).permutation(n)


def _counts(n: int, sizes: Sequence[float]) -> list[int]:
    """Integer sizes from counts or fractions (fractions summing to 1 use every molecule)."""
    sizes = list(sizes)
    if any(s < 0 for s in sizes):
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    if all(isinstance(s, (int, np.integer)) for s in sizes):
        counts = [int(s) for s in sizes]
    elif sum(sizes) <= 1 + 1e-9:
        counts = [int(np.floor(s * n)) for s in sizes]
        if abs(sum(sizes) - 1) < 1e-9:
            counts[-1] = n - sum(counts[:-1])
    else:
        raise ValueError(f"split fractions must sum to <= 1, got {sizes} (sum {sum(sizes)})")
    if sum(counts) > n:
        raise ValueError(f"split sizes {counts} add up to {sum(counts)} > {n} items to split")
    return counts


def random_split(n: int, sizes: Sequence[float] | Mapping[str, float], seed: int = 0,
                 legacy_rng: bool = False) -> dict[str, np.ndarray]:
    """Disjoint random subsets of ``range(n)``: {name: sorted int64 indices}.

    ``sizes``: counts (ints) or fractions (floats summing to <= 1; if they sum to 1 the last
    split takes the rounding remainder), as a sequence (named train, valid, test, or split0, …
    beyond three) or a mapping {name: size}. Splits are consecutive slices of one permutation.
    """
    if isinstance(sizes, Mapping):
        names, values = list(sizes), list(sizes.values())
    else:
        values = list(sizes)
        names = list(SPLIT_NAMES) if len(values) <= 3 else [f"split{k}" for k in range(len(values))]
        names = names[:len(values)]
    counts = _counts(n, values)
    perm = _permutation(n, seed, legacy_rng)
    bounds = np.cumsum([0] + counts)
    return {k: np.sort(perm[bounds[i]:bounds[i + 1]]).astype(np.int64) for i, k in enumerate(names)}


def qm9_sizes(n_molecules: int) -> dict[str, int]:
    """EGNN/cormorant sizes: 100,000 train, int(0.1 n) test, the rest valid.

    For the 130,831 characterised molecules: 100,000 / 17,748 / 13,083.
    """
    test = int(0.1 * n_molecules)
    valid = n_molecules - QM9_TRAIN - test
    if valid < 1:
        raise ValueError(f"the QM9 split needs more than {QM9_TRAIN + test} molecules, "
                         f"got {n_molecules}; use random_split for subsets")
    return {"train": QM9_TRAIN, "valid": valid, "test": test}


def _split_file(path: str | Path | None, n: int, seed: int, legacy_rng: bool) -> Path:
    name = f"qm9_split_n{n}_seed{seed}{'_legacy' if legacy_rng else ''}.npz"
    if path is None:
        return default_cache_dir() / "splits" / name
    path = Path(path)
    return path if path.suffix == ".npz" else path / name


def _load(file: Path, n: int, seed: int, legacy_rng: bool) -> dict[str, np.ndarray] | None:
    """The saved split, ``None`` if unreadable; ``ValueError`` if made for other settings."""
    try:
        with np.load(file, allow_pickle=False) as f:
            saved = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError):
        return None
    made_for = (int(saved.get("n", -1)), int(saved.get("seed", -1)),
                bool(saved.get("legacy_rng", 0)))
    if made_for != (n, seed, legacy_rng):
        raise ValueError(f"{file}: split made for n={made_for[0]}, seed={made_for[1]}, "
                         f"legacy_rng={made_for[2]}, not n={n}, seed={seed}, "
                         f"legacy_rng={legacy_rng}; delete it or pass another path")
    splits = {k: saved[k].astype(np.int64) for k in SPLIT_NAMES if k in saved}
    sizes = qm9_sizes(n)
    if {k: len(v) for k, v in splits.items()} != sizes:
        return None
    every = np.concatenate(list(splits.values()))
    if len(np.unique(every)) != n or every.min() < 0 or every.max() >= n:
        return None
    return splits


def qm9_split(n_molecules: int, seed: int = 42, path: str | Path | None = None,
              legacy_rng: bool = False) -> dict[str, np.ndarray]:
    """The QM9 train/valid/test split (sizes :func:`qm9_sizes`), saved and reused.

    ``path``: an ``.npz`` file or a directory (next to the cache, file named after n and seed);
    default ``<cache dir>/splits/``. An existing file is reused after checking it was made for
    the same ``n_molecules`` and ``seed`` (``ValueError`` otherwise) and is a valid partition;
    unreadable files are rebuilt. ``seed=0, legacy_rng=True`` is the exact EGNN / 3D-EMGP split.
    Returns {"train", "valid", "test": sorted int64 dataset indices}.
    """
    file = _split_file(path, n_molecules, seed, legacy_rng)
    if file.exists():
        splits = _load(file, n_molecules, seed, legacy_rng)
        if splits is not None:
            return splits
        print(f"denoise3d: split file {file} is unreadable or invalid; rebuilding it",
              file=sys.stderr)
    splits = random_split(n_molecules, qm9_sizes(n_molecules), seed, legacy_rng)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        np.savez(f, n=n_molecules, seed=seed, legacy_rng=legacy_rng, **splits)
    os.replace(tmp, file)
    return splits


def group_split(groups: Sequence, fractions: Sequence[float], seed: int = 0) -> dict[str, np.ndarray]:
    """Train / valid / test by group: every structure of one group (e.g. one molecule's MD frames,
    nearly identical neighbours that would leak across a random split) lands on one side.

    Groups are shuffled with ``seed`` and laid end to end; a group goes to the split whose share
    of ``[0, 1)`` holds its centre (train ``[0, f0)``, valid ``[f0, f0 + f1)``, test the rest),
    so sizes are approximate; a split with a fraction > 0 that got no group takes one from the
    side with most groups (5 molecules at 0.8 / 0.1 / 0.1: 3 / 1 / 1). Returns sorted int64
    indices; with fewer groups than non-empty fractions a split stays empty.
    """
    fractions = [float(f) for f in fractions]
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be three values >= 0 summing to 1, got {fractions}")
    keys, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(keys))
    sizes = np.bincount(inverse, minlength=len(keys))[order]  # structures per group, shuffled
    middle = (np.cumsum(sizes) - sizes / 2) / max(len(inverse), 1)  # each group's centre
    side = np.searchsorted(np.cumsum(fractions)[:2], middle, side="right")  # 0, 1 or 2
    for empty in [i for i in range(3) if fractions[i] > 0 and not (side == i).any()]:
        counts = np.bincount(side, minlength=3)
        donor = int(np.argmax(counts))  # the side with most groups gives one (its last) away
        if counts[donor] > 1:
            side[np.flatnonzero(side == donor)[-1 if donor < empty else 0]] = empty
    side_of_key = np.empty(len(keys), dtype=np.int64)
    side_of_key[order] = side
    where = side_of_key[inverse]
    return {name: np.flatnonzero(where == i).astype(np.int64) for i, name in enumerate(SPLIT_NAMES)}
