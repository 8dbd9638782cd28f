"""Your own labelled structures: extxyz / xyz / ASE db (ASE), SDF (RDKit), a directory of them, or
a CSV of SMILES plus property columns (RDKit conformers, ``data.smiles_column``, ``data.conformers``).

Labels, keys and units: :mod:`denoise3d.data.labelled` (``data.energy_key``, ``data.forces_key``,
``data.targets``, ``data.units``); they are read once into a cache under ``data.cache_dir`` whose
key includes the files, the label keys and the units, so changing any of them rebuilds it. One
dataset may mix compositions and sizes; bonds (hop types) are perceived per structure.

Split (``data.fractions``, default 0.8 / 0.1 / 0.1, seeded by ``data.split_seed``):
``data.split_by=structure`` draws structures at random; ``molecule`` keeps every structure of one
molecule on one side (same canonical SMILES, or, without SMILES, the same elements in the same
atom order: :func:`molecule_keys`), because neighbouring MD frames are nearly identical and would
leak across a random split.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from denoise3d.config import ConfigError, DataConfig
from denoise3d.data.sources.base import Label, Source
from denoise3d.units import EV_MEV

REPORT = {"eV": ("meV", EV_MEV), "eV/Å": ("meV/Å", EV_MEV)}  # customary report units


class Files(Source):
    name = "files"
    keys = frozenset({"path", "energy_key", "forces_key", "targets", "units", "split_by",
                      "fractions", "smiles_column", "conformers", "structures", "id_column",
                      "embed_2d"})

    def dataset(self, cfg: DataConfig):
        from denoise3d.data.dataset import MolecularDataset
        from denoise3d.data.labelled import labelled_source, read_labelled
        from denoise3d.data.storage import default_cache_dir
        from denoise3d.data.writer import stream_or_open

        if not cfg.path:
            raise ConfigError("data.dataset=files needs data.path=FILE_OR_DIRECTORY (extxyz, xyz, "
                              "ASE db, SDF)")
        if cfg.conformers < 1:
            raise ConfigError(f"data.conformers must be >= 1, got {cfg.conformers}")
        settings = {"energy_key": cfg.energy_key, "forces_key": cfg.forces_key,
                    "targets": cfg.targets, "units": dict(sorted(cfg.units.items())),
                    "smiles_column": cfg.smiles_column, "conformers": cfg.conformers,
                    "structures": cfg.structures, "id_column": cfg.id_column,
                    **({"embed_2d": True} if cfg.embed_2d else {})}
        if cfg.structures:  # the joined structures are part of the cache key too
            from denoise3d.data.labelled import labelled_files
            from denoise3d.data.storage import fingerprint_files

            settings["structures_sha1"] = hashlib.sha1(repr(fingerprint_files(
                labelled_files(cfg.structures))).encode()).hexdigest()
        theories = Counter()
        specs, records = read_labelled(cfg.path, cfg.energy_key, cfg.forces_key, cfg.targets,
                                       cfg.units, cfg.smiles_column, cfg.conformers,
                                       cfg.structures, cfg.id_column, cfg.embed_2d, theories)
        source = labelled_source(cfg.path, settings)
        digest = hashlib.sha1(json.dumps(source, sort_keys=True).encode()).hexdigest()[:12]
        root = Path(cfg.cache_dir) if cfg.cache_dir is not None else default_cache_dir()
        scalars = [s for s in specs if s.per == "structure"]
        forces = any(s.per == "atom" for s in specs)

        first = next(records, None)  # a periodic first frame: the cache stores cells
        cells = first is not None and first[6] is not None

        def fill(writer):
            for z, pos, values, f, name, smiles, cell, pbc in ([first] if first else []):
                writer.add(z, pos, values, f, cell, pbc, names=name, smiles=smiles)
            for z, pos, values, f, name, smiles, cell, pbc in records:  # mixed: refused by records
                writer.add(z, pos, values, f, cell, pbc, names=name, smiles=smiles)
            writer.meta["theory"] = theory_of(theories, cfg.path)

        arrays, manifest = stream_or_open(
            root / f"files-{digest}", source, fill, n_targets=len(scalars), forces=forces,
            cells=cells,
            meta={"dataset": "files", "target_names": [s.name for s in scalars],
                  "target_units": [s.unit for s in scalars]},
            strings=("names", "smiles"))
        ds = MolecularDataset.from_manifest(arrays, manifest, root / f"files-{digest}")
        stored = manifest.get("meta", {})  # a cache built before the key existed lacks it
        ds.meta = {"theory": stored["theory"] if "theory" in stored else level_of_theory(cfg.path)}
        return ds

    def read(self, cfg: DataConfig):
        from denoise3d.data.splits import group_split

        if cfg.split_by not in ("structure", "molecule"):
            raise ConfigError(f"unknown data.split_by {cfg.split_by!r} (known: structure, molecule)")
        ds = self.dataset(cfg)
        groups = np.arange(len(ds)) if cfg.split_by == "structure" else molecule_keys(ds)
        try:
            split = group_split(groups, cfg.fractions, cfg.split_seed)
        except ValueError as e:
            raise ConfigError(f"data.fractions: {e}") from None
        empty = [k for k, f in zip(split, cfg.fractions) if f > 0 and len(split[k]) == 0]
        if empty:
            raise ConfigError(f"{cfg.path}: the {' and '.join(empty)} split(s) would be empty "
                              f"({len(set(groups))} {cfg.split_by}s for data.fractions="
                              f"{cfg.fractions}); use more data or other fractions"
                              + (", or data.split_by=structure to split the frames of one "
                                 "molecule" if cfg.split_by == "molecule" else ""))
        return ds, split

    def labels(self, ds) -> dict[str, Label]:
        out = {}
        for name, unit in zip(ds.target_names, ds.target_units):
            report, factor = REPORT.get(unit, (unit, 1.0))
            out[name] = Label(name, "structure", unit, report, factor)
        for name in ds.atom_target_names:
            out[name] = Label(name, "atom", "eV/Å", "meV/Å", EV_MEV)
        return out


def theory_of(theories: Counter, path) -> str | None:
    """The level of theory of a dataset from the count of its structures' ``info["theory"]``: the
    one stated, else None; several (or some structures without one): all of them, most frequent
    first ("GFN2-xTB (900 structures) + PBE (100)"), with a warning on stderr."""
    stated = {t: n for t, n in theories.most_common() if t is not None}
    if not stated:
        return None
    if len(theories) == 1:
        return next(iter(stated))
    parts = [f"{t or 'none stated'} ({n:,}{' structures' if i == 0 else ''})"
             for i, (t, n) in enumerate(theories.most_common())]
    mixed = " + ".join(parts)
    print(f"denoise3d: warning: {path}: the structures carry different levels of theory "
          f"(info['theory']): {mixed}; a force field trained on mixed reference energies learns "
          f"neither", file=sys.stderr)
    return mixed


def level_of_theory(path) -> str | None:
    """The first structure's ``info["theory"]`` (a string such as "GFN2-xTB", which
    ``denoise3d data xtb-label`` writes), else None: the level of theory of a cache built before
    its manifest stored one (:func:`theory_of` counts every structure when a cache is built)."""
    from denoise3d.data.labelled import labelled_files, read_frames

    first_file = labelled_files(path)[0]
    if first_file.suffix.lower() == ".csv":  # property columns only
        return None
    first = next(iter(read_frames(first_file)), None)
    theory = first.values.get("theory") if first is not None else None
    return theory if isinstance(theory, str) and theory else None


def molecule_keys(ds) -> list[str]:
    """One key per structure naming its molecule: the canonical SMILES when the file gives one,
    else the elements in the order the file lists the atoms.

    Why not the perceived bond graph: on our own 30 GFN2-xTB frames of water, methanol and
    ethanol (0.05 Å displacements, ``tests/data/test_labelled.py``) bond perception split the
    3 molecules into 5 graphs, which would put frames of one molecule on both sides. MD frames of
    one molecule share their atom order, so this key never separates them; isomers written with
    the same element order are grouped together, which is conservative (no leak).
    """
    keys = []
    offsets = ds.arrays["atom_offset"]
    for i in range(len(ds)):
        smiles = ds.smiles(i)
        if smiles:
            keys.append(f"smiles:{smiles}")
        else:
            z = np.asarray(ds.arrays["z"][offsets[i]:offsets[i + 1]], dtype=np.int64)
            keys.append("elements:" + ",".join(map(str, z)))
    return keys


__all__ = ["Files", "molecule_keys"]
