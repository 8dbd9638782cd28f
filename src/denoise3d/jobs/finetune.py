"""Fine-tuning: the task named by ``finetune.task`` through the job skeleton."""

from __future__ import annotations

from denoise3d.config import Config, ConfigError
from denoise3d.jobs import energy_force, property
from denoise3d.jobs.skeleton import run

# the fine-tuning tasks: each module supplies build(cfg) -> Job and evaluate(ckpt, split, ...)
TASKS = {"property": property, "energy_force": energy_force}


def finetune(cfg: Config) -> dict:
    """Fine-tune ``finetune.task`` (property: one label, e.g. a QM9 target; energy_force: a force
    field); keeps the best validation epoch; returns the test metrics (also ``metrics.json``)."""
    if cfg.finetune.task not in TASKS:
        raise ConfigError(f"unknown finetune.task {cfg.finetune.task!r} "
                          f"(known: {', '.join(TASKS)})")
    return run(cfg, TASKS[cfg.finetune.task].build)
