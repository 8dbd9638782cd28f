"""Golden regression: two 3D-EMGP pretraining steps on five real QM9 molecules, float64.

Any change to the data pipeline, EGNN, the Riemann-Gaussian objective or the optimiser that moves
these numbers must be deliberate. To regenerate after such a change:

    DENOISE3D_REGEN_GOLDEN=1 python -m pytest tests/test_golden.py -s

and paste the printed values into GOLDEN (say why in the commit message).
"""

import os

import pytest
import torch

from denoise3d.config import load_config
from denoise3d.models import backbone_from_config as make_backbone
from denoise3d.objectives import objectives_from_recipe
from denoise3d.train.loop import Trainer
from denoise3d.train.optim import build_scheduler

MOLECULES = [0, 1, 2, 1000, 50000]  # methane, ammonia, water, two larger QM9 molecules
GOLDEN = {"loss": [21.21558098, 15.49358064], "efp": [20.35586561, 14.46442666],
          "inp": [4.298576845, 5.145769882]}


def run_two_steps(qm9, tmp_path):
    torch.manual_seed(0)
    cfg = load_config(None, ["model.hidden=16", "model.layers=2", f"train.out={tmp_path}"])
    trainer = Trainer(make_backbone(cfg.model).double(),
                      {k: (w, o.double()) for k, (w, o) in objectives_from_recipe(cfg.pretrain.objectives, cfg.model.hidden).items()},
                      cfg.train, tmp_path)
    trainer.scheduler = build_scheduler(trainer.optimizer, cfg.train, 100)
    batch = qm9.batch(MOLECULES).to(dtype=torch.float64)
    out = {"loss": [], "efp": [], "inp": []}
    for _ in range(2):
        loss, logs = trainer.train_step(batch)
        out["loss"].append(loss)
        out["efp"].append(logs["emgp_efp"])
        out["inp"].append(logs["emgp_inp"])
    return out


def test_two_pretraining_steps_match_golden_values(qm9, tmp_path):
    got = run_two_steps(qm9, tmp_path)
    if os.environ.get("DENOISE3D_REGEN_GOLDEN"):
        print("\nGOLDEN =", {k: [float(f"{x:.10g}") for x in v] for k, v in got.items()})
        pytest.skip("regenerated golden values (printed above)")
    for key, values in GOLDEN.items():
        assert got[key] == pytest.approx(values, rel=1e-6), key
