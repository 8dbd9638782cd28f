"""Pretraining sets: structure files or a ready cache (``structures``) and GEOM (``geom``).

Split: a seeded (``data.split_seed``) 95 % train / 5 % valid partition, no test structures
(:func:`denoise3d.data.pretraining.pretraining_split`). Labels: whatever the cache declares
(none for files read by :mod:`denoise3d.data.readers`).
"""

from __future__ import annotations

from denoise3d.config import ConfigError, DataConfig
from denoise3d.data.sources.base import Source


class PretrainingSet(Source):
    """A pretraining set: ``data.path`` required, split 95 % / 5 % by ``data.split_seed``;
    subclasses supply :meth:`load`."""

    def load(self, cfg: DataConfig):
        raise NotImplementedError

    def dataset(self, cfg: DataConfig):
        if not cfg.path:
            raise ConfigError(f"data.dataset={cfg.dataset} needs data.path=FILE_OR_DIRECTORY")
        return self.load(cfg)

    def read(self, cfg: DataConfig):
        from denoise3d.data.pretraining import pretraining_split

        ds = self.dataset(cfg)
        return ds, pretraining_split(len(ds), cfg.split_seed)


class Structures(PretrainingSet):
    """``data.path``: a cache directory used as is, or xyz / extxyz / sdf / ASE-db files or a
    directory of them, streamed into a cache under ``data.cache_dir`` on first use."""

    name = "structures"
    keys = frozenset({"path", "add_hydrogens", "embed_2d"})

    def load(self, cfg: DataConfig):
        from denoise3d.data.pretraining import load_structures

        return load_structures(cfg.path, cfg.cache_dir, cfg.add_hydrogens, cfg.embed_2d)


class Geom(PretrainingSet):
    """``data.path``: GEOM's rdkit_folder / a summary json / a ``.msgpack`` file; ``data.top_k``
    conformers per molecule, molecules of ``data.exclude`` (qm9-test or a SMILES file) dropped."""

    name = "geom"
    keys = frozenset({"path", "top_k", "exclude"})

    def load(self, cfg: DataConfig):
        from denoise3d.data.pretraining import load_geom

        return load_geom(cfg.path, cfg.top_k, cfg.exclude, cfg.cache_dir)
