"""Throughput of one energy + force fine-tuning step (3D-EMGP's MD17 setting) on an aspirin trajectory.

Setting of issue 8: EGNN 7 x 128, batch 100 frames of aspirin (21 atoms), 0.2 L1(E) + 0.8 L1(F)
with F = -dE/dX (forces by autograd, create_graph, double backward), Adam step, 2 threads.
Dataset, objective and trainer are built exactly as the energy_force job builds them
(``jobs.energy_force.build``, ``Trainer``, ``data.batching.loader``).
Prints the median frames/s over the timed steps and the ratio to the official 3D-EMGP code
(~29 frames/s on this machine, issue-8 figure).

    python benchmarks/md17_step.py [--data FILE.npz] [--steps 12] [--batch 100] [--threads 2]
        [--backbone egnn]

Without --data it uses ~/.cache/denoise3d/md17_xtb/aspirin.npz, else /tmp/aspirin_bench.npz,
generating the latter with `denoise3d data xtb-md` (300 frames, a minute at most) if missing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

OFFICIAL_FPS = 29.0  # official 3D-EMGP code, MD17 step, this machine (issue 8)
ASPIRIN = "CC(=O)OC1=CC=CC=C1C(=O)O"


def aspirin_trajectory(path: str | None = None) -> str:
    """Path of an aspirin trajectory (.npz, MD17 layout), generating a short xTB one if needed."""
    if path:
        return path
    cached = Path.home() / ".cache/denoise3d/md17_xtb/aspirin.npz"
    if cached.exists():
        return str(cached)
    out = Path("/tmp/aspirin_bench.npz")
    if not out.exists():
        subprocess.run([sys.executable, "-m", "denoise3d", "data", "xtb-md", "--smiles", ASPIRIN,
                        "--name", "aspirin", "--frames", "300", "--interval", "2", "--seed", "0",
                        "--out", str(out), "--quiet"], check=True)
    return str(out)


def build_trainer(data: str, hidden: int, layers: int, batch: int, threads: int,
                  out: str = "/tmp/denoise3d-bench-md17", device: str = "cpu",
                  precision: str = "fp32", backbone: str = "egnn"):
    """(cfg, trainer, training loader) as the energy_force job builds them."""
    from denoise3d.config import load_config
    from denoise3d.data.batching import loader as make_loader
    from denoise3d.jobs import energy_force
    from denoise3d.train.loop import Trainer
    from denoise3d.train.seed import seed_everything

    cfg = load_config("configs/finetune/md17_cpu.yaml",
                      [f"data.path={data}", f"model.hidden={hidden}", f"model.layers={layers}",
                       f"data.batch_size={batch}", f"train.threads={threads}",
                       f"data.train_frames={batch * 2}", "data.valid_frames=20",
                       f"train.out={out}", f"train.device={device}",
                       f"train.precision={precision}", f"model.backbone={backbone}",
                       *([] if backbone == "egnn" else ["model.num_rbf=null"])])
    seed_everything(cfg.train.seed, cfg.train.threads)
    job = energy_force.build(cfg)
    ds, split = job.dataset, job.split
    trainer = Trainer(job.backbone, job.objectives, cfg.train, out)
    from denoise3d.train.optim import build_scheduler

    trainer.scheduler = build_scheduler(trainer.optimizer, cfg.train, 10_000)  # as Trainer.fit
    loader = make_loader(ds, split["train"], cfg.data, train=True, seed=cfg.train.seed)
    return cfg, ds, trainer, loader


def batches(loader):
    while True:
        yield from loader


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="trajectory .npz (default: aspirin, see above)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=7)
    p.add_argument("--device", default="cpu", help="train.device: cpu, cuda, cuda:N")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--backbone", default="egnn", help="egnn, schnet, painn, torchmd_et, gns")
    args = p.parse_args()
    data = aspirin_trajectory(args.data)
    cfg, ds, trainer, loader = build_trainer(data, args.hidden, args.layers, args.batch,
                                             args.threads, device=args.device,
                                             precision=args.precision, backbone=args.backbone)
    import torch

    from common import synchronize

    times = []
    it = batches(loader)
    for i in range(args.warmup + args.steps):
        batch = next(it).to(trainer.device)
        synchronize(trainer.device)
        t0 = time.perf_counter()
        trainer.train_step(batch)
        synchronize(trainer.device)
        t1 = time.perf_counter()
        if i >= args.warmup:
            times.append(t1 - t0)
    med = statistics.median(times)
    fps = args.batch / med
    print(f"{data}: {ds.meta.get('name', '?')} ({batch.num_atoms // batch.num_graphs} atoms), "
          f"{args.backbone} {args.layers}x{args.hidden}, energy+force step, batch {args.batch} frames, "
          + (f"{torch.get_num_threads()} threads" if trainer.device.type == "cpu" else
             f"{trainer.device} ({torch.cuda.get_device_name(trainer.device)}), {args.precision}")
          + f", {args.steps} timed steps after {args.warmup} warm-up")
    print(f"median step {med * 1000:.1f} ms (min {min(times) * 1000:.1f}, max "
          f"{max(times) * 1000:.1f})  ->  {fps:.1f} frames/s, x{fps / OFFICIAL_FPS:.2f} the "
          f"official 3D-EMGP code ({OFFICIAL_FPS:.0f} frames/s)")


if __name__ == "__main__":
    main()
