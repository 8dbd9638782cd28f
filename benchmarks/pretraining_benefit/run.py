"""Issue 9: does pretraining pay off? One command, cached and resumable.

Stage 1 pretrains the benchmark's EGNN 4 x 64 twice on the 100,000 QM9 training-split
structures (labels unused): 3D-EMGP and Gaussian denoising, same budget and seed.
Stage 2 fine-tunes from scratch and from each pretrained backbone, with identical configs,
budgets and seeds, on
  * QM9 HOMO, LUMO and gap with 1,000 and 10,000 labels (test: the standard test split), and
  * GFN2-xTB trajectories of aspirin, ethanol and malonaldehyde with 1,000 training frames
    (scripts/make_md17_xtb.sh makes them; energy and force MAE on 2,000 test frames).
Stage 3 prints the table (mean ± std over seeds, and the change against scratch), headed by the
best pretrained start against the best scratch run of each cell, over every backbone run.

``--backbones`` adds the backbone axis: each of EGNN, SchNet, PaiNN and TorchMD-ET is pretrained
and fine-tuned at the configs' size (4 layers x 64; the radius backbones with their own defaults
otherwise, cutoff 5 Å), with the same steps, batch size and seeds.

Every run is a ``denoise3d`` CLI call with its own output folder under --out. A finished run
(metrics.json, or DONE for pretraining) is never redone; an interrupted one continues from its
resume.pt. Cells run in priority order (HOMO 1k and aspirin first), ``--jobs`` at a time with one
thread each, so a stopped benchmark leaves the most important cells complete. Invocations on the
same machine may share one --out: each run holds a lock (RUNNING, its pid) while it runs, so a
second invocation waits for it instead of starting it again.

    python benchmarks/pretraining_benefit/run.py                 # everything (~4 h on 2 cores)
    python benchmarks/pretraining_benefit/run.py --report        # the table of what has finished
    python benchmarks/pretraining_benefit/run.py --cells homo-1k,aspirin --seeds 0
    # other cells: any QM9 target and label count, any trajectory, any epochs
    python benchmarks/pretraining_benefit/run.py --cells mu-5k,homo-10k-40ep
    # force fields from fewer labels: 100 / 300 training frames, same steps (1,000-sample epochs)
    python benchmarks/pretraining_benefit/run.py --cells aspirin-100f,aspirin-300f
    python benchmarks/pretraining_benefit/run.py --cells toluene,uracil --md17-dir rmd17/npz_data
    # is the gain robust to the pretraining seed? (a second stage 1 per method)
    python benchmarks/pretraining_benefit/run.py --pretrain-seeds 0,1 --cells homo-1k
    # the strongest backbones too, each pretrained both ways
    python benchmarks/pretraining_benefit/run.py --backbones egnn,schnet,painn,torchmd_et
    # fine-tuning stage only, from the shipped checkpoint instead of stage 1's:
    python benchmarks/pretraining_benefit/run.py --inits scratch,emgp \
        --checkpoint emgp=pretrained:qm9-egnn-4x64-emgp --egnn-num-rbf 0 --out runs/benefit_shipped
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from denoise3d.jobs import lock

HERE = Path(__file__).resolve().parent
PRETRAIN = {"emgp": HERE / "pretrain_emgp.yaml", "denoise": HERE / "pretrain_denoise.yaml"}
INIT_NAMES = {"scratch": "scratch", "emgp": "3D-EMGP", "denoise": "denoising"}
# The backbone axis: every backbone at the CPU size of the EGNN runs (the configs' 4 layers x 64;
# radius backbones with their own defaults otherwise: cutoff 5 Å, their paper's RBF count).
BACKBONES = ("egnn", "schnet", "painn", "torchmd_et", "mace")
# EGNN's edge input: the raw d² of 3D-EMGP plus SchNet's 50 Gaussians on [0, 5 Å] (issue 17: with
# d² alone, energy + force training from scratch stays on the zero-force plateau for the whole
# 3,100-step budget on aspirin). --egnn-num-rbf 0 runs the official form (and the shipped
# qm9-egnn-4x64-* checkpoints, which have it).
EGNN_NUM_RBF = 50


def backbone_settings(backbone: str, args) -> list[str]:
    """The overrides that select ``backbone`` (pretraining and fine-tuning alike)."""
    extra = [f"model.num_rbf={args.egnn_num_rbf}"] if backbone == "egnn" and args.egnn_num_rbf else []
    if backbone == "mace":  # MACE's own 2 interactions (x 64, l <= 1, correlation 2)
        extra = ["model.layers=2"]
    return [f"model.backbone={backbone}", *extra]
MD17_DIR = Path(os.environ.get("DENOISE3D_CACHE", Path.home() / ".cache" / "denoise3d")) / "md17_xtb"


def trajectory(directory: Path, molecule: str) -> Path:
    """The molecule's file in ``directory``: NAME.npz (ours), md17_NAME.npz or rmd17_NAME.npz."""
    for name in (f"{molecule}.npz", f"md17_{molecule}.npz", f"rmd17_{molecule}.npz"):
        if (directory / name).is_file():
            return directory / name
    return directory / f"{molecule}.npz"

# The default cells, in priority order. Any other cell can be named with the same grammar
# (see ``cell_spec``): ``TARGET-Nk`` for a QM9 property with N,000 labels, a molecule name for a
# trajectory in --md17-dir (``MOLECULE-Nf`` for N training frames), either with ``-Eep`` for E
# epochs instead of the default.
CELLS = ("homo-1k", "aspirin", "lumo-1k", "gap-1k", "ethanol", "malonaldehyde",
         "homo-10k", "lumo-10k", "gap-10k")
QM9_STEPS = 1250  # fine-tuning steps of 32 for a QM9 cell at its default epochs
MD17_EPOCHS = 100  # 3,100 steps of 32 on 1,000 frames: at 40 epochs the EGNN energy model had
# not left the zero-force plateau on aspirin from any start (see RESULTS.md)
MD17_FRAMES = 1000  # training frames of a trajectory cell, and the samples of each of its epochs
FEW_VALID = 50  # validation frames of a cell with fewer training frames (100f, 300f): a user
# with few labels has few to validate on too


def cell_spec(name: str, md17_dir: Path) -> tuple[str, dict]:
    """(config file, overrides) of a cell named ``TARGET-Nk[-Eep]`` or ``MOLECULE[-Nf][-Eep]``.

    QM9: N,000 labels (a fixed subset of the training split) for E epochs, by default as many as
    make ~1,250 steps of 32 (40 epochs at 1k, 4 at 10k), so that cells of different sizes differ
    only in the number of distinct labels. Trajectory: the molecule's file in ``md17_dir``
    (``trajectory``), 1,000 training frames (500 validation), 100 epochs by default; with
    ``-Nf`` (N < 1,000), N training frames and 50 validation frames, each epoch 1,000 samples
    (``data.epoch_size``: repeated shuffled passes), so the steps, the validation cadence and the
    plateau scheduler's patience are those of the 1,000-frame cell.
    """
    from denoise3d.data.qm9 import TARGET_NAMES

    base, _, tail = name.rpartition("-")
    epochs = None
    if tail.endswith("ep") and tail[:-2].isdigit() and base:
        name, epochs = base, int(tail[:-2])
    target, _, size = name.partition("-")
    if target in TARGET_NAMES:
        if not (size.endswith("k") and size[:-1].isdigit() and int(size[:-1]) > 0):
            raise ValueError(f"cell {name!r}: a QM9 cell is TARGET-Nk (N,000 labels), e.g. {target}-1k")
        labels = 1000 * int(size[:-1])
        epochs = epochs or max(1, round(QM9_STEPS * 32 / labels))
        return "finetune_qm9.yaml", {"finetune.target": target, "data.max_train": labels,
                                     "train.epochs": epochs}
    frames = {}
    if size:
        if not (size.endswith("f") and size[:-1].isdigit() and 0 < int(size[:-1]) < MD17_FRAMES):
            raise ValueError(f"cell {name!r}: a trajectory cell with fewer frames is MOLECULE-Nf "
                             f"with 0 < N < {MD17_FRAMES}, e.g. {target}-100f")
        frames = {"data.train_frames": int(size[:-1]), "data.valid_frames": FEW_VALID,
                  "data.epoch_size": MD17_FRAMES}
    if not target.replace("_", "").isalnum():
        raise ValueError(f"cell {name!r} is neither TARGET-Nk (QM9 targets: "
                         f"{', '.join(TARGET_NAMES)}) nor a molecule name")
    return "finetune_md17.yaml", {"data.path": trajectory(md17_dir, target),
                                  "train.epochs": epochs or MD17_EPOCHS, **frames}


@dataclass
class Task:
    name: str
    out: Path
    argv: list
    done_file: str  # relative to out: its existence means finished
    needs: list = field(default_factory=list)  # names of tasks that must finish first
    inputs: list = field(default_factory=list)  # files that must exist first (a trajectory being made)

    @property
    def done(self) -> bool:
        return (self.out / self.done_file).is_file()

    @property
    def lock(self) -> Path:
        """Held while the run runs: a file holding the pid of the process running it."""
        return self.out / "RUNNING"


def starts(args) -> list[tuple[str, str, int]]:
    """(folder label, init, pretraining seed) of every start: scratch, then each pretrained
    init per pretraining seed; seed 0 keeps the plain label (``emgp``), others get ``emgp-p1``."""
    out = [("scratch", "scratch", 0)]
    for init in args.inits:
        if init != "scratch":
            out += [(init if ps == 0 else f"{init}-p{ps}", init, ps) for ps in args.pretrain_seeds]
    return out


def label_name(label: str) -> str:
    init, _, ps = label.partition("-p")
    return INIT_NAMES[init] + (f" (pretraining seed {ps})" if ps else "")


def plan(args) -> list[Task]:
    """Every run: stage 1 per (backbone, pretrained start), stage 2 per (cell, seed, backbone,
    start). Folders: ``pretrain/BACKBONE/LABEL`` and ``finetune/CELL/BACKBONE/LABEL/seedN``."""
    out = Path(args.out)
    given, all_starts = dict(args.checkpoint), starts(args)
    tasks, checkpoints = [], dict(given)
    for backbone in args.backbones:
        model = backbone_settings(backbone, args)
        for label, init, ps in all_starts:
            if init == "scratch" or (backbone, label) in given:
                continue
            run = out / "pretrain" / backbone / label
            seed = [f"train.seed={ps}"] if ps else []
            tasks.append(Task(f"pretrain {backbone} {label}", run,
                              ["pretrain", str(PRETRAIN[init]), f"train.out={run}", *model, *seed,
                               *args.set], "DONE"))
            checkpoints[backbone, label] = run / "pretrain.pt"
    for cell in args.cells:
        config, overrides = cell_spec(cell, Path(args.md17_dir))
        trajectory_file = [Path(overrides["data.path"])] if "data.path" in overrides else []
        for seed in args.seeds:
            for backbone in args.backbones:
                for label, init, _ in all_starts:
                    run = out / "finetune" / cell / backbone / label / f"seed{seed}"
                    # a pretrained start takes its checkpoint's architecture (check_given makes
                    # sure it is the scratch runs' one); scratch gets the backbone's settings
                    model = (backbone_settings(backbone, args) if init == "scratch"
                             else [f"model.backbone={backbone}"])
                    sets = {**overrides, **dict(m.split("=", 1) for m in model),
                            "train.seed": seed, "train.out": run}
                    if init != "scratch":
                        sets["finetune.init"] = checkpoints[backbone, label]
                    needs = ([] if init == "scratch" or (backbone, label) in given
                             else [f"pretrain {backbone} {label}"])
                    tasks.append(Task(f"{cell} {backbone} {label} seed {seed}", run,
                                      ["finetune", str(HERE / config),
                                       *(f"{k}={v}" for k, v in sets.items()), *args.set],
                                      "metrics.json", needs, trajectory_file))
    return tasks


def check_given(args) -> None:
    """Each ``--checkpoint`` must hold the architecture its backbone's scratch runs get (else the
    comparison would be between two models): exit with a one-line message otherwise."""
    from denoise3d.config import load_config
    from denoise3d.jobs import checkpoint

    for (backbone, init), path in args.checkpoint:
        if backbone not in args.backbones:
            sys.exit(f"--checkpoint {backbone}:{init}={path}: {backbone} is not in --backbones "
                     f"({','.join(args.backbones)})")
        try:
            saved = checkpoint.load(path, kind="pretrain").config.model
        except Exception as e:  # noqa: BLE001 - any unreadable file: one line
            sys.exit(f"--checkpoint {backbone}:{init}={path}: {e}")
        scratch = load_config(None, backbone_settings(backbone, args)).model
        for k in ("hidden", "layers"):  # the fine-tuning configs' size
            setattr(scratch, k, getattr(saved, k))
        have, want = checkpoint.architecture(saved), checkpoint.architecture(scratch)
        if have != want:
            diff = ", ".join(f"{k}={have.get(k)} (scratch: {want.get(k)})" for k in sorted(have)
                             if have.get(k) != want.get(k))
            hint = " (--egnn-num-rbf sets EGNN's)" if backbone == "egnn" else ""
            sys.exit(f"--checkpoint {backbone}:{init}={path}: its architecture differs from the "
                     f"scratch runs': {diff}{hint}")


def holder(task: Task) -> int | None:
    """The pid of the live process holding ``task``'s lock, or None (no lock, or a dead holder)."""
    return lock.holder(task.lock)


def claim(task: Task) -> int | None:
    """Take ``task``'s lock; None if taken, or the pid of the live process of another invocation
    that holds it. A dead holder's lock is taken over (its run resumes from resume.pt). Locks are
    per machine: pids are checked locally (:mod:`denoise3d.jobs.lock`, which every run also uses
    for its own output folder)."""
    return lock.claim(task.lock)


def execute(tasks: list[Task], jobs: int) -> None:
    """Run the unfinished tasks, ``jobs`` at a time, first ready first; a failure stops new starts.

    Several invocations (same --out, same machine) share the work: a task another one is running
    is waited for, not started twice.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    todo = [t for t in tasks if not t.done]
    finished = {t.name for t in tasks if t.done}
    print(f"{len(tasks) - len(todo)} of {len(tasks)} runs already finished; {len(todo)} to go, "
          f"{jobs} at a time", flush=True)
    running: dict[str, tuple[Task, subprocess.Popen, float]] = {}
    elsewhere: list[Task] = []  # run by another invocation
    failed = []
    start = time.time()
    while todo or running or elsewhere:
        for name, (task, proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            task.lock.unlink(missing_ok=True)
            minutes = (time.time() - t0) / 60
            if proc.returncode == 0:
                if task.done_file == "DONE":
                    (task.out / "DONE").write_text(f"{minutes:.1f} min\n")
                finished.add(name)
                print(f"[{time.strftime('%H:%M:%S')}] done   {name} ({minutes:.1f} min; "
                      f"{len(finished)}/{len(tasks)} finished)", flush=True)
            else:
                failed.append(name)
                print(f"[{time.strftime('%H:%M:%S')}] FAILED {name} (exit {proc.returncode}); "
                      f"see {task.out / 'run.log'}", flush=True)
        for task in list(elsewhere):
            if task.done:
                elsewhere.remove(task)
                finished.add(task.name)
                print(f"[{time.strftime('%H:%M:%S')}] done   {task.name} (by another invocation)",
                      flush=True)
            elif holder(task) is None:  # its holder stopped: ours again (resumes)
                elsewhere.remove(task)
                todo.insert(0, task)
        if failed and not running:
            break
        ready = [t for t in todo if all(n in finished for n in t.needs)
                 and all(p.is_file() for p in t.inputs)] if not failed else []
        if todo and not ready and not running and not elsewhere and not failed:
            missing = sorted({str(p) for t in todo for p in t.inputs if not p.is_file()})
            names = ",".join(sorted(Path(m).stem for m in missing))  # missing: NAME.npz
            sys.exit(f"missing trajectories {', '.join(missing)}: make them with "
                     f"scripts/make_md17_xtb.sh --molecules {names}, or pass --md17-dir")
        while ready and len(running) < jobs:
            task = ready.pop(0)
            todo.remove(task)
            if task.done:  # finished meanwhile by another invocation
                finished.add(task.name)
                continue
            other = claim(task)
            if other is not None:
                elsewhere.append(task)
                print(f"[{time.strftime('%H:%M:%S')}] wait   {task.name} (run by pid {other})",
                      flush=True)
                continue
            log = open(task.out / "run.log", "a")  # noqa: SIM115 - closed with the process
            proc = subprocess.Popen([sys.executable, "-m", "denoise3d.cli", *task.argv],
                                    stdout=log, stderr=subprocess.STDOUT, env=env)
            lock.hand_over(task.lock, proc.pid)  # the run itself holds the lock
            running[task.name] = (task, proc, time.time())
            print(f"[{time.strftime('%H:%M:%S')}] start  {task.name}", flush=True)
        time.sleep(2)
    print(f"wall time {(time.time() - start) / 60:.1f} min", flush=True)
    if failed:
        sys.exit(f"{len(failed)} run(s) failed: {', '.join(failed)}")


def _stat(values: list[float]) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f}" + ("" if len(values) >= 3 else f" (n={len(values)})")


def _metrics(cell: str, md17_dir: Path) -> list[tuple[str, str, str]]:
    """(row name, metrics.json key, unit) of a cell's rows."""
    if "data.path" in cell_spec(cell, md17_dir)[1]:
        return [("force", "test_force_mae_kcal_mol_A", "kcal/mol/Å"),
                ("energy", "test_energy_mae_kcal_mol", "kcal/mol")]
    return [("MAE", "test_mae", "meV")]


def results(args, cell: str, backbone: str, key: str) -> tuple[dict[str, list[float]], list[float]]:
    """({start label: test values of its finished seeds}, wall minutes of those runs)."""
    values, minutes = {}, []
    for label, _, _ in starts(args):
        done = [p for p in sorted((Path(args.out) / "finetune" / cell / backbone / label)
                                  .glob("seed*/metrics.json")) if int(p.parent.name[4:]) in args.seeds]
        values[label] = [json.loads(p.read_text())[key] for p in done]
        # a run's wall time: config.yaml is written at its start, metrics.json at its end
        minutes += [(p.stat().st_mtime - (p.parent / "config.yaml").stat().st_mtime) / 60
                    for p in done]
    return values, minutes


def report(args) -> str:
    """Markdown: the headline (best pretrained against best scratch per cell and metric, best =
    lowest mean over finished seeds, any backbone), then mean ± std per backbone and start with
    each start's change against that backbone's scratch."""
    labels = [label for label, _, _ in starts(args)]
    md17_dir = Path(args.md17_dir)
    head = ["| cell | test MAE | best scratch | best pretrained | change |", "|---|---|---|---|---|"]
    rows = ["| cell | backbone | test MAE | " + " | ".join(map(label_name, labels)) + " | min/run |",
            "|---|---|---|" + "---|" * len(labels) + "---|"]
    for cell in args.cells:
        for metric, key, unit in _metrics(cell, md17_dir):
            best = {"scratch": None, "pretrained": None}  # (mean, backbone, label)
            for backbone in args.backbones:
                values, minutes = results(args, cell, backbone, key)
                base = statistics.fmean(values["scratch"]) if values.get("scratch") else None
                cols = []
                for label in labels:
                    text = _stat(values[label])
                    if values[label]:
                        mean = statistics.fmean(values[label])
                        kind = "scratch" if label == "scratch" else "pretrained"
                        if best[kind] is None or mean < best[kind][0]:
                            best[kind] = (mean, backbone, label)
                        if label != "scratch" and base:
                            text += f" ({100 * (mean / base - 1):+.0f} %)"
                    cols.append(text)
                wall = f"{statistics.fmean(minutes):.1f}" if minutes and metric != "energy" else ""
                rows.append(f"| {cell} | {backbone} | {metric} ({unit}) | " + " | ".join(cols)
                            + f" | {wall} |")
            s, p = best["scratch"], best["pretrained"]
            if s and p:
                head.append(f"| {cell} | {metric} ({unit}) | {s[0]:.2f} ({s[1]}) | {p[0]:.2f} "
                            f"({p[1]}, {label_name(p[2])}) | {100 * (p[0] / s[0] - 1):+.0f} % |")
    return "\n".join(["Best pretrained against best scratch (any backbone):", "", *head, "",
                      "Every backbone:", "", *rows])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/pretraining_benefit", help="root of every run's folder")
    p.add_argument("--cells", default=",".join(CELLS),
                   help=f"comma list of cells: TARGET-Nk (QM9, N,000 labels) or a molecule with a "
                        f"trajectory in --md17-dir (MOLECULE-Nf: N training frames, same steps), "
                        f"optionally -Eep for E epochs "
                        f"(default: {','.join(CELLS)})")
    p.add_argument("--backbones", default="egnn",
                   help=f"comma list of backbones, each pretrained and fine-tuned at the configs' "
                        f"size ({', '.join(BACKBONES)}; default egnn)")
    p.add_argument("--egnn-num-rbf", type=int, default=EGNN_NUM_RBF,
                   help=f"EGNN's Gaussians beside d² (default {EGNN_NUM_RBF}; 0: the official d² "
                        f"only, as in the shipped EGNN checkpoints)")
    p.add_argument("--inits", default="scratch,emgp,denoise", help="comma list of scratch, emgp, denoise")
    p.add_argument("--seeds", default="0,1,2", help="fine-tuning seeds (comma list)")
    p.add_argument("--pretrain-seeds", default="0",
                   help="pretraining seeds (comma list); each pretrained init is fine-tuned from each")
    p.add_argument("--md17-dir", default=str(MD17_DIR),
                   help="folder of the trajectories: NAME.npz (scripts/make_md17_xtb.sh), or the "
                        "real md17_NAME.npz / rmd17_NAME.npz")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    p.add_argument("--checkpoint", action="append", default=[], metavar="[BACKBONE:]INIT=PATH",
                   help="use this pretrained checkpoint (a path or pretrained:NAME) instead of "
                        "stage 1's for INIT of BACKBONE (default egnn), e.g. "
                        "emgp=pretrained:qm9-egnn-4x64-emgp")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra config override for every run (smoke tests: train.max_steps=5)")
    p.add_argument("--report", action="store_true", help="only print the table of finished runs")
    args = p.parse_args(argv)
    args.cells = [c for c in args.cells.split(",") if c]
    args.inits = [i for i in args.inits.split(",") if i]
    args.backbones = [b for b in args.backbones.split(",") if b]
    if not args.backbones or any(b not in BACKBONES for b in args.backbones):
        p.error(f"--backbones takes a comma list of {', '.join(BACKBONES)}, got "
                f"{','.join(args.backbones) or 'nothing'}")
    for flag in ("seeds", "pretrain_seeds"):
        try:
            setattr(args, flag, [int(s) for s in getattr(args, flag).split(",") if s])
        except ValueError:
            p.error(f"--{flag.replace('_', '-')} takes a comma list of integers, got {getattr(args, flag)!r}")
    unknown = [i for i in args.inits if i not in INIT_NAMES]
    if unknown:
        p.error(f"unknown init: {', '.join(unknown)} (choose from {', '.join(INIT_NAMES)})")
    for cell in args.cells:
        try:
            cell_spec(cell, Path(args.md17_dir))
        except ValueError as e:
            p.error(str(e))
    if "scratch" not in args.inits:
        p.error("--inits must include scratch (the baseline)")
    given = []
    for text in args.checkpoint:
        start, _, path = text.partition("=")
        backbone, _, init = start.rpartition(":")
        if not path or init not in PRETRAIN:
            p.error(f"--checkpoint takes [BACKBONE:]INIT=PATH with INIT one of "
                    f"{', '.join(PRETRAIN)}, got {text!r}")
        if (backbone or "egnn") not in BACKBONES:
            p.error(f"--checkpoint {text!r}: unknown backbone {backbone!r} (one of {', '.join(BACKBONES)})")
        given.append(((backbone or "egnn", init), path))
    args.checkpoint = given
    if args.egnn_num_rbf < 0:
        p.error(f"--egnn-num-rbf must be >= 0, got {args.egnn_num_rbf}")
    if args.checkpoint and args.pretrain_seeds != [0]:
        p.error("--checkpoint replaces stage 1, so it takes no --pretrain-seeds")
    if not args.report:
        check_given(args)
        execute(plan(args), args.jobs)
    print(report(args))


if __name__ == "__main__":
    main()
