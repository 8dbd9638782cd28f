"""Supervised pretraining on cheap labels: a force field on GFN2-xTB forces of rattled QM9
molecules, then fine-tuned on 100 frames of a molecule it never saw (issue 17, mission target).

Beyond the two papers, which pretrain on unlabelled structures only. The question: with labels
as cheap as GFN2-xTB's (milliseconds per small molecule), does a force field trained on other
molecules' off-equilibrium forces start a better fine-tuning than denoising? One command,
cached (a finished stage is never redone; the fine-tunings continue from their resume.pt):

    python benchmarks/xtb_pretraining/run.py [--out runs/xtb_pretraining] [--molecules 25000]

1. **Structures.** ``--molecules`` molecules of QM9's EGNN training split (the split the shipped
   checkpoints were pretrained on; drawn with ``--seed``, leaving out those drawn with
   ``--exclude-seeds``), their DFT equilibrium geometries, as extxyz (``structures.extxyz``). Aspirin (13 heavy atoms) cannot be among them (QM9: ≤ 9).
   Or, with ``--smiles FILE``, the molecules of a SMILES file (e.g. RDKit's
   ``Data/NCI/first_5K.smi``, larger than QM9's) in a ``--heavy-atoms`` range, as MMFF94
   conformers, leaving out the target (``--exclude-smiles``, default aspirin) and, with
   ``--max-similarity``, its close analogues; the target's nearest kept neighbours go to
   ``neighbours.txt``.
2. **Labels.** ``denoise3d data xtb-label --rattle 0.02,0.04``: two off-equilibrium copies per
   molecule (every coordinate displaced by σ·N(0, 1), σ = 0.02 and 0.04 Å; ~0.03 Å gives the
   force sizes of a 500 K trajectory), energy and forces from GFN2-xTB (``labelled.extxyz``).
3. **Pretraining.** ``denoise3d finetune configs/finetune/forcefield_cpu.yaml`` on them: PaiNN
   4 × 64, atomwise energy head, 0.2 L1(E) + 0.8 L1(F), split by molecule 0.8 / 0.1 / 0.1,
   ``--epochs`` epochs of batch 32, parameter EMA 0.999, one thread; ``--from`` a checkpoint
   (default: scratch; e.g. ``pretrained:qm9-painn-4x64-denoise`` for denoising, then xTB forces).
4. **Fine-tuning** on the target: the ``aspirin-100f`` cell of the benefit runner (100 training
   and 50 validation frames of the GFN2-xTB 500 K aspirin trajectory, 3,100 steps of 32, test
   2,000 other frames) with the recipe of RESULTS' "fine-tuning recipe" section (atomwise head +
   EMA 0.999), from the stage-3 force field (backbone and energy head), ``--seeds`` seeds.

``--pretrain-set KEY=VALUE`` adds an override to stage 3 (e.g. ``train.scheduler=cosine``;
recorded in the folder's ``run_args.json``, so another value needs another ``--name``), and
``--finetune-set KEY=VALUE --tag T`` to stage 4 (folder ``finetune/NAME-T``).

Caveat, stated in RESULTS: here the pretraining labels and the target's are the same method
(GFN2-xTB), the optimistic case; a user fine-tuning on DFT labels would pretrain on a cheaper,
different method.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("DENOISE3D_CACHE", Path.home() / ".cache" / "denoise3d"))


def cli(args: list[str], log: Path) -> float:
    """Run ``denoise3d ARGS`` with one thread, output to ``log``; returns its wall time (s)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    with open(log, "a") as f:
        print(f"$ denoise3d {' '.join(args)}", file=f, flush=True)
        code = subprocess.call([sys.executable, "-m", "denoise3d.cli", *args], stdout=f,
                               stderr=subprocess.STDOUT, env=env)
    if code:
        sys.exit(f"denoise3d {args[0]} failed (exit {code}); see {log}")
    return time.time() - t0


def stamp(path: Path, settings: dict) -> None:
    """Refuse to reuse a cached stage made with other settings (``path`` records them)."""
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != settings:
            sys.exit(f"{path.parent} was made with {saved}, not {settings}: use another --out "
                     f"(or --name), or delete it")
    else:
        path.write_text(json.dumps(settings))


def structures(out: Path, n: int, seed: int, exclude_seeds: tuple[int, ...] = ()) -> Path:
    """``n`` QM9 EGNN-training-split molecules as extxyz (made once), none of those that the
    same ``n`` would draw with any of ``exclude_seeds`` (a disjoint set for more pretraining)."""
    import ase.io
    import numpy as np
    from ase import Atoms

    from denoise3d.config import DataConfig
    from denoise3d.data.sources import load_data

    target = out / "structures.extxyz"
    if target.is_file():
        return target
    ds, split = load_data(DataConfig(dataset="qm9", split="egnn"))
    train = np.asarray(split["train"])
    for other in exclude_seeds:
        taken = np.random.default_rng(other).choice(train, size=min(n, len(train)), replace=False)
        train = np.setdiff1d(train, taken)
    if len(train) < n:
        sys.exit(f"only {len(train)} training-split molecules left after --exclude-seeds")
    pick = np.sort(np.random.default_rng(seed).choice(train, size=min(n, len(train)), replace=False))
    frames = []
    for i in pick:
        m = ds.molecule(int(i))
        frames.append(Atoms(numbers=m.z, positions=m.pos.astype(np.float64),
                            info={"qm9_index": int(i)}))
    tmp = target.with_suffix(".tmp.extxyz")
    ase.io.write(tmp, frames, format="extxyz")
    os.replace(tmp, target)
    return target


ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"


def smiles_structures(out: Path, path: Path, heavy: tuple[int, int], k: int, seed: int,
                      exclude: list[str], max_similarity: float = 1.0) -> Path:
    """Molecules of a SMILES file (one per line, first token) as extxyz (made once): those RDKit
    parses as one neutral fragment of H, C, N, O, F (the elements QM9 pretrained on) with
    ``heavy`` = (min, max) heavy atoms, none of ``exclude`` (InChIKey / canonical SMILES) nor
    any more similar to one of them than ``max_similarity`` (Tanimoto of Morgan fingerprints,
    radius 2, 2,048 bits: close analogues of the fine-tuning target are left out too), up to
    ``k`` MMFF94 conformers each (ETKDGv3, :func:`denoise3d.data.conformers.conformers`). The
    target's nearest kept neighbours go to ``neighbours.txt``."""
    import ase.io
    import numpy as np
    from ase import Atoms
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    from denoise3d.data.conformers import SplitFilter, conformers, read_smiles_file

    target = out / "structures.extxyz"
    if target.is_file():
        return target
    excluded = SplitFilter(exclude)
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    refs = [gen.GetFingerprint(Chem.MolFromSmiles(name)) for name in exclude]
    keep, fps, seen = [], [], set()
    counts = {"read": 0, "filtered": 0, "excluded": 0, "similar": 0, "duplicate": 0}
    for s in read_smiles_file(path):
        counts["read"] += 1
        mol = Chem.MolFromSmiles(s)
        if (mol is None or len(Chem.GetMolFrags(mol)) != 1 or Chem.GetFormalCharge(mol) != 0
                or any(a.GetSymbol() not in ("C", "N", "O", "F", "H")
                       or a.GetNumRadicalElectrons() for a in mol.GetAtoms())
                or not heavy[0] <= mol.GetNumHeavyAtoms() <= heavy[1]):
            counts["filtered"] += 1
            continue
        if excluded(s):
            counts["excluded"] += 1
            continue
        fp = gen.GetFingerprint(mol)
        if refs and max(DataStructs.BulkTanimotoSimilarity(fp, refs)) > max_similarity:
            counts["similar"] += 1
            continue
        key = Chem.MolToInchiKey(mol)
        if key in seen:
            counts["duplicate"] += 1
            continue
        seen.add(key)
        keep.append(Chem.MolToSmiles(mol))
        fps.append(fp)
    lines = []
    for name, ref in zip(exclude, refs):
        sims = DataStructs.BulkTanimotoSimilarity(ref, fps)
        top = np.argsort(sims)[::-1][:10]
        lines += [f"# nearest to {name} (Morgan r=2, 2048 bits, Tanimoto)"]
        lines += [f"{sims[i]:.3f} {keep[i]}" for i in top]
    (out / "neighbours.txt").write_text("\n".join(lines) + "\n")
    frames, failed = [], 0
    for i, s in enumerate(keep):
        confs = conformers(s, k=k, n_embed=2 * k, seed=seed + i)
        failed += not confs
        for c, (z, pos, _) in enumerate(confs):
            frames.append(Atoms(numbers=z, positions=pos, info={"smiles": s, "conformer": c}))
    counts.update(molecules=len(keep) - failed, embedding_failed=failed, conformers=len(frames))
    (out / "structures.json").write_text(json.dumps(counts, indent=2))
    print(f"{path}: {counts}", flush=True)
    tmp = target.with_suffix(".tmp.extxyz")
    ase.io.write(tmp, frames, format="extxyz")
    os.replace(tmp, target)
    return target


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/xtb_pretraining")
    p.add_argument("--molecules", type=int, default=25_000)
    p.add_argument("--rattle", default="0.02,0.04", help="σ list in Å (one copy per σ)")
    p.add_argument("--epochs", type=int, default=3, help="pretraining epochs (batch 32)")
    p.add_argument("--from", dest="init", default=None, help="pretraining start (default scratch)")
    p.add_argument("--name", default=None, help="pretraining folder (default from --from)")
    p.add_argument("--workers", type=int, default=2, help="xTB labelling processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exclude-seeds", default="",
                   help="leave out the molecules that --molecules with these seeds draw "
                        "(e.g. 0: more pretraining on molecules the first set does not hold)")
    p.add_argument("--smiles", default=None, metavar="FILE",
                   help="molecules of this SMILES file instead of QM9's (e.g. RDKit's "
                        "Data/NCI/first_5K.smi); --molecules is then ignored")
    p.add_argument("--heavy-atoms", default="10-20", help="--smiles: heavy-atom range MIN-MAX")
    p.add_argument("--conformers", type=int, default=4, help="--smiles: conformers per molecule")
    p.add_argument("--exclude-smiles", default=ASPIRIN,
                   help="--smiles: comma-separated molecules to leave out (default: aspirin, "
                        "the fine-tuning target)")
    p.add_argument("--max-similarity", type=float, default=1.0,
                   help="--smiles: also leave out molecules more similar than this to an "
                        "--exclude-smiles one (Morgan r=2 Tanimoto; e.g. 0.4; default keep all)")
    p.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override of the pretraining run (repeatable; e.g. "
                        "train.scheduler=cosine); recorded in the folder's run_args.json")
    p.add_argument("--finetune-set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override of the fine-tuning runs (repeatable; needs --tag)")
    p.add_argument("--tag", default=None,
                   help="fine-tuning folder finetune/NAME-TAG (for --finetune-set runs)")
    p.add_argument("--seeds", default="0", help="fine-tuning seeds")
    p.add_argument("--trajectory", default=str(CACHE / "md17_xtb" / "aspirin.npz"))
    p.add_argument("--stage", choices=["data", "pretrain", "finetune"], default="finetune",
                   help="stop after this stage")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    def note(key, seconds):
        # read again: another runner on the same --out (another --from or --seeds) may have written
        path = out / "times.json"
        times = json.loads(path.read_text()) if path.is_file() else {}
        times[key] = round(seconds, 1)
        path.write_text(json.dumps(times, indent=2))

    exclude = tuple(int(s) for s in args.exclude_seeds.split(",") if s)
    if args.smiles:
        import hashlib

        smiles = Path(args.smiles)
        if not smiles.is_file():
            sys.exit(f"--smiles {smiles}: no such file")
        lo, _, hi = args.heavy_atoms.partition("-")
        heavy = (int(lo), int(hi or lo))
        targets = [s for s in args.exclude_smiles.split(",") if s]
        data_args = {"smiles": str(smiles), "smiles_sha1": hashlib.sha1(smiles.read_bytes())
                     .hexdigest(), "heavy_atoms": list(heavy), "conformers": args.conformers,
                     "exclude_smiles": targets, "max_similarity": args.max_similarity,
                     "rattle": args.rattle, "seed": args.seed}
        stamp(out / "data_args.json", data_args)
        structs = smiles_structures(out, smiles, heavy, args.conformers, args.seed, targets,
                                     args.max_similarity)
    else:
        data_args = {"molecules": args.molecules, "rattle": args.rattle, "seed": args.seed}
        if exclude:  # old folders' stamps stay valid
            data_args["exclude_seeds"] = list(exclude)
        stamp(out / "data_args.json", data_args)
        structs = structures(out, args.molecules, args.seed, exclude)
    labelled = out / "labelled.extxyz"
    if not labelled.is_file():
        note("label_s", cli(["data", "xtb-label", str(structs), "--rattle", args.rattle,
                             "--seed", str(args.seed), "--workers", str(args.workers),
                             "--quiet", "--out", str(labelled)], out / "label.log"))
    if args.stage == "data":
        return
    if args.init and not args.init.startswith("pretrained:") and not args.name:
        sys.exit("--from a checkpoint file needs --name (the pretraining folder's name)")
    name = args.name or ("scratch" if not args.init else args.init.replace("pretrained:", ""))
    pre = out / "pretrain" / name
    pre.mkdir(parents=True, exist_ok=True)
    run_args = {"from": args.init, "epochs": args.epochs, "seed": args.seed}
    if args.pretrain_set:  # old folders' stamps stay valid
        run_args["set"] = args.pretrain_set
    stamp(pre / "run_args.json", run_args)
    if args.finetune_set and not args.tag:
        sys.exit("--finetune-set needs --tag (the fine-tuning folder is finetune/NAME-TAG)")
    if not (pre / "metrics.json").is_file():
        init = [f"finetune.init={args.init}"] if args.init else []
        note(f"pretrain_{name}_s", cli(
            ["finetune", str(ROOT / "configs/finetune/forcefield_cpu.yaml"),
             f"data.path={labelled}", "model.backbone=painn", "model.num_rbf=null",
             *init, f"train.epochs={args.epochs}", "train.ema_decay=0.999",
             f"train.seed={args.seed}", "train.threads=1", "train.progress=false",
             *args.pretrain_set, f"train.out={pre}"], pre / "stdout.log"))
    if args.stage == "pretrain":
        return
    for seed in [int(s) for s in args.seeds.split(",")]:
        run = out / "finetune" / (f"{name}-{args.tag}" if args.tag else name) / f"seed{seed}"
        if (run / "metrics.json").is_file():
            continue
        run.mkdir(parents=True, exist_ok=True)
        if args.tag:
            stamp(run.parent / "run_args.json", {"set": args.finetune_set})
        note(f"finetune_{run.parent.name}_seed{seed}_s", cli(
            ["finetune", str(ROOT / "benchmarks/pretraining_benefit/finetune_md17.yaml"),
             f"data.path={args.trajectory}", "train.epochs=100", "data.train_frames=100",
             "data.valid_frames=50", "data.epoch_size=1000", "model.backbone=painn",
             f"finetune.init={pre / 'finetune.pt'}", "finetune.energy_head=atomwise",
             "train.ema_decay=0.999", f"train.seed={seed}", "train.threads=1",
             "train.progress=false", *args.finetune_set, f"train.out={run}"],
            run / "stdout.log"))
    for path in sorted((out / "finetune").glob("*/seed*/metrics.json")):
        m = json.loads(path.read_text())
        print(f"{path.parent.parent.name} {path.parent.name}: force {m['test_mae']:.3f} "
              f"kcal/mol/Å, energy {m['test_energy_mae_kcal_mol']:.3f} kcal/mol")


if __name__ == "__main__":
    main()
