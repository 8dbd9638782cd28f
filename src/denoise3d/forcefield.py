"""Force-field jobs: fine-tune energy + forces on a trajectory, evaluate, load for simulation.

``finetune.task=energy_force`` (3D-EMGP's MD17 recipe, App. B.2): E from an energy head,
F = −∂E/∂X, loss 0.2·L1(E) + 0.8·L1(F) on standardised energies (training-split mean and std),
ReduceLROnPlateau on the validation loss (``train.scheduler=plateau``), the epoch with the lowest
validation loss is kept. Metrics use MD17's units (kcal/mol, kcal/mol/Å) and meV, meV/Å; force
errors are per Cartesian component.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from denoise3d import build
from denoise3d.config import Config, ConfigError, from_dict, load_config, save_config, to_dict
from denoise3d.objectives.energy_force import EnergyForceRegression
from denoise3d.train.checkpoint import CheckpointError, load_checkpoint, load_state, save_checkpoint
from denoise3d.train.evaluate import force_field_errors
from denoise3d.train.loop import Trainer, resolve_device
from denoise3d.units import EV_MEV, KCALMOL_EV

OBJECTIVE = "energy_force"  # name of the objective in the Trainer and in checkpoints
UNITS = {"positions": "Å", "energy": "eV", "forces": "eV/Å"}


def report(errors: dict[str, float]) -> dict[str, float]:
    """Energy / force MAEs (eV, eV/Å) in MD17's units and in meV."""
    e, f = errors["energy_mae"], errors["force_mae"]
    return {"energy_mae_kcal_mol": e / KCALMOL_EV, "force_mae_kcal_mol_A": f / KCALMOL_EV,
            "energy_mae_meV": e * EV_MEV, "force_mae_meV_A": f * EV_MEV}


def energy_force_objective(cfg: Config, ds, train_idx) -> EnergyForceRegression:
    """The objective, standardised with the training frames' energy mean and std (eV)."""
    if "forces" not in ds.atom_target_names or "energy" not in ds.target_names:
        raise ConfigError("finetune.task=energy_force needs energies and forces: use "
                          "data.dataset=md17 with data.path=FILE.npz")
    e = ds.target("energy")[np.asarray(train_idx)]
    std = float(e.std()) if len(e) > 1 and e.std() > 0 else 1.0
    return EnergyForceRegression(cfg.model.hidden, cfg.finetune.energy_weight,
                                 cfg.finetune.force_weight, float(e.mean()), std)


def _init_energy_head(cfg: Config, objective: EnergyForceRegression) -> str | None:
    """With ``finetune.init_energy_head``, load the pretrained energy model's head into the
    objective's energy head (E = std · head + mean, so the starting forces are the pretrained
    −∇E times the trajectory's energy std); returns the objective it came from, or None."""
    if not (cfg.finetune.init and cfg.finetune.init_energy_head):
        return None
    from denoise3d.pretrained import resolve

    found = build.pretrained_energy_head(load_checkpoint(resolve(cfg.finetune.init), kind="pretrain"))
    if found is None:
        return None
    load_state(objective.head, found[1], "energy head", cfg.finetune.init)
    return found[0]


def _loader(ds, idx, batch_size, shuffle, seed=0):
    from denoise3d.data.dataset import BatchLoader

    return BatchLoader(ds, idx, batch_size=batch_size, shuffle=shuffle, seed=seed,
                       drop_last=shuffle)


def finetune_energy_force(cfg: Config) -> dict:
    """Fine-tune a force field on one trajectory; returns the test metrics (also metrics.json)."""
    build.seed_everything(cfg.train.seed, cfg.train.threads)
    backbone = build.finetune_backbone(cfg)
    ds, split = build.load_data(cfg.data)
    out = Path(cfg.train.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    objective = energy_force_objective(cfg, ds, split["train"])
    head_from = _init_energy_head(cfg, objective)
    trainer = Trainer(backbone, {OBJECTIVE: (1.0, objective)}, cfg.train, out)
    print(f"fine-tuning energy + forces of {ds.meta.get('name', cfg.data.path)} "
          f"({ds.meta.get('theory', '?')}) on {len(split['train'])} frames, "
          f"{'from ' + cfg.finetune.init if cfg.finetune.init else 'from scratch'}"
          f"{f' (energy head from its {head_from} objective)' if head_from else ''}; output in {out}")
    from denoise3d.runs import _loader as train_loader  # honours data.max_atoms / max_edges / max_graphs

    train = train_loader(ds, split["train"], cfg.data.batch_size, True, cfg.train.seed, cfg.data)
    valid = _loader(ds, split["valid"], cfg.data.eval_batch_size, False)
    # in trainer.extra: saved with resume checkpoints (train.resume), so a resumed run keeps it
    best = trainer.extra.setdefault("best", {"loss": float("inf"), "state": None, "epoch": 0,
                                             "metrics": {}})

    def validate():
        errors = force_field_errors(trainer.backbone, objective, valid, trainer.device)
        return {"loss": errors["loss"], **report(errors)}

    def keep_best(epoch, metrics):
        if metrics["loss"] < best["loss"]:  # validated on the evaluation (EMA, if on) weights
            best.update(loss=metrics["loss"], epoch=epoch, metrics=metrics,
                        state=copy.deepcopy(trainer.eval_model.state_dict()))

    trainer.fit(train, validate=validate, on_epoch_end=keep_best)
    if best["state"] is not None:
        trainer.model.load_state_dict(best["state"])
    test = _loader(ds, split["test"], cfg.data.eval_batch_size, False)
    test_metrics = report(force_field_errors(trainer.backbone, objective, test, trainer.device))
    metrics = {
        "task": "energy_force", "target": "forces", "unit": "kcal/mol/Å",
        "test_mae": test_metrics["force_mae_kcal_mol_A"],
        **{f"test_{k}": v for k, v in test_metrics.items()},
        **{f"valid_{k}": v for k, v in best["metrics"].items() if k not in ("step", "epoch")},
        "best_epoch": best["epoch"], "init": cfg.finetune.init, "energy_head_from": head_from,
        "data": cfg.data.path,
        "molecule": ds.meta.get("name"), "theory": ds.meta.get("theory"),
        "train_size": len(split["train"]), "valid_size": len(split["valid"]),
        "test_size": len(split["test"]), "steps": trainer.step,
        "energy_mean_eV": float(objective.mean), "energy_std_eV": float(objective.std)}
    save_checkpoint(out / "finetune.pt", {
        "kind": "finetune", "config": to_dict(cfg), "step": trainer.step, "metrics": metrics,
        "units": UNITS, "backbone": build.backbone_payload(cfg.model, trainer.backbone),
        "objectives": {OBJECTIVE: {"weight": 1.0, "params": _params(cfg),
                                   "state": objective.state_dict()}}})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"test force MAE {metrics['test_mae']:.4f} kcal/mol/Å "
          f"({test_metrics['force_mae_meV_A']:.1f} meV/Å), energy MAE "
          f"{test_metrics['energy_mae_kcal_mol']:.4f} kcal/mol (best validation epoch "
          f"{best['epoch']}); saved {out / 'finetune.pt'}")
    return metrics


def _params(cfg: Config) -> dict:
    return {"energy_weight": cfg.finetune.energy_weight, "force_weight": cfg.finetune.force_weight}


def load_force_field(path: str | Path, overrides: list[str] = ()):
    """(config, backbone, objective) of an energy + force checkpoint, in eval mode, on CPU."""
    ckpt = load_checkpoint(path, kind="finetune")
    if OBJECTIVE not in ckpt.get("objectives", {}):
        raise CheckpointError(f"{path}: not a force field (fine-tuned with task "
                              f"{ckpt['config']['finetune'].get('task', 'property')!r}; "
                              f"use finetune.task=energy_force)")
    cfg = from_dict(ckpt["config"])
    if overrides:
        cfg = load_config(None, list(overrides), base=to_dict(cfg))
    backbone = build.backbone_from_checkpoint(ckpt, cfg.model, path)
    entry = ckpt["objectives"][OBJECTIVE]
    objective = EnergyForceRegression(cfg.model.hidden, **entry["params"])
    load_state(objective, entry["state"], "energy head", path)
    return cfg, backbone.eval(), objective.eval()


def evaluate_energy_force(path: str | Path, split_name: str = "test",
                          overrides: list[str] = ()) -> dict:
    """Energy and force MAEs of a force-field checkpoint on a split of its data (or of another
    trajectory: ``data.path=other.npz`` with split ``all``)."""
    cfg, backbone, objective = load_force_field(path, overrides)
    if split_name == "all":  # every frame: no split needed (the file may be short)
        from denoise3d.data.md17 import load_md17

        ds = load_md17(cfg.data.path)
        indices = np.arange(len(ds))
    else:
        ds, split = build.load_data(cfg.data)
        if split_name not in split:
            raise ValueError(f"unknown split {split_name!r}; choose from {', '.join(split)}")
        indices = split[split_name]
    device = resolve_device(cfg.train.device)
    backbone.to(device), objective.to(device)
    loader = _loader(ds, indices, cfg.data.eval_batch_size, False)
    errors = force_field_errors(backbone, objective, loader, device)
    return {"checkpoint": str(path), "data": cfg.data.path, "split": split_name,
            "frames": len(indices), **report(errors)}
