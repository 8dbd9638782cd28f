"""Backbones (``backbone(batch) -> (s, v)``) and the heads that sit on them.

``s`` (n_atoms, F) invariant node features; ``v`` (n_atoms, 3, F) equivariant vector features or
``None`` for architectures without them (EGNN as used by 3D-EMGP, SchNet, GNS, GNS-TAT).
Radius-graph backbones (all but EGNN) build their neighbour lists inside ``forward`` from the
positions they are given (:mod:`denoise3d.models.neighbours`).
"""

from __future__ import annotations

import dataclasses
import inspect

from torch import nn

from denoise3d.config import ConfigError, ModelConfig

from denoise3d.models.egnn import EGNN
from denoise3d.models.gns import GNS, GNSTAT
from denoise3d.models.heads import (ClassifierHead, EnergyHead, PropertyHead, energy_and_forces,
                                    graph_embedding)
from denoise3d.models.mace import MACE
from denoise3d.models.painn import PaiNN
from denoise3d.models.schnet import SchNet
from denoise3d.models.torchmd_et import TorchMDET

__all__ = ["BACKBONES", "build_backbone", "backbone_parameters", "model_kwargs", "backbone_from_config", "EGNN", "SchNet", "PaiNN",
           "TorchMDET", "MACE", "GNS", "GNSTAT", "EnergyHead", "PropertyHead", "ClassifierHead",
           "energy_and_forces", "graph_embedding"]

BACKBONES: dict[str, type[nn.Module]] = {
    "egnn": EGNN,  # 3D-EMGP's base: fully connected graph with hop types
    "schnet": SchNet,  # 3D-EMGP App. B.4
    "painn": PaiNN,
    "torchmd_et": TorchMDET,  # 3D-EMGP App. B.4; Zaidi et al. (TorchMD-NET)
    "mace": MACE,  # beyond the papers: body order > 2 (Batatia et al. 2022, via mace-torch)
    "gns": GNS,  # Zaidi et al. App. A.1
    "gns_tat": GNSTAT,  # Zaidi et al. App. A.2
}


def backbone_parameters(name: str) -> list[str]:
    """The hyperparameter names the backbone ``name`` accepts (its constructor's keywords)."""
    return [p for p in inspect.signature(BACKBONES[name]).parameters if p != "self"]


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Instantiate the backbone registered as ``name`` with hyperparameters ``kwargs``.

    Raises a one-line ``ValueError`` for an unknown name or an unknown keyword.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}")
    cls = BACKBONES[name]
    params = backbone_parameters(name)
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for backbone {name!r}; "
                         f"known: {', '.join(params)}")
    return cls(**kwargs)


def model_kwargs(cfg: ModelConfig) -> dict:
    """The backbone's keyword arguments: hidden, layers and every optional setting that is set.

    Settings left at None are not passed (the backbone's default applies), so the kwargs of an
    EGNN with none set stay ``{hidden, layers}`` (what checkpoints of the official form hold). A setting the backbone
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


def backbone_from_config(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised backbone of ``model.*`` (draws from torch's RNG)."""
    return build_backbone(cfg.backbone, **model_kwargs(cfg))
