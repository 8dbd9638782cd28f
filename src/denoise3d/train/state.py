"""Exact resume: everything a run needs to continue as if never stopped, in ``out/resume.pt``.

Written atomically (temporary name, then rename; rank 0 only) every ``train.checkpoint_every``
steps and at every epoch end. It holds (all loadable with ``torch.load(weights_only=True)``)::

    model, optimizer, scheduler, scaler   state dicts (training weights, Adam moments, lr state)
    ema                                   {"state", "num_updates"} or None
    step, epoch, batches_done             optimiser steps; epochs finished; batches done in `epoch`
    skipped, history, extra               skipped steps; validation rows; job state (best epoch)
    seconds                               [training wall time, last epoch's] (train.max_minutes)
    rng                                   per rank: torch (CPU, CUDA), numpy and python RNG states
    world_size, steps_per_epoch           checked on resume (same launch geometry and batches)

The data-loader position is (epoch, batches_done): loaders draw epoch ``e``'s order from
``(seed, e)``, so the resumed run skips ``batches_done`` batches of the same order without
building them. With the RNG states restored, a run killed at any point (SIGKILL included) and resumed gives bit-identical
parameters to an uninterrupted run on CPU (deterministic kernels, same thread count).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from denoise3d.train.checkpoint import CheckpointError, load_checkpoint, load_state, save_checkpoint
from denoise3d.train.distributed import gather_objects

RESUME_NAME = "resume.pt"


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_resume(trainer, steps_per_epoch: int) -> Path:
    """Write ``out/resume.pt`` (collective under data parallelism: every rank must call it)."""
    rngs = gather_objects(rng_state())
    path = trainer.out_dir / RESUME_NAME
    if trainer.dist.is_main:
        save_checkpoint(path, {
            "kind": "resume", "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else {},
            "ema": None if trainer.ema is None else {"state": trainer.ema.module.state_dict(),
                                                     "num_updates": trainer.ema.num_updates},
            "step": trainer.step, "epoch": trainer.epoch, "batches_done": trainer.batches_done,
            "skipped": trainer.skipped, "history": trainer.history, "extra": trainer.extra,
            "seconds": [trainer.seconds, trainer.epoch_seconds],
            "rng": rngs, "world_size": trainer.dist.world_size, "steps_per_epoch": steps_per_epoch})
    return path


def resume_path(resume: bool | str, out_dir: Path) -> Path | None:
    """The checkpoint to resume from: None (fresh start), ``out/resume.pt`` if ``True`` and it
    exists (so a requeued job continues and a first launch starts), or an explicit path."""
    if resume is False or resume is None:
        return None
    if resume is True:
        path = out_dir / RESUME_NAME
        return path if path.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"train.resume: resume checkpoint not found: {path}")
    return path


def load_resume(trainer, path: Path, steps_per_epoch: int) -> None:
    """Restore ``trainer`` (after its scheduler is built) from a resume checkpoint."""
    ck = load_checkpoint(path, kind="resume")
    if ck["world_size"] != trainer.dist.world_size or ck["steps_per_epoch"] != steps_per_epoch:
        raise CheckpointError(
            f"{path}: written by {ck['world_size']} process(es) with {ck['steps_per_epoch']} steps "
            f"per epoch; this run has {trainer.dist.world_size} and {steps_per_epoch}: resume "
            f"needs the same launch geometry and batch settings")
    load_state(trainer.model, ck["model"], "model", path)
    trainer.optimizer.load_state_dict(ck["optimizer"])
    trainer.scheduler.load_state_dict(ck["scheduler"])
    if trainer.scaler is not None and ck["scaler"]:
        trainer.scaler.load_state_dict(ck["scaler"])
    if trainer.ema is not None:
        if ck["ema"] is None:
            raise CheckpointError(f"{path}: written without EMA, this run has train.ema_decay set")
        trainer.ema.module.load_state_dict(ck["ema"]["state"])
        trainer.ema.num_updates = ck["ema"]["num_updates"]
    trainer.step, trainer.epoch = ck["step"], ck["epoch"]
    trainer.batches_done = ck["batches_done"] if "batches_done" in ck else ck["pos"]  # format 1: "pos"
    trainer.skipped, trainer.history = ck["skipped"], list(ck["history"])
    trainer.seconds, trainer.epoch_seconds = ck.get("seconds", [0.0, 0.0])  # older files: none
    for k, v in ck["extra"].items():  # in place: jobs hold references to these dicts
        if isinstance(trainer.extra.get(k), dict) and isinstance(v, dict):
            trainer.extra[k].update(v)
        else:
            trainer.extra[k] = v
    set_rng_state(ck["rng"][trainer.dist.rank])
