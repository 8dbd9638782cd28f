"""Pretraining: a backbone and a weighted recipe of objectives on unlabelled structures.

Labels are unused; validation is the recipe's loss on the validation structures with a fixed
noise seed (comparable across epochs); ``pretrain.pt`` holds every epoch's weights as it ends.
"""

from __future__ import annotations

from pathlib import Path

from denoise3d.config import Config, explicit_keys
from denoise3d.data.sources import load_data
from denoise3d.jobs.skeleton import Job, run
from denoise3d.models import backbone_from_config
from denoise3d.objectives import objectives_from_recipe, recipe_params
from denoise3d.train.evaluate import objective_loss


def build(cfg: Config) -> Job:
    objectives = objectives_from_recipe(cfg.pretrain.objectives, cfg.model.hidden)
    ds, split = load_data(cfg.data, explicit_keys(cfg, "data"))
    backbone = backbone_from_config(cfg.model)  # after the objectives: the seeded draw order
    return Job(
        task="pretrain", backbone=backbone, objectives=objectives,
        params={e["name"]: recipe_params(e) for e in cfg.pretrain.objectives},
        dataset=ds, split=split,
        announce=f"pretraining {cfg.model.backbone} ({cfg.model.layers}x{cfg.model.hidden}) on "
                 f"{len(split['train'])} structures with {', '.join(objectives)}",
        validate=lambda trainer, valid: {"loss": objective_loss(trainer, valid)["loss"]})


def pretrain(cfg: Config) -> Path:
    """Pretrain on the training-split structures; returns the checkpoint path."""
    return run(cfg, build)
