"""Evaluation loops (no gradients, EMA-free for now)."""

from __future__ import annotations

import torch
from tqdm import tqdm


@torch.no_grad()
def property_mae(backbone, objective, loader, device) -> float:
    """Mean absolute error of ``objective.predict`` over ``loader``, internal units."""
    backbone.eval()
    objective.eval()
    total, count = 0.0, 0
    for batch in tqdm(loader, desc="evaluate", unit="batch", leave=False, mininterval=1.0):
        batch = batch.to(device)
        pred = objective.predict(backbone, batch)
        total += float((pred - batch.targets[objective.target]).abs().sum())
        count += batch.num_graphs
    return total / max(count, 1)


def objective_loss(trainer, loader, seed: int = 1234) -> dict[str, float]:
    """Mean weighted objective loss over ``loader`` with a fixed noise seed (comparable epochs).

    Runs in eval mode under ``no_grad``; energy-based objectives switch autograd back on for
    their forces themselves (without building the double-backward graph).
    """
    trainer.model.eval()
    total, count, parts = 0.0, 0, {}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for batch in loader:
            batch = batch.to(trainer.device)
            loss, logs = trainer.loss(batch)
            n = batch.num_graphs
            total += float(loss) * n
            count += n
            for k, v in logs.items():
                parts[k] = parts.get(k, 0.0) + v * n
    return {"loss": total / max(count, 1), **{k: v / max(count, 1) for k, v in parts.items()}}
