"""Property fine-tuning: one label of the dataset (e.g. a QM9 target) from a graph readout.

L1 on the standardised label (3D-EMGP / EGNN recipe; training-split mean and std of the label
minus its per-element reference, if the dataset declares one), optional Noisy Nodes; the epoch of
the lowest validation MAE is kept; metrics in the label's report unit (meV for QM9's energies).
"""

from __future__ import annotations

import numpy as np
import torch

from denoise3d.config import Config, ConfigError, explicit_keys
from denoise3d.data.elements import MAX_Z
from denoise3d.data.sources import load_data
from denoise3d.jobs import checkpoint
from denoise3d.jobs.skeleton import Job, evaluation_run
from denoise3d.objectives.property import PropertyRegression
from denoise3d.train.checkpoint import load_state
from denoise3d.train.evaluate import property_mae

OBJECTIVE = "property"


def options(cfg: Config) -> dict:
    """PropertyRegression's settings from ``finetune.*`` (saved as the objective's params)."""
    f = cfg.finetune
    return {"noisy_nodes_sigma": f.noisy_nodes_sigma, "noisy_nodes_weight": f.noisy_nodes_weight,
            "noisy_nodes_vector": f.noisy_nodes_vector, "readout": f.readout}


def label_of(ds, name: str, source: str):
    """The dataset's per-structure label ``name``; unknown or per-atom labels are refused."""
    if name not in ds.labels:
        raise ConfigError(f"unknown finetune.target {name!r} (labels of data.dataset={source}: "
                          f"{', '.join(ds.labels) or 'none'})")
    label = ds.labels[name]
    if label.per != "structure":
        raise ConfigError(f"finetune.target={name} is a per-atom label; a force field is "
                          f"finetune.task=energy_force")
    return label


def objective(cfg: Config, ds, train_idx, label) -> PropertyRegression:
    """A property head whose standardisation uses training-split statistics only."""
    ref = label.reference if label.reference is not None else np.zeros(MAX_Z + 1)  # internal units
    y = np.asarray(ds.target(label.name)[train_idx], dtype=np.float64) - ds.per_molecule_sum(ref, train_idx)
    std = float(y.std()) if len(y) > 1 and y.std() > 0 else 1.0
    return PropertyRegression(cfg.model.hidden, label.name, float(y.mean()), std,
                              torch.as_tensor(ref, dtype=torch.float32), **options(cfg))


def baseline(ds, train_idx, test_idx, label) -> float:
    """MAE (internal units) on ``test_idx`` of predicting the training mean of the label (minus
    its per-element reference, added back per structure, when the dataset declares one)."""
    ref = label.reference if label.reference is not None else np.zeros(MAX_Z + 1)
    train = ds.target(label.name)[np.asarray(train_idx)] - ds.per_molecule_sum(ref, train_idx)
    test = np.asarray(test_idx)
    pred = train.mean() + ds.per_molecule_sum(ref, test)
    return float(np.abs(ds.target(label.name)[test] - pred).mean())


def build(cfg: Config) -> Job:
    backbone, _ = checkpoint.initial(cfg)
    ds, split = load_data(cfg.data, explicit_keys(cfg, "data"))
    label = label_of(ds, cfg.finetune.target, cfg.data.dataset)
    head = objective(cfg, ds, split["train"], label)
    key = f"{label.name}_mae_{label.report_unit}"

    def validate(trainer, valid):
        return {key: property_mae(trainer.backbone, head, valid, trainer.device) * label.report_factor}

    def finish(trainer, test, kept):
        mae = property_mae(trainer.backbone, head, test, trainer.device) * label.report_factor
        metrics = {"target": label.name, "unit": label.report_unit, "test_mae": mae,
                   "valid_mae": kept["value"], "best_epoch": kept["epoch"],
                   "init": cfg.finetune.init, "train_size": len(split["train"]),
                   "test_size": len(split["test"]), "steps": trainer.step}
        line = f"test {key} = {mae:.3f} (best validation epoch {kept['epoch']})"
        if len(split["test"]):
            trivial = baseline(ds, split["train"], split["test"], label) * label.report_factor
            metrics["baseline_test_mae"] = trivial
            if mae >= trivial:
                line += (f"\nwarning: the test MAE does not beat the trivial baseline (the "
                         f"training mean{' plus atom references' if label.reference is not None else ''}"
                         f": {trivial:.3f} {label.report_unit})")
        return metrics, line

    init = cfg.finetune.init
    return Job(task=OBJECTIVE, backbone=backbone, objectives={OBJECTIVE: (1.0, head)},
               params={OBJECTIVE: {"target": label.name, **options(cfg)}}, dataset=ds,
               split=split, labels={label.name: label},
               domain=checkpoint.training_domain(ds, split["train"]),
               announce=f"fine-tuning {label.name} ({label.report_unit}) on {len(split['train'])} "
                        f"labels, {'from ' + init if init else 'from scratch'}",
               validate=validate, select=key, finish=finish)


def model_from(ckpt: checkpoint.Checkpoint):
    """(backbone, property head) of a property checkpoint read once, in eval mode."""
    entry = ckpt.objective(OBJECTIVE)
    params = {**options(ckpt.config), **entry["params"]}  # format 1 saved the target only
    head = PropertyRegression(ckpt.config.model.hidden, **params)
    load_state(head, entry["state"], "property head", ckpt.path)
    return ckpt.backbone().eval(), head.eval()


def evaluate(ckpt: checkpoint.Checkpoint, split_name: str, allow_unseen: bool = False) -> dict:
    """MAE of a property checkpoint on a split, in the label's report unit."""
    backbone, head = model_from(ckpt)
    ds, loader, device = evaluation_run(ckpt, split_name, (backbone, head), allow_unseen)
    label = label_of(ds, head.target, ckpt.config.data.dataset)
    mae = property_mae(backbone, head, loader, device) * label.report_factor
    return {"checkpoint": ckpt.path, "split": split_name, "molecules": len(loader.indices),
            f"{label.name}_mae_{label.report_unit}": mae}
