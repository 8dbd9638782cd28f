"""The model checkpoint format (``pretrain.pt``, ``finetune.pt``): written and read here only.

Layout (a plain dict in the file container of :mod:`denoise3d.train.checkpoint`)::

    kind         "pretrain" | "finetune"
    task         "pretrain" | "property" | "energy_force"
    config       the resolved Config as a plain dict
    backbone     {"name", "kwargs", "state"}: the architecture and its weights
    objectives   {name: {"weight", "params", "state"}}: the objectives (they own the heads)
    labels       {name: {"per", "unit", "report_unit"}}: what a fine-tuned model predicts
    units        {"positions": "Å", name: unit of each label}: the model's input and outputs
    domain       fine-tuned models: {"elements", "compositions"} of the training structures
                 (:class:`Domain` refuses other elements at prediction time)
    metrics, step
    ema, raw     with train.ema_decay: {"decay", "num_updates"} and the raw training weights
                 {"backbone": state, "objectives": {name: state}}, for every task

Every "state" holds the weights to evaluate and to fine-tune from: the EMA weights when EMA is on
(Zaidi et al. evaluate EMA weights), the training weights otherwise. Version 1 files (the shipped
pretrained backbones among them) have no "task" or "labels" (and "units" only for force fields);
:func:`load` infers the task from their objectives, so they load as they are.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from denoise3d.config import Config, ModelConfig, from_dict, load_config, to_dict
from denoise3d.models import BACKBONES, backbone_from_config, model_kwargs
from denoise3d.objectives import OBJECTIVES, build_objective
from denoise3d.train.checkpoint import CheckpointError, load_checkpoint, load_state, save_checkpoint


def split_state(state: dict, prefix: str) -> dict:
    """The entries of a state dict under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def resolved(arch: dict) -> dict:
    """``{"name", **kwargs}`` with every constructor default filled in, so that a setting left
    unset and the same value given explicitly (EGNN's ``num_rbf`` unset or 0) compare equal."""
    cls = BACKBONES.get(arch["name"])
    if cls is None:
        return arch
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **arch}


def architecture(model: ModelConfig) -> dict:
    """The resolved architecture ``{"name", **constructor kwargs}`` a model section builds."""
    return resolved({"name": model.backbone, **model_kwargs(model)})


def backbone_entry(cfg: ModelConfig, state: dict) -> dict:
    """The checkpoint's ``backbone`` entry: architecture (name, constructor kwargs) and weights."""
    return {"name": cfg.backbone, "kwargs": model_kwargs(cfg), "state": state}


def save(path: str | Path, cfg: Config, *, kind: str, task: str, state: dict, weights: dict,
         params: dict, labels: dict, step: int, metrics: dict, raw: dict | None = None,
         ema=None, domain: dict | None = None) -> Path:
    """Write a model checkpoint atomically (main process only).

    ``state``: the state dict of the trainer's ``{"backbone", "objectives": {name: ...}}`` module
    with the weights to evaluate; ``raw``: the same for the training weights when EMA is on
    (``ema``: the :class:`~denoise3d.train.ema.EMA`); ``weights`` / ``params``: each objective's
    loss weight and constructor parameters; ``labels``: ``{name: Label}`` a fine-tuned model
    predicts; ``domain``: :func:`training_domain` of a fine-tuned model.
    """
    names = list(weights)
    payload = {
        "kind": kind, "task": task, "config": to_dict(cfg), "step": step, "metrics": metrics,
        "backbone": backbone_entry(cfg.model, split_state(state, "backbone.")),
        "objectives": {n: {"weight": weights[n], "params": params[n],
                           "state": split_state(state, f"objectives.{n}.")} for n in names},
        "labels": {n: {"per": lb.per, "unit": lb.unit, "report_unit": lb.report_unit}
                   for n, lb in labels.items()},
        "units": {"positions": "Å", **{n: lb.unit for n, lb in labels.items()}},
        **({"domain": domain} if domain else {})}
    files = data_files(cfg.data.path)
    if files:
        payload["data_files"] = files
    if raw is not None and ema is not None:
        payload["ema"] = {"decay": ema.decay, "num_updates": ema.num_updates}
        payload["raw"] = {"backbone": split_state(raw, "backbone."),
                          "objectives": {n: split_state(raw, f"objectives.{n}.") for n in names}}
    save_checkpoint(path, payload)
    return Path(path)


@dataclass
class Checkpoint:
    """A model checkpoint read once: its data, its config (with any overrides) and builders."""

    path: str  # as given (a path, or pretrained:NAME)
    data: dict
    config: Config

    @property
    def task(self) -> str:
        return self.data["task"]

    def objective(self, name: str) -> dict:
        """The saved entry ``{"weight", "params", "state"}`` of objective ``name``."""
        if name not in self.data["objectives"]:
            raise CheckpointError(f"{self.path}: no {name!r} objective in this checkpoint "
                                  f"(it has {', '.join(self.data['objectives'])})")
        return self.data["objectives"][name]

    def backbone(self, cfg: ModelConfig | None = None) -> nn.Module:
        """A backbone of ``cfg``'s architecture (default: the checkpoint's own) with the saved
        weights; a config whose architecture differs is a one-line error saying what to set."""
        cfg = self.config.model if cfg is None else cfg
        saved = self.data["backbone"]
        want = {"name": cfg.backbone, **model_kwargs(cfg)}
        have = {"name": saved["name"], **saved["kwargs"]}
        if resolved(want) != resolved(have):
            keys = [*have, *(k for k in want if k not in have)]  # unset in the checkpoint: null
            diff = ", ".join(f"model.{'backbone' if k == 'name' else k}="
                             f"{'null' if have.get(k) is None else have[k]}"
                             for k in keys if have.get(k) != want.get(k))
            raise CheckpointError(f"{self.path}: checkpoint backbone {have} differs from the "
                                  f"config's {want}; set {diff}")
        backbone = backbone_from_config(cfg)
        load_state(backbone, saved["state"], "backbone", self.path)
        return backbone

    def energy_head(self) -> tuple[str, dict] | None:
        """``(objective, energy head state)`` of the first pretraining objective that has an
        energy model (asked through its ``energy_model()``), or None."""
        hidden = self.config.model.hidden
        for name, entry in self.data["objectives"].items():
            if name not in OBJECTIVES:
                continue
            with torch.random.fork_rng(devices=[]):  # building draws initial weights: not ours
                objective = build_objective(name, hidden, **entry["params"])
            load_state(objective, entry["state"], f"{name} objective", self.path)
            head = objective.energy_model()
            if head is not None:
                return name, head.state_dict()
        return None


def load(path: str | Path, kind: str | None = None, overrides: list[str] = ()) -> Checkpoint:
    """Read a model checkpoint (a path, or ``pretrained:NAME`` for a shipped one) once.

    ``kind``: "pretrain" or "finetune" to refuse the other; ``overrides``: ``section.key=value``
    applied to its config (e.g. ``data.path=other.npz``, ``train.device=cuda``).
    """
    from denoise3d.pretrained import resolve

    data = load_checkpoint(resolve(str(path)), kind=kind)
    if data["kind"] not in ("pretrain", "finetune"):
        raise CheckpointError(f"{path}: a {data['kind']} checkpoint, not a model checkpoint")
    if "task" not in data:  # format version 1
        data["task"] = ("pretrain" if data["kind"] == "pretrain" else
                        "energy_force" if "energy_force" in data["objectives"] else "property")
        data["labels"] = {}
    cfg = from_dict(data["config"])
    if overrides:
        cfg = load_config(None, list(overrides), base=to_dict(cfg))
    return Checkpoint(str(path), data, cfg)


def initial(cfg: Config) -> tuple[nn.Module, Checkpoint | None]:
    """The backbone a fine-tuning run starts from, and the checkpoint it came from: the weights
    of ``finetune.init`` (a pretrain checkpoint path, ``pretrained:NAME``, or a fine-tuned
    checkpoint, e.g. a force field trained on other molecules' labels), or a fresh one;
    with ``finetune.freeze_backbone`` its weights are not trained (forces still flow through it).
    From a checkpoint, ``cfg.model`` becomes the checkpoint's architecture
    (:func:`inherited_architecture`)."""
    ckpt = load(cfg.finetune.init) if cfg.finetune.init else None
    if ckpt is None:
        backbone = backbone_from_config(cfg.model)
    else:
        cfg.model, note = inherited_architecture(cfg, ckpt)
        backbone = ckpt.backbone(cfg.model)
        if note:
            print(note)
    if cfg.finetune.freeze_backbone:
        backbone.requires_grad_(False)
    return backbone, ckpt


def inherited_architecture(cfg: Config, ckpt: Checkpoint) -> tuple[ModelConfig, str]:
    """(model section, note) of a run that fine-tunes ``ckpt``: the checkpoint's architecture, except
    the ``model.*`` keys given as command-line overrides (``cfg.overridden``), which must agree
    with it (:meth:`Checkpoint.backbone` says what to set otherwise). A config file describes the
    model trained from scratch (``configs/finetune/md17_cpu.yaml`` gives EGNN 50 Gaussians), so
    where it differs the checkpoint's value is used, and the note (empty if none) says so."""
    given = {k.split(".", 1)[1] for k in getattr(cfg, "overridden", ()) if k.startswith("model.")}
    saved = ckpt.config.model
    model = dataclasses.replace(cfg.model, **{f.name: getattr(saved, f.name)
                                              for f in dataclasses.fields(ModelConfig)
                                              if f.name not in given})
    note = ""
    mine, theirs = architecture(cfg.model), architecture(model)
    if mine != theirs:
        # named by the model.* keys a user sets (not the backbone's other constructor
        # arguments), each with the value it resolves to (the backbone's default if unset)
        changed = [f.name for f in dataclasses.fields(ModelConfig)
                   if getattr(cfg.model, f.name) != getattr(model, f.name)]

        def shown(arch, section, k):
            return arch.get("name" if k == "backbone" else k, getattr(section, k))
        note = (f"note: fine-tuning {ckpt.path}: its architecture is used ("
                + ", ".join(f"model.{k}={shown(theirs, model, k)}" for k in changed)
                + "; the config says "
                + ", ".join(f"{shown(mine, cfg.model, k)}" for k in changed) + ")")
    return model, note


def formula(counts) -> str:
    """The Hill formula (C, H, then alphabetical; ``C2H6O``) of element counts (MAX_Z + 1,)."""
    from denoise3d.data.elements import SYMBOLS

    n = {SYMBOLS[z]: int(c) for z, c in enumerate(counts) if c}
    order = (["C", "H"] if "C" in n else []) + sorted(k for k in n if k not in ("C", "H") or "C" not in n)
    return "".join(f"{k}{n[k] if n[k] > 1 else ''}" for k in order if k in n)


def data_files(path) -> list[list] | None:
    """``[[absolute path, size in bytes], ...]`` of the files under ``data.path`` (a file or a
    directory), recorded in a checkpoint so that ``evaluate`` knows its training data whatever
    the working directory; None without a path or when nothing is there."""
    if not path:
        return None
    p = Path(path).expanduser()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
    return [[str(f.resolve()), f.stat().st_size] for f in files] or None


def training_domain(ds, indices, source: "Checkpoint | None" = None) -> dict:
    """The manifest entries of what a model was trained on: ``elements`` (atomic numbers) and
    ``compositions`` (formulas) of the training structures. ``source``: the force field it was
    fine-tuned from (its energy head moved over); its compositions made of these elements count
    as seen too (its forces were trained on them; a multi-stage start no longer warns about every
    molecule of its earlier stages). The elements stay this training's: E0 is refitted on it."""
    rows = ds.compositions(indices)  # distinct element counts
    elements = [int(z) for z in np.flatnonzero(rows.sum(axis=0))]
    compositions = {formula(r) for r in rows}
    if source is not None:
        from denoise3d.data.elements import SYMBOLS

        allowed = {SYMBOLS[z] for z in elements}
        for c in (source.data.get("domain") or {}).get("compositions", ()):
            if set(re.findall(r"[A-Z][a-z]?", c)) <= allowed:
                compositions.add(c)
    return {"elements": elements, "compositions": sorted(compositions)}


class UnseenElement(ValueError):
    """A structure holds an element absent from the model's training data (one-line message)."""


@dataclass
class Domain:
    """The training domain of a fine-tuned model: structures with other elements are refused
    (``allow_unseen`` lifts that), each composition never seen is warned about once."""

    elements: frozenset | None  # None: not recorded (format 1 checkpoints): nothing is checked
    compositions: frozenset
    allow_unseen: bool = False
    warned: set = field(default_factory=set)  # the unseen compositions already named

    @classmethod
    def of(cls, ckpt: "Checkpoint", allow_unseen: bool = False) -> "Domain":
        d = ckpt.data.get("domain") or {}
        elements = frozenset(d["elements"]) if "elements" in d else None
        return cls(elements, frozenset(d.get("compositions", ())), allow_unseen)

    def check(self, counts: np.ndarray, where: str) -> None:
        """``counts`` (n, MAX_Z + 1): the element counts of the structures about to be predicted
        (or only their distinct rows)."""
        from denoise3d.data.elements import SYMBOLS

        if self.elements is None:
            return
        counts = np.atleast_2d(counts)
        present = set(np.flatnonzero(counts.sum(axis=0)).tolist())
        unseen = sorted(present - self.elements)
        if unseen and not self.allow_unseen:
            trained = ", ".join(SYMBOLS[z] for z in sorted(self.elements))
            raise UnseenElement(
                f"{where}: element {', '.join(SYMBOLS[z] for z in unseen)} never seen in training "
                f"(trained on {trained}); its predictions would be meaningless "
                f"(--allow-unseen-elements, or allow_unseen_elements=True in Python, to predict "
                f"anyway)")
        fresh = [z for z in unseen if f"element {z}" not in self.warned]
        if fresh:  # allowed: say what that means once per element
            self.warned |= {f"element {z}" for z in fresh}
            print(f"denoise3d: warning: {where}: element {', '.join(SYMBOLS[z] for z in fresh)} "
                  f"never seen in training: its embedding and its energy offset E0 are untrained, "
                  f"so its energies are meaningless and its forces unreliable", file=sys.stderr)
        new = {formula(r) for r in np.unique(counts, axis=0) if r.any()} - self.compositions - self.warned
        if new:
            self.warned |= new
            shown = ", ".join(sorted(new)[:5]) + (" ..." if len(new) > 5 else "")
            print(f"denoise3d: warning: {where}: {len(new)} composition(s) never seen in training "
                  f"({shown}); expect larger errors", file=sys.stderr)
