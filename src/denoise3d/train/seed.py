"""Reproducible starts: every RNG seeded, CPU threads set, denormals flushed."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import torch


def auto_threads(samples: int = 5, interval: float = 0.04) -> int | None:
    """CPU threads for a run that sets none (``train.threads: null``): the cores this process may
    run on minus the other processes running at start-up (``/proc/loadavg``'s runnable count,
    which includes this one; the least of ``samples`` readings ``interval`` s apart), at least
    one; None (torch's default) where that cannot be read.

    Why: torch's default pool (one thread per core, OpenMP's active wait) next to another busy
    training process thrashes. Measured (issue 17 session, ``benchmarks/RESULTS.md``, "Under
    load"): the demo's pretraining ran at 6-18 molecules/s with 2 threads beside one
    single-threaded PaiNN fine-tuning on the 2 cores, and at 112-142 with 1. On an idle machine
    this is every core, as before.
    """
    try:
        cores = len(os.sched_getaffinity(0))
        running = []
        for _ in range(samples):  # the least of a few samples: a short-lived process is no load
            running.append(int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]))
            time.sleep(interval)
    except (AttributeError, OSError, ValueError, IndexError):
        return None
    return max(1, min(cores, cores - (min(running) - 1)))


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seed every RNG, set CPU threads (``threads``, else :func:`auto_threads`), and flush
    denormal floats to zero.

    Denormals matter here: gated messages and SiLU of the large squared distances of strongly
    noised molecules (σ up to 10 Å) underflow into denormal range, which made CPU steps 50-100x
    slower (measured: 3 s instead of 60 ms per step). Flushing them changes nothing measurable.
    """
    torch.set_flush_denormal(True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    threads = threads if threads is not None else auto_threads()
    if threads is not None:
        torch.set_num_threads(threads)
