"""Cost of a higher body order on CPU: one MACE energy + force step against our PaiNN 4 x 64.

Issue 17 / the mission (<= 1 kcal/mol/A from 100 aspirin frames in 30 min on 2 cores): PaiNN
(body order 2, l <= 1) overfits 100 frames 4-fold and stops at 1.73 kcal/mol/A; the published
low-data leaders are higher-order equivariant models (MACE, NequIP). Before adding such a backbone,
this measures what one training step of the reference MACE implementation (`mace-torch`, Batatia
et al. 2022) costs here, on the same batches as our PaiNN energy + force step (built exactly as
the energy_force job builds it, `md17_step.build_trainer`), calls interleaved, medians reported.

MACE: 2 interactions, 64x0e + 64x1o hidden irreps, spherical harmonics to --max-ell, correlation
order --correlation (body order correlation + 1), 8 Bessel functions, cutoff 5 A (our radius
graph: the batch's edges within 5 A), loss |E|^2 + |F|^2 with F = -dE/dX, Adam step. Untrained weights:
this is cost only, not accuracy.

mace-torch pins e3nn 0.4.4, so it is not a project dependency; install it beside the venv:

    pip install --target /tmp/mace_site --no-deps mace-torch==0.3.16 e3nn==0.4.4 opt-einsum-fx \
        opt_einsum torch-ema matscipy prettytable wcwidth configargparse
    PYTHONPATH=/tmp/mace_site python benchmarks/mace_step_cost.py [--steps 6] [--max-ell 2]
        [--correlation 2] [--batch 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="trajectory .npz (default: md17_step's aspirin)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-ell", type=int, default=2)
    p.add_argument("--correlation", type=int, default=2)
    args = p.parse_args()

    import numpy as np
    import torch
    from mace import modules  # first: mace makes e3nn 0.4.4's constants load under torch 2.6+
    from e3nn import o3

    from md17_step import aspirin_trajectory, batches, build_trainer

    data = aspirin_trajectory(args.data)
    _, _, trainer, loader = build_trainer(data, 64, 4, args.batch, args.threads, backbone="painn",
                                          out="/tmp/denoise3d-bench-mace")
    torch.set_num_threads(args.threads)
    elements = [1, 6, 7, 8, 9]
    mace = modules.MACE(
        r_max=5.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=args.max_ell,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=2, num_elements=len(elements), hidden_irreps=o3.Irreps("64x0e+64x1o"),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(len(elements)),
        avg_num_neighbors=18.0, atomic_numbers=elements, correlation=args.correlation,
        gate=torch.nn.functional.silu)
    opt = torch.optim.Adam(mace.parameters(), lr=1e-3)
    lookup = torch.full((100,), -1, dtype=torch.long)
    lookup[torch.tensor(elements)] = torch.arange(len(elements))

    def mace_step(b) -> None:
        n, g = b.z.shape[0], int(b.natoms.shape[0])
        pos = b.pos.detach().clone().requires_grad_(True)
        i, j = b.edge_index
        edges = b.edge_index[:, (b.pos[i] - b.pos[j]).norm(dim=1) < 5.0]  # MACE's own radius graph
        e = edges.shape[1]
        inp = dict(positions=pos, node_attrs=torch.nn.functional.one_hot(lookup[b.z], len(elements)).float(),
                   edge_index=edges.flip(0), shifts=torch.zeros(e, 3), unit_shifts=torch.zeros(e, 3),
                   batch=b.batch, ptr=torch.cat([torch.zeros(1, dtype=torch.long), b.natoms.cumsum(0)]),
                   cell=torch.zeros(3 * g, 3), weight=torch.ones(g), head=torch.zeros(g, dtype=torch.long))
        out = mace(inp, training=True, compute_force=True)
        loss = out["energy"].pow(2).mean() + out["forces"].pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert n == out["forces"].shape[0]

    times = {"painn": [], "mace": []}
    it = batches(loader)
    for i in range(args.warmup + args.steps):
        b = next(it)
        for name, step in (("painn", trainer.train_step), ("mace", mace_step)):
            t0 = time.perf_counter()
            step(b)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"aspirin batch {args.batch} frames, {b.edge_index.shape[1]} edges, {args.threads} thread(s), "
          f"{args.steps} interleaved steps after {args.warmup} warm-up")
    print(f"PaiNN 4x64: {sum(p.numel() for p in trainer.model.parameters()):,} parameters, "
          f"median step {med['painn'] * 1e3:.0f} ms")
    print(f"MACE 2 x (64x0e+64x1o), max_ell {args.max_ell}, correlation {args.correlation}: "
          f"{sum(p.numel() for p in mace.parameters()):,} parameters, median step "
          f"{med['mace'] * 1e3:.0f} ms = {med['mace'] / med['painn']:.1f}x PaiNN")


if __name__ == "__main__":
    main()
