"""Evaluation of a fine-tuned checkpoint on a split: the checkpoint says its task, the task's
module computes its metrics (:func:`denoise3d.jobs.property.evaluate`,
:func:`denoise3d.jobs.energy_force.evaluate`)."""

from __future__ import annotations

from denoise3d.jobs import checkpoint, energy_force, property

EVALUATORS = {"property": property.evaluate, "energy_force": energy_force.evaluate}


def evaluate(path, split_name: str = "test", overrides: list[str] = ()) -> dict:
    """Metrics of the fine-tuned checkpoint ``path`` on ``split_name`` (train / valid / test /
    all) of its data; ``overrides`` (``data.max_test=1000``, ``data.path=other.npz``,
    ``train.device=cuda``) apply to its saved config."""
    ckpt = checkpoint.load(path, kind="finetune", overrides=overrides)
    return EVALUATORS[ckpt.task](ckpt, split_name)
