"""Build data, models and objectives from a :class:`~denoise3d.config.Config`.

The CLI verbs are thin wrappers over these functions; notebooks can call them directly.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch

from denoise3d.config import Config, ConfigError, DataConfig, ModelConfig
from denoise3d.models import BACKBONES, backbone_parameters, build_backbone
from denoise3d.objectives import build_objective
from denoise3d.train.checkpoint import CheckpointError, load_state


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seed every RNG, set CPU threads, and flush denormal floats to zero.

    Denormals matter here: gated messages and SiLU of the large squared distances of strongly
    noised molecules (σ up to 10 Å) underflow into denormal range, which made CPU steps 50-100x
    slower (measured: 3 s instead of 60 ms per step). Flushing them changes nothing measurable.
    """
    torch.set_flush_denormal(True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)


def load_data(cfg: DataConfig):
    """The dataset and its index split ``{"train", "valid", "test"}`` (capped by max_train/max_valid/max_test),
    plus ``"all"`` (every molecule or frame, e.g. to evaluate on another trajectory)."""
    if cfg.dataset == "md17":
        ds, split = _load_md17(cfg)
    elif cfg.dataset == "qm9":
        ds, split = _load_qm9(cfg)
    elif cfg.dataset in ("structures", "geom"):
        ds, split = _load_pretraining_set(cfg)
    else:
        raise ConfigError(f"unknown data.dataset {cfg.dataset!r} "
                          f"(known: qm9, md17, structures, geom)")
    rng = np.random.default_rng(cfg.split_seed)
    cap = {"train": cfg.max_train, "valid": cfg.max_valid, "test": cfg.max_test}
    split = {name: _subset(idx, cap[name], rng) for name, idx in split.items()}
    return ds, {**split, "all": np.arange(len(ds), dtype=np.int64)}


def _load_md17(cfg: DataConfig):
    """One MD17 / rMD17 / generated trajectory: split "random" (3D-EMGP: train_frames /
    valid_frames / rest, seeded by split_seed) or "rmd17-K" (rMD17's index split K)."""
    from denoise3d.data.md17 import frame_split, load_md17, rmd17_split

    if not cfg.path:
        raise ConfigError("data.dataset=md17 needs data.path=FILE.npz (an MD17 / rMD17 file, or "
                          "one made by `denoise3d data xtb-md`)")
    ds = load_md17(cfg.path)
    if cfg.split == "random":
        return ds, frame_split(len(ds), cfg.train_frames, cfg.valid_frames, cfg.split_seed)
    k = cfg.split.removeprefix("rmd17-")
    if cfg.split.startswith("rmd17-") and k.isdigit():
        return ds, rmd17_split(cfg.path, int(k), len(ds), cfg.train_frames, cfg.valid_frames,
                               cfg.split_seed)
    raise ConfigError(f"data.split={cfg.split!r} is not a split of a trajectory: use random "
                      f"(train_frames / valid_frames / rest) or rmd17-1 ... rmd17-5")


def _load_pretraining_set(cfg: DataConfig):
    """Structure files / a cache / GEOM files, split 95 % / 5 % (denoise3d.data.pretraining)."""
    from denoise3d.data.pretraining import load_geom, load_structures, pretraining_split

    if not cfg.path:
        raise ConfigError(f"data.dataset={cfg.dataset} needs data.path=FILE_OR_DIRECTORY")
    if cfg.dataset == "geom":
        ds = load_geom(cfg.path, cfg.top_k, cfg.exclude, cfg.cache_dir)
    else:
        ds = load_structures(cfg.path, cfg.cache_dir, cfg.add_hydrogens)
    return ds, pretraining_split(len(ds), cfg.split_seed)


def _load_qm9(cfg: DataConfig):
    from denoise3d.data.dataset import load_qm9
    from denoise3d.data.splits import qm9_split

    ds = load_qm9(cache_dir=cfg.cache_dir, xyz_dir=cfg.xyz_dir)
    if cfg.split == "egnn":  # cormorant/EGNN's permutation (numpy legacy RNG, seed 0)
        split = qm9_split(len(ds), seed=0, legacy_rng=True)
    elif cfg.split == "random":
        split = qm9_split(len(ds), seed=cfg.split_seed)
    else:
        raise ConfigError(f"unknown data.split {cfg.split!r} (known: egnn, random)")
    return ds, split


def _subset(indices: np.ndarray, size: int | None, rng) -> np.ndarray:
    """A random subset of ``size`` indices (all when ``size`` is None), sorted."""
    if size is None or size >= len(indices):
        return indices
    if size < 1:
        raise ConfigError(f"data subset size must be at least 1, got {size}")
    return np.sort(rng.choice(indices, size=size, replace=False))


def model_kwargs(cfg: ModelConfig) -> dict:
    """The backbone's keyword arguments: hidden, layers and every optional setting that is set.

    Settings left at None are not passed (the backbone's default applies), so the kwargs of a
    backbone that takes none of them (EGNN) stay ``{hidden, layers}``. A setting the backbone
    does not accept is a ConfigError rather than silently ignored.
    """
    kwargs = {"hidden": cfg.hidden, "layers": cfg.layers}
    optional = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                if f.name not in ("backbone", "hidden", "layers")}
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"unknown model.backbone {cfg.backbone!r} "
                          f"(known: {', '.join(sorted(BACKBONES))})")
    accepted = backbone_parameters(cfg.backbone)
    for key, value in optional.items():
        if value is None:
            continue
        if key not in accepted:
            raise ConfigError(f"model.{key}={value} is not a setting of backbone "
                              f"{cfg.backbone!r} (it takes: {', '.join(accepted)})")
        kwargs[key] = value
    return kwargs


def make_backbone(cfg: ModelConfig) -> torch.nn.Module:
    return build_backbone(cfg.backbone, **model_kwargs(cfg))


def make_objectives(cfg: Config) -> dict:
    """``{name: (weight, module)}`` from ``pretrain.objectives`` (a weighted recipe)."""
    out = {}
    for i, entry in enumerate(cfg.pretrain.objectives):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"pretrain.objectives[{i}] must be a mapping with a 'name'")
        params = {k: v for k, v in entry.items() if k not in ("name", "weight")}
        name = entry["name"]
        if name in out:
            raise ConfigError(f"pretrain.objectives: objective {name!r} listed twice")
        out[name] = (float(entry.get("weight", 1.0)), build_objective(name, cfg.model.hidden, **params))
    if not out:
        raise ConfigError("pretrain.objectives is empty")
    return out


def backbone_payload(cfg: ModelConfig, backbone: torch.nn.Module) -> dict:
    return {"name": cfg.backbone, "kwargs": model_kwargs(cfg), "state": backbone.state_dict()}


def backbone_from_checkpoint(ckpt: dict, cfg: ModelConfig, path) -> torch.nn.Module:
    """A backbone of ``cfg``'s architecture with the checkpoint's weights (strict)."""
    saved = ckpt["backbone"]
    want = {"name": cfg.backbone, **model_kwargs(cfg)}
    have = {"name": saved["name"], **saved["kwargs"]}
    if want != have:
        keys = [*have, *(k for k in want if k not in have)]  # unset in the checkpoint: null
        diff = ", ".join(f"model.{'backbone' if k == 'name' else k}="
                         f"{'null' if have.get(k) is None else have[k]}"
                         for k in keys if have.get(k) != want.get(k))
        raise CheckpointError(f"{path}: checkpoint backbone {have} differs from the config's "
                              f"{want}; set {diff}")
    backbone = make_backbone(cfg)
    load_state(backbone, saved["state"], "backbone", path)
    return backbone


def pretrained_energy_head(ckpt: dict) -> tuple[str, dict] | None:
    """``(objective, EnergyHead state)`` of a pretrain checkpoint's energy model, if it has one:
    3D-EMGP with forces −∇E (``force: gradient``, a Riemann or Gaussian target), or denoising with
    ``vector: gradient`` (its −∂E/∂X̃ points back to the clean structure). None otherwise."""
    for name, obj in ckpt.get("objectives", {}).items():
        params = obj.get("params", {})
        if name == "emgp" and params.get("force", "gradient") == "gradient" \
                and params.get("target", "riemann") != "distance":
            prefix = "energy_head."
        elif name == "denoise" and params.get("vector", "direct") == "gradient":
            prefix = "noise_head."
        else:
            continue
        return name, {k[len(prefix):]: v for k, v in obj["state"].items() if k.startswith(prefix)}
    return None


def finetune_backbone(cfg: Config) -> torch.nn.Module:
    """The backbone a fine-tuning run starts from: ``finetune.init``'s weights (a checkpoint path
    or ``pretrained:NAME``, see :mod:`denoise3d.pretrained`), or a fresh one."""
    if not cfg.finetune.init:
        return make_backbone(cfg.model)
    from denoise3d.pretrained import resolve
    from denoise3d.train.checkpoint import load_checkpoint

    path = resolve(cfg.finetune.init)  # a path, or pretrained:NAME (shipped with the package)
    return backbone_from_checkpoint(load_checkpoint(path, kind="pretrain"), cfg.model, cfg.finetune.init)
