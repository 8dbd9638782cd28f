"""Latency of one energy + forces call against GFN2-xTB, by backbone, size and structure size.

For each backbone and model size, a quick force field (one epoch on 100 aspirin frames,
``calculator_vs_xtb.quick_checkpoint``; speed does not depend on the weights) is served by
``Denoise3DCalculator`` compiled (the default) and eager (``compile=False``), beside tblite's
GFN2-xTB, on structures of 21 to ~500 atoms made only of the checkpoint's elements (C, H, O):
aspirin (21), sucrose (45), triacontane C30H62 (92) and 24 aspirins on a 2 x 3 x 4 grid 7 Å
apart (504). Calls are interleaved (compiled, eager, xTB, ...) in one process, positions
perturbed by N(0, 0.01 Å) before every call; medians after --warmup calls (the compiled
program compiles during the first one; its compile time is printed). With ``--block K`` each
engine runs K consecutive calls on its own Atoms before the next engine takes over, as in an MD
loop (warm caches); the default interleaves every call (cold caches for all, xTB included).

    python benchmarks/inference_latency.py [--backbones egnn,schnet,painn,torchmd_et]
        [--sizes 4x64,7x128] [--atoms 21,45,92,504] [--calls 30] [--threads 1] [--block 1]
        [--exported] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

SMILES = {21: "CC(=O)OC1=CC=CC=C1C(=O)O",
          45: "OC[C@H]1O[C@@](CO)(O[C@H]2O[C@H](CO)[C@@H](O)[C@H](O)[C@H]2O)[C@@H](O)[C@@H]1O",
          92: "C" * 30}


def structure(n_atoms: int, seed: int = 0):
    """ASE Atoms of the benchmark structure with ``n_atoms`` atoms (RDKit conformer)."""
    import numpy as np
    from ase import Atoms

    from denoise3d.data.conformers import conformers

    if n_atoms == 504:  # 24 aspirins on a grid
        one = structure(21, seed)
        parts = [one.positions - one.positions.mean(0) + 7.0 * np.array(c, float)
                 for c in np.ndindex(2, 3, 4)]
        return Atoms(numbers=np.tile(one.numbers, 24), positions=np.concatenate(parts))
    z, pos, _ = conformers(SMILES[n_atoms], k=1, seed=seed)[0]
    assert len(z) == n_atoms, (n_atoms, len(z))
    return Atoms(numbers=z, positions=pos)


def TorchScriptCalculator(program):
    """An ASE calculator around an exported file (what a user without denoise3d would write)."""
    import numpy as np
    import torch
    from ase.calculators.calculator import Calculator, all_changes

    class Exported(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            a = self.atoms
            out = program(torch.as_tensor(a.numbers), torch.as_tensor(a.positions),
                          torch.as_tensor(np.asarray(a.cell)), torch.as_tensor(a.pbc))
            self.results = {"energy": float(out["energy"]), "forces": out["forces"].numpy()}

    return Exported()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default="egnn,schnet,painn,torchmd_et")
    p.add_argument("--sizes", default="4x64,7x128", help="LAYERSxHIDDEN, comma-separated")
    p.add_argument("--atoms", default="21,45,92,504")
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=None, help="aspirin trajectory .npz (default as md17_step.py)")
    p.add_argument("--no-eager", action="store_true", help="time only the compiled calculator")
    p.add_argument("--exported", action="store_true",
                   help="also time the exported TorchScript file (denoise3d export, float32)")
    p.add_argument("--block", type=int, default=1,
                   help="consecutive calls per engine before the next one (1: every call "
                        "interleaved, each on a fresh Atoms; >1: each engine keeps its Atoms and "
                        "its caches warm for BLOCK calls, as in an MD run)")
    p.add_argument("--json", default=None, help="write the table as JSON too")
    args = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import torch
    from tblite.ase import TBLite

    sys.path.insert(0, str(Path(__file__).parent))
    from calculator_vs_xtb import quick_checkpoint
    from md17_step import aspirin_trajectory

    from denoise3d.md.calculator import Denoise3DCalculator

    torch.set_num_threads(args.threads)
    data = aspirin_trajectory(args.data)
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    atoms_list = [int(a) for a in args.atoms.split(",")]
    structures = {n: structure(n) for n in atoms_list}
    rows, xtb_ms = [], {}
    xtb = TBLite(method="GFN2-xTB", verbosity=0)
    print(f"torch {torch.__version__}, {args.threads} thread(s); ms per energy + forces call "
          f"(median of {args.calls})", flush=True)
    for backbone in args.backbones.split(","):
        for layers, hidden in sizes:
            ckpt = quick_checkpoint(data, hidden, layers,
                                    f"/tmp/denoise3d-bench-calc-{backbone}-{layers}x{hidden}",
                                    backbone=backbone)
            calcs = {"compiled": Denoise3DCalculator(ckpt, allow_unseen_elements=True),
                     **({} if args.no_eager else
                        {"eager": Denoise3DCalculator(ckpt, compile=False,
                                                      allow_unseen_elements=True)})}
            if args.exported:
                from denoise3d.md.export import export

                path = str(Path(ckpt).with_name("exported.pt"))
                export(ckpt, path, "float32", allow_unseen=True)
                calcs["exported"] = TorchScriptCalculator(torch.jit.load(path))
            for n in atoms_list:
                base = structures[n]
                rng = np.random.default_rng(0)
                times = {k: [] for k in (*calcs, "xtb")}
                first = {}
                calls = args.calls if n < 200 else max(5, args.calls // 5)
                engines = [(k, c) for k, c in (*calcs.items(), ("xtb", xtb))
                           if not (k == "xtb" and n in xtb_ms)]  # xTB timed once per structure
                own = {k: base.copy() for k, _ in engines}  # one Atoms per engine, as in MD
                for i in range(0, args.warmup + calls, args.block):
                    for name, calc in engines:
                        for b in range(i, min(i + args.block, args.warmup + calls)):
                            atoms = own[name] if args.block > 1 else base.copy()
                            atoms.positions = base.positions + rng.normal(0, 0.01, base.positions.shape)
                            atoms.calc = calc
                            t0 = time.perf_counter()
                            f = atoms.get_forces()
                            t1 = time.perf_counter()
                            assert np.isfinite(f).all()
                            if b == 0:
                                first[name] = t1 - t0
                            if b >= args.warmup:
                                times[name].append(t1 - t0)
                if n not in xtb_ms:
                    xtb_ms[n] = statistics.median(times["xtb"]) * 1000
                row = {"backbone": backbone, "size": f"{layers}x{hidden}", "atoms": n,
                       "xtb_ms": xtb_ms[n],
                       **{f"{k}_ms": statistics.median(times[k]) * 1000 for k in calcs},
                       "first_call_compiled_s": first["compiled"]}
                row["xtb_over_compiled"] = row["xtb_ms"] / row["compiled_ms"]
                if "eager_ms" in row:
                    row["eager_over_compiled"] = row["eager_ms"] / row["compiled_ms"]
                rows.append(row)
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                  for k, v in row.items()}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
