"""The exported TorchScript force field (issue 19): the library's energies, forces and stress to
1e-10 in float64 for every backbone, the calculator's topology cache, and a saved file loaded in
a fresh process where denoise3d cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms

from denoise3d.md.calculator import Denoise3DCalculator
from denoise3d.md.export import ExportedForceField, hops_from_bonds
from denoise3d.models import build_backbone
from denoise3d.objectives.energy_force import EnergyForceRegression
from denoise3d.testing.molecules import molecule, water_box

SMALL = {"egnn": {}, "schnet": {"num_rbf": 8}, "painn": {"num_rbf": 8}, "mace": {"num_rbf": 8},
         "torchmd_et": {"num_rbf": 8, "num_heads": 4}, "gns": {"mlp_hidden": 16, "num_rbf": 8}}


def model(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, hidden=16, layers=2, **SMALL[name])
    return backbone, EnergyForceRegression(16, mean=-300.0, std=10.0, head="atomwise")


def inputs(atoms):
    return (torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions),
            torch.as_tensor(np.asarray(atoms.cell)), torch.as_tensor(atoms.pbc))


def structures(periodic: bool):
    eth, box = molecule("ethanol"), water_box()
    out = [Atoms(numbers=eth.z, positions=eth.pos)]
    if periodic:
        out.append(Atoms(numbers=box.z, positions=box.pos, cell=box.cell, pbc=True))
    return out


@pytest.mark.parametrize("name", sorted(SMALL))
def test_exported_program_equals_the_calculator(name):
    backbone, objective = model(name)
    program = torch.jit.script(ExportedForceField(backbone, objective, [1, 6, 8], torch.float64))
    calc = Denoise3DCalculator(model=(backbone, objective), dtype="float64", compile=False)
    for atoms in structures(periodic=name != "egnn"):
        props = ["energy", "forces"] + (["stress"] if atoms.pbc.all() else [])
        calc.calculate(atoms, props)
        out = program(*inputs(atoms))
        assert abs(float(out["energy"]) - calc.results["energy"]) < 1e-10
        np.testing.assert_allclose(out["forces"].numpy(), calc.results["forces"], atol=1e-10)
        if atoms.pbc.all():
            stress = out["stress"].numpy()[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]  # Voigt
            np.testing.assert_allclose(stress, calc.results["stress"], atol=1e-10)
            assert np.abs(stress).max() > 1e-6
        else:
            assert "stress" not in out


def test_hops_match_the_numpy_perception():
    from denoise3d.data.bonds import bond_list
    from denoise3d.data.bonds import hops_from_bonds as numpy_hops

    box = water_box()
    bi, bj, bs, _ = bond_list(box.z, box.pos, box.cell, box.pbc)
    want = numpy_hops(len(box.z), bi, bj, bs)
    got = hops_from_bonds(len(box.z), *(torch.as_tensor(a) for a in (bi, bj, bs)))
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g.numpy(), w.astype(np.int64))


def test_topology_cache_and_refusals_as_the_calculator():
    """A C-H stretched past the perception threshold (1.15 (r_C + r_H) = 1.23 Å) but short of
    breaking (1.5 (r_C + r_H) = 1.6 Å) keeps its bond in both; a fresh perception drops it."""
    backbone, objective = model("painn")
    program = torch.jit.script(ExportedForceField(backbone, objective, [1, 6, 8], torch.float64))
    calc = Denoise3DCalculator(model=(backbone, objective), dtype="float64", compile=False)
    atoms = structures(periodic=False)[0]
    program(*inputs(atoms))
    calc.calculate(atoms, ["energy"])
    z = atoms.numbers
    c, h = int(np.flatnonzero(z == 6)[0]), None
    d = np.linalg.norm(atoms.positions - atoms.positions[c], axis=1)
    h = int(np.flatnonzero((z == 1) & (d < 1.2))[0])
    stretched = atoms.copy()
    u = (stretched.positions[h] - stretched.positions[c]) / d[h]
    stretched.positions[h] = stretched.positions[c] + 1.4 * u
    kept = float(program(*inputs(stretched))["energy"])
    calc.calculate(stretched, ["energy"])
    assert program.perceived == calc.perceived == 1
    assert abs(kept - calc.results["energy"]) < 1e-10
    program.reset()
    fresh = float(program(*inputs(stretched))["energy"])
    assert program.perceived == 2 and abs(fresh - kept) > 1e-6
    with pytest.raises((RuntimeError, torch.jit.Error), match="never seen in training"):
        program(torch.tensor([7, 1]), torch.tensor([[0.0, 0, 0], [1.0, 0, 0]], dtype=torch.float64),
                torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool))


def test_saved_file_runs_without_denoise3d(tmp_path):
    backbone, objective = model("torchmd_et")
    program = torch.jit.script(ExportedForceField(backbone, objective, [1, 6, 8], torch.float64))
    path = tmp_path / "model.pt"
    program.save(str(path))
    atoms = structures(periodic=True)[1]
    calc = Denoise3DCalculator(model=(backbone, objective), dtype="float64", compile=False)
    calc.calculate(atoms, ["energy", "forces"])
    np.savez(tmp_path / "in.npz", z=atoms.numbers, pos=atoms.positions, cell=np.asarray(atoms.cell),
             pbc=atoms.pbc)
    script = f"""
import json, sys
sys.modules["denoise3d"] = None  # importing it would fail: the file must not need it
import numpy as np, torch, vesin_torch
m = torch.jit.load({str(path)!r})
d = np.load({str(tmp_path / "in.npz")!r})
out = m(*(torch.as_tensor(d[k]) for k in ("z", "pos", "cell", "pbc")))
print(json.dumps({{"energy": float(out["energy"]), "forces": out["forces"].tolist()}}))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    out = json.loads(run.stdout)
    assert abs(out["energy"] - calc.results["energy"]) < 1e-10
    np.testing.assert_allclose(out["forces"], calc.results["forces"], atol=1e-10)


def test_exported_program_refuses_malformed_input_in_one_line():
    """Shapes, an empty structure, atomic numbers out of range, NaN coordinates and two atoms
    within 0.1 Å (the readers' check) are refused with a message, not an index error from deep
    inside the program."""
    backbone, objective = model("painn")
    program = torch.jit.script(ExportedForceField(backbone, objective, list(range(1, 55)), torch.float64))
    z, pos, cell, pbc = inputs(structures(periodic=False)[0])
    for args, match in [((z[:0], pos[:0], cell, pbc), "expected z"),
                        ((z, pos[:-1], cell, pbc), "expected z"),
                        ((torch.full_like(z, 78), pos, cell, pbc), "unsupported element"),
                        ((z, pos * float("nan"), cell, pbc), "non-finite"),
                        ((z, torch.cat([pos[:1], pos[:1] + 0.05, pos[2:]]), cell, pbc),
                         r"atoms 0 and 1 coincide \(closer than 0.1 Å\)"),
                        ((z[:1], pos[:1], 0.05 * torch.eye(3, dtype=torch.float64),
                          torch.ones(3, dtype=torch.bool)), "atom 0 is closer than 0.1 Å to its "
                         "own periodic image")]:
        with pytest.raises(Exception, match=match):
            program(*args)
