"""Shared set-up of the pretraining-step benchmarks (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import argparse

from denoise3d.data.sources import load_data
from denoise3d.models import backbone_from_config as make_backbone
from denoise3d.objectives import objectives_from_recipe
from denoise3d.train.seed import seed_everything
from denoise3d.config import load_config
from denoise3d.data.dataset import BatchLoader
from denoise3d.train.loop import Trainer
from denoise3d.train.optim import build_scheduler


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--batch --threads --hidden --layers (defaults: 3D-EMGP's EGNN 7x128, batch 64, 2 threads),
    --device (train.device) and --precision (train.precision: fp32, bf16 or fp16 autocast on CUDA)."""
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=7)
    p.add_argument("--device", default="cpu", help="train.device: cpu, cuda, cuda:N")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])


def synchronize(device) -> None:
    """Wait for the device's queued work (timings on CUDA); nothing on CPU."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def pretraining_data(args):
    """(config, shuffled QM9 training-split loader) for the 3D-EMGP recipe at ``args``' size."""
    seed_everything(0, args.threads)
    cfg = load_config(None, [f"model.hidden={args.hidden}", f"model.layers={args.layers}",
                             f"data.batch_size={args.batch}", "train.out=/tmp/denoise3d-bench",
                             f"train.device={args.device}", f"train.precision={args.precision}"])
    ds, split = load_data(cfg.data)
    loader = BatchLoader(ds, split["train"], batch_size=args.batch, shuffle=True, seed=0,
                         drop_last=True)
    return cfg, loader


def pretraining_trainer(cfg) -> Trainer:
    """A Trainer for the default 3D-EMGP recipe with a scheduler set (as ``Trainer.fit`` does)."""
    backbone = make_backbone(cfg.model)
    objectives = objectives_from_recipe(cfg.pretrain.objectives, cfg.model.hidden)
    trainer = Trainer(backbone, objectives, cfg.train, cfg.train.out)
    trainer.scheduler = build_scheduler(trainer.optimizer, cfg.train, 10_000)
    return trainer
