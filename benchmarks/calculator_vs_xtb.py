"""Cost of one energy + forces call: Denoise3DCalculator (fine-tuned EGNN) vs tblite's GFN2-xTB.

Aspirin (21 atoms), both ASE calculators on the same structure, calls interleaved in one process
(ours, xTB, ours, xTB, ...), positions perturbed by N(0, 0.01 Å) before every call so nothing is
cached; medians of --calls calls each after --warmup. The checkpoint: --checkpoint, or a quick
one made here (EGNN 7 x 128 fine-tuned for one epoch on 100 frames of the aspirin trajectory via
``jobs.finetune.finetune``; speed does not depend on the weights). Threads: torch's
and OpenMP's (tblite) are both set to --threads (OMP_NUM_THREADS is set before the imports).

The calculator runs its compiled inference program (the default; compiled during the first
warm-up call) or, with --no-compile, the same potential eagerly.

    python benchmarks/calculator_vs_xtb.py [--threads 1] [--calls 60] [--checkpoint finetune.pt]
        [--no-compile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


def quick_checkpoint(data: str, hidden: int, layers: int, out: str, backbone: str = "egnn") -> str:
    """One-epoch energy + force fine-tune on the trajectory; returns the checkpoint path."""
    path = Path(out) / "finetune.pt"
    if path.exists():
        return str(path)
    from denoise3d.config import load_config
    from denoise3d.jobs.finetune import finetune

    cfg = load_config("configs/finetune/md17_cpu.yaml",
                      [f"data.path={data}", f"model.backbone={backbone}",
                       f"model.hidden={hidden}", f"model.layers={layers}",
                       "data.train_frames=100", "data.valid_frames=20", "data.max_test=20",
                       "data.batch_size=50", "train.epochs=1", f"train.out={out}",
                       *([] if backbone == "egnn" else ["model.num_rbf=null"])])
    import torch

    threads = torch.get_num_threads()
    finetune(cfg)  # sets the process's threads (train.threads) and flushes denormals: undo both,
    torch.set_num_threads(threads)  # or the timings that follow run on other settings
    torch.set_flush_denormal(False)
    return str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--data", default=None, help="aspirin trajectory .npz (default as md17_step.py)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calls", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=7)
    p.add_argument("--device", default="cpu", help="the calculator's device: cpu, cuda, cuda:N")
    p.add_argument("--no-compile", action="store_true", help="the eager calculator")
    args = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import torch
    from ase import Atoms
    from tblite.ase import TBLite

    sys.path.insert(0, str(Path(__file__).parent))
    from md17_step import aspirin_trajectory

    from denoise3d.data.md17 import load_md17
    from denoise3d.md.calculator import Denoise3DCalculator

    data = aspirin_trajectory(args.data)
    ckpt = args.checkpoint or quick_checkpoint(
        data, args.hidden, args.layers, f"/tmp/denoise3d-bench-calc-{args.layers}x{args.hidden}")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    ds = load_md17(data)
    mol = ds.molecule(0)
    z, pos0 = np.asarray(mol.z), np.asarray(mol.pos, dtype=np.float64)
    ours = Denoise3DCalculator(ckpt, device=args.device, compile=not args.no_compile)
    xtb = TBLite(method="GFN2-xTB", verbosity=0)
    rng = np.random.default_rng(0)
    times = {"denoise3d": [], "xtb": []}
    for i in range(args.warmup + args.calls):
        for name, calc in (("denoise3d", ours), ("xtb", xtb)):
            atoms = Atoms(numbers=z, positions=pos0 + rng.normal(0, 0.01, pos0.shape))
            atoms.calc = calc
            t0 = time.perf_counter()
            atoms.get_potential_energy()
            f = atoms.get_forces()  # a numpy array: the device's work is done
            t1 = time.perf_counter()
            assert f.shape == (len(z), 3) and np.isfinite(f).all()
            if i >= args.warmup:
                times[name].append(t1 - t0)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"aspirin ({len(z)} atoms), energy+forces per call, {args.threads} thread(s) "
          f"(torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}), "
          f"{args.calls} interleaved calls each after {args.warmup} warm-up; checkpoint {ckpt}; "
          f"denoise3d on {args.device}, {'eager' if args.no_compile else 'compiled'}")
    for k, v in med.items():
        print(f"  {k:10s} median {v:7.2f} ms/call (min {min(times[k]) * 1000:.2f}, "
              f"max {max(times[k]) * 1000:.2f})")
    print(f"  ratio xTB / denoise3d = {med['xtb'] / med['denoise3d']:.2f} "
          f"(denoise3d is x{med['xtb'] / med['denoise3d']:.2f} as fast)")


if __name__ == "__main__":
    main()
