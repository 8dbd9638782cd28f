"""Training objectives: ``objective(backbone, batch) -> (loss, logs)``; each owns its corruption.

``OBJECTIVES`` maps config names to classes; every class takes ``hidden`` (the backbone's node
feature width) first, then its own keyword parameters.
"""

from __future__ import annotations

import inspect

from torch import nn

from denoise3d.config import ConfigError

from denoise3d.objectives.denoise import Denoise
from denoise3d.objectives.emgp import EMGP
from denoise3d.objectives.masking import AttrMask
from denoise3d.objectives.pospred import PosPred

__all__ = ["EMGP", "Denoise", "PosPred", "AttrMask", "OBJECTIVES", "build_objective",
           "objectives_from_recipe", "recipe_params"]

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


def objectives_from_recipe(recipe: list, hidden: int) -> dict[str, tuple[float, nn.Module]]:
    """``{name: (weight, module)}`` from a weighted recipe (``pretrain.objectives``: a list of
    ``{name, weight, **params}``); objectives are built in list order (each draws its heads'
    initial weights from torch's RNG)."""
    out = {}
    for i, entry in enumerate(recipe):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"pretrain.objectives[{i}] must be a mapping with a 'name'")
        name = entry["name"]
        if name in out:
            raise ConfigError(f"pretrain.objectives: objective {name!r} listed twice")
        out[name] = (float(entry.get("weight", 1.0)),
                     build_objective(name, hidden, **recipe_params(entry)))
    if not out:
        raise ConfigError("pretrain.objectives is empty")
    return out


def recipe_params(entry: dict) -> dict:
    """An objective's own parameters: its recipe entry without ``name`` and ``weight``."""
    return {k: v for k, v in entry.items() if k not in ("name", "weight")}
