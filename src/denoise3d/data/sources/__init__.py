"""The dataset registry: ``DATASETS = {name: source}`` and :func:`load_data`.

Each source (:mod:`denoise3d.data.sources.base`) reads its files into a
:class:`~denoise3d.data.dataset.MolecularDataset`, declares its labels and their units
(``ds.labels``), splits it, and names the ``data.*`` keys it reads; a key the user set that the
chosen source does not read is a one-line error (:func:`check_keys`) instead of being ignored.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from denoise3d.config import ConfigError, DataConfig
from denoise3d.data.sources.base import COMMON_KEYS, Label, Source, subset
from denoise3d.data.sources.files import Files
from denoise3d.data.sources.md17 import MD17
from denoise3d.data.sources.qm9 import QM9
from denoise3d.data.sources.structures import Geom, Structures

__all__ = ["DATASETS", "Label", "Source", "source", "check_keys", "load_data", "load_dataset"]

DATASETS: dict[str, Source] = {s.name: s for s in (QM9(), MD17(), Files(), Structures(), Geom())}


def source(cfg: DataConfig) -> Source:
    """The registered source of ``data.dataset``; unknown names are a ConfigError."""
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"unknown data.dataset {cfg.dataset!r} (known: {', '.join(DATASETS)})")
    return DATASETS[cfg.dataset]


def check_keys(cfg: DataConfig, explicit: Iterable[str]) -> None:
    """Refuse ``data.*`` keys that were set explicitly but that ``data.dataset`` does not read."""
    src = source(cfg)
    unused = sorted(set(explicit) - COMMON_KEYS - src.keys)
    if unused:
        users = {k: [n for n, s in DATASETS.items() if k in s.keys] for k in unused}
        raise ConfigError(
            f"data.{unused[0]} does not apply to data.dataset={src.name} (it is read by "
            f"{', '.join(users[unused[0]]) or 'no dataset'}; {src.name} reads "
            f"{', '.join(sorted(src.keys))} besides the common keys)")


def load_data(cfg: DataConfig, explicit: Iterable[str] = ()):
    """The dataset (with ``ds.labels``) and its index split ``{"train", "valid", "test"}``
    (capped by max_train / max_valid / max_test, random subsets from ``split_seed``), plus
    ``"all"`` (every structure, e.g. to evaluate on another trajectory). ``explicit``: the
    ``data.*`` keys the user set, checked first (:func:`check_keys`)."""
    check_keys(cfg, explicit)
    src = source(cfg)
    ds, split = src.read(cfg)
    ds.labels = src.labels(ds)
    rng = np.random.default_rng(cfg.split_seed)
    cap = {"train": cfg.max_train, "valid": cfg.max_valid, "test": cfg.max_test}
    split = {name: subset(idx, cap[name], rng) for name, idx in split.items()}
    return ds, {**split, "all": np.arange(len(ds), dtype=np.int64)}


def load_dataset(cfg: DataConfig, explicit: Iterable[str] = ()):
    """The dataset alone (with ``ds.labels``), without a split: every structure of it."""
    check_keys(cfg, explicit)
    src = source(cfg)
    ds = src.dataset(cfg)
    ds.labels = src.labels(ds)
    return ds
