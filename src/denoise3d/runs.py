"""The three jobs behind the CLI: pretrain, finetune, evaluate."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch

from denoise3d import build
from denoise3d.config import Config, ConfigError, from_dict, load_config, save_config, to_dict
from denoise3d.objectives.property import PropertyRegression
from denoise3d.train.checkpoint import load_checkpoint, load_state, save_checkpoint
from denoise3d.train.evaluate import objective_loss, property_mae
from denoise3d.train.loop import Trainer, resolve_device


def _loader(ds, idx, batch_size, shuffle, seed=0, data=None):
    """Training (``shuffle``) or evaluation loader; training batches are packed by atoms / edges /
    graphs when ``data`` (a DataConfig) sets max_atoms, max_edges or max_graphs."""
    from denoise3d.data.batching import DynamicBatchLoader
    from denoise3d.data.dataset import BatchLoader

    if shuffle and data is not None and any(v is not None for v in
                                            (data.max_atoms, data.max_edges, data.max_graphs)):
        return DynamicBatchLoader(ds, idx, data.max_atoms, data.max_edges, data.max_graphs,
                                  shuffle=True, seed=seed, drop_last=True)
    return BatchLoader(ds, idx, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=shuffle)


def _say(trainer: Trainer, text: str) -> None:
    """Print on the main process only (every rank runs the job under data parallelism)."""
    if trainer.dist.is_main:
        print(text)


def _objectives_payload(trainer: Trainer, params: dict) -> dict:
    """Objective heads with their evaluation (EMA, when on) weights."""
    return {name: {"weight": trainer.weights[name], "params": params[name], "state": obj.state_dict()}
            for name, obj in trainer.eval_model["objectives"].items()}


def _raw_payload(trainer: Trainer) -> dict:
    """With EMA on, checkpoints hold the EMA weights under "state" (what fine-tuning and evaluation
    load) and the raw training weights here; without EMA, nothing (the two are the same)."""
    if trainer.ema is None:
        return {}
    return {"ema": {"decay": trainer.ema.decay, "num_updates": trainer.ema.num_updates},
            "raw": {"backbone": trainer.backbone.state_dict(),
                    "objectives": {n: o.state_dict() for n, o in trainer.model["objectives"].items()}}}


def pretrain(cfg: Config) -> Path:
    """Pretrain on the training-split structures (labels unused); returns the checkpoint path."""
    build.seed_everything(cfg.train.seed, cfg.train.threads)
    objectives = build.make_objectives(cfg)
    params = {e["name"]: {k: v for k, v in e.items() if k not in ("name", "weight")}
              for e in cfg.pretrain.objectives}
    ds, split = build.load_data(cfg.data)
    out = Path(cfg.train.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    trainer = Trainer(build.make_backbone(cfg.model), objectives, cfg.train, out)
    _say(trainer, f"pretraining {cfg.model.backbone} ({cfg.model.layers}x{cfg.model.hidden}) on "
         f"{len(split['train'])} structures with {', '.join(objectives)}; output in {out}"
         + (f"; {trainer.dist.world_size} processes" if trainer.dist.enabled else ""))
    train = _loader(ds, split["train"], cfg.data.batch_size, True, cfg.train.seed, cfg.data)
    valid = _loader(ds, split["valid"], cfg.data.eval_batch_size, False)

    def save(epoch, metrics):
        save_checkpoint(out / "pretrain.pt", {
            "kind": "pretrain", "config": to_dict(cfg), "step": trainer.step, "metrics": metrics,
            "backbone": build.backbone_payload(cfg.model, trainer.eval_model["backbone"]),
            "objectives": _objectives_payload(trainer, params), **_raw_payload(trainer)})

    trainer.fit(train, validate=lambda: {"loss": objective_loss(trainer, valid)["loss"]},
                on_epoch_end=save)
    _say(trainer, f"saved {out / 'pretrain.pt'}")
    return out / "pretrain.pt"


def _target_info(name: str):
    from denoise3d.data.qm9 import TARGETS

    if name not in TARGETS:
        raise ConfigError(f"unknown finetune.target {name!r} (QM9 targets: {', '.join(TARGETS)})")
    return TARGETS[name]


def _property_objective(cfg: Config, ds, train_idx) -> PropertyRegression:
    """A property head whose standardisation uses training-split statistics only."""
    from denoise3d.data.qm9 import atomref

    ref = atomref(cfg.finetune.target)  # (MAX_Z + 1,), eV (zeros for non-energies)
    col = ds.target_names.index(cfg.finetune.target)
    y = np.asarray(ds.targets[train_idx, col], dtype=np.float64) - ds.per_molecule_sum(ref, train_idx)
    std = float(y.std()) if len(y) > 1 and y.std() > 0 else 1.0
    return PropertyRegression(cfg.model.hidden, cfg.finetune.target, float(y.mean()), std,
                              torch.as_tensor(ref, dtype=torch.float32), **_property_options(cfg))


def _property_options(cfg: Config) -> dict:
    f = cfg.finetune
    return {"noisy_nodes_sigma": f.noisy_nodes_sigma, "noisy_nodes_weight": f.noisy_nodes_weight,
            "noisy_nodes_vector": f.noisy_nodes_vector, "readout": f.readout}


def finetune(cfg: Config) -> dict:
    """Fine-tune a QM9 target; keeps the best validation epoch; returns test metrics.

    ``finetune.task=energy_force`` fine-tunes a force field instead (:mod:`denoise3d.forcefield`).
    """
    if cfg.finetune.task == "energy_force":
        from denoise3d.forcefield import finetune_energy_force

        return finetune_energy_force(cfg)
    if cfg.finetune.task != "property":
        raise ConfigError(f"unknown finetune.task {cfg.finetune.task!r} (known: property, energy_force)")
    build.seed_everything(cfg.train.seed, cfg.train.threads)
    info = _target_info(cfg.finetune.target)
    backbone = build.finetune_backbone(cfg)
    ds, split = build.load_data(cfg.data)
    out = Path(cfg.train.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    objective = _property_objective(cfg, ds, split["train"])
    trainer = Trainer(backbone, {"property": (1.0, objective)}, cfg.train, out)
    key = f"{cfg.finetune.target}_mae_{info.report_unit}"
    _say(trainer, f"fine-tuning {cfg.finetune.target} ({info.report_unit}) on {len(split['train'])} "
         f"labels, {'from ' + cfg.finetune.init if cfg.finetune.init else 'from scratch'}; output in {out}")
    train = _loader(ds, split["train"], cfg.data.batch_size, True, cfg.train.seed, cfg.data)
    valid = _loader(ds, split["valid"], cfg.data.eval_batch_size, False)
    # in trainer.extra: saved with resume checkpoints, so a resumed run keeps its best epoch
    best = trainer.extra.setdefault("best", {"mae": float("inf"), "state": None, "raw": None,
                                             "epoch": 0})

    def validate():
        return {key: property_mae(trainer.backbone, objective, valid, trainer.device) * info.report_factor}

    def keep_best(epoch, metrics):
        if metrics[key] < best["mae"]:  # validated on eval_model's weights (EMA when on)
            best.update(mae=metrics[key], epoch=epoch,
                        state=copy.deepcopy(trainer.eval_model.state_dict()),
                        raw=copy.deepcopy(trainer.model.state_dict()) if trainer.ema else None)

    trainer.fit(train, validate=validate, on_epoch_end=keep_best)
    trainer.model.load_state_dict(best["state"])  # the evaluation weights of the best epoch
    test = _loader(ds, split["test"], cfg.data.eval_batch_size, False)
    test_mae = property_mae(trainer.backbone, objective, test, trainer.device) * info.report_factor
    metrics = {"target": cfg.finetune.target, "unit": info.report_unit, "test_mae": test_mae,
               "valid_mae": best["mae"], "best_epoch": best["epoch"], "init": cfg.finetune.init,
               "train_size": len(split["train"]), "test_size": len(split["test"]), "steps": trainer.step}
    save_checkpoint(out / "finetune.pt", {
        "kind": "finetune", "config": to_dict(cfg), "step": trainer.step, "metrics": metrics,
        "backbone": build.backbone_payload(cfg.model, trainer.backbone),
        "objectives": {"property": {"weight": 1.0, "params": {"target": cfg.finetune.target},
                                    "state": objective.state_dict()}},
        **({} if best["raw"] is None else {
            "ema": {"decay": trainer.ema.decay},
            "raw": {"backbone": _sub(best["raw"], "backbone."),
                    "objectives": {"property": _sub(best["raw"], "objectives.property.")}}})})
    if trainer.dist.is_main:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _say(trainer, f"test {key} = {test_mae:.3f} (best validation epoch {best['epoch']}); saved {out / 'finetune.pt'}")
    return metrics


def _sub(state: dict, prefix: str) -> dict:
    """The entries of a state dict under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def evaluate(path: str, split_name: str = "test", overrides: list[str] = ()) -> dict:
    """MAE of a fine-tuned checkpoint on a split, in the target's reporting unit."""
    ckpt = load_checkpoint(path, kind="finetune")
    if "energy_force" in ckpt.get("objectives", {}):  # a force field: energy and force MAEs
        from denoise3d.forcefield import evaluate_energy_force

        return evaluate_energy_force(path, split_name, overrides)
    cfg = from_dict(ckpt["config"])
    if overrides:  # e.g. data.max_test=1000 or train.device=cuda
        cfg = load_config(None, overrides, base=to_dict(cfg))
    backbone = build.backbone_from_checkpoint(ckpt, cfg.model, path)
    target = ckpt["objectives"]["property"]["params"]["target"]
    info = _target_info(target)
    objective = PropertyRegression(cfg.model.hidden, target, **_property_options(cfg))
    load_state(objective, ckpt["objectives"]["property"]["state"], "property head", path)
    ds, split = build.load_data(cfg.data)
    device = resolve_device(cfg.train.device)
    backbone.to(device), objective.to(device)
    loader = _loader(ds, split[split_name], cfg.data.eval_batch_size, False)
    mae = property_mae(backbone, objective, loader, device) * info.report_factor
    return {"checkpoint": str(path), "split": split_name, "molecules": len(split[split_name]),
            f"{target}_mae_{info.report_unit}": mae}

