"""Evaluation of a fine-tuned checkpoint on a split: the checkpoint says its task, the task's
module computes its metrics (:func:`denoise3d.jobs.property.evaluate`,
:func:`denoise3d.jobs.energy_force.evaluate`)."""

from __future__ import annotations

from denoise3d.jobs import checkpoint
from denoise3d.jobs.finetune import TASKS


def evaluate(path, split_name: str = "test", overrides: list[str] = (),
             allow_unseen: bool = False, compile: bool = False) -> dict:
    """Metrics of the fine-tuned checkpoint ``path`` on ``split_name`` (train / valid / test /
    all) of its data; ``overrides`` (``data.max_test=1000``, ``data.path=other.npz``,
    ``train.device=cuda``) apply to its saved config. Structures with elements absent from the
    training data are refused unless ``allow_unseen``. ``compile``: a force field's energies and
    forces run as one compiled program (:mod:`denoise3d.models.inference`; property models have
    no such program and refuse it)."""
    ckpt = checkpoint.load(path, kind="finetune", overrides=overrides)
    if compile and ckpt.task != "energy_force":
        raise ValueError(f"{path}: --compile applies to force fields (finetune.task=energy_force); "
                         f"this checkpoint is a {ckpt.task} model")
    extra = {"compile": True} if compile else {}
    return TASKS[ckpt.task].evaluate(ckpt, split_name, allow_unseen, **extra)
