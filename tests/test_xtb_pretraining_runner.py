"""The cheap-label pretraining runner's SMILES source (benchmarks/xtb_pretraining/run.py --smiles):
which molecules it keeps, that the fine-tuning target never enters, and that every structure it
writes carries its canonical SMILES (the key that data.split_by=molecule groups frames by)."""

import importlib.util
import json
from pathlib import Path

import ase.io

ROOT = Path(__file__).resolve().parents[1]


def _runner():
    spec = importlib.util.spec_from_file_location("xtb_run", ROOT / "benchmarks/xtb_pretraining/run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smiles_source_filters_and_excludes_the_target(tmp_path):
    run = _runner()
    smiles = tmp_path / "in.smi"
    smiles.write_text("\n".join([
        "OC(=O)c1ccccc1OC(C)=O aspirin-written-otherwise",  # the target: excluded by InChIKey
        "CC(=O)Nc1ccc(O)cc1 paracetamol",                    # kept (11 heavy atoms)
        "CC(=O)Nc1ccc(O)cc1 again",                          # duplicate
        "Clc1ccc(O)cc1CCCCC",                                # Cl: not an element QM9 has
        "CC[N+](C)(C)CCCCCCC",                               # charged
        "CCO",                                               # 3 heavy atoms: below 10
        "CC(=O)Nc1ccc(O)cc1.O",                              # two fragments
        "not-a-smiles",
        "O=C(O)c1ccccc1O salicylic-acid",                    # kept (10 heavy atoms)
    ]) + "\n")
    target = run.smiles_structures(tmp_path, smiles, (10, 20), k=2, seed=0, exclude=[run.ASPIRIN])
    counts = json.loads((tmp_path / "structures.json").read_text())
    assert counts["excluded"] == 1 and counts["duplicate"] == 1 and counts["filtered"] == 5
    assert counts["molecules"] == 2
    frames = ase.io.read(target, ":")
    assert len(frames) == counts["conformers"] >= 2
    assert {f.info["smiles"] for f in frames} == {"CC(=O)Nc1ccc(O)cc1", "O=C(O)c1ccccc1O"}
    assert all(set(f.get_chemical_symbols()) <= {"H", "C", "N", "O"} for f in frames)
    # the target's nearest neighbours are listed, most similar first
    lines = (tmp_path / "neighbours.txt").read_text().splitlines()
    assert lines[0].startswith("# nearest to " + run.ASPIRIN)
    sims = [float(line.split()[0]) for line in lines[1:]]
    assert sims == sorted(sims, reverse=True) and "O=C(O)c1ccccc1O" in lines[1]
    # close analogues of the target go too when asked (salicylic acid: 0.45 to aspirin, paracetamol 0.22)
    again = tmp_path / "strict"
    again.mkdir()
    run.smiles_structures(again, smiles, (10, 20), 1, 0, [run.ASPIRIN], max_similarity=0.3)
    counts = json.loads((again / "structures.json").read_text())
    assert counts["similar"] == 1 and counts["molecules"] == 1
    # made once: a second call returns the file without redoing the conformers
    stamp = target.stat().st_mtime_ns
    assert run.smiles_structures(tmp_path, smiles, (10, 20), 2, 0, [run.ASPIRIN]) == target
    assert target.stat().st_mtime_ns == stamp


def test_overrides_of_the_fine_tuning_need_a_tag(tmp_path):
    import pytest

    run = _runner()
    (tmp_path / "labelled.extxyz").write_text("")  # the stages before are cached
    (tmp_path / "data_args.json").write_text(json.dumps(
        {"molecules": 25000, "rattle": "0.02,0.04", "seed": 0}))
    (tmp_path / "structures.extxyz").write_text("")
    with pytest.raises(SystemExit, match="--finetune-set needs --tag"):
        run.main(["--out", str(tmp_path), "--finetune-set", "train.lr=1e-3"])
