"""Backbones (``backbone(batch) -> (s, v)``) and the heads that sit on them.

``s`` (n_atoms, F) invariant node features; ``v`` (n_atoms, 3, F) equivariant vector features or
``None`` for architectures without them (EGNN as used by 3D-EMGP).
"""

from __future__ import annotations

import inspect

from torch import nn

from denoise3d.models.egnn import EGNN
from denoise3d.models.heads import (ClassifierHead, EnergyHead, PropertyHead, energy_and_forces,
                                    graph_embedding)

__all__ = ["BACKBONES", "build_backbone", "EGNN", "EnergyHead", "PropertyHead", "ClassifierHead",
           "energy_and_forces", "graph_embedding"]

BACKBONES: dict[str, type[nn.Module]] = {"egnn": EGNN}


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Instantiate the backbone registered as ``name`` with hyperparameters ``kwargs``.

    Raises a one-line ``ValueError`` for an unknown name or an unknown keyword.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}")
    cls = BACKBONES[name]
    params = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for backbone {name!r}; "
                         f"known: {', '.join(params)}")
    return cls(**kwargs)
