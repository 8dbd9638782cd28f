"""Storage at scale (issue 6): a PCQM4Mv2-sized synthetic dataset through the streaming writer.

Builds N synthetic molecules (default 3,378,606 = PCQM4Mv2; 20-40 atoms, mean ~30, bonded chains
of H/C/N/O with 1.0-1.5 Å steps so the bond-hop matrices are real work) into a cache in a
temporary directory, then, each phase in a fresh subprocess so that its peak RSS is its own:

* build: wall time, peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), size on disk;
* access: open time, random access per molecule (``dataset.molecule``) and per random batch of
  64 (``dataset.batch``), and that phase's peak RSS;
* epoch: the peak RSS and time of iterating ``--epoch-batches`` shuffled batches of 64 with
  :class:`~denoise3d.data.dataset.BatchLoader` (default: the whole epoch).

    nice -n 10 python benchmarks/storage_scale.py [--molecules 3378606] [--dir /tmp/x]
    (a temporary --dir is removed at the end; a given --dir is kept; --phases access,epoch
    re-measures reading a kept build)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PCQM4MV2 = 3_378_606
PHASES = ("build", "access", "epoch")


def synthetic_molecules(n: int, seed: int = 0, block: int = 10_000):
    """Yield (z, pos) of ``n`` chain molecules, generated ``block`` at a time (bounded memory)."""
    rng = np.random.default_rng(seed)
    elements = np.array([1, 6, 7, 8])
    done = 0
    while done < n:
        b = min(block, n - done)
        natoms = rng.integers(20, 41, size=b)
        total = int(natoms.sum())
        steps = rng.normal(size=(total, 3))
        steps *= (rng.uniform(1.0, 1.5, size=total) / np.linalg.norm(steps, axis=1))[:, None]
        z = elements[rng.integers(0, 4, size=total)]
        start = 0
        for k in natoms:
            yield z[start:start + k], np.cumsum(steps[start:start + k], axis=0)
            start += k
        done += b


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def phase_build(path: Path, n: int) -> dict:
    from denoise3d.data.writer import CacheWriter

    t0 = time.perf_counter()
    with CacheWriter(path, {"synthetic": n}, {"dataset": "synthetic"}) as w:
        for z, pos in synthetic_molecules(n):
            w.add(z, pos)
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in path.iterdir())
    print(w.statistics(), file=sys.stderr)
    return {"molecules": n, "atoms": w.n_atoms, "build_s": seconds,
            "build_peak_rss_MB": peak_rss_mb(), "disk_GB": size / 1e9}


def _open(path: Path):
    from denoise3d.data.dataset import MolecularDataset
    from denoise3d.data.storage import open_cache

    t0 = time.perf_counter()
    arrays, manifest = open_cache(path)
    return MolecularDataset.from_manifest(arrays, manifest, path), time.perf_counter() - t0


def phase_access(path: Path) -> dict:
    """Open time; random molecules and random batches of 64 (pages released every 16 batches /
    1,024 molecules, as BatchLoader does)."""
    import torch

    torch.set_num_threads(1)
    ds, open_s = _open(path)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(ds), size=20_000)
    t0 = time.perf_counter()
    for k, i in enumerate(idx):
        ds.molecule(int(i))
        if k % 1024 == 1023:
            ds.release_pages()
    per_mol = (time.perf_counter() - t0) / len(idx)
    t0 = time.perf_counter()
    for k in range(1000):
        ds.batch(rng.integers(0, len(ds), size=64))
        if k % 16 == 15:
            ds.release_pages()
    per_batch = (time.perf_counter() - t0) / 1000
    return {"open_s": open_s, "random_molecule_ms": per_mol * 1e3,
            "random_batch64_ms": per_batch * 1e3, "access_peak_rss_MB": peak_rss_mb()}


def phase_epoch(path: Path, epoch_batches: int | None) -> dict:
    """Shuffled batches of 64 through BatchLoader (default release_every), fresh process."""
    import torch

    torch.set_num_threads(1)
    from denoise3d.data.dataset import BatchLoader

    ds, _ = _open(path)
    loader = BatchLoader(ds, batch_size=64, shuffle=True, seed=0)
    total = len(loader) if epoch_batches is None else min(epoch_batches, len(loader))
    t0 = time.perf_counter()
    atoms = 0
    for k, b in enumerate(loader):
        atoms += len(b.z)
        if k + 1 == total:
            break
    return {"epoch_batches": total, "epoch_atoms": atoms, "epoch_s": time.perf_counter() - t0,
            "epoch_peak_rss_MB": peak_rss_mb()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--molecules", type=int, default=PCQM4MV2)
    p.add_argument("--dir", help="work directory (default: a new temporary one, removed)")
    p.add_argument("--epoch-batches", type=int, help="batches to iterate (default: whole epoch)")
    p.add_argument("--keep", action="store_true", help="keep the cache")
    p.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    p.add_argument("--phases", default=",".join(PHASES), help="subset, e.g. access,epoch "
                   "(with --dir of a kept build)")
    args = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    if args.phase:  # child process
        path = Path(args.dir) / "cache"
        out = (phase_build(path, args.molecules) if args.phase == "build"
               else phase_access(path) if args.phase == "access"
               else phase_epoch(path, args.epoch_batches))
        print(json.dumps(out))
        return
    work = Path(args.dir or tempfile.mkdtemp(prefix="d3d_storage_"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        for phase in args.phases.split(","):
            cmd = [sys.executable, __file__, "--phase", phase, "--dir", str(work),
                   "--molecules", str(args.molecules)]
            if args.epoch_batches:
                cmd += ["--epoch-batches", str(args.epoch_batches)]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            results.update(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(results, indent=1), flush=True)
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
