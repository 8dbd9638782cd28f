"""FLOPs of one 3D-EMGP pretraining step and the fraction of the machine's matmul peak it reaches.

Setting of issue 8 (as benchmarks/pretrain_step.py): EGNN 7 x 128, EFP + INP, batch 64 QM9
training-split molecules, 2 threads. Three measurements:

1. FLOPs of one training step (forward on clean + noisy structures, forces by autograd with
   create_graph, the double backward, Adam) with ``torch.utils.flop_counter.FlopCounterMode``.
   It counts matrix products only (mm / addmm / bmm / conv / attention): element-wise ops,
   gathers and scatters count zero. A second dispatch mode therefore tallies, per aten op, the
   elements every non-matmul op writes, a lower bound on their memory traffic (x4 bytes).
2. The machine's matmul throughput: ``torch.mm`` of 1024 x 1024 float32, median GFLOP/s.
3. The step time (median of --steps timed steps after warm-up, outside the counting modes).

Prints the achieved matmul GFLOP/s and the fraction of peak.

    python benchmarks/roofline.py [--steps 10] [--batch 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from common import add_model_arguments, pretraining_data, pretraining_trainer

MATMUL = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "convolution"}
VIEWS = {"view", "_unsafe_view", "t", "transpose", "expand", "detach", "alias", "as_strided",
         "unsqueeze", "squeeze", "permute", "slice", "select", "reshape", "_to_copy", "empty_like",
         "empty", "zeros_like", "lift_fresh"}


class ElementCounter(TorchDispatchMode):
    """Elements written by each non-matmul, non-view aten op (outputs' numel)."""

    def __init__(self):
        super().__init__()
        self.elements, self.calls = Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name not in MATMUL and name not in VIEWS:
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor):
                    self.elements[name] += t.numel()
            self.calls[name] += 1
        return out


def matmul_gflops(n: int = 1024, reps: int = 30) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(5):
        torch.mm(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    add_model_arguments(p)
    args = p.parse_args()
    cfg, loader = pretraining_data(args)
    trainer = pretraining_trainer(cfg)
    batch = next(iter(loader))  # one batch throughout: FLOPs and time refer to the same graphs
    edges = int(batch.edge_index.shape[1]) if hasattr(batch, "edge_index") else None

    peak_before = matmul_gflops()
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        trainer.train_step(batch)
        t1 = time.perf_counter()
        if i >= args.warmup:
            times.append(t1 - t0)
    step = statistics.median(times)
    peak_after = matmul_gflops()
    peak = statistics.median([peak_before, peak_after])

    flops = FlopCounterMode(display=False)
    with flops:
        trainer.train_step(batch)
    counter = ElementCounter()
    with counter:
        trainer.train_step(batch)
    total = flops.get_total_flops()
    by_op = {str(k).split(".")[-1]: v for k, v in flops.get_flop_counts().get("Global", {}).items()}
    elements = sum(counter.elements.values())

    print(f"EGNN {args.layers}x{args.hidden}, EFP+INP pretraining step, batch {args.batch} QM9 "
          f"molecules ({batch.num_atoms} atoms, {edges} directed edges), "
          f"{torch.get_num_threads()} threads")
    print(f"matmul FLOPs per step (FlopCounterMode): {total / 1e9:.2f} GFLOP  "
          + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in sorted(by_op.items(), key=lambda x: -x[1])))
    print(f"non-matmul aten ops per step: {sum(counter.calls.values())} calls writing "
          f"{elements / 1e9:.2f} G elements (>= {4 * elements / 1e9:.1f} GB written, float32); "
          "largest: " + ", ".join(f"{k} {v / 1e6:.0f}M" for k, v in counter.elements.most_common(8)))
    print(f"torch.mm 1024x1024 float32: {peak_before:.1f} / {peak_after:.1f} GFLOP/s "
          f"(before / after the steps; median {peak:.1f})")
    print(f"median step {step * 1000:.1f} ms (min {min(times) * 1000:.1f}, max "
          f"{max(times) * 1000:.1f}) -> {total / step / 1e9:.1f} GFLOP/s of matmul work = "
          f"{100 * total / step / 1e9 / peak:.1f}% of peak matmul throughput")
    mm_time = total / (peak * 1e9)
    print(f"the step's matmuls at peak would take {mm_time * 1000:.0f} ms "
          f"({100 * mm_time / step:.0f}% of the step); "
          f"the rest ({(step - mm_time) * 1000:.0f} ms) moves >= {4 * elements / 1e9:.1f} GB: "
          f"{4 * elements / 1e9 / (step - mm_time):.1f} GB/s if spent on element-wise work only")


if __name__ == "__main__":
    main()
