"""Throughput of one 3D-EMGP (EFP + INP) pretraining step on real QM9 molecules.

Setting of issue 2 / 8: EGNN 7 x 128, fully connected graphs with hop edge types, batch 64
QM9 training-split molecules, 2 CPU threads. Prints the median molecules/s over timed steps
(forward on clean + noisy structures, forces by autograd, double backward, Adam step).

    python benchmarks/pretrain_step.py [--steps 20] [--batch 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import add_model_arguments, pretraining_data, pretraining_trainer, synchronize


def check_against_reference(trainer, batch, cfg) -> None:
    """Same loss from the straightforward (per-edge concatenation) EGNN on the same batch and seed."""
    if cfg.model.backbone != "egnn":
        return
    from denoise3d.models.egnn import EGNN

    reference = EGNN(cfg.model.hidden, cfg.model.layers, factorised=False)
    reference.load_state_dict(trainer.backbone.state_dict())
    losses = []
    for backbone in (trainer.backbone, reference):
        torch.manual_seed(123)
        loss = sum(w * obj(backbone, batch)[0] for w, obj in
                   zip(trainer.weights.values(), trainer.model["objectives"].values()))
        losses.append(float(loss))
    rel = abs(losses[0] - losses[1]) / abs(losses[1])
    print(f"loss check: factorised {losses[0]:.6f} vs straightforward {losses[1]:.6f} "
          f"(relative difference {rel:.1e})")
    assert rel < 1e-4, "factorised EGNN disagrees with the straightforward implementation"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    add_model_arguments(p)
    args = p.parse_args()
    cfg, loader = pretraining_data(args)
    trainer = pretraining_trainer(cfg)
    times, atoms, load_times = [], [], []
    it = iter(loader)
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        batch = next(it).to(trainer.device)
        synchronize(trainer.device)
        t1 = time.perf_counter()
        trainer.train_step(batch)
        synchronize(trainer.device)
        t2 = time.perf_counter()
        if i >= args.warmup:
            times.append(t2 - t1)
            load_times.append(t1 - t0)
            atoms.append(batch.num_atoms / batch.num_graphs)
    med = statistics.median(times)
    if trainer.device.type == "cpu":
        check_against_reference(trainer, batch, cfg)
    where = (f"{args.threads} threads" if trainer.device.type == "cpu" else
             f"{trainer.device} ({__import__('torch').cuda.get_device_name(trainer.device)}), {args.precision}")
    print(f"EGNN {args.layers}x{args.hidden}, EFP+INP, batch {args.batch} QM9 molecules "
          f"({statistics.mean(atoms):.1f} atoms/molecule), {where}")
    print(f"median step {med * 1000:.1f} ms  ->  {args.batch / med:.1f} molecules/s "
          f"(batch loading {statistics.median(load_times) * 1000:.2f} ms, "
          f"{100 * statistics.median(load_times) / med:.1f}% of a step)")


if __name__ == "__main__":
    main()
