"""The training loop: a backbone and a weighted list of objectives, nothing else.

An objective is an ``nn.Module`` with ``objective(backbone, batch) -> (loss, logs)``; it owns its
corruption and its heads, so adding an objective never touches this loop.

With ``train.ema_decay`` set, an :class:`~denoise3d.train.ema.EMA` of all weights (backbone and
heads) is updated after every step; validation runs on the averaged weights
(:meth:`Trainer.averaged`), and :attr:`Trainer.eval_model` is what jobs save for evaluation.

Around that core (each in its own module):

- data parallelism over torchrun / SLURM processes (:mod:`denoise3d.train.distributed`): the
  loader is sharded per rank, gradients are averaged in one all-reduce after ``backward``;
- exact resume (:mod:`denoise3d.train.state`): ``out/resume.pt`` every ``train.checkpoint_every``
  steps and at each epoch end; ``train.resume=true`` continues from it;
- non-finite losses or gradients: ``train.nonfinite=error`` raises naming the batch's molecules,
  ``skip`` skips the update (no optimiser or EMA step) and counts it (``skipped_steps`` in log.csv);
  every rank takes the same decision (the flag is part of the gradient all-reduce);
- ``train.precision=bf16|fp16``: CUDA autocast for the forward pass (fp16 with a GradScaler);
  positions stay float32 leaves, so autograd forces ``-dE/dx`` come back in float32;
- logs on rank 0: progress bar, ``log.csv`` / ``valid.csv``, TensorBoard (``out/tb``) and
  ``learning_curve.png``.
"""

from __future__ import annotations

import itertools
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from denoise3d.config import ConfigError, TrainConfig, device_named
from denoise3d.train.distributed import (ShardedLoader, broadcast_module, gather_objects,
                                         init_distributed, sync_gradients)
from denoise3d.train.ema import EMA
from denoise3d.train.logging import CSVLog, TensorBoardLog, plot_learning_curve
from denoise3d.train.optim import build_optimizer, build_scheduler
from denoise3d.train.state import load_resume, resume_path, save_resume


def _autocast_dtype(precision: str, device: torch.device, verbose: bool) -> torch.dtype | None:
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ConfigError(f"unknown train.precision {precision!r} (known: fp32, bf16, fp16)")
    if dtypes[precision] is not None and device.type != "cuda":
        if verbose:
            print(f"train.precision={precision} is for GPUs; training on {device.type} in float32")
        return None
    return dtypes[precision]


class PlainProgress:
    """Progress as plain lines (no cursor escapes) when stderr is not a terminal: one line per
    5 % of the run, with the loss; the same ``update`` / ``set_postfix`` / ``write`` as tqdm."""

    def __init__(self, total: int, initial: int):
        self.total, self.n, self.every = total, initial, max(total // 20, 1)
        self.postfix = ""

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n % self.every == 0 or self.n == self.total:
            print(f"train: step {self.n}/{self.total}{self.postfix}", file=sys.stderr, flush=True)

    def set_postfix(self, refresh: bool = False, **values) -> None:
        self.postfix = "".join(f" {k}={v}" for k, v in values.items())

    def write(self, text: str) -> None:
        print(text, flush=True)

    def close(self) -> None:
        pass


def progress(total: int, initial: int, show: bool):
    """A tqdm bar on a terminal, plain lines otherwise, nothing when ``show`` is false."""
    if show and not sys.stderr.isatty():
        return PlainProgress(total, initial)
    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
                mininterval=1.0, disable=not show)


def iter_batches(loader, start: int = 0):
    """The loader's batches of the current epoch from batch ``start`` on (resume mid-epoch)."""
    if start == 0:
        return iter(loader)
    if hasattr(loader, "index_batches"):  # skip without building the skipped batches
        return (loader.make(idx) for idx in loader.index_batches()[start:])
    return itertools.islice(iter(loader), start, None)


class Trainer:
    """Optimises ``backbone`` and the objectives' heads on the weighted sum of objective losses."""

    def __init__(self, backbone: nn.Module, objectives: dict[str, tuple[float, nn.Module]],
                 cfg: TrainConfig, out_dir: str | Path):
        if cfg.nonfinite not in ("error", "skip"):
            raise ConfigError(f"unknown train.nonfinite {cfg.nonfinite!r} (known: error, skip)")
        if cfg.max_minutes is not None and not 0 < cfg.max_minutes < float("inf"):  # nan too
            raise ConfigError(f"train.max_minutes={cfg.max_minutes:g}: a training budget is a "
                              f"positive number of minutes (null = none)")
        self.cfg = cfg
        self.dist, self.device = init_distributed(device_named(cfg.device))
        self.weights = {name: w for name, (w, _) in objectives.items()}
        self.model = nn.ModuleDict({
            "backbone": backbone,
            "objectives": nn.ModuleDict({name: obj for name, (_, obj) in objectives.items()}),
        }).to(self.device)
        if self.dist.enabled:  # same start everywhere; then distinct noise streams per rank
            broadcast_module(self.model)
            if self.dist.rank > 0:
                torch.manual_seed(cfg.seed + 1_000_003 * self.dist.rank)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.model.parameters(), cfg,
                                         self.model["backbone"].parameters())
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay is not None else None
        self.amp_dtype = _autocast_dtype(cfg.precision, self.device, self.dist.is_main)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.out_dir = Path(out_dir)
        self.step = 0  # optimiser steps taken (skipped ones included)
        self.epoch, self.batches_done = 0, 0  # epochs finished; batches done in the current epoch
        self.skipped = 0  # steps skipped on a non-finite loss or gradient
        self.history: list[dict] = []  # validation rows
        self.extra: dict = {}  # job state saved with resume checkpoints (e.g. the best epoch)
        # training wall time (s, resumed runs included) and the last epoch's, for train.max_minutes
        self.seconds, self.epoch_seconds = 0.0, 0.0
        self.stopped: str | None = None  # why training ended before its planned steps, if it did
        self._plan = None  # (loader, steps per epoch, total steps, resumed) from start()

    @property
    def backbone(self) -> nn.Module:
        return self.model["backbone"]

    @property
    def eval_model(self) -> nn.ModuleDict:
        """The weights to evaluate and to fine-tune from: the EMA copy if EMA is on, else the model."""
        return self.model if self.ema is None else self.ema.module

    @contextmanager
    def averaged(self):
        """Inside the block ``self.model`` holds the evaluation (EMA) weights; no-op without EMA."""
        if self.ema is None:
            yield
        else:
            with self.ema.applied(self.model):
                yield

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        total, logs = 0.0, {}
        for name, obj in self.model["objectives"].items():
            loss, obj_logs = obj(self.backbone, batch)
            total = total + self.weights[name] * loss
            logs.update({f"{name}_{k}": v for k, v in obj_logs.items()})
        return total, logs

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, batch) -> tuple[float, dict[str, float]]:
        """One optimiser step on ``batch`` (this rank's share of the global batch).

        Returns the global batch's mean loss (NaN for a skipped step) and the objectives' logs
        (with ``molecules``, the global batch size, and ``grad_norm`` when clipping).
        """
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss, logs = self.loss(batch)
        loss = loss.float()
        bad = not bool(torch.isfinite(loss))
        if not bad:
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        n, bad_any, loss_sum = sync_gradients(self.params, batch.num_graphs, bad,
                                              float(loss.detach()) * batch.num_graphs, self.dist)
        what = "loss"
        if not bad_any:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            clip = self.cfg.grad_clip if self.cfg.grad_clip is not None else float("inf")
            norm = float(nn.utils.clip_grad_norm_(self.params, clip))  # identical on all ranks
            if self.cfg.grad_clip is not None:
                logs["grad_norm"] = norm
            bad_any = self.scaler is None and not torch.isfinite(torch.tensor(norm))
            what = f"gradient (norm {norm})"
        if bad_any:
            self._nonfinite(batch, what, bad, float(loss.detach()))
            loss_sum = float("nan")
        elif self.scaler is not None:  # fp16: the scaler skips overflowing steps itself
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None and not bad_any:
            self.ema.update(self.model)
        self.scheduler.step()
        self.step += 1
        logs["molecules"] = n
        return loss_sum / max(n, 1), logs

    def _nonfinite(self, batch, what: str, bad_here: bool, loss: float) -> None:
        """Raise naming the offending batches (every rank, same message), or count a skip."""
        ids = batch.ids.tolist()
        mine = f"molecules {ids[:8]}{'...' if len(ids) > 8 else ''}" if bad_here or "gradient" in what \
            else None
        where = [m for m in gather_objects(mine) if m]
        self.optimizer.zero_grad(set_to_none=True)
        if self.cfg.nonfinite == "error":
            value = f" {loss}" if what == "loss" else ""
            raise FloatingPointError(
                f"non-finite {what}{value} at step {self.step} on the batch with "
                f"{'; '.join(where)} (set train.nonfinite=skip to skip such steps, counted in log.csv)")
        self.skipped += 1

    def _steps_per_epoch(self, loader) -> list[int]:
        counts = []
        for e in range(self.cfg.epochs):
            loader.set_epoch(e)
            counts.append(len(loader))
            if self.cfg.max_steps is not None and sum(counts) >= self.cfg.max_steps:
                break
        return counts

    def start(self, loader) -> None:
        """Plan the run on ``loader`` (steps per epoch, lr schedule) and restore ``train.resume``'s
        state; writes nothing, so a job can call it while still validating. :meth:`fit` calls it
        if the job did not.

        Under data parallelism ``loader`` is the full training loader; each rank takes its share.
        """
        cfg = self.cfg
        if self.dist.enabled:
            loader = ShardedLoader(loader, self.dist.rank, self.dist.world_size, train=True)
        counts = self._steps_per_epoch(loader)
        total = sum(counts) if cfg.max_steps is None else min(sum(counts), cfg.max_steps)
        self.scheduler = build_scheduler(self.optimizer, cfg, total)
        resume = resume_path(cfg.resume, self.out_dir)
        if resume is not None:
            load_resume(self, resume, counts[0])
            if self.dist.is_main:
                print(f"resuming from {resume}: step {self.step}, epoch {self.epoch + 1}, "
                      f"batch {self.batches_done}")
        if (cfg.max_minutes is not None and cfg.scheduler == "cosine" and cfg.cosine_steps is None
                and self.dist.is_main):
            print(f"note: train.max_minutes with train.scheduler=cosine: the cosine spans all "
                  f"{total} planned steps, so a run stopped by the budget ends before the lr "
                  f"reaches train.min_lr (train.cosine_steps=N sets its length)")
        self._plan = (loader, counts, total, resume is not None)

    def fit(self, loader, validate: Callable[[], dict[str, float]] | None = None,
            on_epoch_end: Callable[[int, dict], None] | None = None) -> list[dict]:
        """Train for ``cfg.epochs`` (or ``cfg.max_steps``) on ``loader`` (the one given to
        :meth:`start`, if the job called it); returns the validation history."""
        if self._plan is None:
            self.start(loader)
        loader, counts, total, resumed = self._plan
        self._plan = None
        cfg, main = self.cfg, self.dist.is_main
        logs = self._open_logs(resumed=resumed)
        bar = progress(total, self.step, main and cfg.progress)
        begin, before = time.perf_counter(), self.seconds
        try:
            while self.step < total or self.batches_done > 0:  # > 0: finish a resumed epoch
                if self.batches_done == 0 and self._out_of_time(total):
                    break
                loader.set_epoch(self.epoch)
                started = t0 = time.perf_counter()
                for batch in iter_batches(loader, self.batches_done):
                    if self.step >= total:
                        break
                    loss, row = self.train_step(batch.to(self.device))
                    t1 = time.perf_counter()
                    dt, t0 = t1 - t0, t1  # wall time of the step, batch loading included
                    self.batches_done += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                    if main and (self.step % cfg.log_every == 0 or self.step == total):
                        self._log_step(logs, loss, row, dt)
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        self.seconds = before + time.perf_counter() - begin
                        save_resume(self, counts[0])
                        t0 = time.perf_counter()
                self._epoch_end(validate, on_epoch_end, logs, bar)
                now = time.perf_counter()
                self.epoch_seconds, self.seconds = now - started, before + now - begin
                save_resume(self, counts[0])
        finally:
            bar.close()
            for log in logs.values():
                log.close()
        if main:
            plot_learning_curve(self.out_dir)
        return self.history

    def _out_of_time(self, total: int) -> bool:
        """Whether ``train.max_minutes`` leaves no room for another epoch of the last one's
        duration (the same answer on every rank: rank 0's); sets :attr:`stopped` and says so."""
        if self.cfg.max_minutes is None:
            return False
        over = self.seconds + self.epoch_seconds > 60.0 * self.cfg.max_minutes
        if not gather_objects(over)[0]:
            return False
        self.stopped = (f"train.max_minutes={self.cfg.max_minutes:g}: stopped after epoch "
                        f"{self.epoch} of {self.cfg.epochs}, step {self.step} of {total}, "
                        f"{self.seconds / 60:.3g} min of training (the last epoch took "
                        f"{self.epoch_seconds / 60:.3g} min)")
        if self.dist.is_main:
            print(f"note: {self.stopped}")
        return True

    def _open_logs(self, resumed: bool) -> dict:
        if not self.dist.is_main:
            return {}
        step, epoch = self.step, self.epoch
        keep_train = (lambda r: float(r["step"]) <= step) if resumed else None
        keep_valid = (lambda r: float(r["epoch"]) <= epoch) if resumed else None
        logs = {"train": CSVLog(self.out_dir / "log.csv", keep_train),
                "valid": CSVLog(self.out_dir / "valid.csv", keep_valid)}
        if self.cfg.tensorboard:
            logs["tb"] = TensorBoardLog(self.out_dir / "tb", purge_step=step if resumed else None)
        return logs

    def _log_step(self, logs: dict, loss: float, row: dict, dt: float) -> None:
        n = row.pop("molecules")
        out = {"step": self.step, "epoch": self.epoch, "loss": loss,
               "lr": self.optimizer.param_groups[0]["lr"], "molecules_per_s": n / dt,
               "skipped_steps": self.skipped, **row}
        logs["train"].write(out)
        if "tb" in logs:
            logs["tb"].write("train", out, self.step)

    def _epoch_end(self, validate, on_epoch_end, logs: dict, bar) -> None:
        self.epoch += 1
        self.batches_done = 0
        if validate is not None:
            with self.averaged():
                metrics = validate()
            row = {"step": self.step, "epoch": self.epoch, **metrics}
            self.history.append(row)
            if logs:
                logs["valid"].write(row)
                if "tb" in logs:
                    logs["tb"].write("valid", row, self.step)
            if self.dist.is_main:
                bar.write(f"epoch {self.epoch} step {self.step}: " +
                          " ".join(f"{k}={v:.5g}" for k, v in metrics.items()))
            if hasattr(self.scheduler, "epoch_end"):  # plateau: lr cuts on validation
                self.scheduler.epoch_end(metrics)
        if on_epoch_end is not None:
            on_epoch_end(self.epoch, self.history[-1] if self.history else {})
