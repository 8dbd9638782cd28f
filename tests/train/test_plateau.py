"""train.scheduler=plateau: ReduceLROnPlateau on the validation loss, stepped per epoch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from denoise3d.config import ConfigError, TrainConfig
from denoise3d.train.loop import Trainer
from denoise3d.train.optim import PlateauLR, build_optimizer, build_scheduler


def scheduler(patience=2, factor=0.5, warmup=0, min_lr=0.0):
    cfg = TrainConfig(lr=1.0, scheduler="plateau", plateau_patience=patience,
                      plateau_factor=factor, warmup_steps=warmup, min_lr=min_lr)
    opt = build_optimizer([nn.Parameter(torch.zeros(1))], cfg)
    return opt, build_scheduler(opt, cfg, total_steps=1000)


def test_matches_torch_reduce_lr_on_plateau():
    opt, sched = scheduler(patience=2, factor=0.5)
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, factor=0.5, patience=2)
    losses = [5, 4, 4, 4, 4, 3.9999999, 3, 3, 3, 3, 3, 3, 2]
    for loss in losses:
        opt.step()
        sched.step()
        sched.epoch_end({"loss": loss, "energy_mae_meV": 1.0})
        ref.step(loss)
        assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"])
    assert opt.param_groups[0]["lr"] < 1.0


def test_warmup_composes_and_min_lr_bounds():
    opt, sched = scheduler(patience=0, factor=0.1, warmup=4, min_lr=0.05)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)  # warm-up step 0
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
    for _ in range(4):
        sched.epoch_end({"loss": 1.0})
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_bad_settings():
    with pytest.raises(ConfigError, match="plateau_factor"):
        scheduler(factor=1.5)


class Loader(list):
    def set_epoch(self, epoch):
        pass


class Point:  # the two things the Trainer needs of a batch
    num_graphs = 1

    def __init__(self, x):
        self.x = x

    def to(self, device):
        return self


class Quadratic(nn.Module):
    def forward(self, backbone, batch):
        return (backbone.w - batch.x).pow(2).sum(), {}


def test_trainer_cuts_the_lr_on_a_validation_plateau(tmp_path):
    cfg = TrainConfig(epochs=6, lr=0.1, scheduler="plateau", plateau_patience=1,
                      plateau_factor=0.5, grad_clip=None, device="cpu")
    backbone = nn.Module()
    backbone.w = nn.Parameter(torch.zeros(2))
    trainer = Trainer(backbone, {"q": (1.0, Quadratic())}, cfg, tmp_path)
    assert isinstance(build_scheduler(trainer.optimizer, cfg, 10), PlateauLR)
    lrs = []
    trainer.fit(Loader([Point(torch.ones(2))] * 2), validate=lambda: {"loss": 1.0},
                on_epoch_end=lambda epoch, m: lrs.append(trainer.optimizer.param_groups[0]["lr"]))
    # constant validation loss: best at epoch 1, bad epochs 2, 3 -> cut after 3, again after 5
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
