"""What a dataset source is: a reader of files that declares its labels, keys and split rule.

A source turns a :class:`~denoise3d.config.DataConfig` into a
:class:`~denoise3d.data.dataset.MolecularDataset` and its index split (``train`` / ``valid`` /
``test``); it declares

* ``keys``: the ``data.*`` keys it reads beyond :data:`COMMON_KEYS` (a key set explicitly that no
  source reading it would use is refused, :func:`check_keys`);
* ``labels(ds)``: each label's name, whether it is per structure or per atom, its internal unit and
  the unit metrics report it in (:class:`Label`), plus any per-element reference of the label
  (QM9's atom energies), which fine-tuning subtracts before standardising.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from denoise3d.config import ConfigError, DataConfig

# data.* keys every source honours: batching, caps on the split sizes and their seed, the cache
COMMON_KEYS = frozenset({"dataset", "cache_dir", "split_seed", "batch_size", "eval_batch_size",
                         "max_train", "max_valid", "max_test", "epoch_size", "max_atoms", "max_edges",
                         "max_graphs"})


@dataclass(frozen=True)
class Label:
    """One label of a dataset: ``batch.targets[name]``.

    ``per``: "structure" ((n_graphs,) float64) or "atom" ((n_atoms, 3) float32, e.g. forces).
    ``unit``: the internal unit the values are in ("" = unitless); ``report_unit`` and
    ``report_factor``: metrics report ``value * report_factor`` in ``report_unit`` (meV for QM9's
    energies, kcal/mol for MD17's). ``reference``: (MAX_Z + 1,) per-element offsets in ``unit``
    summed over a structure's atoms (QM9's atom reference energies), or None.
    """

    name: str
    per: str = "structure"
    unit: str = ""
    report_unit: str = ""
    report_factor: float = 1.0
    reference: np.ndarray | None = field(default=None, compare=False, repr=False)


class Source:
    """A dataset source; subclasses set ``name``, ``keys`` and implement :meth:`read`."""

    name: str = ""
    keys: frozenset[str] = frozenset()

    def read(self, cfg: DataConfig):
        """``(MolecularDataset, {"train", "valid", "test"} index arrays)``; one-line errors."""
        raise NotImplementedError

    def dataset(self, cfg: DataConfig):
        """The dataset alone, without a split (a source whose split can fail on small files,
        such as a short trajectory, reads it without splitting)."""
        return self.read(cfg)[0]

    def labels(self, ds) -> dict[str, Label]:
        """The dataset's labels: per-structure columns (in the units the cache declares) and
        per-atom arrays (forces, eV/Å); a source with customary report units overrides this."""
        out = {n: Label(n, "structure", u, u) for n, u in zip(ds.target_names, ds.target_units)}
        out.update({n: Label(n, "atom", "eV/Å", "eV/Å") for n in ds.atom_target_names})
        return out


def subset(indices: np.ndarray, size: int | None, rng) -> np.ndarray:
    """A random subset of ``size`` indices (all when ``size`` is None), sorted."""
    if size is None or size >= len(indices):
        return indices
    if size < 1:
        raise ConfigError(f"data subset size must be at least 1, got {size}")
    return np.sort(rng.choice(indices, size=size, replace=False))
