"""Force-field fine-tuning: energy + forces of a trajectory, evaluation, loading for simulation.

``finetune.task=energy_force`` (3D-EMGP's MD17 recipe, App. B.2): E from an energy head,
F = −∂E/∂X, loss 0.2·L1(E) + 0.8·L1(F) on standardised energies (training-split mean and std),
ReduceLROnPlateau on the validation loss (``train.scheduler=plateau``), the epoch with the lowest
validation loss is kept. From a pretrained energy model (``finetune.init_energy_head``) the energy
head starts from the pretrained one. Metrics in MD17's units (kcal/mol, kcal/mol/Å) and meV,
meV/Å; force errors are per Cartesian component.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from denoise3d.config import Config, ConfigError, explicit_keys
from denoise3d.data.elements import MAX_Z, SYMBOLS, Z_OF
from denoise3d.data.sources import load_data
from denoise3d.jobs import checkpoint
from denoise3d.jobs.skeleton import Job, baseline_fit, evaluation_run, gradient_hint
from denoise3d.objectives.energy_force import STRESS_LABELS, EnergyForceRegression
from denoise3d.train.checkpoint import CheckpointError, load_state
from denoise3d.train.evaluate import force_field_errors
from denoise3d.units import EV_MEV, KCALMOL_EV

OBJECTIVE = "energy_force"  # name of the objective in the Trainer and in checkpoints


def report(errors: dict[str, float], prefix: str = "") -> dict[str, float]:
    """Energy / force errors (eV, eV/Å) in MD17's units and in meV: MAE of the energy per
    structure (and per atom, when measured), MAE (and RMSE) of the force components."""
    out = {}
    for key, name, unit in (("energy_mae", "energy_mae", ""), ("force_mae", "force_mae", "_A"),
                            ("energy_mae_per_atom", "energy_mae_per_atom", ""),
                            ("force_rmse", "force_rmse", "_A")):
        if key in errors:
            out[f"{prefix}{name}_kcal_mol{unit}"] = errors[key] / KCALMOL_EV
            out[f"{prefix}{name}_meV{unit}"] = errors[key] * EV_MEV
    if "force_cosine" in errors:  # unitless
        out[f"{prefix}force_cosine"] = errors["force_cosine"]
    if "stress_mae" in errors:  # eV/Å³ -> meV/Å³ and GPa
        out[f"{prefix}stress_mae_meV_A3"] = errors["stress_mae"] * EV_MEV
        out[f"{prefix}stress_mae_GPa"] = errors["stress_mae"] * EV_A3_GPA
    return out


EV_A3_GPA = 160.21766208  # 1 eV/Å³ in GPa


def fit_e0(ds, indices, given: dict | None = None) -> np.ndarray:
    """Per-element reference energies E0 (MAX_Z + 1,) eV: ``given`` ({symbol: eV}), else the
    least-squares fit of the energies of the structures ``indices`` on their element counts
    (minimum-norm where the compositions do not determine it: one molecule's frames give
    Σ E0 = their mean energy)."""
    e0 = np.zeros(MAX_Z + 1)
    counts = ds.element_counts(indices).astype(np.float64)  # (n, MAX_Z + 1)
    present = np.flatnonzero(counts.sum(axis=0))
    if given:
        form = 'as "finetune.e0={H: -13.6, C: -1029.5}" (a YAML mapping, in eV)'
        for symbol, value in given.items():
            if symbol not in Z_OF:
                raise ConfigError(f"finetune.e0: unknown element {symbol!r}; give it {form}")
            e0[Z_OF[symbol]] = float(value)
        missing = [SYMBOLS[z] for z in present if SYMBOLS[z] not in given]
        if missing:
            raise ConfigError(f"finetune.e0 gives no value for {', '.join(missing)}, present in "
                              f"the training structures: give every element, or none for the "
                              f"least-squares fit")
        return e0
    solution, *_ = np.linalg.lstsq(counts[:, present], ds.target("energy")[np.asarray(indices)],
                                   rcond=None)
    e0[present] = solution
    return e0


def undetermined_compositions(ds, train_idx, other_idx) -> list[str]:
    """Hill formulas of the compositions of ``other_idx`` (validation and test structures) that
    are not linear combinations of the training compositions: Σ E0 of such a structure is not
    fixed by the training energies (the least-squares E0 is minimum-norm where the training
    compositions leave it free), so its energy is an extrapolation of the per-element offsets.
    Empty when every composition is determined (always, for one molecule's frames)."""
    if len(other_idx) == 0 or len(train_idx) == 0:
        return []
    train = ds.compositions(train_idx).astype(np.float64)
    other = ds.compositions(other_idx)
    present = np.flatnonzero(train.sum(axis=0) + other.sum(axis=0))
    a, b = train[:, present].T, other[:, present].astype(np.float64).T  # (elements, m)
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    off = np.abs(a @ coef - b).max(axis=0) > 1e-6 * np.maximum(1.0, np.abs(b).max(axis=0))
    return [checkpoint.formula(row) for row in other[off]]


def energy_force_objective(cfg: Config, ds, train_idx) -> EnergyForceRegression:
    """The objective with its statistics from the training frames (eV, eV/Å): for the atomwise
    head E0 and the scale (RMS of the force components), for both the loss normaliser (std of
    E − Σ E0; one molecule: of E)."""
    per = ({n: label.per for n, label in ds.labels.items()} or  # a dataset made outside a source:
           {**dict.fromkeys(ds.target_names, "structure"),       # what it stores
            **dict.fromkeys(ds.atom_target_names, "atom")})
    if per.get("energy") != "structure" or per.get("forces") != "atom":
        where = f"{cfg.data.path or cfg.data.dataset}: " if cfg.data.dataset == "files" else ""
        no_e, no_f = per.get("energy") != "structure", per.get("forces") != "atom"
        lacking = " or ".join([f"energy (key {cfg.data.energy_key!r})"] * no_e
                              + [f"forces (key {cfg.data.forces_key!r})"] * no_f)
        keys = " / ".join(["data.energy_key=KEY"] * no_e + ["data.forces_key=KEY"] * no_f)
        hint = (f"its first structure has no {lacking}; labels read: {', '.join(per) or 'none'}"
                f"{gradient_hint(cfg.data.path) if no_f else ''}; {keys} names another key"
                if where else
                "use data.dataset=md17 with data.path=FILE.npz, or data.dataset=files")
        raise ConfigError(f"{where}finetune.task=energy_force needs energies and forces: {hint}")
    idx = np.asarray(train_idx)
    e = ds.target("energy")[idx]
    stress = {}
    if cfg.finetune.stress_weight > 0:
        missing = [k for k in STRESS_LABELS if k not in ds.target_names]
        if not getattr(ds, "has_cells", False) or missing:
            raise ConfigError(f"{cfg.data.path or cfg.data.dataset}: finetune.stress_weight="
                              f"{cfg.finetune.stress_weight} needs periodic "
                              f"structures with stress labels (ASE's calculator stress, read as "
                              f"{', '.join(STRESS_LABELS)}); "
                              + ("the data is not periodic" if not getattr(ds, "has_cells", False)
                                 else f"missing {', '.join(missing)}"))
        if not bool(np.all(ds.arrays["pbc"][idx])):
            raise ConfigError("finetune.stress_weight needs every training structure periodic in "
                              "all three directions")
        values = np.stack([ds.target(k)[idx] for k in STRESS_LABELS])
        stress = {"stress_scale": float(np.sqrt(np.mean(values ** 2))) or 1.0}
    if cfg.finetune.energy_head == "mlp_of_sum":
        std = float(e.std()) if len(e) > 1 and e.std() > 0 else 1.0
        return EnergyForceRegression(cfg.model.hidden, **params(cfg), mean=float(e.mean()), std=std,
                                     **stress)
    e0 = fit_e0(ds, idx, cfg.finetune.e0)
    residual = e - ds.per_molecule_sum(e0, idx)
    std = float(residual.std()) if len(e) > 1 and residual.std() > 0 else 1.0
    forces = np.asarray(ds.batch(idx[:2000], targets=["forces"]).targets["forces"], np.float64)
    scale = float(np.sqrt(np.mean(forces ** 2))) if forces.size and np.any(forces) else 1.0
    return EnergyForceRegression(cfg.model.hidden, **params(cfg), std=std, scale=scale, e0=e0,
                                 **stress)


@torch.no_grad()
def fit_head_scale(backbone, objective, ds, train_idx, max_frames: int = 1000,
                   batch_size: int = 50) -> tuple[float, float]:
    """Scale an mlp_of_sum energy head started from a pretrained one so that its forces best
    match the training forces: ``c = Σ F̂·F / Σ F̂·F̂`` over (up to ``max_frames``) training
    frames, F̂ the current forces (eV/Å); the head's last layer is multiplied by c (forces scale
    by c) and its bias shifted so that the mean energy of those frames is the training mean.
    Returns ``(c, cosine(F̂, F))``. A gradient-mode denoising head predicts ε̂ = +∂E/∂X̃ ≈
    −σ F / kT on samples of a Boltzmann distribution (Zaidi et al. 2023, §3), so it is a force
    field up to a factor that the labels fix. ``ValueError`` if the pretrained forces are all
    zero."""
    idx = np.asarray(train_idx)[:max_frames]
    dot = norm = ref = 0.0
    heads, energies = [], []
    was = backbone.training
    backbone.eval()
    for k in range(0, len(idx), batch_size):
        batch = ds.batch(idx[k:k + batch_size], targets=["energy", "forces"])
        energy, pred = objective.predict(backbone, batch)
        pred, true = pred.double(), batch.targets["forces"].double()
        dot, norm = dot + float((pred * true).sum()), norm + float((pred ** 2).sum())
        ref += float((true ** 2).sum())
        heads.append((energy.double() - objective.mean) / objective.std)  # the head's output
        energies.append(batch.targets["energy"].double())
    backbone.train(was)
    if norm == 0.0:
        raise ValueError("finetune.energy_head_scale=fit: the pretrained energy head gives zero "
                         "forces on the training frames")
    factor = dot / norm
    shift = float(((torch.cat(energies) - objective.mean) / objective.std
                   - factor * torch.cat(heads)).mean())
    last = [m for m in objective.head.modules() if isinstance(m, torch.nn.Linear)][-1]
    last.weight.mul_(factor)
    last.bias.mul_(factor).add_(shift)
    return factor, dot / (norm * ref) ** 0.5 if ref > 0 else 0.0


def params(cfg: Config) -> dict:
    out = {"energy_weight": cfg.finetune.energy_weight, "force_weight": cfg.finetune.force_weight,
           "head": cfg.finetune.energy_head}
    if cfg.finetune.stress_weight > 0:  # absent from older checkpoints: 0
        out["stress_weight"] = cfg.finetune.stress_weight
    if cfg.finetune.noisy_nodes_weight > 0:  # likewise
        out.update(noisy_nodes_weight=cfg.finetune.noisy_nodes_weight,
                   noisy_nodes_sigma=cfg.finetune.noisy_nodes_sigma,
                   noisy_nodes_vector=cfg.finetune.noisy_nodes_vector)
    return out


def baselines(ds, train_idx, test_idx) -> dict[str, float]:
    """Errors of trivial predictors on the test structures (eV, eV/Å): energies Σ E0 (E0 fitted
    on the training split; one molecule: its mean energy) and zero forces."""
    if len(test_idx) == 0:
        return {}
    e0 = fit_e0(ds, train_idx)
    test = np.asarray(test_idx)
    e_err = np.abs(ds.target("energy")[test] - ds.per_molecule_sum(e0, test))
    forces = np.asarray(ds.batch(test, targets=["forces"]).targets["forces"], np.float64)
    return {"energy_mae": float(e_err.mean()), "force_mae": float(np.abs(forces).mean()),
            "energy_mae_per_atom": float((e_err / ds.natoms[test]).mean()),
            "force_rmse": float(np.sqrt(np.mean(forces ** 2)))}


@torch.no_grad()
def head_energies(backbone, objective, ds, indices, batch_size: int = 100) -> np.ndarray:
    """The objective's energies (eV, float64) of the structures ``indices``, forward only."""
    was = backbone.training
    backbone.eval()
    out = []
    for k in range(0, len(indices), batch_size):
        batch = ds.batch(np.asarray(indices)[k:k + batch_size], targets=[])
        s, _ = backbone(batch)
        out.append(objective.energy(s, batch).double().numpy())
    backbone.train(was)
    return np.concatenate(out) if out else np.zeros(0)


def transfer_force_field_head(init: checkpoint.Checkpoint, backbone, objective, ds, train_idx,
                              path: str, e0_given: bool = False) -> str | None:
    """Start ``objective``'s energy head from the one of ``init``, an energy + force checkpoint
    (a force field fine-tuned on other data), when both heads are of one kind, so that the
    starting forces are the source force field's; returns ``"energy_force"``, or None (with a
    note) when the kinds differ. The energy offsets are this data's: atomwise keeps the source's
    learned ``e`` and ``scale`` and fits E0 by least squares on E − scale · Σ e(s_i) over the
    training split (another level of theory has other reference energies; a given
    ``finetune.e0`` is kept); mlp_of_sum takes the MLP with its last layer multiplied by
    std_source / std_here (E = std · MLP + mean: the same −∇E) and its bias shifted so that the
    training frames' mean energy is the training mean. The Noisy Nodes head is not transferred."""
    saved = init.objective(OBJECTIVE)
    kind = saved["params"].get("head", "mlp_of_sum")
    if kind != objective.kind:
        print(f"note: {path}'s energy head is {kind}, this run's finetune.energy_head is "
              f"{objective.kind}: only the backbone is transferred")
        return None
    state = {k[len("head."):]: v for k, v in saved["state"].items()
             if k.startswith("head.") and k != "head.e0"}
    if objective.kind == "atomwise":
        state["e0"] = objective.head.e0
    load_state(objective.head, state, "energy head", path)
    idx = np.asarray(train_idx)
    if objective.kind == "atomwise" and not e0_given:
        objective.head.e0.zero_()
        residual = ds.target("energy")[idx] - head_energies(backbone, objective, ds, idx)
        counts = ds.element_counts(idx).astype(np.float64)
        present = np.flatnonzero(counts.sum(axis=0))
        solution, *_ = np.linalg.lstsq(counts[:, present], residual, rcond=None)
        objective.head.e0[torch.as_tensor(present)] = torch.as_tensor(solution)
    elif objective.kind == "mlp_of_sum":
        last = [m for m in objective.head.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            factor = float(saved["state"]["std"]) / float(objective.std)
            last.weight.mul_(factor)
            last.bias.mul_(factor)
            sample = idx[:1000]
            gap = ds.target("energy")[sample].mean() - head_energies(backbone, objective, ds,
                                                                     sample).mean()
            last.bias.add_(float(gap) / float(objective.std))
    return OBJECTIVE


def build(cfg: Config) -> Job:
    if cfg.finetune.freeze_backbone and cfg.finetune.noisy_nodes_weight > 0:
        raise ConfigError("finetune.noisy_nodes_weight > 0 with finetune.freeze_backbone=true "
                          "would train only the noise head, which predictions do not use (the "
                          "energy and force loss sees the clean structure); set one of them off")
    backbone, init = checkpoint.initial(cfg)
    ds, split = load_data(cfg.data, explicit_keys(cfg, "data"))
    objective = energy_force_objective(cfg, ds, split["train"])
    if objective.kind == "atomwise" and not cfg.finetune.e0:
        free = undetermined_compositions(ds, split["train"],
                                         np.concatenate([split["valid"], split["test"]]))
        if free:
            shown = ", ".join(free[:5]) + (" ..." if len(free) > 5 else "")
            print(f"denoise3d: warning: {cfg.data.path or cfg.data.dataset}: the per-element "
                  f"energy offsets E0 are not determined by the {len(split['train'])} training "
                  f"structures' compositions for {len(free)} validation / test composition(s) "
                  f"({shown}): their energies extrapolate; add training molecules of other "
                  f"compositions, or give every element's E0 in eV, as "
                  f"\"finetune.e0={{H: -13.6, C: -1029.5, ...}}\"", file=sys.stderr)
    head_from, fitted = None, None
    if init is not None and cfg.finetune.init_energy_head and init.task == OBJECTIVE:
        head_from = transfer_force_field_head(init, backbone, objective, ds, split["train"],
                                              cfg.finetune.init, bool(cfg.finetune.e0))
        if head_from and objective.kind == "mlp_of_sum" and cfg.finetune.energy_head_scale == "fit":
            fitted = fit_head_scale(backbone, objective, ds, split["train"])
            print(f"note: energy head scaled by {fitted[0]:.4g}: the source forces fitted to the "
                  f"training forces by least squares (cosine {fitted[1]:.3f})")
    elif init is not None and cfg.finetune.init_energy_head:
        found = init.energy_head()
        if found is not None and objective.kind == "atomwise":
            print(f"note: {cfg.finetune.init}'s {found[0]} energy head is MLP(Σ h), not atomwise: "
                  f"not transferred (finetune.energy_head=mlp_of_sum starts from it)")
        elif found is not None:
            # E = std · head + mean: the starting forces are the pretrained −∇E times the energy std
            head_from = found[0]
            load_state(objective.head, found[1], "energy head", cfg.finetune.init)
            if cfg.finetune.energy_head_scale == "fit":
                fitted = fit_head_scale(backbone, objective, ds, split["train"])
                print(f"note: energy head scaled by {fitted[0]:.4g}: the pretrained forces "
                      f"fitted to the training forces by least squares (cosine {fitted[1]:.3f})")
    if cfg.finetune.energy_head_scale == "fit" and head_from is None:
        print("note: finetune.energy_head_scale=fit does nothing here: no pretrained energy head "
              "was transferred (it needs finetune.init with an energy model, "
              "finetune.init_energy_head=true and finetune.energy_head=mlp_of_sum)")

    def validate(trainer, valid):
        errors = force_field_errors(trainer.backbone, objective, valid, trainer.device)
        return {"loss": errors["loss"], **report(errors)}

    def finish(trainer, test, kept):
        test_metrics = report(force_field_errors(trainer.backbone, objective, test, trainer.device))
        trivial = report(baselines(ds, split["train"], split["test"]), "baseline_")
        metrics = {
            "task": "energy_force", "target": "forces", "unit": "kcal/mol/Å",
            "test_mae": test_metrics["force_mae_kcal_mol_A"],
            **{f"test_{k}": v for k, v in test_metrics.items()},
            **{f"valid_{k}": v for k, v in kept["metrics"].items() if k not in ("step", "epoch")},
            **trivial,
            "best_epoch": kept["epoch"], "init": cfg.finetune.init, "energy_head_from": head_from,
            **({"energy_head_scale_fitted": fitted[0], "energy_head_cosine": fitted[1]}
               if fitted else {}),
            "energy_head": objective.kind,
            "data": cfg.data.path, "molecule": ds.meta.get("name"), "theory": ds.meta.get("theory"),
            "train_size": len(split["train"]), "valid_size": len(split["valid"]),
            "test_size": len(split["test"]), "steps": trainer.step,
            "energy_mean_eV": float(objective.mean), "energy_std_eV": float(objective.std)}
        line = (f"test force MAE {metrics['test_mae']:.4f} kcal/mol/Å "
                f"({test_metrics['force_mae_meV_A']:.1f} meV/Å), energy MAE "
                f"{test_metrics['energy_mae_kcal_mol']:.4f} kcal/mol (best validation epoch "
                f"{kept['epoch']})")
        for what in ("force_mae", "energy_mae"):
            unit = "kcal_mol_A" if what == "force_mae" else "kcal_mol"
            if trivial and test_metrics[f"{what}_{unit}"] >= trivial[f"baseline_{what}_{unit}"]:
                line += (f"\nwarning: the test {what.replace('_', ' ')} does not beat the trivial "
                         f"baseline ({'zero forces' if what == 'force_mae' else 'E0 only'}: "
                         f"{trivial[f'baseline_{what}_{unit}']:.4f})")
        return metrics, line

    init_text = f"from {cfg.finetune.init}" if cfg.finetune.init else "from scratch"
    head_text = f" (energy head from its {head_from} objective)" if head_from else ""
    return Job(task=OBJECTIVE, backbone=backbone, objectives={OBJECTIVE: (1.0, objective)},
               params={OBJECTIVE: params(cfg)}, dataset=ds, split=split,
               labels={k: ds.labels[k] for k in ("energy", "forces")},
               domain=checkpoint.training_domain(ds, split["train"],
                                                 init if head_from == OBJECTIVE else None),
               announce=f"fine-tuning energy + forces"
                        + (" + stress" if cfg.finetune.stress_weight > 0 else "")
                        + f" of {ds.meta.get('name', cfg.data.path)} "
                        + (f"({ds.meta['theory']}) " if ds.meta.get("theory") else "")
                        + f"on {len(split['train'])} frames, "
                        f"{init_text}{head_text}",
               validate=validate, select="loss", finish=finish,
               validate_start=head_from == OBJECTIVE)


def load_force_field(path, overrides: list[str] = (), allow_unseen: bool = False):
    """(config, backbone, objective, domain) of an energy + force checkpoint, in eval mode, on
    CPU; ``domain`` (:class:`~denoise3d.jobs.checkpoint.Domain`) refuses unseen elements."""
    ckpt = checkpoint.load(path, kind="finetune", overrides=overrides)
    return (*force_field_from(ckpt), checkpoint.Domain.of(ckpt, allow_unseen))


def force_field_from(ckpt: checkpoint.Checkpoint):
    """(config, backbone, objective) of an energy + force checkpoint read once, in eval mode."""
    if ckpt.task != OBJECTIVE:
        raise CheckpointError(f"{ckpt.path}: not a force field (fine-tuned with task "
                              f"{ckpt.task!r}; use finetune.task=energy_force)")
    backbone = ckpt.backbone()
    entry = ckpt.objective(OBJECTIVE)
    # a Noisy Nodes noise head trains only: predictions, the calculator and exports go without it
    kept = {k: v for k, v in entry["params"].items() if not k.startswith("noisy_nodes_")}
    objective = EnergyForceRegression(ckpt.config.model.hidden, **kept)
    state = {k: v for k, v in entry["state"].items() if not k.startswith("noise_head.")}
    load_state(objective, state, "energy head", ckpt.path)
    return ckpt.config, backbone.eval(), objective.eval()


def evaluate(ckpt: checkpoint.Checkpoint, split_name: str, allow_unseen: bool = False,
             compile: bool = False) -> dict:
    """Energy and force errors of a force-field checkpoint on a split of its data (or of another
    file: ``data.path=other.npz`` with split ``all``), with the trivial baselines (``baseline_*``:
    zero forces, and energies Σ E0 with E0 fitted on the training split of that data, or on the
    evaluated structures themselves for ``all``, which flatters the baseline); ``compile``:
    energies and forces through the compiled inference program
    (:class:`~denoise3d.models.inference.ForceField`)."""
    from denoise3d.models.inference import ForceField

    cfg, backbone, objective = force_field_from(ckpt)
    ds, loader, device, train = evaluation_run(ckpt, split_name, (backbone, objective),
                                               allow_unseen, needs=("energy", "forces"))
    fit, fitted_on = baseline_fit(train, loader.indices)
    trivial = report(baselines(ds, fit, loader.indices), "baseline_")
    program = ForceField(backbone, objective, compile=True) if compile else None
    t0 = time.perf_counter()
    errors = force_field_errors(backbone, objective, loader, device, program)
    seconds = time.perf_counter() - t0
    return {"checkpoint": ckpt.path, "data": cfg.data.path, "split": split_name,
            "frames": len(loader.indices), "compiled": bool(program and program.compile),
            "frames_per_s": len(loader.indices) / max(seconds, 1e-9), **report(errors),
            **trivial, "baselines": "forces: zero; energies: per-element E0 only, least squares",
            "baseline_e0_fitted_on": fitted_on}
