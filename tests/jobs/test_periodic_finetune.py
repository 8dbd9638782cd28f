"""Periodic labelled data end to end (issue 18): GFN2-xTB labels of a water box through
`data xtb-label`, an extxyz with Lattice / pbc read as a periodic dataset, fine-tuning a radius
backbone, then the calculator (energy, forces, stress) from the checkpoint; EGNN and 3D-EMGP are
refused before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms

from denoise3d.cli import main
from denoise3d.config import load_config
from denoise3d.data.sources import load_data
from denoise3d.testing.molecules import molecule


def small_box(k: int) -> Atoms:
    """Two waters in a 4.6 Å cell, displaced by frame: wrapped across the boundary."""
    rng = np.random.default_rng(k)
    w = molecule("water")
    pos = np.concatenate([w.pos - w.pos.mean(0), w.pos - w.pos.mean(0) + [2.3, 2.3, 2.3]])
    pos = pos + rng.normal(0, 0.04, pos.shape) - [0.4, 0.4, 0.4]
    atoms = Atoms(numbers=np.tile(w.z, 2), positions=pos, cell=np.eye(3) * 4.6, pbc=True)
    atoms.wrap()
    return atoms


@pytest.fixture(scope="module")
def boxes(tmp_path_factory):
    import ase.io

    root = tmp_path_factory.mktemp("pbc")
    ase.io.write(root / "boxes.extxyz", [small_box(k) for k in range(8)])
    assert main(["data", "xtb-label", str(root / "boxes.extxyz"), "--out",
                 str(root / "labelled.extxyz"), "--quiet"]) == 0
    return root / "labelled.extxyz"


def test_labelled_periodic_frames_are_read_with_their_cells(boxes, tmp_path):
    import ase.io

    frames = ase.io.read(boxes, ":")
    assert len(frames) == 8 and frames[0].pbc.all() and frames[0].get_stress().shape == (6,)
    cfg = load_config("configs/finetune/forcefield_cpu.yaml",
                      [f"data.path={boxes}", f"data.cache_dir={tmp_path}", "data.split_by=structure"])
    ds, split = load_data(cfg.data)
    assert ds.has_cells and len(ds) == 8
    m = ds.molecule(3)
    np.testing.assert_allclose(m.cell, frames[3].cell.array)
    batch = ds.batch([0, 3])
    assert batch.periodic and not batch.full_graph and batch.cell.shape == (2, 3, 3)
    assert int((batch.edge_type == 0).sum()) == 2 * 2 * 4  # 4 O-H bonds per frame, both ways
    assert bool(batch.edge_shift.any())  # some bond goes through an image


def test_finetune_a_radius_backbone_on_periodic_frames(boxes, tmp_path, capsys):
    from denoise3d.md.calculator import Denoise3DCalculator

    out = tmp_path / "ff"
    common = [f"data.path={boxes}", "data.split_by=structure", "model.hidden=16",
              "model.layers=2", "data.batch_size=4", "train.epochs=2", "train.threads=1",
              f"data.cache_dir={tmp_path}"]
    assert main(["finetune", "configs/finetune/forcefield_cpu.yaml", *common,
                 "model.backbone=painn", "model.num_rbf=null", f"train.out={out}"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(m["test_force_mae_meV_A"])
    import ase.io

    atoms = ase.io.read(boxes, 0)
    calc = Denoise3DCalculator(out / "finetune.pt", dtype="float64")
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy()) and atoms.get_stress().shape == (6,)
    capsys.readouterr()
    bad = tmp_path / "egnn"
    assert main(["finetune", "configs/finetune/forcefield_cpu.yaml", *common,
                 f"train.out={bad}"]) != 0
    err = capsys.readouterr().err
    assert "periodic structures" in err and "radius backbone" in err and not bad.exists()
    assert torch.get_default_dtype() == torch.float32


def test_periodic_and_molecular_frames_do_not_mix(boxes, tmp_path):
    import ase.io

    frames = ase.io.read(boxes, ":")
    mol = frames[1].copy()
    mol.pbc = False
    mol.calc = frames[1].calc
    ase.io.write(tmp_path / "mixed.extxyz", [frames[0], mol])
    cfg = load_config("configs/finetune/forcefield_cpu.yaml",
                      [f"data.path={tmp_path / 'mixed.extxyz'}", f"data.cache_dir={tmp_path}"])
    with pytest.raises(ValueError, match="not periodic, unlike the first structure"):
        load_data(cfg.data)


def test_denoising_pretrains_on_periodic_frames_and_3d_emgp_refuses(boxes, tmp_path, capsys):
    """Zaidi et al.'s Gaussian denoising on periodic cells (a radius backbone with vector
    features); 3D-EMGP's rotation-based noise is refused before anything is written."""
    common = ["data.dataset=structures", f"data.path={boxes}", f"data.cache_dir={tmp_path}",
              "model.backbone=painn", "model.hidden=16", "model.layers=2", "data.batch_size=4",
              "train.max_steps=2", "train.threads=1"]
    out = tmp_path / "pre"
    assert main(["pretrain", "configs/pretrain/zaidi_denoise_cpu.yaml", *common,
                 "model.iterations=null", "model.mlp_hidden=null", f"train.out={out}"]) == 0
    assert (out / "pretrain.pt").is_file()
    capsys.readouterr()
    bad = tmp_path / "emgp"
    assert main(["pretrain", "configs/pretrain/emgp_cpu.yaml", *common, f"train.out={bad}"]) != 0
    err = capsys.readouterr().err
    assert "3D-EMGP" in err and "rotate" in err and not bad.exists()


def test_stress_labels_train_the_stress(boxes, tmp_path, capsys):
    """finetune.stress_weight: the xTB stress (extxyz calculator results) is a label; the loss and
    the metrics include it; molecular data with stress_weight is a one-line error."""
    out = tmp_path / "stress"
    assert main(["finetune", "configs/finetune/forcefield_cpu.yaml", f"data.path={boxes}",
                 "data.split_by=structure", "model.hidden=16", "model.layers=2",
                 "data.batch_size=4", "train.epochs=2", "train.threads=1",
                 f"data.cache_dir={tmp_path}", "model.backbone=schnet", "model.num_rbf=null",
                 "finetune.stress_weight=0.5", f"train.out={out}"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(m["test_stress_mae_GPa"]) and m["test_stress_mae_GPa"] > 0
    assert "stress_mae_meV_A3" in (out / "log.csv").read_text().splitlines()[0]
    from denoise3d.jobs.energy_force import load_force_field

    _, _, objective, _ = load_force_field(out / "finetune.pt")
    assert objective.stress_weight == 0.5 and float(objective.stress_scale) > 0
    capsys.readouterr()
    from denoise3d.testing.molecules import labelled_frames
    import ase.io

    ase.io.write(tmp_path / "mols.extxyz", labelled_frames(n_per=3))
    assert main(["finetune", "configs/finetune/forcefield_cpu.yaml",
                 f"data.path={tmp_path / 'mols.extxyz'}", "data.split_by=structure",
                 f"data.cache_dir={tmp_path}", "finetune.stress_weight=0.5",
                 f"train.out={tmp_path / 'bad'}"]) != 0
    assert "needs periodic structures with stress labels" in capsys.readouterr().err


def test_predict_keeps_the_cell_and_matches_the_calculator(boxes, tmp_path, capsys):
    """`predict` on periodic frames: the calculator's energy, forces and stress, cells kept; an
    EGNN checkpoint refuses them (found from outside: predict used to drop the cell)."""
    import ase.io

    from denoise3d.md.calculator import Denoise3DCalculator

    out = tmp_path / "ff"
    common = [f"data.path={boxes}", "data.split_by=structure", "model.hidden=16",
              "model.layers=2", "data.batch_size=4", "train.max_steps=3", "train.threads=1",
              f"data.cache_dir={tmp_path}"]
    assert main(["finetune", "configs/finetune/forcefield_cpu.yaml", *common,
                 "model.backbone=schnet", "model.num_rbf=null", f"train.out={out}"]) == 0
    capsys.readouterr()
    assert main(["predict", str(out / "finetune.pt"), str(boxes), "--out",
                 str(tmp_path / "pred.extxyz")]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"]["stress"] == "eV/Å³"  # the unit stated
    pred = ase.io.read(tmp_path / "pred.extxyz", ":")
    assert "stress:eV/Å³" in pred[0].info["units"]
    assert main(["predict", str(out / "finetune.pt"), str(boxes), "--out",
                 str(tmp_path / "pred.csv")]) == 0
    rows = (tmp_path / "pred.csv").read_text().splitlines()
    assert rows[0].endswith("stress_xx (eV/Å³),stress_yy (eV/Å³),stress_zz (eV/Å³),"
                            "stress_yz (eV/Å³),stress_xz (eV/Å³),stress_xy (eV/Å³)")
    first = [float(v) for v in rows[1].split(",")[-6:]]
    frames = ase.io.read(boxes, ":")
    calc = Denoise3DCalculator(out / "finetune.pt")
    for p, f in zip(pred[:3], frames[:3]):
        assert p.pbc.all() and np.allclose(p.cell.array, f.cell.array)
        f.calc = calc
        assert p.get_potential_energy() == pytest.approx(f.get_potential_energy(), abs=1e-4)
        np.testing.assert_allclose(p.get_forces(), f.get_forces(), atol=1e-4)
        np.testing.assert_allclose(p.get_stress(), f.get_stress(), atol=1e-5)
    np.testing.assert_allclose(first, pred[0].get_stress(), atol=1e-7)
    # a molecule between periodic frames: its own batch, no stress; the boxes keep theirs
    water = Atoms(numbers=[8, 1, 1], positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    ase.io.write(tmp_path / "mixed.extxyz", [frames[0], water, frames[1]])
    assert main(["predict", str(out / "finetune.pt"), str(tmp_path / "mixed.extxyz"), "--out",
                 str(tmp_path / "mixed.csv")]) == 0
    rows = [r.split(",") for r in (tmp_path / "mixed.csv").read_text().splitlines()[1:]]
    assert [r[2] for r in rows] == [str(len(frames[0])), "3", str(len(frames[1]))]
    assert rows[1][-6:] == [""] * 6
    np.testing.assert_allclose([float(v) for v in rows[0][-6:]], pred[0].get_stress(), atol=1e-7)
    np.testing.assert_allclose([float(v) for v in rows[2][-6:]], pred[1].get_stress(), atol=1e-7)
    egnn = tmp_path / "egnn"
    import ase

    mols = [ase.Atoms(numbers=f.numbers, positions=f.positions) for f in frames]
    for m, f in zip(mols, frames):
        from ase.calculators.singlepoint import SinglePointCalculator

        m.calc = SinglePointCalculator(m, energy=f.get_potential_energy(), forces=f.get_forces())
    ase.io.write(tmp_path / "mols.extxyz", mols)
    assert main(["finetune", "configs/finetune/forcefield_cpu.yaml",
                 f"data.path={tmp_path / 'mols.extxyz'}", *common[1:], f"train.out={egnn}"]) == 0
    capsys.readouterr()
    assert main(["predict", str(egnn / "finetune.pt"), str(boxes), "--out",
                 str(tmp_path / "bad.extxyz")]) != 0
    assert "not defined for periodic structures" in capsys.readouterr().err
    assert not (tmp_path / "bad.extxyz").exists()


def test_objectives_that_need_a_molecule_are_refused_before_writing(boxes, tmp_path, capsys):
    """Denoising with a direct vector head on a backbone without vector features (the edge
    readout) and position prediction (a centroid target) are refused on periodic data, with the
    fix named, before the output folder exists."""
    common = ["data.dataset=structures", f"data.path={boxes}", f"data.cache_dir={tmp_path}",
              "data.batch_size=4", "train.max_steps=2", "train.threads=1"]
    for config, extra, words in [
            ("zaidi_denoise_cpu.yaml", ["model.backbone=gns", "model.hidden=16", "model.layers=1",
                                        "model.iterations=1", "model.mlp_hidden=16"],
             "set vector: gradient"),
            ("pospred_cpu.yaml", ["model.backbone=painn", "model.hidden=16", "model.layers=2"],
             "centroid")]:
        out = tmp_path / config
        assert main(["pretrain", f"configs/pretrain/{config}", *common, *extra,
                     f"train.out={out}"]) != 0
        last = capsys.readouterr().err.strip().splitlines()[-1]  # after the cache's build lines
        assert last.startswith("denoise3d: error:") and words in last and not out.exists(), last


def test_bad_periodic_files_are_one_line_errors_naming_the_frame(boxes, tmp_path):
    import ase.io

    frames = ase.io.read(boxes, ":")
    flat = frames[2].copy()
    flat.calc = frames[2].calc
    flat.cell[2] = 0.0
    ase.io.write(tmp_path / "flat.extxyz", [frames[0], frames[1], flat])
    mol = frames[1].copy()
    mol.calc = frames[1].calc
    mol.pbc = False
    ase.io.write(tmp_path / "mixed.extxyz", [frames[0], mol])
    for name, words in (("flat.extxyz", "frame 2: pbc=.* no length in a periodic direction"),
                        ("mixed.extxyz", "frame 1: not periodic, unlike the first structure")):
        cfg = load_config("configs/finetune/forcefield_cpu.yaml",
                          [f"data.path={tmp_path / name}", f"data.cache_dir={tmp_path}"])
        with pytest.raises(ValueError, match=words) as e:
            load_data(cfg.data)
        assert "\n" not in str(e.value)


def test_large_structures_sum_their_energy_in_float64():
    """Found from outside: a float32 sum of thousands of atom energies was off by ~1 eV. Two
    far-apart halves of a 3,000-atom cluster now add up in float32 too."""
    from denoise3d.data.batch import Molecule, collate
    from denoise3d.models import build_backbone
    from denoise3d.models.heads import AtomwiseEnergyHead

    torch.manual_seed(0)
    backbone = build_backbone("schnet", hidden=16, layers=1, cutoff=4.0, num_rbf=8)
    head = AtomwiseEnergyHead(16, scale=1.0)
    w = molecule("water")
    grid = np.stack(np.meshgrid(*[np.arange(10)] * 3, indexing="ij"), -1).reshape(-1, 3) * 3.1
    pos = np.concatenate([w.pos + g for g in grid])
    z = np.tile(w.z, len(grid))

    def energy(p):
        batch = collate([Molecule(z=z[:len(p)], pos=p)], graph="bonded")
        with torch.no_grad():
            return float(head(backbone(batch)[0], batch)[0])

    half = len(pos) // 2
    far = pos.copy()
    far[half:] += 1000.0
    assert energy(far) == pytest.approx(energy(pos[:half]) + energy(pos[half:]), abs=2e-3)
