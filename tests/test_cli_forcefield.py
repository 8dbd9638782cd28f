"""The force-field workflow through the CLI, on short GFN2-xTB trajectories made here:
data xtb-md -> finetune (task energy_force) -> evaluate (own test split, and a trajectory the
model never saw) -> md -> landscape."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import torch

pytest.importorskip("tblite")

from denoise3d.cli import main  # noqa: E402

TINY = ["model.hidden=16", "model.layers=2", "data.batch_size=10", "data.eval_batch_size=40",
        "data.train_frames=40", "data.valid_frames=10", "train.epochs=3", "train.threads=1",
        "train.device=cpu"]


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory):
    """Two ethanol trajectories: the training one (500 K, seed 0) and an independent one
    (other seed, other conformer, 400 K)."""
    root = tmp_path_factory.mktemp("xtb")
    common = ["--smiles", "CCO", "--interval", "2", "--equilibrate", "40", "--quiet"]
    assert main(["data", "xtb-md", *common, "--frames", "80", "--out", str(root / "a.npz")]) == 0
    assert main(["data", "xtb-md", *common, "--frames", "30", "--seed", "7", "--temperature",
                 "400", "--out", str(root / "b.npz")]) == 0
    return root / "a.npz", root / "b.npz"


@pytest.fixture(scope="module")
def finetuned(trajectories, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft")
    rc = main(["finetune", "configs/finetune/md17_cpu.yaml", *TINY,
               f"data.path={trajectories[0]}", f"train.out={out}"])
    assert rc == 0
    return out


def test_finetune_writes_md17_metrics(finetuned):
    m = json.loads((finetuned / "metrics.json").read_text())
    assert m["task"] == "energy_force" and m["theory"] == "GFN2-xTB"
    assert (m["train_size"], m["valid_size"], m["test_size"]) == (40, 10, 30)
    for key in ("energy_mae_kcal_mol", "energy_mae_meV", "force_mae_kcal_mol_A", "force_mae_meV_A"):
        assert 0 < m[f"test_{key}"] < 1e4
    assert m["test_mae"] == m["test_force_mae_kcal_mol_A"]
    assert m["test_force_mae_meV_A"] == pytest.approx(m["test_force_mae_kcal_mol_A"] * 43.3641,
                                                      rel=1e-4)
    ckpt = torch.load(finetuned / "finetune.pt", weights_only=True)
    assert set(ckpt["objectives"]) == {"energy_force"} and ckpt["units"]["forces"] == "eV/Å"
    valid = (finetuned / "valid.csv").read_text().splitlines()
    assert valid[0].startswith("step,epoch,loss,energy_mae_kcal_mol") and len(valid) == 4


def test_evaluate_on_own_split_and_on_an_unseen_trajectory(finetuned, trajectories, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(finetuned / "finetune.pt")]) == 0
    own = json.loads(capsys.readouterr().out)
    m = json.loads((finetuned / "metrics.json").read_text())
    assert own["force_mae_kcal_mol_A"] == pytest.approx(m["test_mae"], rel=1e-5)
    for key in ("baseline_force_mae_kcal_mol_A", "baseline_energy_mae_kcal_mol"):  # as training's
        assert own[key] == pytest.approx(m[key], rel=1e-9) and own[key] > 0
    assert own["baseline_e0_fitted_on"] == "training split"
    assert own["baselines"].startswith("forces: zero; energies: per-element E0")
    # the force cosine, against the test frames' forces computed here from the same model
    from denoise3d.jobs import checkpoint
    from denoise3d.jobs.energy_force import force_field_from
    from denoise3d.jobs.skeleton import evaluation_run
    ckpt = checkpoint.load(finetuned / "finetune.pt", kind="finetune")
    _, backbone, objective = force_field_from(ckpt)
    _, loader, _, _ = evaluation_run(ckpt, "test", (backbone, objective), False)
    pairs = [(objective.predict(backbone, b)[1], b.targets["forces"]) for b in loader]
    f = torch.cat([p for p, _ in pairs]).double().numpy()
    ref = torch.cat([r for _, r in pairs]).double().numpy()
    expected = (f * ref).sum() / np.sqrt((f * f).sum() * (ref * ref).sum())
    assert own["force_cosine"] == pytest.approx(expected, rel=1e-6) and -1 <= expected <= 1
    assert m["test_force_cosine"] == pytest.approx(expected, rel=1e-6)
    assert main(["evaluate", str(finetuned / "finetune.pt"), "--compile"]) == 0
    compiled = json.loads(capsys.readouterr().out)
    assert compiled["compiled"] and not own["compiled"] and compiled["frames_per_s"] > 0
    assert compiled["force_mae_kcal_mol_A"] == pytest.approx(m["test_mae"], rel=1e-5)
    assert compiled["energy_mae_kcal_mol"] == pytest.approx(own["energy_mae_kcal_mol"], rel=1e-4)
    assert main(["evaluate", str(finetuned / "finetune.pt"), f"data.path={trajectories[1]}",
                 "--split", "all"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["frames"] == 30 and 0 < other["force_mae_meV_A"] < 1e5
    assert other["baseline_e0_fitted_on"].endswith("(in-sample)")
    assert other["baseline_force_mae_kcal_mol_A"] > 0


def test_md_and_landscape_from_the_checkpoint(finetuned, trajectories, tmp_path, capsys):
    ckpt = str(finetuned / "finetune.pt")
    assert main(["md", ckpt, str(trajectories[1]), "--frame", "5", "--steps", "20",
                 "--interval", "10", "--out", str(tmp_path / "md.extxyz"), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    frames = ase.io.read(tmp_path / "md.extxyz", index=":")
    assert summary["frames"] == len(frames) == 3 and frames[0].get_forces().shape == (9, 3)
    assert main(["landscape", ckpt, str(trajectories[1]), "--points", "7",
                 "--out", str(tmp_path / "land")]) == 0
    assert (tmp_path / "land.png").stat().st_size > 10_000
    with np.load(tmp_path / "land.npz") as f:
        assert f["energy_eV"].shape == (7, 7)


@pytest.mark.parametrize("args, words", [
    (["finetune", "finetune.task=energy_force", "data.dataset=md17"], "needs data.path"),
    (["finetune", "finetune.task=forces"], "unknown finetune.task 'forces'"),
    (["data", "xtb-md", "--smiles", "CCO"], "needs --out"),
    (["md", "/nonexistent.pt", "x.xyz"], "checkpoint not found"),
])
def test_bad_input_is_one_line_error(args, words, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("objective, head", [
    ({"name": "emgp"}, "energy_head"),
    ({"name": "denoise", "vector": "gradient"}, "noise_head"),
    ({"name": "denoise", "vector": "direct"}, None),  # a vector head: no energy model to reuse
])
def test_energy_force_finetuning_starts_from_the_pretrained_energy_head(
        objective, head, trajectories, tmp_path):
    """finetune.init from an energy model: the force field's energy head starts as its head."""
    from denoise3d.jobs import checkpoint

    pt = tmp_path / "pt"
    obj = "{" + ", ".join(f"{k}: {v}" for k, v in objective.items()) + "}"
    assert main(["pretrain", *TINY, "data.dataset=md17", "data.split=random",
                 f"data.path={trajectories[0]}", "train.epochs=1", f"pretrain.objectives=[{obj}]", f"train.out={pt}"]) == 0
    ckpt = checkpoint.load(pt / "pretrain.pt")
    found = ckpt.energy_head()
    if head is None:
        assert found is None
        return
    state = ckpt.objective(objective["name"])["state"]
    assert found[0] == objective["name"]
    assert {k: v.shape for k, v in found[1].items()} == \
        {k[len(head) + 1:]: v.shape for k, v in state.items() if k.startswith(head + ".")}
    for flag, same in (("true", True), ("false", False)):
        out = tmp_path / f"ft_{flag}"
        assert main(["finetune", "configs/finetune/md17_cpu.yaml", *TINY, "train.max_steps=0",
                     f"data.path={trajectories[0]}", f"finetune.init={pt / 'pretrain.pt'}",
                     f"finetune.init_energy_head={flag}", "finetune.energy_head=mlp_of_sum",
                     f"train.out={out}"]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m["energy_head_from"] == (objective["name"] if same else None)
        tuned = torch.load(out / "finetune.pt", weights_only=True)["objectives"]["energy_force"]["state"]
        equal = all(torch.equal(tuned[f"head.{k}"], v) for k, v in found[1].items())
        assert equal is same


def test_bad_structures_at_every_entry_point_are_one_line_errors(finetuned, tmp_path, capsys):
    """md and data xtb-md run the same structure check as data build (NaN, coinciding atoms)."""
    (tmp_path / "nan.xyz").write_text("3\n\nO 0 0 0\nH nan 0 0\nH -0.24 0.93 0\n")
    (tmp_path / "twice.xyz").write_text("3\n\nO 0 0 0\nH 0 0 0.01\nH -0.24 0.93 0\n")
    cases = [(["md", str(finetuned / "finetune.pt"), str(tmp_path / "nan.xyz")], "non-finite"),
             (["data", "xtb-md", "--structure", str(tmp_path / "twice.xyz"), "--out",
               str(tmp_path / "t.npz"), "--frames", "2", "--quiet"], "atoms 0 and 1 coincide")]
    for args, words in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "t.npz").exists()


def test_finetuning_a_checkpoint_takes_its_architecture(trajectories, tmp_path, capsys):
    """md17_cpu.yaml gives EGNN 50 Gaussians for training from scratch; from a checkpoint without
    them the checkpoint's architecture is used (with a note, and saved as such), while a
    command-line model key that contradicts the checkpoint is a one-line error."""
    from denoise3d.jobs import checkpoint

    pt = tmp_path / "pt"
    assert main(["pretrain", *TINY, "data.dataset=md17", "data.split=random",
                 f"data.path={trajectories[0]}", "train.epochs=1", f"train.out={pt}"]) == 0
    capsys.readouterr()
    out = tmp_path / "ft"
    args = ["finetune", "configs/finetune/md17_cpu.yaml", *TINY, "train.max_steps=1",
            f"data.path={trajectories[0]}", f"finetune.init={pt / 'pretrain.pt'}"]
    assert main([*args, f"train.out={out}"]) == 0
    assert "its architecture is used (model.num_rbf=0; the config says 50)" in capsys.readouterr().out
    assert checkpoint.load(out / "finetune.pt").config.model.num_rbf is None
    assert main([*args, "model.num_rbf=50", f"train.out={tmp_path / 'bad'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "set model.num_rbf=null" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_export_writes_a_torchscript_file_equal_to_the_calculator(finetuned, trajectories,
                                                                   tmp_path, capsys):
    """`denoise3d export` (float32): the file reproduces the calculator to 1e-5 relative."""
    from denoise3d.data.md17 import load_md17
    from denoise3d.md.calculator import Denoise3DCalculator

    ckpt = str(finetuned / "finetune.pt")
    capsys.readouterr()
    assert main(["export", ckpt, str(tmp_path / "model.pt")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dtype"] == "float32" and summary["elements"] == [1, 6, 8]
    program = torch.jit.load(str(tmp_path / "model.pt"))
    m = load_md17(str(trajectories[1])).molecule(3)
    atoms = ase.Atoms(numbers=m.z, positions=m.pos)
    atoms.calc = Denoise3DCalculator(ckpt, compile=False)
    out = program(torch.as_tensor(m.z), torch.as_tensor(m.pos), torch.zeros(3, 3, dtype=torch.float64),
                  torch.zeros(3, dtype=torch.bool))
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    assert abs(float(out["energy"]) - e) <= 1e-5 * abs(e)
    assert np.abs(out["forces"].numpy() - f).max() <= 1e-5 * np.abs(f).max()
    assert main(["export", "/nonexistent.pt", str(tmp_path / "x.pt")]) == 2
    assert not (tmp_path / "x.pt").exists()


def test_fitted_energy_head_scale_is_the_least_squares_factor(trajectories, tmp_path, capsys):
    """finetune.energy_head_scale=fit: the pretrained forces times c, c the least-squares factor
    on the training forces, and the training frames' mean energy kept; a bad value is one line."""
    from denoise3d.config import explicit_keys, load_config
    from denoise3d.data.sources import load_data
    from denoise3d.jobs import checkpoint
    from denoise3d.jobs.energy_force import energy_force_objective, fit_head_scale
    from denoise3d.train.checkpoint import load_state

    pt = tmp_path / "pt"
    assert main(["pretrain", *TINY, "data.dataset=md17", "data.split=random",
                 f"data.path={trajectories[0]}", "train.epochs=1", f"train.out={pt}",
                 "pretrain.objectives=[{name: denoise, vector: gradient}]"]) == 0
    cfg = load_config("configs/finetune/md17_cpu.yaml",
                      [*TINY, f"data.path={trajectories[0]}", f"finetune.init={pt / 'pretrain.pt'}",
                       "finetune.energy_head=mlp_of_sum"])
    backbone, init = checkpoint.initial(cfg)
    ds, split = load_data(cfg.data, explicit_keys(cfg, "data"))
    objective = energy_force_objective(cfg, ds, split["train"])
    load_state(objective.head, init.energy_head()[1], "energy head", "test")
    batch = ds.batch(split["train"], targets=["energy", "forces"])
    true = batch.targets["forces"].double()
    _, before = objective.predict(backbone.eval(), batch)
    before = before.double()
    factor, cosine = fit_head_scale(backbone, objective, ds, split["train"], batch_size=7)
    energy, after = objective.predict(backbone, batch)
    expected = float((before * true).sum() / (before * before).sum())
    assert factor == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(after.double(), factor * before, rtol=1e-4, atol=1e-6)
    assert abs(float(((factor * before - true) * before).sum())) < 1e-3 * float((true ** 2).sum())
    assert float(energy.mean()) == pytest.approx(float(batch.targets["energy"].mean()), abs=1e-4)
    assert cosine == pytest.approx(float((before * true).sum() / before.norm() / true.norm()),
                                   rel=1e-6)
    capsys.readouterr()
    common = ["finetune", "configs/finetune/md17_cpu.yaml", *TINY, "train.max_steps=0",
              f"data.path={trajectories[0]}", f"finetune.init={pt / 'pretrain.pt'}",
              "finetune.energy_head=mlp_of_sum"]
    assert main([*common, "finetune.energy_head_scale=fit", f"train.out={tmp_path / 'a'}"]) == 0
    assert "energy head scaled by" in capsys.readouterr().out
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["energy_head_scale_fitted"] == pytest.approx(factor, rel=1e-3)
    assert main([*common, "finetune.energy_head_scale=big", f"train.out={tmp_path / 'b'}"]) != 0
    err = capsys.readouterr().err.strip()
    assert "finetune.energy_head_scale=big must be std or fit" in err and "\n" not in err
    assert not (tmp_path / "b").exists()


def test_noisy_nodes_energy_force_finetuning_and_its_checkpoint(trajectories, tmp_path, capsys):
    """finetune.noisy_nodes_weight > 0 on a force field: the training log carries the denoising
    term, and the checkpoint (with its noise head) loads in evaluate and export."""
    out = tmp_path / "nn"
    assert main(["finetune", "configs/finetune/md17_cpu.yaml", *TINY, "train.max_steps=2",
                 "model.backbone=painn", "model.num_rbf=null", "finetune.noisy_nodes_weight=0.1",
                 "finetune.noisy_nodes_sigma=0.02", f"data.path={trajectories[0]}",
                 f"train.out={out}"]) == 0
    train_log = (out / "log.csv").read_text().splitlines()
    assert "energy_force_denoise" in train_log[0].split(",")
    ckpt = torch.load(out / "finetune.pt", weights_only=True)
    assert ckpt["objectives"]["energy_force"]["params"]["noisy_nodes_weight"] == 0.1
    capsys.readouterr()
    assert main(["evaluate", str(out / "finetune.pt"), f"data.path={trajectories[1]}",
                 "--split", "all"]) == 0
    assert main(["export", str(out / "finetune.pt"), str(tmp_path / "m.pt")]) == 0


def test_noisy_nodes_with_a_frozen_backbone_is_refused(trajectories, tmp_path, capsys):
    """With the backbone frozen, Noisy Nodes would train only the unused noise head."""
    out = tmp_path / "frozen"
    assert main(["finetune", "configs/finetune/md17_cpu.yaml", *TINY, "train.max_steps=1",
                 "finetune.noisy_nodes_weight=0.1", "finetune.freeze_backbone=true",
                 f"data.path={trajectories[0]}", f"train.out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "freeze_backbone" in err and len(err.splitlines()) == 1
    assert not out.exists()
