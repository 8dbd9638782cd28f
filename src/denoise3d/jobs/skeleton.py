"""The one job skeleton every training task runs through.

A task (:mod:`~denoise3d.jobs.pretrain`, :mod:`~denoise3d.jobs.property`,
:mod:`~denoise3d.jobs.energy_force`) supplies only what differs, as a :class:`Job`; the skeleton

1. seeds, then has the task build data, model, objectives and anything it starts from, builds the
   trainer and plans the run (lr schedule, ``train.resume``'s state): the whole run is validated
   before anything is written;
2. takes the output folder (:func:`~denoise3d.jobs.lock.output_folder`: a folder held by a live
   run is refused, a dead holder's lock is taken over);
3. saves the resolved config and the split (``split.npz``: train / valid / test indices), trains,
   keeps the epoch of the lowest validation metric (EMA and raw weights; kept across resumes) or,
   for pretraining, saves every epoch's weights;
4. evaluates the kept weights on the test split, writes the checkpoint and ``metrics.json``.
Prints and files come from the main process only under data parallelism.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml
from torch import nn

from denoise3d.config import Config, ConfigError, device_named, explicit_keys, save_config, to_dict
from denoise3d.data.batching import loader
from denoise3d.data.sources import load_data, load_dataset
from denoise3d.jobs import checkpoint
from denoise3d.jobs.lock import output_folder
from denoise3d.train.loop import Trainer
from denoise3d.train.seed import seed_everything
from denoise3d.train.state import resume_path


@dataclass
class Job:
    """What a task supplies to the skeleton, all built (so validated) before anything is written."""

    task: str  # "pretrain" | "property" | "energy_force" (the checkpoint's task)
    backbone: nn.Module
    objectives: dict  # {name: (loss weight, objective module)}
    params: dict  # {name: the objective's parameters, saved in the checkpoint}
    dataset: object  # MolecularDataset
    split: dict  # {"train", "valid", "test"} index arrays
    announce: str  # the first line printed ("... output in" is appended)
    validate: Callable  # (trainer, valid loader) -> {metric: value}, on the evaluation weights
    select: str | None = None  # metric to minimise for the kept epoch; None = save every epoch
    # (trainer, test loader, kept epoch) -> (metrics, closing line); None = no test (pretraining)
    finish: Callable | None = None
    labels: dict = field(default_factory=dict)  # {name: Label} the fine-tuned model predicts
    domain: dict | None = None  # fine-tuning: checkpoint.training_domain of the training split
    # fine-tuning from a model that already predicts these labels (a force field): its validation
    # before the first step competes for the kept epoch (epoch 0), so a run never ends worse
    validate_start: bool = False

    @property
    def checkpoint_name(self) -> str:
        return "pretrain.pt" if self.task == "pretrain" else "finetune.pt"


def run(cfg: Config, build: Callable[[Config], Job]):
    """Run the job ``build(cfg)`` describes; returns its test metrics (pretraining: the
    checkpoint's path)."""
    seed_everything(cfg.train.seed, cfg.train.threads)
    job = build(cfg)
    check_periodic(cfg, job)
    out = Path(cfg.train.out)
    trainer = Trainer(job.backbone, job.objectives, cfg.train, out)
    train = loader(job.dataset, job.split["train"], cfg.data, train=True, seed=cfg.train.seed)
    valid = loader(job.dataset, job.split["valid"], cfg.data, train=False)
    if len(train) == 0 and cfg.train.max_steps != 0:
        sized = cfg.data.epoch_size is not None
        n = cfg.data.epoch_size if sized else len(job.split["train"])
        epoch = f"data.epoch_size={n} samples per epoch" if sized else f"{n} training structures"
        fix = (f"; data.batch_size={n} or less trains" if n > 0 else
               "; the training split is empty (data.fractions / data.split_by)" if not sized else "")
        raise ConfigError(f"no training batch: {epoch} and data.batch_size={cfg.data.batch_size} "
                          f"(a partial last batch is dropped){fix}")
    if cfg.train.max_steps == 0 and job.finish is None:
        raise ConfigError("train.max_steps=0: pretraining would take no step and save nothing")
    check_resume(cfg, out)
    trainer.start(train)  # lr schedule, train.resume's state: reads only
    main = trainer.dist.is_main
    with output_folder(out, take=main):
        if main:
            save_config(cfg, out / "config.yaml")
            np.savez(out / "split.npz", **{k: np.asarray(v, np.int64)  # the indices used
                                           for k, v in job.split.items() if k != "all"})
            print(f"{job.announce}; output in {out}"
                  + (f"; {trainer.dist.world_size} processes" if trainer.dist.enabled else ""))
            left = left_out_per_epoch(train)
            if left:
                print(left)
        kept = _train(cfg, job, trainer, train, valid, out)
        if job.finish is None:
            if main and (out / job.checkpoint_name).is_file():
                print(f"saved {out / job.checkpoint_name}")
            return out / job.checkpoint_name
        test = loader(job.dataset, job.split["test"], cfg.data, train=False)
        metrics, line = job.finish(trainer, test, kept)
        if trainer.step == 0:  # train.max_steps=0: an evaluation of the starting weights
            line += "\nnote: train.max_steps=0: no training step; these are the starting weights"
        if trainer.stopped:
            metrics["stopped"] = trainer.stopped
        metrics["train_minutes"] = trainer.seconds / 60
        _save(cfg, job, trainer, out, metrics, kept["state"], kept["raw"])
        if main:
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
            print(f"{line}; saved {out / job.checkpoint_name}")
        return metrics


def left_out_per_epoch(train) -> str:
    """A note when a training loader leaves out 10 % or more of each epoch's samples (its
    partial last batch is dropped: fixed-size batches then all have the same size; batches
    packed by data.max_atoms / max_edges / max_graphs are measured on the first epoch), else ""."""
    if not getattr(train, "drop_last", False):
        return ""
    n = train.epoch_size if train.epoch_size is not None else len(train.indices)
    size = getattr(train, "batch_size", None)
    if size is not None:
        left, how = n - len(train) * size, f"data.batch_size={size}"
        fix = f"a data.batch_size that divides {n} uses them all"
    else:  # packed batches: the first epoch's
        left = n - sum(len(b) for b in train.index_batches())
        how = ", ".join(f"data.{k}={v}" for k, v in train.limits.items() if v is not None)
        fix = "larger limits (or a data.batch_size instead) use more of them"
    if left <= 0 or left < 0.1 * n:
        return ""
    return (f"note: {n} training samples per epoch and {how}: {len(train)} step(s) per epoch, "
            f"and each shuffled epoch leaves out {left} ({100 * left / n:.0f} %; a different "
            f"subset each epoch); {fix}")


def check_periodic(cfg: Config, job: Job) -> None:
    """Periodic data needs a backbone and objectives defined for it: a one-line ConfigError
    before anything is written (EGNN and 3D-EMGP are defined on whole molecules)."""
    if not getattr(job.dataset, "has_cells", False):
        return
    where = f"{cfg.data.path or cfg.data.dataset} holds periodic structures"
    if getattr(job.backbone, "full_graph", False):
        raise ConfigError(f"{where}: model.backbone={cfg.model.backbone} is defined on the fully "
                          f"connected graph of a molecule (3D-EMGP); use a radius backbone "
                          f"(schnet, painn, torchmd_et, gns)")
    from denoise3d.models.heads import VectorHead

    for name, (_, objective) in job.objectives.items():
        if not getattr(objective, "periodic", True):
            raise ConfigError(f"{where}: the objective {name} is not defined for periodic "
                              f"structures: {objective.periodic_reason}")
        edge_readout = any(isinstance(m, VectorHead) for m in objective.modules())
        if edge_readout and not getattr(job.backbone, "vector_features", False):
            raise ConfigError(
                f"{where}: the objective {name} predicts vectors directly, and "
                f"model.backbone={cfg.model.backbone} has no vector features, so the head would "
                f"read every pair of a molecule; set vector: gradient in the objective's entry "
                f"(finetune.noisy_nodes_vector=gradient for Noisy Nodes), or use painn / torchmd_et")


# keys a resumed run may change: how long and where it runs, not what it trains
RESUMABLE = {"train.epochs", "train.max_steps", "train.max_minutes", "train.resume",
             "train.device", "train.threads", "train.checkpoint_every", "train.log_every", "train.tensorboard", "train.out",
             "data.cache_dir", "data.eval_batch_size", "data.max_test"}


def check_resume(cfg: Config, out: Path) -> None:
    """A resumed run continues the run it resumes: its config may differ from the one saved beside
    the resume file only in :data:`RESUMABLE` keys (a one-line error names the first other)."""
    path = resume_path(cfg.train.resume, out)
    saved = None if path is None else path.parent / "config.yaml"
    if saved is None or not saved.is_file():
        return
    before = _flat(yaml.safe_load(saved.read_text()) or {})
    now = _flat(to_dict(cfg))
    for key in sorted(set(before) & set(now)):  # a key newer than the saved config: not compared
        if key not in RESUMABLE and before[key] != now[key]:
            raise ConfigError(f"train.resume: {path.parent} was run with {key}={before[key]}, "
                              f"this config has {key}={now[key]}; resuming continues that run "
                              f"(set it back, or start a new train.out)")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and not prefix:
            out.update(_flat(v, f"{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _train(cfg: Config, job: Job, trainer: Trainer, train, valid, out: Path) -> dict:
    """Fit; returns the kept epoch ``{"value", "epoch", "metrics", "state", "raw"}`` with its
    weights loaded into the trainer's model (fine-tuning; epoch 0 = the starting weights, when no
    epoch ran), or the last epoch's (pretraining). Validation finite in no epoch is an error."""
    kept = {"value": math.inf, "epoch": 0, "metrics": {}, "state": None, "raw": None}
    if job.select is not None:  # in trainer.extra: saved in resume.pt, so a resumed run keeps it
        kept = trainer.extra.setdefault("best", kept)
        if "value" not in kept:  # a resume.pt of format 1 named the value after the metric
            kept.update(value=kept.pop("mae", kept.pop("loss", math.inf)), raw=kept.get("raw"),
                        metrics=kept.get("metrics", {}))

    def keep(epoch: int, metrics: dict, value: float) -> None:
        """The current evaluation (and, with EMA, raw) weights become the kept epoch."""
        kept.update(value=value, epoch=epoch, metrics=metrics,
                    state=copy.deepcopy(trainer.eval_model.state_dict()),
                    raw=copy.deepcopy(trainer.model.state_dict()) if trainer.ema else None)

    if job.select is not None and job.validate_start and trainer.step == 0 and kept["state"] is None:
        start = job.validate(trainer, valid)
        if trainer.dist.is_main:
            print("start (before any step): " + " ".join(f"{k}={v:.5g}" for k, v in start.items()))
        if start[job.select] < kept["value"]:
            keep(0, start, start[job.select])

    def on_epoch_end(epoch: int, metrics: dict) -> None:
        if job.select is None:  # pretraining: every epoch's weights are the result so far
            _save(cfg, job, trainer, out, metrics, trainer.eval_model.state_dict(),
                  trainer.model.state_dict() if trainer.ema else None)
        elif metrics[job.select] < kept["value"]:  # NaN never wins
            keep(epoch, metrics, metrics[job.select])

    trainer.fit(train, validate=lambda: job.validate(trainer, valid), on_epoch_end=on_epoch_end)
    if trainer.skipped:  # train.nonfinite=skip
        if trainer.skipped >= trainer.step:
            raise FloatingPointError(f"{out}: every one of the {trainer.step} steps had a "
                                     f"non-finite loss or gradient and was skipped; nothing was "
                                     f"learned (lower train.lr, or check the data)")
        if trainer.dist.is_main:
            print(f"warning: {trainer.skipped} of {trainer.step} steps were skipped "
                  f"(non-finite loss or gradient; train.nonfinite=skip)")
    if job.select is None:
        return kept
    if kept["state"] is not None:
        trainer.model.load_state_dict(kept["state"])  # the evaluation weights of the kept epoch
        if kept["epoch"] == 0 and trainer.history and trainer.dist.is_main:
            print(f"note: no epoch's validation {job.select} beat the starting model's "
                  f"({kept['value']:.5g}); the start is kept (lower train.lr or add "
                  f"train.warmup_steps to fine-tune it)")
    elif trainer.history:
        raise FloatingPointError(f"{out}: no epoch gave a finite validation {job.select}; "
                                 f"nothing to keep (lower train.lr, or check the data)")
    else:  # no epoch ran (train.max_steps=0): the starting weights are the result
        keep(kept["epoch"], kept["metrics"], kept["value"])
    return kept


def _save(cfg: Config, job: Job, trainer: Trainer, out: Path, metrics: dict, state: dict,
          raw: dict | None) -> None:
    checkpoint.save(out / job.checkpoint_name, cfg,
                    kind="pretrain" if job.task == "pretrain" else "finetune", task=job.task,
                    state=state, raw=raw, ema=trainer.ema, weights=trainer.weights,
                    params=job.params, labels=job.labels, step=trainer.step, metrics=metrics,
                    domain=job.domain)


def baseline_fit(train, indices) -> tuple[np.ndarray, str]:
    """The structures a trivial baseline is fitted on, and their name for the output: the
    training split, or (``train`` None: split "all") the evaluated ``indices`` themselves."""
    if train is None:
        return indices, "the evaluated structures (in-sample)"
    return train, "training split"


def gradient_hint(path) -> str:
    """For the errors of data without forces (fine-tuning, evaluation): the per-atom 3-vector
    arrays of the first structure of ``path`` (e.g. ``grad``), which ``data.forces_key`` could
    name; "" when none."""
    from denoise3d.data.labelled import labelled_files, read_frames

    try:
        first = next(iter(read_frames(labelled_files(path)[0])), None)
    except Exception:  # noqa: BLE001 - only a hint inside another error
        return ""
    keys = sorted(k for k in (first.atom_keys if first else ())
                  if k in first.values and np.shape(first.values[k]) == (len(first.z), 3))
    if not keys:
        return ""
    return (f"; per-atom 3-vectors in it: {', '.join(keys)} (a gradient dE/dx is minus the "
            f"forces: data.forces_key=-KEY reads its negative)")


def evaluation_run(ckpt: checkpoint.Checkpoint, split_name: str, models: tuple,
                   allow_unseen: bool = False, needs: tuple[str, ...] = ()):
    """``(dataset, loader, device, train)`` to evaluate a checkpoint's ``models`` (moved to the
    device) on ``split_name`` of its data (or of the data its overrides name); "all" = every
    structure of ``data.path``, without splitting it (the file may be short). ``train``: the
    indices of that data's training split, for the trivial baselines (None for "all").
    Structures with elements the model never saw are refused
    (:class:`~denoise3d.jobs.checkpoint.Domain`), and data without the labels ``needs`` names
    (one-line ValueError naming the data and the labels it has)."""
    cfg = ckpt.config
    explicit = explicit_keys(cfg, "data")
    if split_name == "all":
        ds = load_dataset(cfg.data, explicit)
        indices, train = np.arange(len(ds)), None
    else:
        ds, split = load_data(cfg.data, explicit)
        if split_name not in split:
            raise ValueError(f"unknown split {split_name!r}; choose from {', '.join(split)}")
        indices, train = split[split_name], split["train"]
    has = (*ds.target_names, *ds.atom_target_names)
    missing = [name for name in needs if name not in has]
    if missing:
        keys = {"energy": "data.energy_key", "forces": "data.forces_key"}
        hint = ", ".join(keys[m] for m in missing if m in keys) or "data.targets"
        raise ValueError(f"{cfg.data.path or cfg.data.dataset}: no {' or '.join(map(repr, missing))} "
                         f"label to evaluate against (labels read: {', '.join(has) or 'none'})"
                         f"{gradient_hint(cfg.data.path) if 'forces' in missing else ''}; "
                         f"{hint} names another key, and `denoise3d predict` takes unlabelled "
                         f"structures")
    checkpoint.Domain.of(ckpt, allow_unseen).check(ds.compositions(indices),
                                                   cfg.data.path or cfg.data.dataset)
    device = device_named(cfg.train.device)
    for model in models:
        model.to(device)
    return ds, loader(ds, indices, cfg.data, train=False), device, train
