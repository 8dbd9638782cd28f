"""train.backbone_lr_factor: the backbone in its own Adam group at lr × factor, heads at lr."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from denoise3d.config import ConfigError, TrainConfig
from denoise3d.train.loop import Trainer
from denoise3d.train.optim import build_optimizer, build_scheduler

from test_plateau import Loader, Point  # the Trainer's minimal loader and batch


class Shift(nn.Module):  # a head with its own weight: loss (w + b - x)²
    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(2))

    def forward(self, backbone, batch):
        return (backbone.w + self.b - batch.x).pow(2).sum(), {}


def trainer(tmp_path, factor, **kw):
    cfg = TrainConfig(epochs=3, lr=0.1, backbone_lr_factor=factor, grad_clip=None, device="cpu",
                      **kw)
    backbone = nn.Module()
    backbone.w = nn.Parameter(torch.zeros(2))
    return Trainer(backbone, {"shift": (1.0, Shift())}, cfg, tmp_path)


def test_factor_one_is_one_group(tmp_path):
    assert len(trainer(tmp_path, 1.0).optimizer.param_groups) == 1


def test_groups_and_schedule_scale_both(tmp_path):
    t = trainer(tmp_path, 0.25, scheduler="cosine")
    heads, backbone = t.optimizer.param_groups
    assert [p is t.backbone.w for p in backbone["params"]] == [True]
    assert heads["lr"] == pytest.approx(0.1) and backbone["lr"] == pytest.approx(0.025)
    sched = build_scheduler(t.optimizer, t.cfg, total_steps=10)
    for _ in range(5):
        t.optimizer.step()
        sched.step()
    assert heads["lr"] == pytest.approx(0.05) and backbone["lr"] == pytest.approx(0.0125)


def test_factor_zero_keeps_the_backbone(tmp_path):
    t = trainer(tmp_path, 0.0, scheduler="constant")
    t.fit(Loader([Point(torch.ones(2))] * 2))
    assert torch.equal(t.backbone.w.detach(), torch.zeros(2))
    assert float(t.model["objectives"]["shift"].b.detach().abs().min()) > 0.1  # the head did train


def test_negative_factor_is_an_error():
    with pytest.raises(ConfigError, match="backbone_lr_factor"):
        build_optimizer([nn.Parameter(torch.zeros(1))], TrainConfig(backbone_lr_factor=-1.0))
