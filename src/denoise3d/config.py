"""Typed configuration: nested dataclasses from one YAML file plus ``key=value`` overrides.

Unknown keys are an error; values are checked against the field types. The resolved config is
saved beside every checkpoint (``config.yaml``) and inside it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A bad configuration file or override (one-line message)."""


@dataclass
class DataConfig:
    dataset: str = "qm9"  # qm9 | md17 | files | structures | geom
    cache_dir: str | None = None  # processed cache; default $DENOISE3D_CACHE or ~/.cache/denoise3d
    xyz_dir: str | None = None  # read original dsgdb9nsd_*.xyz files instead of the qm9pack CSV
    split: str = "egnn"  # 100,000 / 17,748 / 13,083: "egnn" = the exact EGNN/3D-EMGP permutation
    split_seed: int = 42  # seed of split="random", and of the max_train / max_valid / max_test subsets
    batch_size: int = 64
    eval_batch_size: int = 128
    max_train: int | None = None  # use a random subset of N training molecules (None = all)
    max_valid: int | None = None  # random subset of N validation molecules (None = all 17,748)
    max_test: int | None = None  # random subset of N test molecules (None = all 13,083)
    # training samples per epoch (None = the training set once): with few labels, an epoch of
    # e.g. 1,000 samples (repeated shuffled passes) keeps the validation cadence, the plateau
    # scheduler's patience and the step budget of a 1,000-label run
    epoch_size: int | None = None
    # Dynamic training batches (Zaidi et al.): pack molecules in shuffled order until one more
    # would exceed a limit (edges of the full graph, n(n-1) per molecule); any set = on, and
    # batch_size is then unused for training. Per process under data parallelism.
    max_atoms: int | None = None
    max_edges: int | None = None
    max_graphs: int | None = None
    # dataset "md17": one MD17 / rMD17 / generated (denoise3d data xtb-md) trajectory .npz;
    # split "random" = 3D-EMGP's train_frames / valid_frames / rest, or "rmd17-K" (K = 1..5)
    path: str | None = None
    train_frames: int = 9500
    valid_frames: int = 500
    # datasets "structures" (data.path: a cache dir, or xyz/extxyz/sdf/ASE-db files or a directory)
    # and "geom" (data.path: GEOM rdkit_folder / summary json / .msgpack): pretraining sets,
    # split 95 % train / 5 % valid by split_seed (see denoise3d.data.pretraining)
    top_k: int = 10  # geom: conformers of largest Boltzmann weight kept per molecule
    exclude: str | None = None  # geom: drop molecules of "qm9-test" or of a SMILES file
    add_hydrogens: bool = False  # SDF: add H with RDKit (PCQM4Mv2's SDF has heavy atoms only)
    embed_2d: bool = False  # SDF: give a 2D record (all z = 0) one RDKit 3D conformer instead of refusing it
    # dataset "files": your labelled extxyz / xyz / ASE db / SDF file or directory (data.path);
    # see denoise3d.data.labelled for where labels are read from and how units are converted
    energy_key: str = "energy"  # per-structure energy (info / calculator results / db key / SDF tag)
    forces_key: str = "forces"  # per-atom forces (arrays / calculator results); -KEY: minus a gradient
    targets: list | None = None  # other per-structure labels to read (None = every numeric one)
    units: dict = field(default_factory=dict)  # {label: unit}, e.g. {energy: kcal/mol, gap: eV}
    split_by: str = "structure"  # structure (random) | molecule (one molecule's frames together)
    fractions: list = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train / valid / test
    smiles_column: str = "smiles"  # a CSV of SMILES + property columns: the SMILES column
    conformers: int = 1  # CSV: seeded RDKit ETKDG + MMFF conformers per molecule
    structures: str | None = None  # CSV: join rows to this structure file's structures by name
    id_column: str = "id"  # CSV with data.structures: the column holding the structure names


@dataclass
class ModelConfig:
    backbone: str = "egnn"  # egnn | schnet | painn | torchmd_et | mace | gns | gns_tat
    hidden: int = 128  # node feature width (GNS: vertex/edge latent size)
    layers: int = 7  # interaction layers (GNS: distinct processor blocks)
    # None = the backbone's own default (its paper's value). Setting one the chosen backbone
    # does not take is an error (see models.model_kwargs).
    cutoff: float | None = None  # Å, radius graph and cosine cutoff (EGNN: range of its basis)
    num_rbf: int | None = None  # radial basis functions (EGNN: Gaussians beside d², default 0)
    edge_types: bool | None = None  # concatenate the hop one-hot to the RBF (3D-EMGP App. B.4)
    num_heads: int | None = None  # attention heads (torchmd_et)
    mlp_hidden: int | None = None  # GNS MLP width
    mlp_layers: int | None = None  # GNS MLP hidden layers
    iterations: int | None = None  # GNS: applications of the shared processor
    max_ell: int | None = None  # mace: spherical-harmonics order of the messages
    correlation: int | None = None  # mace: symmetric-product order (body order correlation + 1)
    avg_num_neighbors: float | None = None  # mace: message normaliser
    elements: list | None = None  # mace: the atomic numbers the model takes (default H C N O F)


@dataclass
class PretrainConfig:
    # a recipe: weighted objectives, each {name, weight, **params}
    objectives: list = field(default_factory=lambda: [{"name": "emgp", "weight": 1.0}])


@dataclass
class FinetuneConfig:
    # property: a per-structure label of the dataset (QM9: mu alpha homo lumo gap r2 zpve u0 u h g cv)
    target: str = "homo"
    # the start: a pretrained checkpoint (a path or pretrained:NAME, shipped), or a fine-tuned one
    # (e.g. a force field trained on other molecules; energy_force also takes its energy head);
    # None = from scratch
    init: str | None = None
    task: str = "property"  # property (one label, finetune.target) | energy_force (E and F = -dE/dx)
    energy_weight: float = 0.2  # energy_force loss weights (3D-EMGP App. B.2)
    force_weight: float = 0.8
    stress_weight: float = 0.0  # energy_force: weight of L1(σ) / scale for periodic data with stress labels
    # Noisy Nodes (Zaidi et al. Table 4): X̃ = X + σε in training, plus weight × denoising MSE
    noisy_nodes_weight: float = 0.0  # 0 = off; 0.01 in the Zaidi fine-tuning recipe
    noisy_nodes_sigma: float = 0.05  # Å
    noisy_nodes_vector: str = "direct"  # direct (vector head) | gradient (−∇E of an energy head)
    # several labels at once: {label: loss weight} (one head and one metric each); None = target
    targets: dict | None = None
    # property heads' graph readout: sum (extensive) | mean (intensive; Zaidi's GNS-TAT decoder),
    # or {label: sum | mean} per label
    readout: str | dict = "sum"
    # energy_force from a pretrained energy model: start the energy head from its head too (the
    # 3D-EMGP energy head, or a gradient-mode denoising head), so fine-tuning starts from the
    # pretrained force field -∇E; from an energy_force checkpoint, its head of the same kind
    # (atomwise: e and scale, with this data's E0); false = a fresh head on the backbone
    init_energy_head: bool = True
    # energy_force from a pretrained energy head (init_energy_head, energy_head=mlp_of_sum): its
    # scale. std: E = std · head + mean, the pretrained −∇E times the training energies' std (the
    # default; every result before 2026-12-02). fit: one factor fitted by least squares so that
    # the pretrained forces best match the training forces, and the energy offset so that the
    # training mean is kept (a gradient-mode denoising head is a force field up to kT/σ, Zaidi et
    # al. §3; a 3D-EMGP head is scaled the same way). The factor and cosine go to metrics.json.
    energy_head_scale: str = "std"
    # energy_force: the energy head. atomwise: E = scale · Σ_i e(h_i) + Σ_i E0[z_i] (extensive; any
    # mix of molecules); mlp_of_sum: E = std · MLP(Σ_i h_i) + mean (the pretraining objectives'
    # energy model, which init_energy_head can start from; the head of results before 2026-12)
    energy_head: str = "atomwise"
    # train the head(s) only, the backbone's weights fixed (Zaidi et al. §5.4: how useful are the
    # pretrained features as they are?)
    freeze_backbone: bool = False
    e0: dict | None = None  # atomwise: {element: eV} reference energies (None = least squares)


@dataclass
class TrainConfig:
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimiser steps (None = all epochs)
    # training wall-time budget in minutes (None = none): no epoch starts that the previous
    # epoch's duration says would end past it (validation included; the test evaluation after
    # training is not); the lr schedule still plans every step, so with cosine set cosine_steps
    max_minutes: float | None = None
    lr: float = 5e-4
    # the backbone's lr is lr × this factor, the heads' lr (and the logged lr) stays lr; < 1
    # fine-tunes a pretrained backbone gently (discriminative fine-tuning); 1 = one group
    backbone_lr_factor: float = 1.0
    weight_decay: float = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    scheduler: str = "cosine"  # cosine | constant | plateau (ReduceLROnPlateau, valid loss)
    plateau_patience: int = 30  # plateau: epochs without improvement before each lr cut
    plateau_factor: float = 0.9  # plateau: lr multiplier per cut (down to min_lr)
    warmup_steps: int = 0
    warmup_start_lr: float | None = None  # lr at step 0 of the linear warm-up (None = lr/warmup_steps)
    min_lr: float = 0.0  # cosine decays from lr to min_lr
    cosine_steps: int | None = None  # steps (from 0) to reach min_lr (None = the run's total steps)
    ema_decay: float | None = None  # parameter EMA (e.g. 0.9999), used for evaluation and saved
    grad_clip: float | None = 10.0  # max gradient norm (None = off)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads (None = free cores at start-up, train.seed.auto_threads)
    out: str = "runs/run"  # output directory: checkpoints, config.yaml, log.csv, metrics.json
    log_every: int = 10  # steps between CSV log rows
    checkpoint_every: int | None = None  # steps between resume checkpoints (out/resume.pt); None = epoch ends only
    resume: bool | str = False  # true = continue from out/resume.pt if present; or a resume.pt path
    nonfinite: str = "error"  # error | skip: on a non-finite loss or gradient (skips are counted in log.csv)
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast on CUDA (forces stay float32); CPU is fp32
    tensorboard: bool = True  # also write TensorBoard events to out/tb (if tensorboard is installed)
    progress: bool = True  # progress bar on a terminal, plain lines otherwise; false = none


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _check(value, tp, where: str):
    """Return ``value`` coerced to type ``tp`` or raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is not type(None):
                try:
                    return _check(value, a, where)
                except ConfigError:
                    pass
        raise ConfigError(f"{where}: expected {tp}, got {value!r}")
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is list and isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _fill(cls, values: dict, where: str, source: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section '{where}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean '{where + '.' if where else ''}{close[0]}'? " if close else ""
            raise ConfigError(f"{source}: unknown key '{path}' ({hint}valid: {', '.join(names)})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _fill(tp, value, path, source)
        else:
            kwargs[key] = _check(value, tp, f"{source}: {path}")
    return cls(**kwargs)


def _set(tree: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        node = tree.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: '{p}' is not a section")
        tree = node
    tree[last] = value


def load_config(path: str | Path | None = None, overrides: list[str] = (),
                base: dict | None = None) -> Config:
    """Config from a YAML file (or ``base``, or defaults) plus ``section.key=value`` overrides.

    Override values are parsed as YAML (``train.lr=1e-3``, ``train.max_steps=null``). The dotted
    names of the keys the file and the overrides set are kept in ``cfg.explicit`` (not a field:
    not saved), so that a key that does not apply to the chosen dataset can be refused; those of
    the overrides alone in ``cfg.overridden``.
    """
    tree: dict = copy.deepcopy(base) if base is not None else {}
    yaml_tree: dict = {}  # what the file sets (for explicit_keys; base values are not explicit)
    source = "defaults" if base is None else "checkpoint config"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
            yaml_tree = copy.deepcopy(tree)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: a config is a mapping of sections (data:, model:, ...), "
                              f"got a {type(tree).__name__}")
        source = str(path)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _set(tree, key.strip(), value)
    cfg = _fill(Config, tree, "", source if not overrides else f"{source} + overrides")
    cfg.overridden = frozenset(k.split("=", 1)[0].strip() for k in overrides)
    cfg.explicit = frozenset(_leaves(yaml_tree)) | cfg.overridden
    # a checkpoint's saved device is not checked (a GPU-trained model evaluated on a CPU)
    validate(cfg, source if not overrides else f"{source} + overrides",
             device=base is None or "train.device" in cfg.explicit)
    return cfg


# (section.key, test, what it must be): values checked when a config loads, before anything runs
RULES = [
    ("train.lr", lambda v: v > 0, "> 0 (a frozen step: a tiny lr)"),
    ("train.epochs", lambda v: v >= 1, ">= 1"),
    ("train.max_steps", lambda v: v is None or v >= 0, ">= 0 or null"),
    ("train.log_every", lambda v: v >= 1, ">= 1"),
    ("train.threads", lambda v: v is None or v >= 1, ">= 1 or null"),
    ("train.checkpoint_every", lambda v: v is None or v >= 1, ">= 1 or null"),
    ("train.warmup_steps", lambda v: v >= 0, ">= 0"),
    ("train.min_lr", lambda v: v >= 0, ">= 0"),
    ("train.weight_decay", lambda v: v >= 0, ">= 0"),
    ("train.grad_clip", lambda v: v is None or v > 0, "> 0 or null"),
    ("train.ema_decay", lambda v: v is None or 0 < v < 1, "in (0, 1) or null"),
    ("data.batch_size", lambda v: v >= 1, ">= 1"),
    ("finetune.stress_weight", lambda v: v >= 0, ">= 0"),
    ("finetune.energy_head_scale", lambda v: v in ("std", "fit"), "std or fit"),
    ("finetune.noisy_nodes_weight", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("finetune.noisy_nodes_sigma", lambda v: v > 0, "> 0 (Å)"),
    ("finetune.noisy_nodes_vector", lambda v: v in ("direct", "gradient"), "direct or gradient"),
    ("data.max_train", lambda v: v is None or v >= 1, ">= 1 or null"),
    ("data.epoch_size", lambda v: v is None or v >= 1, ">= 1 or null"),
    ("data.max_valid", lambda v: v is None or v >= 1, ">= 1 or null"),
    ("data.max_test", lambda v: v is None or v >= 1, ">= 1 or null"),
    ("data.eval_batch_size", lambda v: v >= 1, ">= 1"),
    ("model.hidden", lambda v: v >= 1, ">= 1"),
    ("model.layers", lambda v: v >= 1, ">= 1"),
]


def validate(cfg: Config, source: str = "config", device: bool = True) -> None:
    """Ranges of the values (:data:`RULES`) and (``device``) that ``train.device`` exists here:
    one-line ConfigErrors naming the key."""
    for dotted, ok, what in RULES:
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if not ok(value):
            raise ConfigError(f"{source}: {dotted}={value} must be {what}")
    if device:
        try:
            device_named(cfg.train.device, "train.device")
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None


def device_named(name, what: str = "device"):
    """``torch.device`` of ``name`` ("auto": CUDA when available, else CPU); a one-line ValueError
    naming ``what`` for a name that is not a device, or a CUDA device this torch build cannot see."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{what}={name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what}={name}: this torch build sees no CUDA device (install a CUDA "
                         f"build of torch, or use cpu)")
    return dev


def _leaves(tree, prefix: str = "") -> list[str]:
    """Dotted names of the values set in a (YAML) tree: ``["data.dataset", "train.lr", ...]``."""
    if not isinstance(tree, dict):
        return [prefix] if prefix else []
    return [leaf for k, v in tree.items() for leaf in _leaves(v, f"{prefix}.{k}" if prefix else str(k))]


def explicit_keys(cfg: Config, section: str) -> set[str]:
    """The keys of ``section`` that the user set (in the YAML file or an override), without the
    section prefix; empty for configs read back from a checkpoint (see :func:`load_config`)."""
    prefix = f"{section}."
    return {k[len(prefix):] for k in getattr(cfg, "explicit", ()) if k.startswith(prefix)}


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(tree: dict) -> Config:
    return _fill(Config, tree, "", "checkpoint config")


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe() -> str:
    """Every config key as ``section.key  type = default  description`` (the comments of this
    module's dataclasses), for ``denoise3d <verb> --help``."""
    source = Path(__file__).read_text()
    lines = []
    for section in dataclasses.fields(Config):
        cls = section.type if isinstance(section.type, type) else typing.get_type_hints(Config)[section.name]
        body = source[source.index(f"class {cls.__name__}"):]
        body = body[:body.find("\n\n\n")]
        comments, pending = {}, []
        for line in body.splitlines()[1:]:
            m = re.match(r"\s+(\w+): ([^=]+?)(?: = (.*?))?(?:\s+#\s*(.*))?$", line)
            if line.strip().startswith("#"):
                pending.append(line.strip().lstrip("# "))
            elif m:
                comments[m.group(1)] = (m.group(2).strip(), m.group(4) or " ".join(pending))
                pending = []
        defaults = to_dict(cls())
        for f in dataclasses.fields(cls):
            tp, text = comments.get(f.name, ("", ""))
            lines.append(f"  {section.name}.{f.name}  {tp} = {defaults[f.name]!r}"
                         + (f"\n      {text}" if text else ""))
    return "\n".join(lines)
