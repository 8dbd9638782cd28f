"""Force fields on many molecules: does pretraining help on molecules never seen in training?

One command (cached and resumable; runs already finished are skipped)::

    python benchmarks/mixed_molecules/run.py [--out runs/mixed] [--jobs 2] [--seeds 0,1,2]

1. **Data.** ``--molecules`` (20) molecules taken in a seeded (0) order from QM9's EGNN test
   split (never seen by the shipped pretrained backbones, which saw training-split structures
   only), 3 to 9 heavy atoms, skipping those RDKit cannot embed; for each a GFN2-xTB Langevin trajectory at 500 K (``denoise3d data xtb-md``: 0.5 fs
   steps, 200 equilibration steps, ``--frames`` 150 frames one every 5 steps), all written to one
   extxyz (``mixed.extxyz``: energy, forces, SMILES per frame) by ASE.
2. **Fine-tuning** (``configs/finetune/forcefield_cpu.yaml``: EGNN 4 x 64, atomwise energy head,
   0.2 L1(E) + 0.8 L1(F), plateau schedule) split by molecule (0.8 / 0.1 / 0.1 of the frames:
   whole molecules), the benefit runner's step budget (3,100 steps, batch 32), from scratch and
   from both shipped backbones (``pretrained:qm9-egnn-4x64-emgp`` / ``-denoise``; backbone only,
   the atomwise head starts fresh), all in the official EGNN form (d² only), and from scratch
   with the config's 50 Gaussians beside d² (``scratch-rbf50``), ``--seeds`` fine-tuning seeds,
   one thread per run. ``--starts painn-scratch,painn-3D-EMGP,painn-denoising`` runs PaiNN 4 x 64
   (the best scratch backbone, issue 17) from scratch and from its shipped checkpoints; the
   default is the four EGNN starts.
3. **Table** (printed, and ``table.md`` in ``--out``): test errors on the held-out molecules, mean
   ± std over seeds, with the trivial baselines (E0-only energies, zero forces) and wall times.
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

ROOT = Path(__file__).resolve().parents[2]
# label: (finetune.init, overrides). Every start is the official EGNN form (d² only), the
# architecture of the shipped checkpoints; "scratch-rbf50" is the config's own EGNN with 50
# Gaussians beside d² (issue 17: the form that leaves the zero-force plateau from scratch).
STARTS = {"scratch": (None, ["model.num_rbf=0"]),
          "3D-EMGP": ("pretrained:qm9-egnn-4x64-emgp", []),
          "denoising": ("pretrained:qm9-egnn-4x64-denoise", []),
          "scratch-rbf50": (None, []),
          # issue 17: the best scratch backbone and its shipped pretrained starts (PaiNN 4 x 64,
          # its own 20 Bessel functions; from a checkpoint the checkpoint's architecture)
          "painn-scratch": (None, ["model.backbone=painn", "model.num_rbf=null"]),
          "painn-3D-EMGP": ("pretrained:qm9-painn-4x64-emgp", []),
          "painn-denoising": ("pretrained:qm9-painn-4x64-denoise", [])}
EGNN_STARTS = ("scratch", "3D-EMGP", "denoising", "scratch-rbf50")
METRICS = [("force MAE (meV/Å)", "test_force_mae_meV_A", "baseline_force_mae_meV_A"),
           ("force RMSE (meV/Å)", "test_force_rmse_meV_A", "baseline_force_rmse_meV_A"),
           ("energy MAE (meV)", "test_energy_mae_meV", "baseline_energy_mae_meV"),
           ("energy MAE per atom (meV)", "test_energy_mae_per_atom_meV",
            "baseline_energy_mae_per_atom_meV")]


def candidates(seed: int = 0) -> list[str]:
    """QM9's EGNN test-split SMILES with 3 to 9 heavy atoms, in an order drawn with ``seed``."""
    import numpy as np
    from rdkit import Chem

    from denoise3d.data.conformers import qm9_smiles

    pool = [s for s in qm9_smiles("test") if 3 <= Chem.MolFromSmiles(s).GetNumHeavyAtoms() <= 9]
    return [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]


def make_data(out: Path, n: int, frames: int) -> Path:
    """The mixed extxyz (made once): one xTB trajectory per molecule, then one file."""
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from denoise3d.data.md17 import load_md17

    target = out / "mixed.extxyz"
    if target.is_file():
        return target
    smiles, made = [], []
    for k, s in enumerate(candidates()):  # in order; molecules RDKit cannot embed are skipped
        if len(made) == n:
            break
        npz = out / "trajectories" / f"mol{k:02d}.npz"
        if not npz.is_file():
            t0 = time.time()
            done = subprocess.run([sys.executable, "-m", "denoise3d.cli", "data", "xtb-md",
                                   "--smiles", s, "--frames", str(frames), "--interval", "5",
                                   "--equilibrate", "200", "--seed", str(k), "--quiet",
                                   "--out", str(npz)], capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
            if done.returncode:
                print(f"skipped {s}: {done.stderr.strip().splitlines()[-1]}", flush=True)
                continue
            print(f"[{time.strftime('%H:%M:%S')}] xTB trajectory {len(made) + 1}/{n} {s} "
                  f"({time.time() - t0:.0f} s)", flush=True)
        smiles.append(s)
        made.append(npz)
    all_frames = []
    for s, npz in zip(smiles, made):
        ds = load_md17(npz)
        for i in range(len(ds)):
            m = ds.molecule(i)
            atoms = Atoms(numbers=m.z, positions=m.pos)
            atoms.calc = SinglePointCalculator(atoms, energy=m.targets["energy"],
                                               forces=m.targets["forces"])
            atoms.info["smiles"] = s
            all_frames.append(atoms)
    tmp = out / ".mixed.extxyz.tmp"
    ase.io.write(tmp, all_frames, format="extxyz")
    tmp.replace(target)
    (out / "molecules.txt").write_text("\n".join(smiles) + "\n")
    return target


def runs(args, data: Path) -> list[tuple[str, int, Path, list[str]]]:
    out = []
    for label, (init, sets) in STARTS.items():
        if label not in args.starts:
            continue
        for seed in args.seeds:
            folder = Path(args.out) / "finetune" / label / f"seed{seed}"
            argv = ["finetune", str(ROOT / "configs/finetune/forcefield_cpu.yaml"),
                    f"data.path={data}", f"train.seed={seed}", "train.threads=1",
                    "train.epochs=1000", f"train.max_steps={args.steps}",
                    "train.checkpoint_every=200", "train.resume=true", "train.tensorboard=false",
                    f"train.out={folder}", *([f"finetune.init={init}"] if init else []), *sets,
                    *args.set]
            out.append((label, seed, folder, argv))
    return out


def execute(todo, jobs: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running: list[tuple[str, subprocess.Popen, float]] = []
    todo = [t for t in todo if not (t[2] / "metrics.json").is_file()]
    print(f"{len(todo)} run(s) to go, {jobs} at a time", flush=True)
    failed = []
    while todo or running:
        for item in list(running):
            name, proc, t0 = item
            if proc.poll() is not None:
                running.remove(item)
                status = "done  " if proc.returncode == 0 else "FAILED"
                print(f"[{time.strftime('%H:%M:%S')}] {status} {name} ({(time.time() - t0) / 60:.1f} min)",
                      flush=True)
                if proc.returncode:
                    failed.append(name)
        while todo and len(running) < jobs and not failed:
            label, seed, folder, argv = todo.pop(0)
            folder.mkdir(parents=True, exist_ok=True)
            log = open(folder / "run.log", "a")  # noqa: SIM115 - closed with the process
            proc = subprocess.Popen([sys.executable, "-m", "denoise3d.cli", *argv], stdout=log,
                                    stderr=subprocess.STDOUT, env=env)
            running.append((f"{label} seed {seed}", proc, time.time()))
            print(f"[{time.strftime('%H:%M:%S')}] start  {label} seed {seed}", flush=True)
        if failed and not running:
            sys.exit(f"failed: {', '.join(failed)} (see run.log in their folders)")
        time.sleep(2)


def table(args, data: Path) -> str:
    rows = {}
    for label, seed, folder, _ in runs(args, data):
        path = folder / "metrics.json"
        if path.is_file():
            m = json.loads(path.read_text())
            m["minutes"] = (path.stat().st_mtime - (folder / "config.yaml").stat().st_mtime) / 60
            rows.setdefault(label, []).append(m)
    if not rows:
        return "no finished runs"
    first = next(iter(rows.values()))[0]
    lines = [f"Test: {first['test_size']} frames of held-out molecules; train {first['train_size']}, "
             f"valid {first['valid_size']} frames; {first['steps']} steps.", "",
             "| metric | trivial baseline | " + " | ".join(rows) + " |",
             "|---|---|" + "---|" * len(rows)]

    def cell(values, ref=None):
        mean = statistics.mean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        rel = f" ({(mean / ref - 1) * 100:+.0f} %)" if ref else ""
        return f"{mean:.1f} ± {std:.1f}{rel}" + ("" if len(values) >= 3 else f" (n={len(values)})")

    scratch = rows.get("scratch")
    for name, key, base in METRICS:
        ref = statistics.mean(m[key] for m in scratch) if scratch else None
        cells = [cell([m[key] for m in ms], None if label == "scratch" else ref)
                 for label, ms in rows.items()]
        lines.append(f"| {name} | {first[base]:.1f} | " + " | ".join(cells) + " |")
    lines.append("| minutes per run | | " + " | ".join(
        f"{statistics.mean(m['minutes'] for m in ms):.1f}" for ms in rows.values()) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/mixed")
    p.add_argument("--molecules", type=int, default=20)
    p.add_argument("--frames", type=int, default=150, help="frames per molecule")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=3100)
    p.add_argument("--starts", default=",".join(EGNN_STARTS),
                   help=f"comma list of starts (known: {', '.join(STARTS)}; default: the EGNN ones)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--set", action="append", default=[], help="extra key=value for every run")
    p.add_argument("--report", action="store_true", help="only print the table")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.starts = [s for s in args.starts.split(",") if s]
    if not args.starts or any(s not in STARTS for s in args.starts):
        p.error(f"--starts takes a comma list of {', '.join(STARTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = make_data(out, args.molecules, args.frames)
    if not args.report:
        start = time.time()
        execute(runs(args, data), args.jobs)
        print(f"wall time {(time.time() - start) / 60:.1f} min", flush=True)
    text = table(args, data)
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
