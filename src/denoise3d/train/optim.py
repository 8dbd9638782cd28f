"""Optimiser and learning-rate schedules."""

from __future__ import annotations

import math

import torch

from denoise3d.config import ConfigError, TrainConfig


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if len(cfg.betas) != 2:
        raise ConfigError(f"train.betas must have two values, got {cfg.betas}")
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up, then cosine or constant."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        span = max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))
    raise ConfigError(f"unknown train.scheduler {kind!r} (known: cosine, constant)")


def build_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    lr_factor(0, total_steps, cfg.warmup_steps, cfg.scheduler)  # validate the name early
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg.warmup_steps, cfg.scheduler))
