"""Optimiser and learning-rate schedules."""

from __future__ import annotations

import math

import torch

from denoise3d.config import ConfigError, TrainConfig


def build_optimizer(params, cfg: TrainConfig, backbone_params=None) -> torch.optim.Optimizer:
    """Adam over ``params``; with ``train.backbone_lr_factor`` ≠ 1 the ``backbone_params`` (a
    subset of ``params``) form a second group at ``lr × factor`` (the first group, the heads,
    keeps ``lr``). Schedules scale both groups alike."""
    if len(cfg.betas) != 2:
        raise ConfigError(f"train.betas must have two values, got {cfg.betas}")
    if not cfg.backbone_lr_factor >= 0:
        raise ConfigError(f"train.backbone_lr_factor must be >= 0, got {cfg.backbone_lr_factor}")
    params = list(params)
    if cfg.backbone_lr_factor != 1.0 and backbone_params is not None:
        ids = {id(p) for p in backbone_params}
        params = [{"params": [p for p in params if id(p) not in ids]},
                  {"params": [p for p in params if id(p) in ids],
                   "lr": cfg.lr * cfg.backbone_lr_factor}]
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, warmup: int, kind: str, start: float | None = None,
              floor: float = 0.0, cycle: int | None = None) -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up, then cosine or constant.

    Warm-up rises linearly from ``start`` (a fraction of the base lr; None = ``1/warmup``, so
    step 0 gets ``1/warmup``) to 1 over ``warmup`` steps. Cosine then falls from 1 to ``floor``
    at step ``cycle`` (counted from step 0, like optax's ``warmup_cosine_decay_schedule``;
    None = ``total``) and stays there. Zaidi et al. (Table 3): lr 1e-4, start 1e-5/1e-4 = 0.1,
    warm-up 10⁴, floor 1e-7/1e-4, cycle 5·10⁵ over 3·10⁵ steps.
    """
    if warmup > 0 and step < warmup:
        if start is None:
            return (step + 1) / warmup
        return start + (1.0 - start) * step / warmup
    if kind in ("constant", "plateau"):  # plateau: cuts come per epoch, see PlateauLR
        return 1.0
    if kind == "cosine":
        span = max(1, (total if cycle is None else cycle) - warmup)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))
    raise ConfigError(f"unknown train.scheduler {kind!r} (known: cosine, constant, plateau)")


class PlateauLR(torch.optim.lr_scheduler.LambdaLR):
    """``ReduceLROnPlateau`` on top of the per-step warm-up: ``lr = base · fn(step) · scale``.

    :meth:`epoch_end` gets the epoch's validation metrics (the Trainer calls it) and multiplies
    ``scale`` by ``factor`` after more than ``patience`` epochs without a relative improvement of
    1e-4 of the monitored value (``loss`` if present, else the first metric), never below
    ``min_scale`` — torch's ReduceLROnPlateau rule (mode "min", threshold 1e-4 "rel",
    cooldown 0). 3D-EMGP on MD17: patience 30, factor 0.9 on the validation loss.
    """

    def __init__(self, optimizer, fn, factor: float, patience: int, min_scale: float = 0.0):
        if not 0 < factor < 1 or patience < 0:
            raise ConfigError(f"train.plateau_factor must be in (0, 1) and plateau_patience >= 0, "
                              f"got {factor}, {patience}")
        self.scale, self.best, self.bad_epochs = 1.0, math.inf, 0
        self.factor, self.patience, self.min_scale = factor, patience, min_scale
        super().__init__(optimizer, lambda step: fn(step) * self.scale)

    def epoch_end(self, metrics: dict[str, float]) -> None:
        if not metrics:
            return
        value = float(metrics["loss"] if "loss" in metrics else next(iter(metrics.values())))
        if value < self.best * (1.0 - 1e-4) if self.best > 0 else value < self.best:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.scale, self.bad_epochs = max(self.scale * self.factor, self.min_scale), 0
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base * self.lr_lambdas[0](self.last_epoch)


def build_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    start = None if cfg.warmup_start_lr is None else cfg.warmup_start_lr / cfg.lr
    floor = cfg.min_lr / cfg.lr
    lr_factor(0, total_steps, cfg.warmup_steps, cfg.scheduler)  # validate the name early

    def fn(step):
        return lr_factor(step, total_steps, cfg.warmup_steps, cfg.scheduler, start, floor,
                         cfg.cosine_steps)

    if cfg.scheduler == "plateau":
        return PlateauLR(optimizer, fn, cfg.plateau_factor, cfg.plateau_patience, floor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
