"""QM9 (130,831 molecules, 12 properties) from qm9pack's CSVs or your ``dsgdb9nsd_*.xyz`` files.

Split ``egnn``: the exact EGNN / 3D-EMGP permutation (100,000 / 17,748 / 13,083; numpy legacy
RNG, seed 0); ``random``: the same sizes from ``data.split_seed``. Labels: the 12 targets in
internal units (eV for energies), reported in the field's units (meV, D, a₀³, ...); U0, U, H and
G carry QM9's atom reference energies, which fine-tuning subtracts before standardising.
"""

from __future__ import annotations

from denoise3d.config import ConfigError, DataConfig
from denoise3d.data.sources.base import Label, Source


class QM9(Source):
    name = "qm9"
    keys = frozenset({"xyz_dir", "split"})

    def read(self, cfg: DataConfig):
        from denoise3d.data.dataset import load_qm9
        from denoise3d.data.splits import qm9_split

        if cfg.split not in ("egnn", "random"):
            raise ConfigError(f"unknown data.split {cfg.split!r} (known: egnn, random)")
        ds = load_qm9(cache_dir=cfg.cache_dir, xyz_dir=cfg.xyz_dir)
        if cfg.split == "egnn":  # cormorant/EGNN's permutation (numpy legacy RNG, seed 0)
            return ds, qm9_split(len(ds), seed=0, legacy_rng=True)
        return ds, qm9_split(len(ds), seed=cfg.split_seed)

    def labels(self, ds) -> dict[str, Label]:
        from denoise3d.data.qm9 import TARGETS, atomref

        return {t.name: Label(t.name, "structure", t.internal_unit, t.report_unit,
                              t.report_factor, atomref(t.name)) for t in TARGETS.values()}
