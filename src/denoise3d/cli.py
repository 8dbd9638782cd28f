"""``denoise3d <verb> CONFIG [section.key=value ...]`` — a thin layer over typed configs.

Verbs: pretrain, finetune, evaluate, predict, summary, pretrained; data (xtb-md, conformers,
build), md, landscape, export. Every training verb
saves the resolved config beside its checkpoints. Errors in input (config, data, checkpoint)
print one line and exit with status 2; set DENOISE3D_DEBUG=1 for the full traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from zipfile import BadZipFile

from denoise3d.config import ConfigError, load_config
from denoise3d.jobs.lock import FolderBusy


def _config_and_overrides(args) -> tuple[str | None, list[str]]:
    items = list(args.items)
    path = items.pop(0) if items and "=" not in items[0] else None
    return path, items


def cmd_pretrain(args) -> None:
    from denoise3d.jobs.pretrain import pretrain

    pretrain(load_config(*_config_and_overrides(args)))


def cmd_finetune(args) -> None:
    from denoise3d.jobs.finetune import finetune

    metrics = finetune(load_config(*_config_and_overrides(args)))
    print(json.dumps(metrics, indent=2))


def cmd_evaluate(args) -> None:
    from denoise3d.jobs.evaluate import evaluate

    print(json.dumps(evaluate(args.checkpoint, args.split, args.overrides,
                              args.allow_unseen_elements, args.compile), indent=2))


def cmd_predict(args) -> None:
    from denoise3d.jobs.predict import predict

    print(json.dumps(predict(args.checkpoint, args.structures, args.out,
                             args.allow_unseen_elements, args.batch_size, args.device,
                             args.compile), indent=2))


def cmd_summary(args) -> None:
    """A table of the test metrics of finished fine-tuning runs."""
    rows = []
    for run in args.runs:
        path = Path(run) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no metrics.json (did the fine-tuning run finish?)")
        rows.append((run, json.loads(path.read_text())))
    for run, m in rows:
        init = m.get("init") or "from scratch"
        print(f"{m['target']:>6}  test MAE {m['test_mae']:9.3f} {m['unit']:<10} "
              f"train labels {m['train_size']:>6}  init: {init}  ({run})")


def cmd_pretrained(args) -> None:
    """List the shipped pretrained checkpoints, or print one's model card."""
    from denoise3d import pretrained

    if args.name:
        name = args.name.removeprefix(pretrained.PREFIX)  # as listed, or the bare name
        pretrained.resolve(pretrained.PREFIX + name)  # unknown name: one-line error
        print(pretrained.card(name))
        return
    for name in pretrained.available():
        title = pretrained.card(name).splitlines()[0].lstrip("# ")
        print(f"pretrained:{name}  {title}")


def cmd_data_xtb_md(args) -> None:
    """Label an MD trajectory with GFN2-xTB (one molecule, or the eight-molecule benchmark set)."""
    from denoise3d.data import xtb

    options = {k: getattr(args, k) for k in ("temperature", "timestep", "interval", "frames",
                                             "equilibrate", "friction")
               if getattr(args, k) is not None}
    common = dict(seed=args.seed, progress=not args.quiet, relax=not args.no_relax,
                  checkpoint_every=args.checkpoint_every)
    if args.benchmark_set:
        from denoise3d.data.storage import default_cache_dir

        out_dir = args.out_dir or default_cache_dir() / "md17_xtb"
        molecules = args.molecules.split(",") if args.molecules else None
        for path in xtb.generate_benchmark_set(out_dir, molecules=molecules, **common, **options):
            print(path)
        return
    if not args.out or (args.smiles is None) == (args.structure is None):
        raise ValueError("data xtb-md needs --out FILE.npz and one of --smiles / --structure "
                         "(or --benchmark-set)")
    path = xtb.generate_trajectory(args.out, smiles=args.smiles, structure=args.structure,
                                   name=args.name, frame=args.frame, **common, **options)
    print(path)


def cmd_md(args) -> None:
    from denoise3d.data.xtb import atoms_from_file
    from denoise3d.md.calculator import Denoise3DCalculator
    from denoise3d.md.dynamics import run_md

    calc = Denoise3DCalculator(args.checkpoint, device=args.device, dtype=args.dtype,
                               allow_unseen_elements=args.allow_unseen_elements,
                               topology="fixed" if args.fixed_topology else "auto",
                               compile=not args.no_compile)
    summary = run_md(atoms_from_file(args.structure, args.frame), calc, args.out, args.steps,
                     args.timestep, args.temperature, args.thermostat, args.friction,
                     args.interval, args.seed, progress=not args.quiet, pressure=args.pressure)
    print(json.dumps(summary, indent=2))


def cmd_export(args) -> None:
    from denoise3d.md.export import export

    print(json.dumps(export(args.checkpoint, args.out, args.dtype, args.allow_unseen_elements),
                     indent=2))


def cmd_landscape(args) -> None:
    from denoise3d.data.xtb import atoms_from_file
    from denoise3d.jobs.energy_force import load_force_field
    from denoise3d.md.landscape import landscape

    _, backbone, objective, _ = load_force_field(args.checkpoint)
    atoms = atoms_from_file(args.structure, args.frame)
    png, npz = landscape(backbone, objective, atoms.get_atomic_numbers(), atoms.get_positions(),
                         args.out, args.extent, args.points, args.seed,
                         title=f"{Path(args.checkpoint).parent.name}: {Path(args.structure).name}")
    print(f"{png}\n{npz}")


COMPILE_HELP = ("force fields: energies and forces as one compiled program (torch.compile; "
                "~30-60 s to compile once, then faster per structure; pays off on thousands of "
                "structures)")


def _add_unseen_flag(s) -> None:
    s.add_argument("--allow-unseen-elements", action="store_true",
                   help="predict structures with elements absent from the training data "
                        "(refused by default: such predictions are meaningless)")


def cmd_data_xtb_label(args) -> None:
    """Label every frame of a structure file (molecules or periodic cells) with GFN2-xTB."""
    import ase.io

    from denoise3d.data import xtb

    src = Path(args.structures)
    if not src.is_file():
        raise ValueError(f"structure file not found: {src}")
    if Path(args.out).exists() and not args.overwrite:
        raise ValueError(f"{args.out} exists (--overwrite replaces it)")
    try:
        frames = ase.io.read(src, index=":")
    except Exception as e:  # noqa: BLE001 - ASE raises many kinds; one line
        raise ValueError(f"{src}: not a structure file ASE can read ({type(e).__name__}: {e})") from None
    if args.rattle:
        try:
            sigmas = [float(x) for x in args.rattle.split(",")]
        except ValueError:
            raise ValueError(f"--rattle {args.rattle!r}: a comma-separated list of σ in Å "
                             f"(e.g. 0.02,0.04)") from None
        frames = xtb.rattled(frames, sigmas, seed=0 if args.seed is None else args.seed)
    elif args.seed is not None:
        raise ValueError("--seed sets the --rattle displacements; without --rattle it does nothing")
    summary = xtb.label_structures(frames, args.out, progress=not args.quiet,
                                   workers=args.workers)
    print(json.dumps(summary, indent=2))


def _add_force_field_verbs(sub):
    """Parsers of the verbs data (xtb-md), md and landscape; returns data's subparsers."""
    data = sub.add_parser("data", help="make datasets").add_subparsers(dest="what", required=True)
    s = data.add_parser("xtb-md", help="an MD17-style trajectory labelled with GFN2-xTB (tblite)")
    s.add_argument("--smiles")
    s.add_argument("--structure", help="a structure file (xyz, sdf, ... or MD17 .npz)")
    s.add_argument("--frame", type=int, default=0,
                   help="which structure of a multi-frame --structure file (frames count from 0)")
    s.add_argument("--out", help="output .npz (MD17 layout)")
    s.add_argument("--name", help="molecule name stored in the file")
    s.add_argument("--benchmark-set", action="store_true",
                   help="the eight MD17 molecules into --out-dir (default <cache>/md17_xtb)")
    s.add_argument("--out-dir")
    s.add_argument("--molecules", help="comma-separated subset of the benchmark set")
    s.add_argument("--temperature", type=float, help="K (default 500)")
    s.add_argument("--timestep", type=float, help="fs (default 0.5)")
    s.add_argument("--interval", type=int, help="MD steps per frame (default 1; set: 5)")
    s.add_argument("--frames", type=int, help="frames to record (default 20000)")
    s.add_argument("--equilibrate", type=int, help="MD steps before the first frame (2000)")
    s.add_argument("--friction", type=float, help="Langevin friction, 1/fs (default 0.01)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-relax", action="store_true", help="skip the xTB pre-relaxation")
    s.add_argument("--checkpoint-every", type=int, default=1000, help="frames between saves")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=cmd_data_xtb_md)

    s = data.add_parser("xtb-label", help="label the frames of a structure file with GFN2-xTB "
                                          "(energy, forces; stress for periodic cells) as extxyz")
    s.add_argument("structures", help="any file ASE reads (extxyz keeps Lattice / pbc)")
    s.add_argument("--out", required=True, help="output extxyz")
    s.add_argument("--rattle", metavar="SIGMAS",
                   help="label off-equilibrium copies instead: one per frame and per σ of this "
                        "comma-separated list (Å), every coordinate displaced by σ·N(0, 1) "
                        "(e.g. 0.02,0.04; 0.03 Å gives about 500 K force sizes)")
    s.add_argument("--seed", type=int, help="seed of the --rattle displacements (default 0)")
    s.add_argument("--workers", type=int, default=1,
                   help="labelling processes (default 1); more than one run one thread each")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=cmd_data_xtb_label)

    s = sub.add_parser("md", help="run MD with a fine-tuned force field, write extxyz")
    s.add_argument("checkpoint")
    s.add_argument("structure", help="starting structure (xyz, sdf, ... or MD17 .npz)")
    s.add_argument("--frame", type=int, default=0,
                   help="frame of a multi-frame structure file (frames count from 0)")
    s.add_argument("--out", default="md.extxyz")
    s.add_argument("--steps", type=int, default=1000)
    s.add_argument("--timestep", type=float, default=0.5, help="fs")
    s.add_argument("--temperature", type=float, default=300.0, help="K")
    s.add_argument("--thermostat", default="langevin", choices=["langevin", "nve", "npt"],
                   help="nve (velocity Verlet), langevin (NVT), npt (isotropic MTK barostat; "
                        "a periodic cell and a radius backbone)")
    s.add_argument("--pressure", type=float, default=1.0, help="bar (npt)")
    s.add_argument("--friction", type=float, default=0.01, help="1/fs (Langevin)")
    s.add_argument("--interval", type=int, default=10, help="steps between written frames")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")
    s.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--no-compile", action="store_true",
                   help="run the force field eagerly (default: one compiled program, ~30-60 s to "
                        "compile, then several times faster per step)")
    s.add_argument("--fixed-topology", action="store_true",
                   help="keep the starting structure's bond graph (default: perceive it again "
                        "when bonds break or form)")
    _add_unseen_flag(s)
    s.set_defaults(fn=cmd_md)

    s = sub.add_parser("export", help="a force field as one TorchScript file (z, positions, "
                                      "cell, pbc -> energy, forces, stress) for other MD codes")
    s.add_argument("checkpoint", help="a fine-tuned force field (finetune.pt)")
    s.add_argument("out", help="the TorchScript file to write (e.g. model.pt)")
    s.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="the precision the program runs in (outputs are float64)")
    s.add_argument("--allow-unseen-elements", action="store_true",
                   help="let the program predict elements absent from the training data "
                        "(refused by default: such predictions are meaningless)")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("landscape", help="energy landscape around a conformation (3D-EMGP Fig. 4)")
    s.add_argument("checkpoint")
    s.add_argument("structure", help="the conformation (xyz, sdf, ... or MD17 .npz)")
    s.add_argument("--frame", type=int, default=0)
    s.add_argument("--out", default="landscape", help="output prefix: PREFIX.png, PREFIX.npz")
    s.add_argument("--extent", type=float, default=0.2, help="grid half-width, Å RMS displacement")
    s.add_argument("--points", type=int, default=41, help="grid points per direction")
    s.add_argument("--seed", type=int, default=0, help="seed of the two random directions")
    s.set_defaults(fn=cmd_landscape)
    return data


def cmd_data_conformers(args) -> None:
    """A GEOM-style conformer set (ETKDG + MMFF, optional xTB) written as a cache directory."""
    from denoise3d.data import conformers as conf

    if (args.smiles_file is None) == (not args.qm9_train):
        raise ValueError("data conformers needs a SMILES_FILE or --qm9-train (not both)")
    smiles = conf.qm9_smiles("train") if args.qm9_train else conf.read_smiles_file(args.smiles_file)
    exclude = []
    if args.exclude_qm9_test:
        exclude += conf.qm9_smiles("test")
    if args.exclude:
        exclude += conf.read_smiles_file(args.exclude)
    counts = conf.generate(smiles, args.out, k=args.k, workers=args.workers,
                           exclude=conf.SplitFilter(exclude) if exclude else None,
                           seed=args.seed, xtb_steps=args.xtb_steps, progress=not args.quiet)
    print(json.dumps({"out": args.out, **counts}))


def cmd_data_build(args) -> None:
    """Structure files (xyz, extxyz, sdf, ASE db, a directory) or GEOM files → a cache directory."""
    from denoise3d.data import geom, readers
    from denoise3d.data.writer import CacheWriter

    if args.geom:
        from denoise3d.data.pretraining import exclude_filter

        records = geom.read_geom(args.path, args.top_k, exclude_filter(args.exclude))
    else:
        records = readers.read_structures(args.path, args.add_hydrogens)
    source = {"dataset": "build", "path": str(Path(args.path).resolve()), "geom": args.geom,
              "top_k": args.top_k, "exclude": args.exclude, "add_hydrogens": args.add_hydrogens}
    with CacheWriter(args.out, source, {"dataset": "structures", "target_names": []},
                     strings=("names", "smiles")) as w:
        readers.write_structures(w, records)
    print(f"{args.out}\n{w.statistics()}")


def _add_pretraining_data_verbs(data) -> None:
    """``data conformers`` and ``data build`` (pretraining sets, issue 6)."""
    s = data.add_parser("conformers", help="GEOM-style conformer set from SMILES (RDKit, xTB)")
    s.add_argument("smiles_file", nargs="?", metavar="SMILES_FILE", help="one SMILES per line")
    s.add_argument("--qm9-train", action="store_true",
                   help="use the SMILES of QM9's EGNN / 3D-EMGP training split")
    s.add_argument("--out", required=True, help="output cache directory")
    s.add_argument("--k", type=int, default=10, help="conformers per molecule (default 10)")
    s.add_argument("--exclude-qm9-test", action="store_true",
                   help="drop molecules of QM9's EGNN test split (canonical SMILES / InChIKey)")
    s.add_argument("--exclude", metavar="SMILES_FILE", help="drop these molecules too")
    s.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    s.add_argument("--xtb-steps", type=int, default=0,
                   help="GFN2-xTB BFGS steps per conformer after MMFF (0 = off)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_data_conformers)

    s = data.add_parser("build", help="structure files or GEOM files -> a processed cache")
    s.add_argument("path", help="xyz / extxyz / sdf / ASE .db file or directory; GEOM with --geom")
    s.add_argument("--out", required=True, help="output cache directory")
    s.add_argument("--add-hydrogens", action="store_true",
                   help="SDF: add H with RDKit (PCQM4Mv2's SDF has heavy atoms only)")
    s.add_argument("--geom", action="store_true", help="path is GEOM rdkit_folder or .msgpack")
    s.add_argument("--top-k", type=int, default=10, help="GEOM conformers per molecule")
    s.add_argument("--exclude", help="GEOM: drop molecules of qm9-test or of a SMILES file")
    s.set_defaults(fn=cmd_data_build)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="denoise3d", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)
    for verb, fn, what in [("pretrain", cmd_pretrain, "pretrain a backbone on unlabelled structures"),
                           ("finetune", cmd_finetune, "fine-tune a property head or a force field")]:
        from denoise3d.config import describe

        s = sub.add_parser(verb, help=what, formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="config keys (section.key=value; YAML values):\n" + describe())
        s.add_argument("items", nargs="*", metavar="CONFIG|key=value",
                       help="a YAML config file, then section.key=value overrides")
        s.set_defaults(fn=fn)
    s = sub.add_parser("evaluate", help="evaluate a fine-tuned checkpoint on a split")
    s.add_argument("checkpoint")
    s.add_argument("overrides", nargs="*", metavar="key=value")
    s.add_argument("--split", default=None, choices=["train", "valid", "test", "all"],
                   help="default: test, or all when data.path names another file than the "
                   "training data")
    s.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    _add_unseen_flag(s)
    s.set_defaults(fn=cmd_evaluate)
    s = sub.add_parser("predict", help="predict energies + forces or properties of new structures")
    s.add_argument("checkpoint", help="a fine-tuned checkpoint (finetune.pt)")
    s.add_argument("structures", help="xyz / extxyz / sdf / ASE .db file or a directory of them")
    s.add_argument("--out", required=True, help="predictions: .extxyz or .csv")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--device", default="cpu")
    s.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    _add_unseen_flag(s)
    s.set_defaults(fn=cmd_predict)
    s = sub.add_parser("summary", help="print the test metrics of finished fine-tuning runs")
    s.add_argument("runs", nargs="+", metavar="RUN_DIR")
    s.set_defaults(fn=cmd_summary)
    s = sub.add_parser("pretrained", help="list the shipped pretrained checkpoints (finetune.init=pretrained:NAME)")
    s.add_argument("name", nargs="?", help="print this checkpoint's model card")
    s.set_defaults(fn=cmd_pretrained)
    _add_pretraining_data_verbs(_add_force_field_verbs(sub))
    return p


def errors() -> tuple:
    """The error boundary: input and environment failures (config, data, checkpoints, busy
    folders, files and disks: OSError covers permissions and full disks, BadZipFile a corrupted
    .npz) end in one line and exit status 2; DENOISE3D_DEBUG=1 shows the traceback."""
    from denoise3d.data.storage import CacheInvalid  # imports torch: not for --help

    return (ConfigError, ValueError, KeyError, FloatingPointError, FolderBusy, OSError,
            CacheInvalid, BadZipFile)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    if extra:  # key=value after an option (evaluate CKPT --split all data.path=...): overrides too
        if not (hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra)):
            p.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    boundary = errors()
    try:
        args.fn(args)
    except boundary as e:
        if os.environ.get("DENOISE3D_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        if isinstance(e, boundary[6]):  # CacheInvalid
            msg = f"not a usable cache: {e}"
        print(f"denoise3d: error: {str(msg).splitlines()[0] if str(msg) else type(e).__name__}",
              file=sys.stderr)
        return 2
    finally:
        _end_distributed()
    return 0


def _end_distributed() -> None:
    """Leave the process group a torchrun / SLURM launch joined (see train/distributed.py)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
