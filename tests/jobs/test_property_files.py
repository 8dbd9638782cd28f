"""Property fine-tuning on a label stored in your own file (an SDF tag), end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from denoise3d.cli import main

SMILES = ["CCO", "CO", "CC=O", "CCN", "CCC", "OCCO", "CC(C)O", "CCOC", "NCC=O", "CC#N",
          "OC=O", "CCCO", "CNC", "C=CC", "CC(=O)O", "CCCN"]


@pytest.fixture(scope="module")
def sdf(tmp_path_factory):
    """16 molecules (RDKit conformers) tagged with their GFN2-xTB dipole norm in D (tblite)."""
    from ase import Atoms, units
    from rdkit import Chem
    from rdkit.Chem import AllChem
    from tblite.ase import TBLite

    path = tmp_path_factory.mktemp("sdf") / "mols.sdf"
    writer = Chem.SDWriter(str(path))
    for k, smiles in enumerate(SMILES):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(mol, randomSeed=k)
        AllChem.MMFFOptimizeMolecule(mol)
        atoms = Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()],
                      positions=mol.GetConformer().GetPositions())
        atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
        atoms.get_potential_energy()
        mol.SetProp("mu", repr(float(np.linalg.norm(atoms.calc.results["dipole"])) / units.Debye))
        writer.write(mol)
    writer.close()
    return path


def test_sdf_tag_to_finetune_evaluate_and_predict(sdf, tmp_path, capsys):
    out = tmp_path / "prop"
    assert main(["finetune", "configs/finetune/property_cpu.yaml", f"data.path={sdf}",
                 "finetune.target=mu", "data.units={mu: D}", "data.split_by=molecule",
                 "model.hidden=16", "model.layers=2", "data.batch_size=4", "train.epochs=2",
                 "train.threads=1", f"data.cache_dir={tmp_path}", f"train.out={out}"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["target"] == "mu" and m["unit"] == "D" and np.isfinite(m["baseline_test_mae"])
    assert "mu_mae_D" in (out / "valid.csv").read_text().splitlines()[0]
    capsys.readouterr()
    assert main(["evaluate", str(out / "finetune.pt")]) == 0
    assert json.loads(capsys.readouterr().out)["mu_mae_D"] == pytest.approx(m["test_mae"], rel=1e-6)
    assert main(["predict", str(out / "finetune.pt"), str(sdf), "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == len(SMILES) and rows[0]["smiles"] == "CCO" and "mu (D)" in rows[0]
    assert main(["finetune", "configs/finetune/property_cpu.yaml", f"data.path={sdf}",
                 "finetune.target=gap", f"train.out={tmp_path / 'x'}",
                 f"data.cache_dir={tmp_path}"]) == 2
    assert "unknown finetune.target 'gap' (labels of data.dataset=files: mu)" in capsys.readouterr().err


def test_pretraining_on_a_labelled_file_ignores_its_labels(sdf, tmp_path):
    assert main(["pretrain", "configs/pretrain/emgp_cpu.yaml", "data.dataset=files",
                 f"data.path={sdf}", "data.fractions=[0.75, 0.25, 0.0]", "model.hidden=16",
                 "model.layers=2", "data.batch_size=4", "train.epochs=1", "train.threads=1",
                 f"data.cache_dir={tmp_path}", f"train.out={tmp_path / 'pt'}"]) == 0
    assert (tmp_path / "pt" / "pretrain.pt").is_file()


def test_several_targets_one_head_and_metric_each(sdf, tmp_path, capsys):
    """finetune.targets: one head per label, weighted standardised L1, per-label metrics."""
    (tmp_path / "two.csv").write_text("smiles,gap,mu\n" + "".join(
        f"{s},{5 + 0.1 * k},{1 + 0.05 * k}\n" for k, s in enumerate(SMILES)))
    out = tmp_path / "two"
    assert main(["finetune", "configs/finetune/property_cpu.yaml", f"data.path={tmp_path / 'two.csv'}",
                 "finetune.targets={gap: 1.0, mu: 0.5}", "finetune.readout={gap: sum, mu: mean}",
                 "data.units={gap: eV, mu: D}", "model.hidden=16", "model.layers=2",
                 "data.batch_size=4", "train.epochs=2", "train.threads=1",
                 f"data.cache_dir={tmp_path}", f"train.out={out}"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["target"] == "gap,mu" and {"test_gap_mae_meV", "test_mu_mae_D",
                                        "baseline_gap_mae_meV", "baseline_mu_mae_D"} <= set(m)
    import torch

    ckpt = torch.load(out / "finetune.pt", weights_only=True)
    assert set(ckpt["objectives"]) == {"property/gap", "property/mu"}
    assert ckpt["objectives"]["property/mu"]["params"]["readout"] == "mean"
    assert ckpt["objectives"]["property/gap"]["weight"] == 1.0
    capsys.readouterr()
    assert main(["evaluate", str(out / "finetune.pt")]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["gap_mae_meV"] == pytest.approx(m["test_gap_mae_meV"], rel=1e-6)
    assert main(["predict", str(out / "finetune.pt"), str(sdf), "--out", str(tmp_path / "p.extxyz")]) == 0
    import ase.io

    pred = ase.io.read(tmp_path / "p.extxyz", ":")
    assert {"gap", "mu"} <= set(pred[0].info) and "gap:eV" in pred[0].info["units"]
