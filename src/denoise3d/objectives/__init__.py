"""Training objectives: ``objective(backbone, batch) -> (loss, logs)``; each owns its corruption.

``OBJECTIVES`` maps config names to classes; every class takes ``hidden`` (the backbone's node
feature width) first, then its own keyword parameters.
"""

from __future__ import annotations

import inspect

from torch import nn

from denoise3d.objectives.denoise import Denoise
from denoise3d.objectives.emgp import EMGP
from denoise3d.objectives.masking import AttrMask
from denoise3d.objectives.pospred import PosPred

__all__ = ["EMGP", "Denoise", "PosPred", "AttrMask", "OBJECTIVES", "build_objective"]

OBJECTIVES: dict[str, type[nn.Module]] = {
    "emgp": EMGP,  # 3D-EMGP pretraining: EFP + INP, and its Table 3 ablations (target=, force=)
    "denoise": Denoise,  # Zaidi et al.: predict centred noise ε; optional atom-type masking
    "pospred": PosPred,  # 3D-EMGP baseline: positions moved to the centroid, predicted back
    "attrmask": AttrMask,  # 3D-EMGP baseline: masked atom types, predicted
}


def build_objective(name: str, hidden: int, **params) -> nn.Module:
    """``OBJECTIVES[name](hidden, **params)``; unknown names or parameters are a ValueError."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose from {sorted(OBJECTIVES)}")
    cls = OBJECTIVES[name]
    allowed = set(inspect.signature(cls).parameters) - {"hidden"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for objective {name!r}; "
                         f"allowed: {sorted(allowed)}")
    return cls(hidden, **params)
