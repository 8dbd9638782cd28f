"""Issue 18: periodic and large systems. Two stages, each one command.

``scaling``: for periodic water boxes of N = 100 ... 100,000 atoms (1 g/cm³) and a
5,000-atom water droplet (no cell): the neighbour search (vesin, cutoff 5 Å) against the fully
connected filter of the molecular path (every pair of the structure, where it still fits), and
one energy + forces (+ stress for the boxes) pass of PaiNN 4 × 64 (random weights: speed and
memory only), each size in its own process so that peak memory (``ru_maxrss``) is per size.

``water``: a force field for liquid water from GFN2-xTB labels, then MD with it.
  1. sample: 32-water boxes from a rigid TIP3P Langevin run (ASE, 300 K, 1 g/cm³; ASE's TIP3P
     takes 0.5 s per step here, so the run is short: 200 fs from a grid, then one frame every
     5 fs), each atom displaced by N(0, 0.05 Å) so that bond stretches are seen too;
  2. label: GFN2-xTB energy, forces and stress (``denoise3d data xtb-label``);
  3. fine-tune: PaiNN (``configs/finetune/forcefield_cpu.yaml``, split by structure; 2 × 32 by
     default so that 10 ps of MD fit in minutes on one core), energies, forces and the xTB stress
     (``finetune.stress_weight``: every frame has one density, so without the stress nothing
     tells the model how its energy changes with the volume, and NPT has no pressure to follow);
  4. MD with the fine-tuned model from a held-out frame relaxed with the model (BFGS, fixed
     cell, fmax 0.05 eV/Å: a displaced frame holds ~0.1 eV per bond of extra potential energy,
     which would heat the box by hundreds of K), with the starting bond graph kept
     (``--fixed-topology``: water does not react, and a re-perceived hop type is a jump in the
     energy): NVE for 10 ps at 0.5 fs (drift in meV/atom/ps) and NPT (isotropic MTK barostat,
     1 bar, 300 K) for 1 ps (density).

    python benchmarks/periodic/run.py scaling --out runs/periodic
    python benchmarks/periodic/run.py water --out runs/periodic --frames 200
    python benchmarks/periodic/run.py scaling --sizes 96,3000 --one   # (internal: one size)

Every stage writes JSON next to its outputs and prints a markdown table; finished steps are not
redone (delete the file to redo one).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WATER_VOLUME = 29.91  # Å³ per molecule at 1.00 g/cm³ (18.015 g/mol)
SIZES = (96, 300, 1000, 3000, 10002, 30000, 100002)


def water_box(n_molecules: int, seed: int = 0, periodic: bool = True):
    """ASE ``Atoms`` of ``n_molecules`` waters (O H H order) at 1 g/cm³: random orientations on a
    cubic grid, cell periodic (or, with ``periodic`` False, the same atoms without a cell)."""
    from ase import Atoms
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    side = (n_molecules * WATER_VOLUME) ** (1 / 3)
    k = int(np.ceil(n_molecules ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n_molecules]
    w = molecule("H2O")
    w = w[[0, 1, 2]] if w.numbers[0] == 8 else w  # O H H
    base = w.positions - w.positions[0]
    pos, numbers = [], []
    for g in grid:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        pos.append(base @ q.T + (g + 0.5) * side / k)
        numbers += [8, 1, 1]
    atoms = Atoms(numbers=numbers, positions=np.concatenate(pos))
    if periodic:
        atoms.cell, atoms.pbc = np.eye(3) * side, True
    return atoms


def droplet(n_atoms: int = 5000, seed: int = 0):
    """About ``n_atoms`` atoms of water: the molecules of a box whose oxygen lies inside a sphere."""
    n_box = int(n_atoms / 3 * 6 / np.pi) + 200  # a sphere fills π/6 of its cube
    box = water_box(n_box, seed, periodic=False)
    o = box.positions[::3]
    r = np.linalg.norm(o - o.mean(0), axis=1)
    keep = np.argsort(r)[: n_atoms // 3]
    return box[np.concatenate([[3 * m, 3 * m + 1, 3 * m + 2] for m in np.sort(keep)])]


# ------------------------------------------------------------------------------------ scaling
def one_size(kind: str, n: int, repeats: int, model_max: int = 10002) -> dict:
    """Time and peak memory of one structure (run in its own process)."""
    import torch

    from denoise3d.data.batch import Molecule, collate
    from denoise3d.models import build_backbone
    from denoise3d.models.heads import AtomwiseEnergyHead, energy_and_forces, energy_forces_stress
    from denoise3d.models.neighbours import neighbour_pairs

    torch.set_num_threads(1)
    atoms = droplet(n) if kind == "droplet" else water_box(n // 3)
    mol = Molecule(z=atoms.numbers, pos=atoms.positions,
                   cell=atoms.cell.array if kind == "box" else None,
                   pbc=atoms.pbc if kind == "box" else None)
    t0 = time.perf_counter()
    batch = collate([mol], graph="bonded")
    bonded_s = time.perf_counter() - t0
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB
    out = {"kind": kind, "atoms": len(atoms), "bonded_form_s": bonded_s}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        i, _, _ = neighbour_pairs(batch, 5.0)
        times.append(time.perf_counter() - t0)
    out.update(neighbour_s=float(np.median(times)), pairs=int(len(i)))
    if len(atoms) <= 5000:  # the fully connected filter, where it fits (Σ n² pairs)
        from denoise3d.data.batch import full_graph_edges

        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ei, _ = full_graph_edges(batch.natoms)
            vec = batch.pos[ei[1]] - batch.pos[ei[0]]
            keep = torch.nonzero(vec.square().sum(1) < 25.0)
            times.append(time.perf_counter() - t0)
            del ei, vec, keep
        out["full_filter_s"] = float(np.median(times))
        out["full_filter_note"] = "minimum-image pairs not included" if kind == "box" else ""
    mem_nl = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["rss_after_neighbours_mb"] = mem_nl
    if len(atoms) > model_max:  # PaiNN 4 × 64 with forces needs ~1 MB per atom (measured)
        return out
    torch.manual_seed(0)
    backbone = build_backbone("painn", hidden=64, layers=4, cutoff=5.0)
    head = AtomwiseEnergyHead(64)
    times = []
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(repeats):
        t0 = time.perf_counter()
        if kind == "box":
            energy, forces, stress, _ = energy_forces_stress(backbone, head, batch)
        else:
            energy, forces, _ = energy_and_forces(backbone, head, batch)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.update(model_s=float(np.median(times)), us_per_atom=float(np.median(times)) / len(atoms) * 1e6,
               rss_after_structure_mb=base, rss_peak_mb=peak, model_extra_mb=peak - before,
               stress=kind == "box", finite=bool(torch.isfinite(forces).all()))
    return out


def scaling(args) -> None:
    out = Path(args.out) / "scaling.json"
    rows = json.loads(out.read_text()) if out.is_file() else []
    done = {(r["kind"], r["atoms_requested"]) for r in rows}
    plan = [("box", n) for n in args.sizes] + [("droplet", 5000)]
    for kind, n in plan:
        if (kind, n) in done:
            continue
        cmd = [sys.executable, __file__, "scaling", "--one", kind, str(n),
               "--repeats", str(args.repeats)]
        res = subprocess.run(cmd, capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        if res.returncode != 0:
            print(f"{kind} {n}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(res.stdout.strip().splitlines()[-1])
        row["atoms_requested"] = n
        rows.append(row)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1))
        print(f"{kind} {row['atoms']}: neighbours {row['neighbour_s'] * 1e3:.1f} ms, model "
              f"{row.get('model_s', float('nan')):.2f} s, peak "
              f"{row.get('rss_peak_mb', row['rss_after_neighbours_mb']):.0f} MB", flush=True)
    print("| structure | atoms | pairs < 5 Å | vesin search (ms) | full filter (ms) | "
          "E + F (+ σ) (s) | µs/atom | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["kind"], r["atoms"])):
        full = f"{r['full_filter_s'] * 1e3:.1f}" if "full_filter_s" in r else "–"
        model = (f"{r['model_s']:.3f} | {r['us_per_atom']:.0f} | {r['rss_peak_mb']:.0f}"
                 if "model_s" in r else f"– | – | {r['rss_after_neighbours_mb']:.0f} (search only)")
        print(f"| {'periodic box' if r['kind'] == 'box' else 'droplet (no cell)'} | {r['atoms']:,} | "
              f"{r['pairs']:,} | {r['neighbour_s'] * 1e3:.1f} | {full} | {model} |")


# -------------------------------------------------------------------------------------- water
def sample_tip3p(n_molecules: int, frames: int, seed: int, every: int = 5, equilibrate: int = 200):
    """Frames of a rigid TIP3P water box (ASE), 300 K Langevin, 1 fs steps, displaced by
    N(0, 0.05 Å) per coordinate."""
    from ase import units
    from ase.calculators.tip3p import TIP3P
    from ase.constraints import FixBondLengths
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    rng = np.random.default_rng(seed)
    atoms = water_box(n_molecules, seed)
    atoms.constraints = FixBondLengths([(3 * i + j, 3 * i + (j + 1) % 3)
                                        for i in range(n_molecules) for j in range(3)])
    atoms.calc = TIP3P(rc=min(atoms.cell.lengths()) / 2 - 0.3, width=0.5)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=rng)
    dyn = Langevin(atoms, 1 * units.fs, temperature_K=300, friction=0.02, rng=rng)
    dyn.run(equilibrate)
    out = []
    for _ in range(frames):
        dyn.run(every)
        frame = atoms.copy()
        frame.constraints = []
        frame.calc = None
        frame.positions += rng.normal(0, 0.05, frame.positions.shape)
        frame.wrap()
        out.append(frame)
    return out


def run_cli(args: list[str], log: Path) -> None:
    with open(log, "a") as f:
        res = subprocess.run([sys.executable, "-m", "denoise3d.cli", *args], stdout=f,
                             stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if res.returncode != 0:
        sys.exit(f"failed: denoise3d {' '.join(args)} (see {log})")


def water(args) -> None:
    import ase.io

    root = Path(args.out) / "water"
    root.mkdir(parents=True, exist_ok=True)
    log = root / "run.log"
    summary_path = root / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}

    def save():
        summary_path.write_text(json.dumps(summary, indent=1))

    sampled, labelled = root / "tip3p.extxyz", root / "water_xtb.extxyz"
    if not sampled.is_file():
        t0 = time.perf_counter()
        ase.io.write(sampled, sample_tip3p(args.molecules, args.frames, args.seed, args.every,
                                           args.equilibrate))
        summary["sample_s"] = time.perf_counter() - t0
        save()
    if not labelled.is_file():
        t0 = time.perf_counter()
        run_cli(["data", "xtb-label", str(sampled), "--out", str(labelled), "--quiet"], log)
        summary["label_s"] = time.perf_counter() - t0
        save()
    ff = root / "painn"
    if not (ff / "metrics.json").is_file():
        t0 = time.perf_counter()
        run_cli(["finetune", "configs/finetune/forcefield_cpu.yaml", f"data.path={labelled}",
                 "data.split_by=structure", "data.batch_size=4", "model.backbone=painn",
                 "model.num_rbf=null", f"model.hidden={args.hidden}", f"model.layers={args.layers}",
                 f"finetune.stress_weight={args.stress_weight}", f"train.epochs={args.epochs}", "train.threads=1",
                 "train.tensorboard=false", f"train.seed={args.seed}", f"train.out={ff}"], log)
        summary["finetune_s"] = time.perf_counter() - t0
        summary["finetune"] = json.loads((ff / "metrics.json").read_text())
        save()
    test = np.load(ff / "split.npz")["test"]
    start = root / "start.extxyz"
    if not start.is_file():
        from ase.optimize import BFGS

        from denoise3d.md.calculator import Denoise3DCalculator

        atoms = ase.io.read(labelled, int(test[0]))
        atoms.calc = Denoise3DCalculator(ff / "finetune.pt", topology="fixed")
        opt = BFGS(atoms, logfile=None)
        opt.run(fmax=0.05, steps=300)
        summary["relax"] = {"steps": opt.nsteps, "fmax_eV_A": float(np.abs(atoms.get_forces()).max())}
        atoms.calc = None
        ase.io.write(start, atoms)
        save()
    for name, options in (("nve", ["--thermostat", "nve", "--steps", str(args.nve_steps)]),
                          ("npt", ["--thermostat", "npt", "--steps", str(args.npt_steps),
                                   "--pressure", "1.0"])):
        if name in summary:
            continue
        with open(log, "a") as f:
            res = subprocess.run([sys.executable, "-m", "denoise3d.cli", "md", str(ff / "finetune.pt"),
                                  str(start), "--out", str(root / f"{name}.extxyz"),
                                  "--timestep", "0.5", "--temperature", "300", "--interval", "100",
                                  "--fixed-topology", "--quiet", *options], capture_output=True, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
            f.write(res.stderr)
        if res.returncode != 0:
            sys.exit(f"md {name} failed: {res.stderr[-500:]}")
        summary[name] = json.loads(res.stdout[res.stdout.index("{"):])
        save()
    m = summary["finetune"]
    print(f"water: {args.molecules} molecules, {args.frames} frames, PaiNN {args.layers} × "
          f"{args.hidden}, GFN2-xTB "
          f"{summary.get('label_s', float('nan')) / args.frames:.1f} s/frame")
    print(f"test: force MAE {m['test_force_mae_meV_A']:.1f} meV/Å (zero forces "
          f"{m['baseline_force_mae_meV_A']:.1f}), energy {m['test_energy_mae_per_atom_meV']:.2f} "
          f"meV/atom; fine-tuning {summary['finetune_s'] / 60:.1f} min")
    for name in ("nve", "npt"):
        s = summary[name]
        extra = (f", density {s['mean_density_g_cm3']:.3f} g/cm³" if name == "npt" else "")
        drift = s["total_energy_drift_meV_per_atom_per_ps"]
        drift = f", drift {drift:.3f} meV/atom/ps" if drift is not None else ""
        print(f"{name}: {s['simulated_ps']:.1f} ps, {s['steps_per_second']:.1f} steps/s{drift}, "
              f"T {s['mean_temperature_K']:.0f} K{extra}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=["scaling", "water"])
    p.add_argument("--out", default="runs/periodic")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="box sizes in atoms")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--one", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    p.add_argument("--molecules", type=int, default=32)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--stress-weight", type=float, default=0.1)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--every", type=int, default=5, help="TIP3P steps (fs) between frames")
    p.add_argument("--equilibrate", type=int, default=200, help="TIP3P steps before the first")
    p.add_argument("--nve-steps", type=int, default=20000)
    p.add_argument("--npt-steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one[0], int(args.one[1]), args.repeats)))
        return
    args.sizes = [int(s) for s in args.sizes.split(",")]
    scaling(args) if args.stage == "scaling" else water(args)


if __name__ == "__main__":
    main()
