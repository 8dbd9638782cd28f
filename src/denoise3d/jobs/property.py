"""Property fine-tuning: labels of the dataset (e.g. QM9 targets, a gap in an SDF tag) from
graph readouts.

``finetune.target`` (one label) or ``finetune.targets`` ({label: loss weight}): one head per
label, L1 on the standardised label (3D-EMGP / EGNN recipe; training-split mean and std of the
label minus its per-element reference, if the dataset declares one), the loss their weighted sum,
optional Noisy Nodes; readout ``finetune.readout`` (sum, extensive; mean, intensive; or
{label: sum|mean}). The epoch of the lowest validation MAE (several labels: the weighted sum of
standardised MAEs) is kept; metrics per label in its report unit (meV for QM9's energies), beside
the trivial baseline (the training mean).
"""

from __future__ import annotations

import numpy as np
import torch

from denoise3d.config import Config, ConfigError, explicit_keys
from denoise3d.data.elements import MAX_Z
from denoise3d.data.sources import load_data
from denoise3d.jobs import checkpoint
from denoise3d.jobs.skeleton import Job, baseline_fit, evaluation_run
from denoise3d.objectives.property import PropertyRegression
from denoise3d.train.checkpoint import load_state
from denoise3d.train.evaluate import property_mae

OBJECTIVE = "property"  # the objective's name (several labels: property/LABEL)


def targets(cfg: Config) -> dict[str, float]:
    """{label: loss weight}: ``finetune.targets``, else ``{finetune.target: 1}``."""
    chosen = cfg.finetune.targets or {cfg.finetune.target: 1.0}
    if any(not isinstance(w, (int, float)) or w <= 0 for w in chosen.values()):
        raise ConfigError(f"finetune.targets: weights must be numbers > 0, got {chosen}")
    return {str(k): float(w) for k, w in chosen.items()}


def objective_names(names) -> dict[str, str]:
    """{label: objective name}: "property" for one label (as before), "property/LABEL" for several."""
    names = list(names)
    return {n: OBJECTIVE if len(names) == 1 else f"{OBJECTIVE}/{n}" for n in names}


def options(cfg: Config, name: str | None = None) -> dict:
    """PropertyRegression's settings from ``finetune.*`` (saved as the objective's params)."""
    f = cfg.finetune
    readout = f.readout.get(name, "sum") if isinstance(f.readout, dict) else f.readout
    return {"noisy_nodes_sigma": f.noisy_nodes_sigma, "noisy_nodes_weight": f.noisy_nodes_weight,
            "noisy_nodes_vector": f.noisy_nodes_vector, "readout": readout}


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
                              torch.as_tensor(ref, dtype=torch.float32), **options(cfg, label.name))


def baseline(ds, train_idx, test_idx, label) -> float:
    """MAE (internal units) on ``test_idx`` of predicting the training mean of the label (minus
    its per-element reference, added back per structure, when the dataset declares one)."""
    ref = label.reference if label.reference is not None else np.zeros(MAX_Z + 1)
    train = ds.target(label.name)[np.asarray(train_idx)] - ds.per_molecule_sum(ref, train_idx)
    test = np.asarray(test_idx)
    pred = train.mean() + ds.per_molecule_sum(ref, test)
    return float(np.abs(ds.target(label.name)[test] - pred).mean())


def key_of(label) -> str:
    """The metric's name: ``homo_mae_meV``; ``gap_mae`` for a unitless label."""
    return f"{label.name}_mae_{label.report_unit}" if label.report_unit else f"{label.name}_mae"


def build(cfg: Config) -> Job:
    backbone, _ = checkpoint.initial(cfg)
    ds, split = load_data(cfg.data, explicit_keys(cfg, "data"))
    weights = targets(cfg)
    labels = {n: label_of(ds, n, cfg.data.dataset) for n in weights}
    heads = {n: objective(cfg, ds, split["train"], labels[n]) for n in weights}
    names = objective_names(weights)
    several = len(weights) > 1

    def maes(trainer, loader) -> dict[str, float]:
        """{label: MAE in internal units}."""
        return {n: property_mae(trainer.backbone, heads[n], loader, trainer.device) for n in heads}

    def weighted(errors) -> float:
        return sum(weights[n] * errors[n] / float(heads[n].head.std) for n in heads)

    def validate(trainer, valid):
        errors = maes(trainer, valid)
        out = {key_of(labels[n]): errors[n] * labels[n].report_factor for n in heads}
        return {**out, "weighted_mae": weighted(errors)} if several else out

    def finish(trainer, test, kept):
        errors = maes(trainer, test)
        if not several:
            (n,) = heads
            label = labels[n]
            mae = errors[n] * label.report_factor
            metrics = {"target": n, "unit": label.report_unit, "test_mae": mae,
                       "valid_mae": kept["value"]}
        else:
            metrics = {"target": ",".join(heads), "unit": "weighted standardised MAE",
                       "test_mae": weighted(errors), "valid_mae": kept["value"],
                       **{f"test_{key_of(labels[n])}": errors[n] * labels[n].report_factor
                          for n in heads}}
        metrics.update({"best_epoch": kept["epoch"], "init": cfg.finetune.init,
                        "train_size": len(split["train"]), "test_size": len(split["test"]),
                        "steps": trainer.step})
        lines = [f"test {key_of(labels[n])} = {errors[n] * labels[n].report_factor:.3f}"
                 for n in heads]
        line = "; ".join(lines) + f" (best validation epoch {kept['epoch']})"
        if not len(split["test"]):
            return metrics, line
        for n, label in labels.items():
            trivial = baseline(ds, split["train"], split["test"], label) * label.report_factor
            metrics["baseline_test_mae" if not several else f"baseline_{key_of(label)}"] = trivial
            if errors[n] * label.report_factor >= trivial:
                refs = " plus atom references" if label.reference is not None else ""
                line += (f"\nwarning: the test MAE of {n} does not beat the trivial baseline (the "
                         f"training mean{refs}: {trivial:.3f} {label.report_unit})")
        return metrics, line

    init = cfg.finetune.init
    what = ", ".join(f"{n} ({labels[n].report_unit or 'unitless'})" for n in heads)
    return Job(task=OBJECTIVE, backbone=backbone,
               objectives={names[n]: (weights[n], heads[n]) for n in heads},
               params={names[n]: {"target": n, **options(cfg, n)} for n in heads}, dataset=ds,
               split=split, labels=labels,
               domain=checkpoint.training_domain(ds, split["train"]),
               announce=f"fine-tuning {what} on {len(split['train'])} "
                        f"labels, {'from ' + init if init else 'from scratch'}",
               validate=validate, select="weighted_mae" if several else key_of(labels[next(iter(heads))]),
               finish=finish)


def model_from(ckpt: checkpoint.Checkpoint):
    """(backbone, {label: property head}) of a property checkpoint read once, in eval mode."""
    heads = {}
    for name, entry in ckpt.data["objectives"].items():
        params = {**options(ckpt.config), **entry["params"]}  # format 1 saved the target only
        head = PropertyRegression(ckpt.config.model.hidden, **params)
        load_state(head, entry["state"], "property head", ckpt.path)
        heads[head.target] = head.eval()
    return ckpt.backbone().eval(), heads


def evaluate(ckpt: checkpoint.Checkpoint, split_name: str, allow_unseen: bool = False) -> dict:
    """MAE of a property checkpoint on a split, per label in its report unit, with the trivial
    baseline of each (``baseline_*``: predicting the mean of the data's training split, or of
    the evaluated structures themselves for ``all``, which flatters the baseline)."""
    backbone, heads = model_from(ckpt)
    ds, loader, device, train = evaluation_run(ckpt, split_name, (backbone, *heads.values()),
                                               allow_unseen, needs=tuple(heads))
    out = {"checkpoint": ckpt.path, "split": split_name, "molecules": len(loader.indices)}
    fit, fitted_on = baseline_fit(train, loader.indices)
    for name, head in heads.items():
        label = label_of(ds, name, ckpt.config.data.dataset)
        out[key_of(label)] = property_mae(backbone, head, loader, device) * label.report_factor
        out[f"baseline_{key_of(label)}"] = (baseline(ds, fit, loader.indices, label)
                                            * label.report_factor)
    out["baseline_mean_of"] = fitted_on
    return out
