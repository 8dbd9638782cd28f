"""Cost of one training step of every pretraining recipe's objectives, on one backbone.

The objectives of each ``configs/pretrain/*_cpu.yaml`` recipe on the same backbone (default:
EGNN 4 x 64, the CPU recipes' EGNN) and the same 64 QM9 training-split molecules: median ms per
step (forward(s), losses, backward, Adam) over timed steps after warm-up, 1 CPU thread. This
isolates the objective's cost from the recipe's backbone (the Zaidi recipes use GNS-TAT).

    python benchmarks/objective_step.py [--backbone egnn] [--hidden 64] [--layers 4]
                                        [--batch 64] [--steps 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from denoise3d.data.sources import load_data
from denoise3d.objectives import objectives_from_recipe
from denoise3d.train.seed import seed_everything
from denoise3d.config import load_config
from denoise3d.models import build_backbone


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="egnn")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    seed_everything(0, args.threads)
    configs = sorted((Path(__file__).resolve().parents[1] / "configs" / "pretrain").glob("*_cpu.yaml"))
    ds, split = load_data(load_config(configs[0]).data)
    batch = ds.batch(split["train"][: args.batch])
    print(f"{args.backbone} {args.layers} x {args.hidden}, {batch.num_graphs} molecules "
          f"({batch.num_atoms} atoms, {batch.edge_index.shape[1]} edges), {args.threads} thread(s)")
    for path in configs:
        cfg = load_config(path, [f"model.hidden={args.hidden}"])
        torch.manual_seed(0)
        backbone = build_backbone(args.backbone, hidden=args.hidden, layers=args.layers)
        objectives = objectives_from_recipe(cfg.pretrain.objectives, cfg.model.hidden)
        modules = [backbone] + [obj for _, obj in objectives.values()]
        opt = torch.optim.Adam([q for m in modules for q in m.parameters()], lr=1e-4)
        times = []
        for step in range(args.steps + 2):
            t0 = time.perf_counter()
            loss = sum(w * obj(backbone, batch)[0] for w, obj in objectives.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step >= 2:  # warm-up
                times.append(time.perf_counter() - t0)
        print(f"{path.stem.removesuffix('_cpu'):20s} {1000 * statistics.median(times):7.1f} ms/step")


if __name__ == "__main__":
    main()
