"""Force fields on many molecules: least-squares E0, the extensive atomwise head, and the whole
path file -> fine-tune -> evaluate -> predict -> calculator, with unseen elements refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule

from denoise3d.cli import main
from denoise3d.data.batch import Molecule, collate
from denoise3d.data.bonds import hop_matrix
from denoise3d.data.elements import MAX_Z
from denoise3d.config import load_config
from denoise3d.data.sources import load_data
from denoise3d.jobs.energy_force import fit_e0, undetermined_compositions
from denoise3d.models import build_backbone
from denoise3d.objectives.energy_force import EnergyForceRegression
from denoise3d.testing.molecules import labelled_frames


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """24 GFN2-xTB frames of water, methanol and ethanol (extxyz, written by ASE)."""
    import ase.io

    path = tmp_path_factory.mktemp("ff") / "mixed.extxyz"
    ase.io.write(path, labelled_frames(n_per=8))
    return path


def test_e0_fit_is_exact_on_additive_energies(tmp_path):
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    e0 = {1: -13.6, 6: -1029.5, 8: -2041.2}  # eV
    frames = []
    for name in ("H2O", "CH4", "CO2", "CH3OH", "C2H6") * 4:  # compositions of full rank
        a = molecule(name)
        a.calc = SinglePointCalculator(a, energy=sum(e0[int(z)] for z in a.numbers),
                                       forces=np.zeros((len(a), 3)))
        frames.append(a)
    ase.io.write(tmp_path / "additive.extxyz", frames)
    ds, split = load_data(load_config(None, ["data.dataset=files",
                                             f"data.path={tmp_path / 'additive.extxyz'}",
                                             f"data.cache_dir={tmp_path}"]).data)
    fitted = fit_e0(ds, split["train"])
    for z, value in e0.items():
        assert fitted[z] == pytest.approx(value, abs=1e-9)
    assert not np.delete(fitted, list(e0)).any()


def test_compositions_the_training_split_leaves_free_are_named(mixed, tmp_path, capsys):
    ds, _ = load_data(load_config(None, ["data.dataset=files", f"data.path={mixed}",
                                         f"data.cache_dir={tmp_path}"]).data)
    carbons = ds.element_counts()[:, 6]
    water, methanol, ethanol = (np.flatnonzero(carbons == c) for c in (0, 1, 2))
    # water alone fixes E0(O) + 2 E0(H) only: methanol's and ethanol's sums are free
    assert sorted(undetermined_compositions(ds, water, np.r_[methanol, ethanol])) == ["C2H6O",
                                                                                     "CH4O"]
    # water and methanol span ethanol (C2H6O = 2 CH4O - H2O): nothing free
    assert undetermined_compositions(ds, np.r_[water, methanol], ethanol) == []
    assert undetermined_compositions(ds, methanol[:3], methanol[3:]) == []
    # the fine-tuning says so when a split by molecule trains on one molecule
    out = tmp_path / "w"
    assert main(["finetune", "configs/finetune/forcefield_cpu.yaml", f"data.path={mixed}",
                 "data.split_by=molecule", "finetune.energy_head=atomwise", "model.hidden=8",
                 "model.layers=1", "data.batch_size=4", "train.max_steps=1", "train.threads=1",
                 f"data.cache_dir={tmp_path}", f"train.out={out}"]) == 0
    err = capsys.readouterr().err
    assert "energy offsets E0 are not determined by the 8 training structures' compositions " \
           "for 2 validation / test composition(s)" in err
    assert '"finetune.e0={H: -13.6, C: -1029.5, ...}"' in err
    # a partial finetune.e0 is refused (the elements left out were silently 0 eV); a whole one
    # is taken as given, and the warning goes
    run = ["finetune", "configs/finetune/forcefield_cpu.yaml", f"data.path={mixed}",
           "data.split_by=molecule", "model.hidden=8", "model.layers=1", "data.batch_size=4",
           "train.max_steps=1", "train.threads=1", f"data.cache_dir={tmp_path}"]
    assert main([*run, "finetune.e0={H: -10.0}", f"train.out={tmp_path / 'p'}"]) == 2
    err = capsys.readouterr().err
    assert "finetune.e0 gives no value for C, O, present in the training structures" in err \
           or "finetune.e0 gives no value for O, present in the training structures" in err, err
    assert not (tmp_path / "p").exists()
    assert main([*run, "finetune.e0={H: -10.0, C: -40.0, O: -100.0}",
                 f"train.out={tmp_path / 'q'}"]) == 0
    assert "not determined" not in capsys.readouterr().err


def test_atomwise_energy_is_extensive_on_a_radius_backbone():
    """Two molecules 40 Å apart: the energy of the pair equals the sum of the parts (float64)."""
    torch.manual_seed(0)
    backbone = build_backbone("schnet", hidden=16, layers=2).double()
    e0 = np.zeros(MAX_Z + 1)
    e0[[1, 6, 8]] = [-13.6, -1029.5, -2041.2]
    objective = EnergyForceRegression(16, head="atomwise", scale=1.7, e0=e0).double()
    a, b = molecule("CH3CH2OH"), molecule("H2O")
    b.positions += [40.0, 0.0, 0.0]

    def energy(*parts):
        z = np.concatenate([p.numbers for p in parts])
        pos = np.concatenate([p.positions for p in parts])
        batch = collate([Molecule(z, pos, hop_matrix(z, pos))]).to(torch.device("cpu"), torch.float64)
        batch = batch.replace(pos=torch.as_tensor(pos, dtype=torch.float64))
        return float(objective.predict(backbone, batch)[0][0])

    assert energy(a, b) == pytest.approx(energy(a) + energy(b), abs=1e-3)  # 1 meV
    assert abs(energy(a) - sum(e0[z] for z in a.numbers)) > 1e-3  # the network contributes


def test_file_to_finetune_evaluate_predict_and_calculator(mixed, tmp_path, capsys):
    import ase.io

    out = tmp_path / "ff"
    assert main(["finetune", "configs/finetune/forcefield_cpu.yaml", f"data.path={mixed}",
                 "data.split_by=structure", "model.hidden=16", "model.layers=2",
                 "data.batch_size=8", "train.epochs=2", "train.threads=1",
                 f"data.cache_dir={tmp_path}", f"train.out={out}"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["energy_head"] == "atomwise" and m["train_size"] + m["valid_size"] + m["test_size"] == 24
    for key in ("test_energy_mae_per_atom_meV", "test_force_rmse_meV_A",
                "baseline_energy_mae_meV", "baseline_force_mae_meV_A"):
        assert np.isfinite(m[key])
    ckpt = torch.load(out / "finetune.pt", weights_only=True)
    assert ckpt["domain"]["elements"] == [1, 6, 8]
    assert set(ckpt["domain"]["compositions"]) <= {"H2O", "CH4O", "C2H6O"}
    capsys.readouterr()

    assert main(["evaluate", str(out / "finetune.pt")]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["force_mae_meV_A"] == pytest.approx(m["test_force_mae_meV_A"], rel=1e-6)
    split = np.load(out / "split.npz")
    assert sorted(np.concatenate([split[k] for k in ("train", "valid", "test")])) == list(range(24))
    frames = ase.io.read(mixed, ":")
    ase.io.write(tmp_path / "other.extxyz", frames[:5])
    assert main(["evaluate", str(out / "finetune.pt"), f"data.path={tmp_path / 'other.extxyz'}",
                 "--split", "all"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 5
    # another file without --split: all of it, said on stderr; --split test of it: its own
    # split, said too (it was a silent 1 frame of 5)
    assert main(["evaluate", str(out / "finetune.pt"), f"data.path={tmp_path / 'other.extxyz'}"]) == 0
    got = capsys.readouterr()
    assert json.loads(got.out)["frames"] == 5 and json.loads(got.out)["split"] == "all"
    assert "is not the training data" in got.err and "every structure" in got.err
    assert main(["evaluate", str(out / "finetune.pt"), f"data.path={tmp_path / 'other.extxyz'}",
                 "--split", "test"]) == 0
    got = capsys.readouterr()
    assert json.loads(got.out)["frames"] < 5 and "that file's own test split" in got.err
    # labels the file does not have: one line naming the file and the labels it has
    for bad in ("data.forces_key=force",):
        assert main(["evaluate", str(out / "finetune.pt"), f"data.path={tmp_path / 'other.extxyz'}",
                     "--split", "all", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the cache's summary
        assert err.startswith("denoise3d: error: ") and "other.extxyz: no " in err, err
        assert "labels read: energy" in err

    ase.io.write(tmp_path / "new.xyz", [molecule("CH3OH"), molecule("C2H6")])
    assert main(["predict", str(out / "finetune.pt"), str(tmp_path / "new.xyz"),
                 "--out", str(tmp_path / "pred.extxyz")]) == 0
    err = capsys.readouterr().err
    assert "1 composition(s) never seen in training (C2H6)" in err
    pred = ase.io.read(tmp_path / "pred.extxyz", ":")
    assert len(pred) == 2 and pred[1].get_forces().shape == (8, 3)

    from denoise3d.md.calculator import Denoise3DCalculator

    calc = Denoise3DCalculator(out / "finetune.pt", dtype="float64")
    methanol = molecule("CH3OH")
    assert calc.get_potential_energy(methanol) == pytest.approx(pred[0].get_potential_energy(),
                                                                abs=1e-4)

    ase.io.write(tmp_path / "nh3.xyz", molecule("NH3"))
    assert main(["predict", str(out / "finetune.pt"), str(tmp_path / "nh3.xyz"),
                 "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "element N never seen in training (trained on H, C, O)" in err and "\n" not in err
    assert not (tmp_path / "p.csv").exists()
    with pytest.raises(ValueError, match="element N never seen"):
        calc.get_potential_energy(molecule("NH3"))
    assert main(["predict", str(out / "finetune.pt"), str(tmp_path / "nh3.xyz"),
                 "--out", str(tmp_path / "p.csv"), "--allow-unseen-elements"]) == 0
    assert "energy (eV)" in (tmp_path / "p.csv").read_text().splitlines()[0]
    # allowed, but said what it means: no trained embedding, no E0
    assert "element N never seen in training: its embedding and its energy offset E0 are untrained" \
        in capsys.readouterr().err


def test_a_force_field_needs_energies_in_the_first_structure(mixed, tmp_path, capsys):
    import ase.io

    frames = ase.io.read(mixed, ":")
    del frames[0].calc.results["energy"]
    ase.io.write(tmp_path / "no_e0.extxyz", frames)
    assert main(["finetune", "configs/finetune/forcefield_cpu.yaml",
                 f"data.path={tmp_path / 'no_e0.extxyz'}", f"data.cache_dir={tmp_path}",
                 f"train.out={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the cache build's report
    assert err.startswith("denoise3d: error: ") and "no_e0.extxyz: finetune.task=energy_force " \
        "needs energies and forces: its first structure has no energy (key 'energy'); labels " \
        "read: mu, forces; data.energy_key=KEY names another key" in err


def test_a_gradient_array_is_named_when_the_forces_are_missing(mixed, tmp_path, capsys):
    import ase.io

    frames = ase.io.read(mixed, ":")
    for a in frames:  # forces stored as a gradient under another name (e.g. ORCA's engrad)
        a.arrays["grad"] = -a.calc.results.pop("forces")
    ase.io.write(tmp_path / "grad.extxyz", frames)
    assert main(["finetune", "configs/finetune/forcefield_cpu.yaml",
                 f"data.path={tmp_path / 'grad.extxyz'}", f"data.cache_dir={tmp_path}",
                 f"train.out={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "its first structure has no forces (key 'forces'); labels read: energy" in err
    assert "energy (key" not in err and "data.energy_key" not in err
    assert "per-atom 3-vectors in it: grad (a gradient" in err and "minus the forces" in err
    assert err.endswith("data.forces_key=KEY names another key")
    assert not (tmp_path / "x").exists()
    assert "data.forces_key=-KEY reads its negative" in err
    # naming the gradient as forces is refused (it trained with the wrong sign, silently) ...
    from denoise3d.data.labelled import read_labelled

    with pytest.raises(ValueError, match=r"grad.extxyz: data.forces_key=grad names a gradient "
                                         r"dE/dx, which is minus the forces: "
                                         r"data.forces_key=-grad reads its negative"):
        read_labelled(tmp_path / "grad.extxyz", forces_key="grad")
    # ... and -grad reads the forces
    specs, records = read_labelled(tmp_path / "grad.extxyz", forces_key="-grad")
    assert [s.name for s in specs] == ["energy", "forces", "mu"]
    reference = ase.io.read(mixed, ":")
    for (_, _, _, forces, *_), a in zip(records, reference, strict=True):
        np.testing.assert_allclose(forces, a.get_forces(), atol=1e-12)
    # trained with -grad, then evaluated against a key it lacks: the same hint in evaluate's error
    out = tmp_path / "g"
    assert main(["finetune", "configs/finetune/forcefield_cpu.yaml",
                 f"data.path={tmp_path / 'grad.extxyz'}", "data.forces_key=-grad",
                 "data.split_by=structure", "model.hidden=16", "model.layers=2", "data.batch_size=8",
                 "train.max_steps=2", "train.threads=1", f"data.cache_dir={tmp_path}",
                 f"train.out={out}"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out / "finetune.pt"), "data.forces_key=forces"]) != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no 'forces' label to evaluate against (labels read: energy" in err
    assert "); per-atom 3-vectors in it: grad (a gradient dE/dx is minus the forces: " \
           "data.forces_key=-KEY reads its negative); data.forces_key names another key" in err


def test_evaluate_knows_its_training_file_by_any_path(mixed, tmp_path, capsys, monkeypatch):
    """The checkpoint records its data files resolved: the training file named from another
    directory, through a symlink or as a byte-identical copy is the training data (its test
    split, no note); a file of other bytes is another file (all of it, with a note)."""
    import shutil

    import ase.io

    run_dir = tmp_path / "project"
    run_dir.mkdir()
    shutil.copy(mixed, run_dir / "m.extxyz")
    monkeypatch.chdir(run_dir)
    assert main(["finetune", str(Path(__file__).resolve().parents[2] / "configs/finetune/forcefield_cpu.yaml"),
                 "data.path=m.extxyz", "data.split_by=structure", "model.hidden=8",
                 "model.layers=1", "data.batch_size=8", "train.epochs=1", "train.threads=1",
                 f"data.cache_dir={tmp_path}", "train.out=ff"]) == 0
    ckpt = run_dir / "ff" / "finetune.pt"
    assert torch.load(ckpt, weights_only=True)["data_files"][0][0] == str(run_dir / "m.extxyz")
    test_frames = json.loads((run_dir / "ff" / "metrics.json").read_text())["test_size"]
    (tmp_path / "link.extxyz").symlink_to(run_dir / "m.extxyz")
    shutil.copy(run_dir / "m.extxyz", tmp_path / "copy.extxyz")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    for same in (run_dir / "m.extxyz", "project/m.extxyz", "link.extxyz", "copy.extxyz"):
        assert main(["evaluate", str(ckpt), f"data.path={same}"]) == 0
        got = capsys.readouterr()
        ev = json.loads(got.out)
        assert ev["split"] == "test" and ev["frames"] == test_frames, same
        assert "note" not in got.err, (same, got.err)
    # no data.path from another directory: the recorded training file, not "m.extxyz" here
    assert main(["evaluate", str(ckpt)]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == test_frames
    ase.io.write(tmp_path / "fewer.extxyz", ase.io.read(run_dir / "m.extxyz", ":")[:5])
    assert main(["evaluate", str(ckpt), "data.path=fewer.extxyz"]) == 0
    got = capsys.readouterr()
    assert json.loads(got.out)["frames"] == 5 and "is not the training data" in got.err
    # a path that does not exist: the loader's error alone, no note before it
    assert main(["evaluate", str(ckpt), "data.path=nope.extxyz"]) == 2
    assert "note" not in capsys.readouterr().err
