"""Every named recipe in configs/pretrain and configs/finetune, from the CLI, on real QM9.

Each CPU recipe runs 6 optimiser steps with tiny sizes (width 16, 2 layers (GNS-TAT: 3), 16
training molecules = one batch per epoch, 6 epochs) and its own objective, optimiser, schedule and EMA settings. What is
checked: exit status 0, finite training losses at every step, and a lower validation value after
the last epoch than after the first. The validation value is deterministic (pretraining: the
objective on 16 fixed validation molecules with a fixed noise seed; fine-tuning: the property
MAE on clean structures), so "decreasing" is not noise; with 6 steps it is a small decrease for
some recipes (PosPred: ~0.1 %). Paper-scale recipes are checked to load and to build the same
objectives as their CPU twins (they are not run).
"""

import csv
import inspect
import json
import math
from pathlib import Path

import pytest
import torch

from denoise3d.objectives import objectives_from_recipe
from denoise3d.cli import main
from denoise3d.config import load_config
from denoise3d.objectives import OBJECTIVES

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# the QM9 recipes (MD17 force-field recipes need a trajectory file: tests/test_cli_forcefield.py)
CPU = [p for p in sorted((CONFIGS / "pretrain").glob("*_cpu.yaml")) +
       sorted((CONFIGS / "finetune").glob("*_cpu.yaml")) if load_config(p).data.dataset == "qm9"]
TINY = ["model.hidden=16", "model.layers=2", "data.batch_size=16", "data.max_train=16",
        "data.max_valid=16", "data.max_test=16", "data.eval_batch_size=64", "train.epochs=6",
        "train.threads=1", "train.log_every=1"]
PRETRAIN_RECIPES = {"emgp", "emgp_efp_only", "emgp_inp_only", "emgp_gaussian", "emgp_distance",
                    "emgp_direct", "pospred", "attrmask", "zaidi_denoise", "zaidi_denoise_mask"}


def _resolved(objectives):
    """Each objective entry with its class's defaults filled in (so explicit = implicit)."""
    out = []
    for entry in objectives:
        sig = inspect.signature(OBJECTIVES[entry["name"]]).parameters
        defaults = {k: p.default for k, p in sig.items() if p.default is not inspect.Parameter.empty}
        out.append({"weight": 1.0, **defaults, **entry})
    return out


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_every_method_row_has_a_paper_and_a_cpu_recipe():
    names = {p.name for p in (CONFIGS / "pretrain").glob("*.yaml")}
    for recipe in PRETRAIN_RECIPES:
        assert {f"{recipe}_paper.yaml", f"{recipe}_cpu.yaml"} <= names, recipe
    finetune = {p.name for p in (CONFIGS / "finetune").glob("*.yaml")}
    assert {"qm9_noisy_nodes_paper.yaml", "qm9_noisy_nodes_cpu.yaml"} <= finetune


@pytest.mark.parametrize("cpu", CPU, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_paper_recipe_matches_its_cpu_twin(cpu):
    paper = load_config(cpu.with_name(cpu.name.replace("_cpu", "_paper")))
    small = load_config(cpu)
    assert _resolved(paper.pretrain.objectives) == _resolved(small.pretrain.objectives)
    assert (paper.finetune.noisy_nodes_weight, paper.finetune.noisy_nodes_sigma) == \
        (small.finetune.noisy_nodes_weight, small.finetune.noisy_nodes_sigma)
    assert objectives_from_recipe(paper.pretrain.objectives, paper.model.hidden).keys() == \
        objectives_from_recipe(small.pretrain.objectives, small.model.hidden).keys()


@pytest.mark.parametrize("cfg", CPU, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_runs_from_the_cli_with_finite_decreasing_loss(cfg, qm9_cache, tmp_path, capsys):
    verb = cfg.parent.name  # "pretrain" or "finetune"
    # GNS-TAT's TAT initialisation needs >= 9 blocks at eta = 0.8: 3 layers x 3 iterations
    deep = ["model.layers=3", "model.mlp_hidden=16"] if load_config(cfg).model.backbone == "gns_tat" else []
    rc = main([verb, str(cfg), *TINY, *deep, f"data.cache_dir={qm9_cache}", f"train.out={tmp_path}"])
    assert rc == 0
    train = _rows(tmp_path / "log.csv")
    assert len(train) == 6 and all(math.isfinite(float(r["loss"])) for r in train)
    valid = _rows(tmp_path / "valid.csv")
    key = [k for k in valid[0] if k not in ("step", "epoch")][0]
    values = [float(r[key]) for r in valid]
    assert all(map(math.isfinite, values)) and values[-1] < values[0], values
    ckpt = torch.load(tmp_path / f"{verb}.pt", weights_only=True)
    if load_config(cfg).train.ema_decay is not None:  # saved: EMA weights to use, raw ones too
        state, raw = ckpt["backbone"]["state"], ckpt["raw"]["backbone"]
        assert state.keys() == raw.keys() and any(not torch.equal(state[k], raw[k]) for k in state)
    else:
        assert "raw" not in ckpt
    if verb == "finetune":  # the saved weights (EMA when on) are the ones that were tested
        metrics = json.loads((tmp_path / "metrics.json").read_text())
        capsys.readouterr()
        assert main(["evaluate", str(tmp_path / "finetune.pt"), f"data.cache_dir={qm9_cache}"]) == 0
        evaluated = json.loads(capsys.readouterr().out)
        assert evaluated["homo_mae_meV"] == pytest.approx(metrics["test_mae"], rel=1e-5)
