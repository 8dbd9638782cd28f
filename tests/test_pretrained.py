"""The shipped pretrained checkpoints: loadable offline, documented, usable as pretrained:NAME,
and the issue-9 benchmark's fine-tuning stage runs from them."""

import json
import os
import subprocess
import sys

import pytest
import torch

from denoise3d import pretrained
from denoise3d.jobs import checkpoint
from denoise3d.cli import main
from denoise3d.config import load_config
from denoise3d.train.checkpoint import CheckpointError, load_checkpoint

TINY = ["data.batch_size=16", "data.eval_batch_size=64", "data.max_train=64", "data.max_valid=32",
        "data.max_test=48", "train.threads=1"]


def test_at_least_one_checkpoint_is_shipped_and_small():
    names = pretrained.available()
    assert names
    for name in names:
        assert (pretrained.DIR / f"{name}.pt").stat().st_size < 5e6


@pytest.mark.parametrize("name", pretrained.available())
def test_shipped_checkpoint_loads_into_its_card_config(name):
    ckpt = load_checkpoint(pretrained.resolve(f"pretrained:{name}"))
    # a pretrained backbone, or a fine-tuned force field (backbone + energy head) to start from
    assert ckpt["kind"] == "pretrain" or ckpt["task"] == "energy_force"
    assert "raw" not in ckpt  # shipped without the pre-EMA training weights
    card = pretrained.card(name)
    assert card.startswith("# ") and f"pretrained:{name}" in card
    cfg = load_config(None, [f"model.{k}={v}" for k, v in ckpt["config"]["model"].items() if v is not None])
    backbone = checkpoint.load(f"pretrained:{name}").backbone(cfg.model)
    assert all(torch.isfinite(p).all() for p in backbone.parameters())
    # the card's example fine-tuning config, with the checkpoint's architecture inherited (the
    # config's own model section gives way), builds the checkpoint's architecture
    example = next(w for w in card.split() if w.startswith("configs/finetune/"))
    run = load_config(example, [f"finetune.init=pretrained:{name}"])
    ckpt2 = checkpoint.load(f"pretrained:{name}")
    inherited, _ = checkpoint.inherited_architecture(run, ckpt2)
    assert checkpoint.architecture(inherited) == checkpoint.architecture(cfg.model)


def test_inherited_architecture_note_names_config_keys_with_resolved_values():
    """From an EGNN config (md17_cpu: 50 Gaussians) onto the shipped PaiNN, the note names the
    model.* keys a user sets, with the values they resolve to, not EGNN's other constructor
    arguments; with the keys given to match, there is no note."""
    ckpt = checkpoint.load("pretrained:qm9-painn-4x64-denoise")
    run = load_config("configs/finetune/md17_cpu.yaml", ["finetune.init=pretrained:qm9-painn-4x64-denoise"])
    _, note = checkpoint.inherited_architecture(run, ckpt)
    assert note.endswith("its architecture is used (model.backbone=painn, model.num_rbf=20; "
                         "the config says egnn, 50)")
    run = load_config("configs/finetune/md17_cpu.yaml", ["finetune.init=pretrained:qm9-painn-4x64-denoise",
                                                         "model.backbone=painn", "model.num_rbf=null"])
    assert checkpoint.inherited_architecture(run, ckpt)[1] == ""


@pytest.mark.parametrize("name, smiles", [
    ("qm9-painn-4x64-denoise-xtb", "CC(=O)Nc1ccc(O)cc1"),
    ("qm9-painn-4x64-denoise-xtb-75k", "CC(=O)Nc1ccc(O)cc1"),
    ("qm9-painn-4x64-denoise-xtb-75k-nci", "CC(C)Cc1ccc(C(C)C(=O)O)cc1"),
    ("qm9-painn-4x64-denoise-xtb-100k-nci", "CC(C)Cc1ccc(C(C)C(=O)O)cc1"),
    ("qm9-painn-4x64-denoise-xtb-100k-nci-annealed", "CC(C)Cc1ccc(C(C)C(=O)O)cc1"),
])
def test_shipped_xtb_force_field_predicts_xtb_forces_of_a_molecule_outside_qm9(name, smiles):
    """The xTB force fields were trained on GFN2-xTB forces of rattled QM9 molecules (≤ 9 heavy
    atoms); on paracetamol (11 heavy atoms), RDKit conformer rattled by 0.03 Å, their forces follow
    xTB's before any fine-tuning (measured: cosine 0.98 and 0.995, MAE 0.18x and 0.09x the
    zero-force MAE). The -nci one also saw NCI molecules, paracetamol among them: on ibuprofen
    (15 heavy atoms, in neither set) cosine 0.998, MAE 0.044x zero-force (the -75k one: 0.992,
    0.11x; the -100k-nci one, which saw them too: 0.9986, 0.042x; its annealed successor 0.9989, 0.039x)."""
    import numpy as np
    from ase import Atoms
    from rdkit import Chem
    from rdkit.Chem import AllChem
    from tblite.ase import TBLite

    from denoise3d.md.calculator import Denoise3DCalculator

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    AllChem.MMFFOptimizeMolecule(mol)
    atoms = Atoms([a.GetSymbol() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())
    atoms.positions += 0.03 * np.random.default_rng(0).standard_normal(atoms.positions.shape)
    ref = atoms.copy()
    ref.calc = TBLite(method="GFN2-xTB", verbosity=0)
    f_ref = ref.get_forces()
    atoms.calc = Denoise3DCalculator(f"pretrained:{name}", compile=False)
    f = atoms.get_forces()
    cos = (f * f_ref).sum() / (np.linalg.norm(f) * np.linalg.norm(f_ref))
    assert cos > 0.9 and np.abs(f - f_ref).mean() < 0.35 * np.abs(f_ref).mean()


def test_finetune_from_shipped_checkpoint(qm9_cache, tmp_path):
    name = pretrained.available()[0]
    out = tmp_path / "ft"
    assert main(["finetune", "configs/finetune/qm9_cpu.yaml", *TINY, f"data.cache_dir={qm9_cache}",
                 "train.max_steps=3", f"train.out={out}", f"finetune.init=pretrained:{name}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["init"] == f"pretrained:{name}" and metrics["test_size"] == 48
    # the fine-tuned backbone started from the shipped weights: a 3-step run stays close to them
    start = load_checkpoint(pretrained.resolve(f"pretrained:{name}"))["backbone"]["state"]
    tuned = torch.load(out / "finetune.pt", weights_only=True)["backbone"]["state"]
    fresh = torch.nn.utils.parameters_to_vector
    a = fresh([start[k].float() for k in start])
    b = fresh([tuned[k].float() for k in start])
    assert (a - b).norm() < 0.1 * a.norm()


def test_unknown_shipped_name_is_one_line_error(capsys, tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="no shipped pretrained checkpoint 'nope'"):
        pretrained.resolve("pretrained:nope")
    name = pretrained.available()[0]
    monkeypatch.chdir(tmp_path)  # a shipped name without its prefix gets a hint
    with pytest.raises(CheckpointError, match=f"the shipped one is pretrained:{name}"):
        pretrained.resolve(name)
    assert main(["finetune", "finetune.init=pretrained:nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no shipped pretrained checkpoint 'nope'" in err and len(err.splitlines()) == 1


def test_pretrained_verb_lists_and_shows_cards(capsys):
    assert main(["pretrained"]) == 0
    listed = capsys.readouterr().out
    assert all(f"pretrained:{n}" in listed for n in pretrained.available())
    assert main(["pretrained", pretrained.available()[0]]) == 0
    assert capsys.readouterr().out.startswith("# ")
    # a name copied from the listing, with its prefix, shows the same card
    assert main(["pretrained", f"pretrained:{pretrained.available()[0]}"]) == 0
    assert capsys.readouterr().out == pretrained.card(pretrained.available()[0]) + "\n"


def test_benefit_benchmark_finetuning_stage_runs_from_shipped_checkpoint(qm9_cache, tmp_path):
    """benchmarks/pretraining_benefit/run.py: cached, resumable runs and the mean ± std table."""
    name = "qm9-egnn-4x64-emgp"
    cmd = [sys.executable, "benchmarks/pretraining_benefit/run.py", "--out", str(tmp_path),
           "--cells", "homo-1k", "--seeds", "0,1", "--inits", "scratch,emgp",
           "--checkpoint", f"emgp=pretrained:{name}", "--egnn-num-rbf", "0", "--set", f"data.cache_dir={qm9_cache}",
           "--set", "train.max_steps=2", "--set", "data.max_valid=32", "--set", "data.max_test=32"]
    # two invocations at once share the work: every run starts exactly once
    procs = [subprocess.Popen(cmd + ["--jobs", "1"], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [proc.communicate()[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs
    assert sum(out.count(" start  ") for out in outs) == 4, outs
    first = outs[0]
    row = next(ln for ln in first.splitlines() if ln.startswith("| homo-1k | egnn |"))
    assert row.count("±") == 2 and "(n=2)" in row and "%)" in row
    best = next(ln for ln in first.splitlines() if ln.startswith("| homo-1k | MAE"))
    assert "(egnn)" in best and "(egnn, 3D-EMGP)" in best and best.endswith("% |")
    again = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "4 of 4 runs already finished" in again and row in again


def _benefit_runner():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pretraining_benefit" / "run.py"
    spec = importlib.util.spec_from_file_location("benefit_run", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_benefit_cells_are_named_by_a_grammar(tmp_path):
    """TARGET-Nk[-Eep] is a QM9 cell of ~1,250 steps by default; MOLECULE[-Nf][-Eep] a trajectory in
    --md17-dir (ours or the real md17_/rmd17_ files); anything else is a one-line error."""
    run = _benefit_runner()
    assert run.cell_spec("homo-1k", tmp_path) == (
        "finetune_qm9.yaml", {"finetune.target": "homo", "data.max_train": 1000, "train.epochs": 40})
    assert run.cell_spec("gap-10k", tmp_path)[1]["train.epochs"] == 4
    assert run.cell_spec("mu-10k-40ep", tmp_path)[1] == {
        "finetune.target": "mu", "data.max_train": 10000, "train.epochs": 40}
    (tmp_path / "rmd17_toluene.npz").touch()
    config, sets = run.cell_spec("toluene-7ep", tmp_path)
    assert config == "finetune_md17.yaml" and sets == {"data.path": tmp_path / "rmd17_toluene.npz",
                                                       "train.epochs": 7}
    assert run.cell_spec("aspirin", tmp_path)[1]["train.epochs"] == 100
    assert run.cell_spec("aspirin-100f-7ep", tmp_path)[1] == {  # fewer frames, same steps
        "data.path": tmp_path / "aspirin.npz", "train.epochs": 7, "data.train_frames": 100,
        "data.valid_frames": 50, "data.epoch_size": 1000}
    for bad in ("homo-1x", "homo", "bad-mol-name", "../x", "aspirin-1000f", "aspirin-0f"):
        with pytest.raises(ValueError, match="cell"):
            run.cell_spec(bad, tmp_path)


def test_benefit_pretraining_seeds_get_their_own_starts():
    run = _benefit_runner()
    args = run.argparse.Namespace(inits=["scratch", "emgp", "denoise"], pretrain_seeds=[0, 1])
    assert run.starts(args) == [("scratch", "scratch", 0), ("emgp", "emgp", 0), ("emgp-p1", "emgp", 1),
                                ("denoise", "denoise", 0), ("denoise-p1", "denoise", 1)]
    assert run.label_name("denoise-p1") == "denoising (pretraining seed 1)"


def test_benefit_backbone_axis_plans_one_pretraining_per_backbone_and_start(tmp_path):
    """--backbones: stage 1 per (backbone, method), stage 2 per (cell, seed, backbone, start),
    each with model.backbone set and its own folder; a given checkpoint replaces its stage 1."""
    run = _benefit_runner()
    args = run.argparse.Namespace(
        out=str(tmp_path), inits=["scratch", "denoise"], pretrain_seeds=[0], cells=["homo-1k"],
        seeds=[0], backbones=["egnn", "painn"], md17_dir=str(tmp_path), set=[], egnn_num_rbf=50,
        checkpoint=[(("egnn", "denoise"), "pretrained:qm9-egnn-4x64-denoise")])
    tasks = {t.name: t for t in run.plan(args)}
    assert sorted(tasks) == ["homo-1k egnn denoise seed 0", "homo-1k egnn scratch seed 0",
                             "homo-1k painn denoise seed 0", "homo-1k painn scratch seed 0",
                             "pretrain painn denoise"]
    pre = tasks["pretrain painn denoise"]
    assert "model.backbone=painn" in pre.argv and pre.out == tmp_path / "pretrain" / "painn" / "denoise"
    ft = tasks["homo-1k painn denoise seed 0"]
    assert ft.needs == ["pretrain painn denoise"] and "model.backbone=painn" in ft.argv
    assert f"finetune.init={pre.out / 'pretrain.pt'}" in ft.argv
    egnn = tasks["homo-1k egnn denoise seed 0"].argv
    assert "finetune.init=pretrained:qm9-egnn-4x64-denoise" in egnn  # its own architecture
    assert "model.num_rbf=50" in tasks["homo-1k egnn scratch seed 0"].argv
    assert not any("num_rbf" in a for a in pre.argv + ft.argv + egnn)
    # the shipped EGNN is the d² form: against 50-Gaussian scratch runs it is refused
    with pytest.raises(SystemExit, match="architecture differs.*num_rbf=0 \\(scratch: 50\\)"):
        run.check_given(args)
    args.egnn_num_rbf = 0
    run.check_given(args)
    args.checkpoint = [(("schnet", "denoise"), "x.pt")]
    with pytest.raises(SystemExit, match="schnet is not in --backbones"):
        run.check_given(args)
    with pytest.raises(SystemExit):
        run.main(["--backbones", "egnn,nequip", "--report", "--out", str(tmp_path)])


def test_benefit_runs_are_locked_against_a_second_invocation(tmp_path):
    """A run another live process holds is waited for, not started twice; a dead holder's lock
    is taken over."""
    run = _benefit_runner()
    task = run.Task("homo-1k scratch seed 0", tmp_path / "a", [], "metrics.json")
    assert run.claim(task) is None  # free: ours now
    assert (task.out / "RUNNING").read_text().split()[0] == str(os.getpid())
    assert run.claim(task) == os.getpid()  # held by a live process
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (task.out / "RUNNING").write_text(f"{dead.pid}\n")
    assert run.claim(task) is None  # its holder is gone
