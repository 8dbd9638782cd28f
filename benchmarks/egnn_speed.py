"""EGNN 7×128 forward+backward time on 64 QM9 molecules of 17–19 atoms, fully connected.

    python benchmarks/egnn_speed.py [--threads 2] [--repeat 10]

Reports min/median wall-clock ms per step for (a) forward + backward of Σ E (finetuning on
energies/properties) and (b) forward + forces (create_graph) + backward of ‖F‖² (the 3D-EMGP
EFP step), for the factorised first edge layer and the per-edge concatenation reference.
Molecules come from the ``qm9pack`` CSV if installed, else the fixture molecules tiled.

glibc returns freed (E, H) buffers (~10 MB) to the OS and page-faults them back on the next
allocation; ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296`` (or jemalloc /
tcmalloc via LD_PRELOAD) avoids that and cut the no-grad forward from ~105 to ~75 ms here.
Another process on the 2 cores makes the 2-thread figures jump (min is the stable one).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import statistics
import time

import numpy as np
import torch

from denoise3d.data.batch import Molecule, collate
from denoise3d.data.elements import atomic_number
from denoise3d.models import EGNN, EnergyHead, energy_and_forces
from denoise3d.testing import fixture_molecules


def qm9_molecules(n: int = 64, sizes=(17, 18, 19)) -> list[Molecule]:
    spec = importlib.util.find_spec("qm9pack")  # not imported: its __init__ needs pkg_resources
    if spec is None or not spec.submodule_search_locations:
        mols = fixture_molecules()
        return [mols[k % len(mols)] for k in range(n)]
    path = os.path.join(spec.submodule_search_locations[0], "data", "qm9_part1.csv")
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if int(row["N_atoms"]) in sizes:
                z = [atomic_number(s) for s in json.loads(row["Elements"].replace("'", '"'))]
                out.append(Molecule(z=np.array(z), pos=np.array(json.loads(row["XYZ_Ang"]))))
                if len(out) == n:
                    return out
    raise RuntimeError("not enough molecules")


def time_ms(fn, repeat: int, warmup: int = 3) -> str:
    """``"min/median"`` wall-clock ms; the minimum is the figure least disturbed by other load."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return f"{min(times):6.1f}/{statistics.median(times):6.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = collate(qm9_molecules())
    model, head = EGNN(), EnergyHead(128)
    print(f"{batch.num_graphs} molecules, {batch.num_atoms} atoms, "
          f"{batch.edge_index.shape[1]} edges, {args.threads} threads")

    def energy_step():
        s, _ = model(batch)
        head(s, batch).sum().backward()

    def efp_step():
        _, forces, _ = energy_and_forces(model, head, batch, create_graph=True)
        forces.square().sum().backward()

    for factorised in (True, False):
        model.factorised = factorised
        name = "factorised" if factorised else "reference "
        with torch.no_grad():
            fwd = time_ms(lambda: model(batch), args.repeat)
        print(f"{name} ms (min/median): forward {fwd} | forward+backward "
              f"{time_ms(energy_step, args.repeat)} | EFP step {time_ms(efp_step, args.repeat)}")


if __name__ == "__main__":
    main()
