"""Before/after ratios of the 3D-EMGP pretraining step (issue 8), measured in ONE process.

Same setting as ``pretrain_step.py`` (EGNN 7 x 128, fully connected QM9 graphs with hop edge
types, batch 64 training-split molecules, EFP with forces by autograd and double backward + INP
with a clean forward, Adam step), on one fixed batch. Variants are interleaved (A B C A B C …)
and each reports its median step and its ratio to the first variant, so the ratios hold on a
shared machine where absolute times drift:

* ``baseline``: torch's ``F.silu`` in the EGNN edge MLP, forces by ``−∂E/∂pos``
  (the code before issue 8);
* ``silu``: :func:`denoise3d.models.ops.silu` (compact twice-differentiable SiLU);
* ``silu+d2``: and forces from ``∂E/∂d²``
  (:func:`~denoise3d.models.heads.forces_from_squared_distances`, not used by default: it does
  not pay).

All variants must give the same loss (printed) and are switched by patching module attributes,
so this script is for measurement only.

    python benchmarks/pretrain_ab.py [--reps 7] [--batch 64] [--threads 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does (see denoise3d/cli.py)

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

import denoise3d.models.egnn as egnn_module
import denoise3d.objectives.emgp as emgp_module
from common import add_model_arguments, pretraining_data
from denoise3d.models import backbone_from_config as make_backbone
from denoise3d.objectives import objectives_from_recipe
from denoise3d.models import ops
from denoise3d.models.heads import energy_and_forces, forces_from_squared_distances


def variant(silu, forces):
    def setup():
        egnn_module.silu = silu
        emgp_module.energy_and_forces = forces
    return setup


VARIANTS = {
    "baseline": variant(F.silu, energy_and_forces),
    "silu": variant(ops.silu, energy_and_forces),
    "silu+d2": variant(ops.silu, forces_from_squared_distances),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=7)
    add_model_arguments(p)
    args = p.parse_args()
    cfg, loader = pretraining_data(args)
    batch = next(iter(loader))
    backbone = make_backbone(cfg.model)
    objectives = objectives_from_recipe(cfg.pretrain.objectives, cfg.model.hidden)
    params = [q for m in [backbone, *(o for _, o in objectives.values())] for q in m.parameters()]
    opt = torch.optim.Adam(params, lr=0.0)  # lr 0: every variant sees the same parameters

    def step() -> float:
        torch.manual_seed(1)  # same noise for every variant
        loss = sum(w * obj(backbone, batch)[0] for w, obj in objectives.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    print(f"EGNN {args.layers}x{args.hidden}, EFP+INP, {batch.num_graphs} QM9 molecules "
          f"({batch.num_atoms} atoms, {batch.edge_index.shape[1]} edges), {args.threads} threads, "
          f"{args.reps} interleaved reps")
    times = {k: [] for k in VARIANTS}
    losses = {}
    for rep in range(args.reps + 1):
        for name, setup in VARIANTS.items():
            setup()
            t0 = time.perf_counter()
            loss = step()
            if rep == 0:  # warm-up
                losses[name] = loss
            else:
                times[name].append(time.perf_counter() - t0)
    VARIANTS["silu"]()  # leave the library as it ships
    base = statistics.median(times["baseline"])
    for name in VARIANTS:
        med = statistics.median(times[name])
        print(f"{name:10s} median {med * 1000:7.1f} ms  {args.batch / med:6.1f} molecules/s  "
              f"speed-up x{base / med:.3f}  loss {losses[name]:.6f}")
    ref = losses["baseline"]
    assert all(abs(v - ref) <= 1e-5 * abs(ref) for v in losses.values()), losses


if __name__ == "__main__":
    main()
