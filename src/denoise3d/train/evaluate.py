"""Evaluation loops (no gradients).

Under data parallelism each rank evaluates its share of the batches (:func:`eval_shard`, no
padding) and the (sum, count) pairs are summed over ranks (:func:`all_reduce_sums`), so the metrics
are exactly those of one process over the whole split. Progress bars only on rank 0.
"""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from denoise3d.train.distributed import all_reduce_sums, current, eval_shard, gather_objects


def _bar(loader):
    return tqdm(loader, desc="evaluate", unit="batch", leave=False, mininterval=1.0,
                disable=not current().is_main or not sys.stderr.isatty())  # no escapes in logs


@torch.no_grad()
def property_mae(backbone, objective, loader, device) -> float:
    """Mean absolute error of ``objective.predict`` over ``loader``, internal units."""
    backbone.eval()
    objective.eval()
    total, count = 0.0, 0
    for batch in _bar(eval_shard(loader)):
        batch = batch.to(device)
        pred = objective.predict(backbone, batch)
        total += float((pred - batch.targets[objective.target]).abs().sum())
        count += batch.num_graphs
    total, count = all_reduce_sums([total, count])
    return total / max(count, 1)


def objective_loss(trainer, loader, seed: int = 1234) -> dict[str, float]:
    """Mean weighted objective loss over ``loader`` with a fixed noise seed (comparable epochs).

    Runs in eval mode under ``no_grad``; energy-based objectives switch autograd back on for
    their forces themselves (without building the double-backward graph).
    """
    trainer.model.eval()
    total, count, parts = 0.0, 0, {}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for batch in eval_shard(loader):
            batch = batch.to(trainer.device)
            loss, logs = trainer.loss(batch)
            n = batch.num_graphs
            total += float(loss) * n
            count += n
            for k, v in logs.items():
                parts[k] = parts.get(k, 0.0) + v * n
    keys = sorted(set().union(*gather_objects(sorted(parts))))  # a rank may have had no batch
    total, count, *sums = all_reduce_sums([total, count] + [parts.get(k, 0.0) for k in keys])
    return {"loss": total / max(count, 1), **{k: v / max(count, 1) for k, v in zip(keys, sums)}}


def force_field_errors(backbone, objective, loader, device, program=None) -> dict[str, float]:
    """Energy MAE (eV per structure, and per atom), force MAE and RMSE per component (eV/Å),
    the force cosine Σ F·F* / (‖F‖ ‖F*‖) over all atoms and components (1 = the same
    directions; not with stress), and the objective's loss on them, over ``loader``, for an
    energy + force objective (forces need autograd, so no ``no_grad`` here). ``program``: a
    :class:`~denoise3d.models.inference.ForceField` of the same modules to compute energies
    and forces with (not with stress)."""
    backbone.eval()
    objective.eval()
    e_sum = e_atom_sum = f_sum = f_sq = s_sum = dot = pred_sq = ref_sq = 0.0
    n_graphs = n_components = 0
    stress = getattr(objective, "stress_weight", 0.0) > 0
    for batch in _bar(eval_shard(loader)):
        batch = batch.to(device)
        if stress:
            e_err, f_err, s_err = objective.stress_errors(backbone, batch)
            s_sum += float(s_err.double().sum())
        else:
            energy, forces = (program(batch) if program is not None
                              else objective.predict(backbone, batch))
            e_err = (energy - batch.targets["energy"]).abs()
            f_err = (forces - batch.targets["forces"]).abs()
            f, ref = forces.detach().double(), batch.targets["forces"].double()
            dot += float((f * ref).sum())
            pred_sq, ref_sq = pred_sq + float(f.square().sum()), ref_sq + float(ref.square().sum())
        e_sum, f_sum = e_sum + float(e_err.sum()), f_sum + float(f_err.sum())
        e_atom_sum += float((e_err / batch.natoms.to(e_err.dtype)).sum())
        f_sq += float(f_err.double().square().sum())
        n_graphs, n_components = n_graphs + e_err.numel(), n_components + f_err.numel()
    e_sum, f_sum, e_atom_sum, f_sq, s_sum, dot, pred_sq, ref_sq, n_graphs, n_components = \
        all_reduce_sums([e_sum, f_sum, e_atom_sum, f_sq, s_sum, dot, pred_sq, ref_sq, n_graphs,
                         n_components])
    e_mae, f_mae = e_sum / max(n_graphs, 1), f_sum / max(n_components, 1)
    loss = float(objective.combine(torch.tensor(e_mae), torch.tensor(f_mae)))
    out = {"energy_mae": e_mae, "force_mae": f_mae, "loss": loss,
           "energy_mae_per_atom": e_atom_sum / max(n_graphs, 1),
           "force_rmse": (f_sq / max(n_components, 1)) ** 0.5}
    if not stress:
        out["force_cosine"] = dot / max((pred_sq * ref_sq) ** 0.5, 1e-300)
    if stress:  # stress MAE per Voigt component, eV/Å³; in the loss as in training
        out["stress_mae"] = s_sum / max(6 * n_graphs, 1)
        out["loss"] = loss + objective.stress_weight * out["stress_mae"] / float(objective.stress_scale)
    return out
