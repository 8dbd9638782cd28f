"""Supervised pretraining on cheap labels (issue 17): off-equilibrium copies for `data xtb-label
--rattle`, parallel labelling equal to serial, and fine-tuning that starts from a force field
trained on other molecules (`finetune.init=FINETUNE.pt`: backbone and energy head, this data's
E0), so the starting forces are the source force field's."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase.build import molecule as ase_molecule

from denoise3d.cli import main
from denoise3d.config import load_config
from denoise3d.data import xtb
from denoise3d.jobs import energy_force
from denoise3d.testing.molecules import labelled_frames


def test_rattled_copies_are_seeded_and_of_the_asked_size():
    frames = [ase_molecule("CH3CH2OH"), ase_molecule("H2O")]
    a = xtb.rattled(frames, [0.02, 0.1], seed=3)
    b = xtb.rattled(frames, [0.02, 0.1], seed=3)
    assert len(a) == 4 and [c.info["source_frame"] for c in a] == [0, 0, 1, 1]
    assert [c.info["rattle_sigma"] for c in a] == [0.02, 0.1, 0.02, 0.1]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.positions, y.positions)
    big = xtb.rattled([ase_molecule("C60")], [0.1], seed=0)[0]
    assert np.std(big.positions - ase_molecule("C60").positions) == pytest.approx(0.1, rel=0.15)
    assert not np.array_equal(xtb.rattled(frames, [0.02], seed=4)[0].positions, a[0].positions)
    with pytest.raises(ValueError, match="positive"):
        xtb.rattled(frames, [0.02, -1.0])


def test_xtb_label_rattle_in_two_processes_equals_one(tmp_path, capsys):
    ase.io.write(tmp_path / "in.extxyz", [ase_molecule("H2O"), ase_molecule("CH4"),
                                          ase_molecule("NH3")])
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.extxyz"
        assert main(["data", "xtb-label", str(tmp_path / "in.extxyz"), "--rattle", "0.02,0.05",
                     "--seed", "1", "--workers", str(workers), "--quiet", "--out", str(out)]) == 0
        outs.append(ase.io.read(out, ":"))
    assert len(outs[0]) == len(outs[1]) == 6
    for x, y in zip(*outs):
        np.testing.assert_allclose(x.positions, y.positions, atol=1e-8)
        assert x.get_potential_energy() == pytest.approx(y.get_potential_energy(), abs=1e-7)
        np.testing.assert_allclose(x.get_forces(), y.get_forces(), atol=1e-6)
        assert x.info["rattle_sigma"] in (0.02, 0.05) and x.info["theory"] == "GFN2-xTB"
    # the level of theory is read back for a force field's metrics (was null)
    from denoise3d.data.sources.files import level_of_theory

    assert level_of_theory(tmp_path / "w1.extxyz") == "GFN2-xTB"
    assert level_of_theory(tmp_path / "in.extxyz") is None
    # the bookkeeping keys are not default labels (a property fine-tune would regress them)
    from denoise3d.data.labelled import read_labelled

    specs, _ = read_labelled(tmp_path / "w1.extxyz")
    assert [s.name for s in specs] == ["energy", "forces"]
    # a frame xTB cannot label: one line naming the copy and its input frame, nothing written
    from ase import Atoms

    ase.io.write(tmp_path / "og.extxyz", [ase_molecule("H2O"), Atoms("Og", [[0, 0, 0]])])
    assert main(["data", "xtb-label", str(tmp_path / "og.extxyz"), "--rattle", "0.02,0.04",
                 "--workers", "2", "--quiet", "--out", str(tmp_path / "og_xtb.extxyz")]) != 0
    assert "frame 2 (copy of input frame 1, rattled by 0.02 Å): GFN2-xTB failed" in capsys.readouterr().err
    assert not (tmp_path / "og_xtb.extxyz").exists()
    assert main(["data", "xtb-label", str(tmp_path / "in.extxyz"), "--rattle", "0.02,abc",
                 "--out", str(tmp_path / "bad.extxyz")]) != 0
    assert "comma-separated list" in capsys.readouterr().err
    assert not (tmp_path / "bad.extxyz").exists()


@pytest.fixture(scope="module")
def source_force_field(tmp_path_factory):
    """A small PaiNN force field fine-tuned on GFN2-xTB frames of water, methanol and ethanol."""
    root = tmp_path_factory.mktemp("transfer")
    ase.io.write(root / "source.extxyz", labelled_frames(n_per=6))
    ase.io.write(root / "target.extxyz", labelled_frames(n_per=4, seed=5))
    ase.io.write(root / "ethanol.extxyz", labelled_frames(n_per=8, seed=6)[16:])  # one molecule
    out = root / "source"
    assert main(["finetune", "configs/finetune/forcefield_cpu.yaml", f"data.path={root / 'source.extxyz'}",
                 "data.split_by=structure", "model.backbone=painn", "model.num_rbf=null",
                 "model.hidden=16", "model.layers=2", "data.batch_size=6", "train.epochs=2",
                 "train.threads=1", "train.progress=false", f"data.cache_dir={root}",
                 f"train.out={out}"]) == 0
    return root, out / "finetune.pt"


def target_config(root, init, *extra, target="target.extxyz"):
    return load_config("configs/finetune/forcefield_cpu.yaml",
                       [f"data.path={root / target}", "data.split_by=structure",
                        "model.backbone=painn", "model.num_rbf=null", f"finetune.init={init}",
                        f"data.cache_dir={root}", *extra])


def test_finetuning_starts_from_the_source_force_field(source_force_field, capsys):
    root, source = source_force_field
    cfg_s, backbone_s, objective_s, _ = energy_force.load_force_field(source)
    job = energy_force.build(target_config(root, source))
    assert "energy head from its energy_force objective" in job.announce
    backbone, objective = job.backbone.eval(), job.objectives["energy_force"][1].eval()
    batch = job.dataset.batch(job.split["train"][:5])
    _, forces = objective.predict(backbone, batch)
    _, forces_s = objective_s.predict(backbone_s, batch)
    torch.testing.assert_close(forces, forces_s, rtol=1e-5, atol=1e-6)  # the source's forces
    # E0 is this data's: least squares on E - scale * sum e(s_i) over its training split, so
    # the learned part is not counted twice (and on one molecule the mean error is zero)
    assert not torch.equal(objective.head.e0, objective_s.head.e0)
    assert objective.head.scale == objective_s.head.scale
    job = energy_force.build(target_config(root, source, target="ethanol.extxyz"))
    train = job.split["train"]
    predicted = energy_force.head_energies(job.backbone, job.objectives["energy_force"][1],
                                           job.dataset, train)
    error = predicted - job.dataset.target("energy")[train]
    assert abs(error.mean()) < 1e-8
    # its domain: ethanol, plus the source's compositions of these elements (water and methanol,
    # trained on in the source), so they are not warned about as never seen
    assert set(job.domain["compositions"]) == {"C2H6O", "CH4O", "H2O"}
    assert job.domain["elements"] == [1, 6, 8]
    # another head kind: only the backbone is transferred, and the run says so
    capsys.readouterr()
    job = energy_force.build(target_config(root, source, "finetune.energy_head=mlp_of_sum"))
    assert "only the backbone is transferred" in capsys.readouterr().out
    assert "energy head from" not in job.announce
    # init_energy_head=false: a fresh head
    job = energy_force.build(target_config(root, source, "finetune.init_energy_head=false"))
    _, fresh = job.objectives["energy_force"][1].eval().predict(job.backbone.eval(), batch)
    assert not torch.allclose(fresh, forces_s, atol=1e-3)


def test_cli_finetunes_from_a_finetuned_force_field(source_force_field, tmp_path):
    import json

    root, source = source_force_field
    out = tmp_path / "target"
    assert main(["finetune", "configs/finetune/forcefield_cpu.yaml",
                 f"data.path={root / 'target.extxyz'}", "data.split_by=structure",
                 "model.backbone=painn", f"finetune.init={source}", "data.batch_size=4",
                 "train.epochs=1", "train.threads=1", "train.progress=false",
                 f"data.cache_dir={root}", f"train.out={out}"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["energy_head_from"] == "energy_force" and m["init"] == str(source)
    assert np.isfinite(m["test_force_mae_meV_A"])


def test_a_finetuning_that_only_degrades_the_source_keeps_the_start(source_force_field, tmp_path,
                                                                    capsys):
    """From a force field the start's validation competes for the kept epoch (epoch 0): with a
    learning rate that wrecks the weights the run ends with the start's test errors, and says so;
    from scratch nothing changes."""
    import json

    root, source = source_force_field
    common = ["finetune", "configs/finetune/forcefield_cpu.yaml", f"data.path={root / 'target.extxyz'}",
              "data.split_by=structure", "model.backbone=painn", "data.batch_size=4",
              "train.threads=1", "train.progress=false", f"data.cache_dir={root}"]
    start = tmp_path / "start"
    assert main([*common, f"finetune.init={source}", "train.max_steps=0", f"train.out={start}"]) == 0
    wrecked = tmp_path / "wrecked"
    capsys.readouterr()
    assert main([*common, f"finetune.init={source}", "train.epochs=2", "train.lr=0.1",
                 "train.scheduler=constant", f"train.out={wrecked}"]) == 0
    out = capsys.readouterr().out
    assert "start (before any step):" in out and "the start is kept" in out
    a, b = (json.loads((p / "metrics.json").read_text()) for p in (start, wrecked))
    assert b["best_epoch"] == 0
    assert b["test_force_mae_meV_A"] == pytest.approx(a["test_force_mae_meV_A"], rel=1e-5)
    scratch = tmp_path / "scratch"
    assert main([*common, "model.num_rbf=null", "model.hidden=16", "model.layers=2",
                 "train.epochs=1", f"train.out={scratch}"]) == 0
    assert "start (before any step)" not in capsys.readouterr().out


def test_mlp_of_sum_transfer_keeps_the_source_forces_on_another_energy_scale(tmp_path_factory):
    """E = std · MLP + mean: from many molecules (std of tens of eV) to one (std of meV) the
    last layer is rescaled so that the starting forces are still the source's."""
    root = tmp_path_factory.mktemp("mlp")
    ase.io.write(root / "source.extxyz", labelled_frames(n_per=6))
    ase.io.write(root / "ethanol.extxyz", labelled_frames(n_per=8, seed=6)[16:])
    out = root / "source"
    assert main(["finetune", "configs/finetune/forcefield_cpu.yaml",
                 f"data.path={root / 'source.extxyz'}", "data.split_by=structure",
                 "model.backbone=painn", "model.num_rbf=null", "model.hidden=16", "model.layers=2",
                 "finetune.energy_head=mlp_of_sum", "data.batch_size=6", "train.epochs=1",
                 "train.threads=1", "train.progress=false", f"data.cache_dir={root}",
                 f"train.out={out}"]) == 0
    _, backbone_s, objective_s, _ = energy_force.load_force_field(out / "finetune.pt")
    job = energy_force.build(target_config(root, out / "finetune.pt",
                                           "finetune.energy_head=mlp_of_sum",
                                           target="ethanol.extxyz"))
    objective = job.objectives["energy_force"][1].eval()
    assert float(objective.std) < 0.1 * float(objective_s.std)
    batch = job.dataset.batch(job.split["train"])
    energy, forces = objective.predict(job.backbone.eval(), batch)
    _, forces_s = objective_s.predict(backbone_s, batch)
    torch.testing.assert_close(forces, forces_s, rtol=1e-4, atol=1e-6)
    assert float(energy.mean()) == pytest.approx(float(batch.targets["energy"].mean()), abs=1e-4)
