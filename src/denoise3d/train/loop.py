"""The training loop: a backbone and a weighted list of objectives, nothing else.

An objective is an ``nn.Module`` with ``objective(backbone, batch) -> (loss, logs)``; it owns its
corruption and its heads, so adding an objective never touches this loop.

With ``train.ema_decay`` set, an :class:`~denoise3d.train.ema.EMA` of all weights (backbone and
heads) is updated after every step; validation runs on the averaged weights
(:meth:`Trainer.averaged`), and :attr:`Trainer.eval_model` is what jobs save for evaluation.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from denoise3d.config import TrainConfig
from denoise3d.train.ema import EMA
from denoise3d.train.logging import CSVLog, plot_learning_curve
from denoise3d.train.optim import build_optimizer, build_scheduler


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Optimises ``backbone`` and the objectives' heads on the weighted sum of objective losses."""

    def __init__(self, backbone: nn.Module, objectives: dict[str, tuple[float, nn.Module]],
                 cfg: TrainConfig, out_dir: str | Path):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.weights = {name: w for name, (w, _) in objectives.items()}
        self.model = nn.ModuleDict({
            "backbone": backbone,
            "objectives": nn.ModuleDict({name: obj for name, (_, obj) in objectives.items()}),
        }).to(self.device)
        self.optimizer = build_optimizer(self.model.parameters(), cfg)
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay is not None else None
        self.out_dir = Path(out_dir)
        self.step = 0

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

    def train_step(self, batch) -> tuple[float, dict[str, float]]:
        self.model.train()
        loss, logs = self.loss(batch)
        if not torch.isfinite(loss):
            ids = batch.ids[:8].tolist()
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.step} on the batch "
                                     f"with molecules {ids}{'...' if batch.num_graphs > 8 else ''}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip is not None:
            logs["grad_norm"] = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip))
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.scheduler.step()
        self.step += 1
        return float(loss.detach()), logs

    def fit(self, loader, validate: Callable[[], dict[str, float]] | None = None,
            on_epoch_end: Callable[[int, dict], None] | None = None) -> list[dict]:
        """Train for ``cfg.epochs`` (or ``cfg.max_steps``); returns the validation history."""
        cfg = self.cfg
        total = len(loader) * cfg.epochs
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        self.scheduler = build_scheduler(self.optimizer, cfg, total)
        log, vlog, history = CSVLog(self.out_dir / "log.csv"), CSVLog(self.out_dir / "valid.csv"), []
        bar = tqdm(total=total, desc="train", unit="step", dynamic_ncols=True, mininterval=1.0)
        epoch = 0
        try:
            while self.step < total:
                loader.set_epoch(epoch)
                for batch in loader:
                    if self.step >= total:
                        break
                    t0 = time.perf_counter()
                    loss, logs = self.train_step(batch.to(self.device))
                    dt = time.perf_counter() - t0
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                    if self.step % cfg.log_every == 0 or self.step == total:
                        log.write({"step": self.step, "epoch": epoch, "loss": loss,
                                   "lr": self.optimizer.param_groups[0]["lr"],
                                   "molecules_per_s": batch.num_graphs / dt, **logs})
                epoch += 1
                if validate is not None:
                    with self.averaged():
                        metrics = validate()
                    vlog.write({"step": self.step, "epoch": epoch, **metrics})
                    history.append({"step": self.step, "epoch": epoch, **metrics})
                    bar.write(f"epoch {epoch} step {self.step}: " +
                              " ".join(f"{k}={v:.5g}" for k, v in metrics.items()))
                    if hasattr(self.scheduler, "epoch_end"):  # plateau: lr cuts on validation
                        self.scheduler.epoch_end(metrics)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, history[-1] if history else {})
        finally:
            bar.close()
            log.close()
            vlog.close()
        plot_learning_curve(self.out_dir)
        return history
