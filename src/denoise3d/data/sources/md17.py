"""One MD17 / rMD17 / generated (``denoise3d data xtb-md``) trajectory ``.npz``.

Split ``random``: 3D-EMGP's ``train_frames`` / ``valid_frames`` / the rest, seeded by
``split_seed``; ``rmd17-K`` (K = 1..5): rMD17's index split K. Labels: ``energy`` (eV, per
frame) and ``forces`` (eV/Å, per atom), reported in MD17's kcal/mol and kcal/mol/Å.
"""

from __future__ import annotations

from denoise3d.config import ConfigError, DataConfig
from denoise3d.data.sources.base import Label, Source
from denoise3d.units import KCALMOL_EV


def _path(cfg: DataConfig) -> str:
    if not cfg.path:
        raise ConfigError("data.dataset=md17 needs data.path=FILE.npz (an MD17 / rMD17 file, "
                          "or one made by `denoise3d data xtb-md`)")
    return cfg.path


class MD17(Source):
    name = "md17"
    keys = frozenset({"path", "split", "train_frames", "valid_frames"})

    def dataset(self, cfg: DataConfig):
        from denoise3d.data.md17 import load_md17

        return load_md17(_path(cfg))

    def read(self, cfg: DataConfig):
        from denoise3d.data.md17 import frame_split, rmd17_split

        _path(cfg)
        k = cfg.split.removeprefix("rmd17-")
        if cfg.split != "random" and not (cfg.split.startswith("rmd17-") and k.isdigit()):
            raise ConfigError(f"data.split={cfg.split!r} is not a split of a trajectory: use "
                              f"random (train_frames / valid_frames / rest) or rmd17-1 ... rmd17-5")
        ds = self.dataset(cfg)
        if cfg.split == "random":
            return ds, frame_split(len(ds), cfg.train_frames, cfg.valid_frames, cfg.split_seed)
        return ds, rmd17_split(cfg.path, int(k), len(ds), cfg.train_frames, cfg.valid_frames,
                               cfg.split_seed)

    def labels(self, ds) -> dict[str, Label]:
        return {"energy": Label("energy", "structure", "eV", "kcal/mol", 1 / KCALMOL_EV),
                "forces": Label("forces", "atom", "eV/Å", "kcal/mol/Å", 1 / KCALMOL_EV)}
