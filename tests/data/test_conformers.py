"""The conformer generator: test-split filter, k conformers, parallel workers, CLI pretraining."""

from __future__ import annotations

import json

import numpy as np
import pytest

from denoise3d.data.conformers import SplitFilter, conformers, generate, read_smiles_file
from denoise3d.data.dataset import MolecularDataset
from denoise3d.data.storage import open_cache


def test_split_filter_matches_any_spelling():
    f = SplitFilter(["CCO", "C[C@H](N)C(=O)O"])
    assert f("OCC") and f("C(O)C") and f("[CH3][CH2][OH]")
    assert f("C[C@@H](N)C(=O)O") and f("CC(N)C(=O)O")  # stereoisomers: excluded (conservative)
    assert not f("CCN") and not f("CCCO") and not f("not a smiles")


def test_qm9_test_split_filter(qm9, tmp_path):
    """The real EGNN / 3D-EMGP QM9 test split: its molecules are excluded in any spelling."""
    from rdkit import Chem

    from denoise3d.data.splits import qm9_split

    split = qm9_split(len(qm9), seed=0, legacy_rng=True, path=tmp_path)
    test = [qm9.smiles(int(i)) for i in split["test"]]
    f = SplitFilter(test)
    assert f.n == 13_083
    rng = np.random.default_rng(0)
    for i in rng.choice(len(test), 20, replace=False):
        shuffled = Chem.MolToSmiles(Chem.MolFromSmiles(test[i]), doRandom=True)
        assert f(test[i]) and f(shuffled)
    test_keys = {Chem.MolToInchiKey(Chem.MolFromSmiles(s)) for s in test[:2000]}
    train = [qm9.smiles(int(i)) for i in split["train"][:300]]
    kept = [s for s in train if not f(s)]
    assert len(kept) > 250  # QM9 has few duplicate graphs across splits
    assert not {Chem.MolToInchiKey(Chem.MolFromSmiles(s)) for s in kept} & test_keys


def test_conformers_k_lowest_energy():
    confs = conformers("CCCCO", k=3, seed=0)
    assert 1 <= len(confs) <= 3
    energies = [e for _, _, e in confs]
    assert energies == sorted(energies)
    z, pos, _ = confs[0]
    assert z.tolist().count(1) == 10 and pos.shape == (len(z), 3)
    assert conformers("not a smiles") == []


def test_generate_workers_and_exclusion(tmp_path):
    smiles = ["CCO", "CCN", "c1ccccc1O", "bad(", "CC(=O)O"]
    one = generate(smiles, tmp_path / "w1", k=2, exclude=SplitFilter(["OCC"]), progress=False)
    two = generate(smiles, tmp_path / "w2", k=2, workers=2, exclude=SplitFilter(["OCC"]),
                   progress=False)
    assert one == two and one["excluded"] == 1 and one["failed"] == 1 and one["molecules"] == 3
    a, m = open_cache(tmp_path / "w1")
    b, _ = open_cache(tmp_path / "w2")
    np.testing.assert_array_equal(a["pos"], b["pos"])  # deterministic: per-molecule seeds
    ds = MolecularDataset.from_manifest(a, m)
    assert len(ds) == one["conformers"] and "CCO" not in {ds.smiles(i) for i in range(len(ds))}


def test_cli_conformers_then_pretrain(tmp_path, capsys):
    from denoise3d.cli import main

    (tmp_path / "mols.smi").write_text("smiles\nCCO\nCCN\nCC(=O)O\nc1ccccc1\nCCCC\n")
    (tmp_path / "test.smi").write_text("NCC\n")
    assert read_smiles_file(tmp_path / "mols.smi")[0] == "CCO"
    assert main(["data", "conformers", str(tmp_path / "mols.smi"), "--k", "2", "--exclude",
                 str(tmp_path / "test.smi"), "--out", str(tmp_path / "set"), "--quiet"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["excluded"] == 1 and counts["molecules"] == 4
    assert main(["pretrain", "data.dataset=structures", f"data.path={tmp_path / 'set'}",
                 "model.hidden=16", "model.layers=2", "train.max_steps=2", "data.batch_size=2",
                 "train.threads=1", f"train.out={tmp_path / 'run'}"]) == 0
    assert (tmp_path / "run" / "pretrain.pt").is_file()
    assert main(["pretrain", "data.dataset=structures"]) == 2  # needs data.path


def test_xtb_relaxation_moves_atoms():
    (z, mmff, _), = conformers("O", k=1, seed=0)
    (_, relaxed, _), = conformers("O", k=1, seed=0, xtb_steps=5)
    assert z.tolist() == [8, 1, 1] and 1e-3 < np.abs(relaxed - mmff).max() < 0.2
