"""Force-field fine-tuning: energy + forces of a trajectory, evaluation, loading for simulation.

``finetune.task=energy_force`` (3D-EMGP's MD17 recipe, App. B.2): E from an energy head,
F = −∂E/∂X, loss 0.2·L1(E) + 0.8·L1(F) on standardised energies (training-split mean and std),
ReduceLROnPlateau on the validation loss (``train.scheduler=plateau``), the epoch with the lowest
validation loss is kept. From a pretrained energy model (``finetune.init_energy_head``) the energy
head starts from the pretrained one. Metrics in MD17's units (kcal/mol, kcal/mol/Å) and meV,
meV/Å; force errors are per Cartesian component.
"""

from __future__ import annotations

import numpy as np

from denoise3d.config import Config, ConfigError, explicit_keys
from denoise3d.data.sources import load_data
from denoise3d.jobs import checkpoint
from denoise3d.jobs.skeleton import Job, evaluation_run
from denoise3d.objectives.energy_force import EnergyForceRegression
from denoise3d.train.checkpoint import CheckpointError, load_state
from denoise3d.train.evaluate import force_field_errors
from denoise3d.units import EV_MEV, KCALMOL_EV

OBJECTIVE = "energy_force"  # name of the objective in the Trainer and in checkpoints


def report(errors: dict[str, float]) -> dict[str, float]:
    """Energy / force MAEs (eV, eV/Å) in MD17's units and in meV."""
    e, f = errors["energy_mae"], errors["force_mae"]
    return {"energy_mae_kcal_mol": e / KCALMOL_EV, "force_mae_kcal_mol_A": f / KCALMOL_EV,
            "energy_mae_meV": e * EV_MEV, "force_mae_meV_A": f * EV_MEV}


def energy_force_objective(cfg: Config, ds, train_idx) -> EnergyForceRegression:
    """The objective, standardised with the training frames' energy mean and std (eV)."""
    per = ({n: label.per for n, label in ds.labels.items()} or  # a dataset made outside a source:
           {**dict.fromkeys(ds.target_names, "structure"),       # what it stores
            **dict.fromkeys(ds.atom_target_names, "atom")})
    if per.get("energy") != "structure" or per.get("forces") != "atom":
        raise ConfigError("finetune.task=energy_force needs energies and forces: use "
                          "data.dataset=md17 with data.path=FILE.npz")
    e = ds.target("energy")[np.asarray(train_idx)]
    std = float(e.std()) if len(e) > 1 and e.std() > 0 else 1.0
    return EnergyForceRegression(cfg.model.hidden, **params(cfg), mean=float(e.mean()), std=std)


def params(cfg: Config) -> dict:
    return {"energy_weight": cfg.finetune.energy_weight, "force_weight": cfg.finetune.force_weight}


def build(cfg: Config) -> Job:
    backbone, init = checkpoint.initial(cfg)
    ds, split = load_data(cfg.data, explicit_keys(cfg, "data"))
    objective = energy_force_objective(cfg, ds, split["train"])
    head_from = None
    if init is not None and cfg.finetune.init_energy_head:
        # E = std · head + mean: the starting forces are the pretrained −∇E times the energy std
        found = init.energy_head()
        if found is not None:
            head_from = found[0]
            load_state(objective.head, found[1], "energy head", cfg.finetune.init)

    def validate(trainer, valid):
        errors = force_field_errors(trainer.backbone, objective, valid, trainer.device)
        return {"loss": errors["loss"], **report(errors)}

    def finish(trainer, test, kept):
        test_metrics = report(force_field_errors(trainer.backbone, objective, test, trainer.device))
        metrics = {
            "task": "energy_force", "target": "forces", "unit": "kcal/mol/Å",
            "test_mae": test_metrics["force_mae_kcal_mol_A"],
            **{f"test_{k}": v for k, v in test_metrics.items()},
            **{f"valid_{k}": v for k, v in kept["metrics"].items() if k not in ("step", "epoch")},
            "best_epoch": kept["epoch"], "init": cfg.finetune.init, "energy_head_from": head_from,
            "data": cfg.data.path, "molecule": ds.meta.get("name"), "theory": ds.meta.get("theory"),
            "train_size": len(split["train"]), "valid_size": len(split["valid"]),
            "test_size": len(split["test"]), "steps": trainer.step,
            "energy_mean_eV": float(objective.mean), "energy_std_eV": float(objective.std)}
        line = (f"test force MAE {metrics['test_mae']:.4f} kcal/mol/Å "
                f"({test_metrics['force_mae_meV_A']:.1f} meV/Å), energy MAE "
                f"{test_metrics['energy_mae_kcal_mol']:.4f} kcal/mol (best validation epoch "
                f"{kept['epoch']})")
        return metrics, line

    init_text = f"from {cfg.finetune.init}" if cfg.finetune.init else "from scratch"
    head_text = f" (energy head from its {head_from} objective)" if head_from else ""
    return Job(task=OBJECTIVE, backbone=backbone, objectives={OBJECTIVE: (1.0, objective)},
               params={OBJECTIVE: params(cfg)}, dataset=ds, split=split,
               labels={k: ds.labels[k] for k in ("energy", "forces")},
               announce=f"fine-tuning energy + forces of {ds.meta.get('name', cfg.data.path)} "
                        f"({ds.meta.get('theory', '?')}) on {len(split['train'])} frames, "
                        f"{init_text}{head_text}",
               validate=validate, select="loss", finish=finish)


def load_force_field(path, overrides: list[str] = ()):
    """(config, backbone, objective) of an energy + force checkpoint, in eval mode, on CPU."""
    return _force_field(checkpoint.load(path, kind="finetune", overrides=overrides))


def _force_field(ckpt: checkpoint.Checkpoint):
    if ckpt.task != OBJECTIVE:
        raise CheckpointError(f"{ckpt.path}: not a force field (fine-tuned with task "
                              f"{ckpt.task!r}; use finetune.task=energy_force)")
    backbone = ckpt.backbone()
    entry = ckpt.objective(OBJECTIVE)
    objective = EnergyForceRegression(ckpt.config.model.hidden, **entry["params"])
    load_state(objective, entry["state"], "energy head", ckpt.path)
    return ckpt.config, backbone.eval(), objective.eval()


def evaluate(ckpt: checkpoint.Checkpoint, split_name: str) -> dict:
    """Energy and force MAEs of a force-field checkpoint on a split of its data (or of another
    trajectory: ``data.path=other.npz`` with split ``all``)."""
    cfg, backbone, objective = _force_field(ckpt)
    _, loader, device = evaluation_run(ckpt, split_name, (backbone, objective))
    errors = force_field_errors(backbone, objective, loader, device)
    return {"checkpoint": ckpt.path, "data": cfg.data.path, "split": split_name,
            "frames": len(loader.indices), **report(errors)}
