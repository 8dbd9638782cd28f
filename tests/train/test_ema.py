"""Parameter EMA: the update rule, swapping weights in, and the Trainer evaluating EMA weights."""

import pytest
import torch
from torch import nn

from denoise3d.config import TrainConfig
from denoise3d.models import EGNN
from denoise3d.objectives import Denoise
from denoise3d.testing import molecule_batch
from denoise3d.train.ema import EMA
from denoise3d.train.loop import Trainer


def test_update_rule_with_decay_warmup():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    ema = EMA(model, decay=0.9)
    avg = model.weight.detach().clone()
    for t in range(1, 100):  # (1 + t)/(10 + t) reaches 0.9 at t = 80
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        d = min(0.9, (1 + t) / (10 + t))  # warm-up, then the set decay
        assert ema.current_decay() == pytest.approx(d)
        ema.update(model)
        avg = d * avg + (1 - d) * model.weight.detach()
        torch.testing.assert_close(ema.module.weight, avg, rtol=1e-12, atol=1e-12)
    assert ema.current_decay() == 0.9 and not ema.module.weight.requires_grad
    with pytest.raises(ValueError):
        EMA(model, decay=1.0)


def test_applied_swaps_and_restores():
    model = nn.Linear(3, 2)
    ema = EMA(model, 0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    raw = model.weight.detach().clone()
    with ema.applied(model):
        torch.testing.assert_close(model.weight, ema.module.weight)
    torch.testing.assert_close(model.weight, raw)


class Loader:
    """The two methods the Trainer needs from a loader, over fixed batches."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)

    def set_epoch(self, epoch):
        pass


def test_trainer_validates_with_ema_weights_and_keeps_raw_ones(tmp_path):
    torch.manual_seed(0)
    batch = molecule_batch().to(dtype=torch.float32)
    cfg = TrainConfig(epochs=2, lr=1e-2, device="cpu", ema_decay=0.9, log_every=1)
    trainer = Trainer(EGNN(hidden=8, layers=2), {"denoise": (1.0, Denoise(8, sigma=0.1))}, cfg,
                      tmp_path)
    seen = []

    def validate():
        evaluated = [p.detach().clone() for p in trainer.model.parameters()]
        same = all(torch.equal(a, b) for a, b in zip(evaluated, trainer.ema.module.parameters()))
        seen.append(same)
        return {"loss": 1.0}

    trainer.fit(Loader([batch] * 3), validate=validate)
    assert seen == [True, True] and trainer.ema.num_updates == trainer.step == 6
    raw = list(trainer.model.parameters())
    avg = list(trainer.eval_model.parameters())
    assert trainer.eval_model is trainer.ema.module
    assert any(not torch.equal(a, b) for a, b in zip(raw, avg))  # EMA ≠ raw after training


def test_trainer_without_ema_evaluates_raw_weights(tmp_path):
    cfg = TrainConfig(epochs=1, device="cpu")
    trainer = Trainer(EGNN(hidden=8, layers=1), {"denoise": (1.0, Denoise(8))}, cfg, tmp_path)
    assert trainer.ema is None and trainer.eval_model is trainer.model
    with trainer.averaged():
        pass
