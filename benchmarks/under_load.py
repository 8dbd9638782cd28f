"""The demo's pretraining step on 2 cores, idle and under load, for each CPU threading choice.

    python benchmarks/under_load.py [--steps 30] [--busy 2]

Each measurement is a fresh process (OpenMP settings only take effect at start-up) that runs
the demo's 3D-EMGP pretraining step (EGNN 4 x 64, batch 32 QM9 molecules) ``--steps`` times
after 5 warm-up steps and reports the median step time. Load: ``--busy`` single-threaded
processes (``--load python``: spinning interpreters; ``torch``: one-thread torch matmuls, like
the benchmark runners' training jobs), started before the measurement and stopped after it. Variants:

- ``default``: torch's own thread count (the cores) and OpenMP's default (active) waiting;
- ``passive``: the same with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at barriers);
- ``one``: one thread;
- ``auto``: the cores this process may use minus the other runnable processes at start-up
  (``/proc/loadavg``), at least one (:func:`denoise3d.train.seed.auto_threads`, the default
  since the issue-17 session; "default" here is torch's own pool).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"default": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "one": {}, "auto": {}}
LOADS = {"python": "while True: pass",
         "torch": "import torch\ntorch.set_num_threads(1)\na = torch.randn(400, 400)\n"
                  "while True: a @ a"}

WORKER = r"""
import json, statistics, sys, time
sys.path.insert(0, "benchmarks")
import torch
from denoise3d.config import load_config
from denoise3d.train.seed import seed_everything
from common import pretraining_trainer
from denoise3d.train.seed import auto_threads
variant, steps = sys.argv[1], int(sys.argv[2])
threads = {"one": 1, "auto": auto_threads()}.get(variant, torch.get_num_threads())  # torch's own
seed_everything(0, threads)
cfg = load_config("configs/demo/pretrain.yaml", ["train.out=/tmp/denoise3d-under-load",
                                                 "data.max_train=2000"])
from denoise3d.data.sources import load_data
from denoise3d.data.batching import loader
ds, split = load_data(cfg.data)
batches = iter(loader(ds, split["train"], cfg.data, train=True, seed=0))
trainer = pretraining_trainer(cfg)
times = []
for k in range(steps + 5):
    batch = next(batches)
    t0 = time.perf_counter()
    trainer.train_step(batch)
    times.append(time.perf_counter() - t0)
print(json.dumps({"median_s": statistics.median(times[5:]), "threads": torch.get_num_threads()}))
"""


def measure(variant: str, steps: int) -> dict:
    env = {**os.environ, **VARIANTS[variant]}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", WORKER, variant, str(steps)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--busy", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--load", default="python", choices=list(LOADS),
                   help="python: spinning interpreters; torch: single-threaded torch matmuls")
    args = p.parse_args()
    rows = {}
    for loaded in (False, True):
        hogs = [subprocess.Popen([sys.executable, "-c", LOADS[args.load]])
                for _ in range(args.busy if loaded else 0)]
        time.sleep(2 if loaded else 0)
        try:
            for v in args.variants.split(","):
                r = measure(v, args.steps)
                rows.setdefault(v, {})["load" if loaded else "idle"] = r
                print(f"{'load' if loaded else 'idle'} {v}: {r['median_s'] * 1000:.0f} ms/step "
                      f"({r['threads']} threads)", flush=True)
        finally:
            for h in hogs:
                h.kill()
    base = rows["default"]["idle"]["median_s"]
    print("\n| variant | idle (ms/step) | under load (ms/step) | load / idle | idle vs default |")
    print("|---|---|---|---|---|")
    for v, r in rows.items():
        idle, load = r["idle"]["median_s"], r["load"]["median_s"]
        print(f"| {v} | {idle * 1000:.0f} | {load * 1000:.0f} | {load / idle:.1f}x | "
              f"{(idle / base - 1) * 100:+.0f} % |")


if __name__ == "__main__":
    main()
