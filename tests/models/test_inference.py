"""The inference program (issue 19): the tensor-level potential equals the training path, the
compiled program equals the eager one, and the calculator's cached-topology graph equals the
batch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from denoise3d.data.batch import collate
from denoise3d.md.calculator import Denoise3DCalculator
from denoise3d.models import build_backbone
from denoise3d.models.inference import ForceField
from denoise3d.objectives.energy_force import EnergyForceRegression
from denoise3d.testing.molecules import molecule, molecule_batch, water_box

SMALL = {"egnn": {}, "schnet": {"num_rbf": 8}, "painn": {"num_rbf": 8}, "mace": {"num_rbf": 8},
         "torchmd_et": {"num_rbf": 8, "num_heads": 4}, "gns": {"mlp_hidden": 16, "num_rbf": 8},
         "gns_tat": {"mlp_hidden": 16, "num_rbf": 8, "layers": 10, "eta": 0.5}}


def field(name, head="atomwise", dtype=torch.float64):
    torch.manual_seed(0)
    kw = {"hidden": 16, "layers": 2, **SMALL[name]}
    backbone = build_backbone(name, **kw).to(dtype).eval()
    objective = EnergyForceRegression(16, mean=-300.0, std=10.0, head=head).to(dtype).eval()
    return backbone, objective


@pytest.mark.parametrize("name", sorted(SMALL))
def test_potential_equals_the_training_path(name):
    """ForceField (eager) gives objective.predict's energies and forces on a batch of molecules
    and, for radius backbones, on a periodic box (float64, 1e-10)."""
    backbone, objective = field(name, head="mlp_of_sum" if name == "egnn" else "atomwise")
    batches = [molecule_batch()]
    if name != "egnn":
        batches.append(collate([water_box(), molecule("ethanol")], graph="bonded").to(dtype=torch.float64))
    ff = ForceField(backbone, objective, compile=False)
    for batch in batches:
        e0, f0 = objective.predict(backbone, batch)
        e, f = ff(batch)
        assert e.dtype == torch.float64 and f.shape == f0.shape
        torch.testing.assert_close(e, e0, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(f, f0, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["painn"])
def test_compiled_equals_eager_in_float32(name):
    """The compiled program (torch.compile of grad_and_value, dynamic shapes) reproduces the
    eager one to 1e-5 relative in float32, for batches of different sizes without recompiling
    into wrong results."""
    backbone, objective = field(name, dtype=torch.float32)
    eager, compiled = ForceField(backbone, objective, False), ForceField(backbone, objective, True)
    for mols in (None, [molecule("ethanol"), molecule("water")]):
        batch = molecule_batch(mols, dtype=torch.float32)
        e0, f0 = eager(batch)
        e, f = compiled(batch)
        assert compiled.compile, "the compiled program fell back to eager"
        assert float((e - e0).abs().max()) <= 1e-5 * float(e0.abs().max())
        assert float((f - f0).abs().max()) <= 1e-5 * float(f0.abs().max())


def test_calculator_graph_from_the_cached_topology_equals_the_batch():
    """The calculator's per-call graph (vesin pairs + hop types looked up in the cached
    topology, no batch) gives the batch path's energy and forces, on a periodic box whose cell is
    shorter than twice the cutoff (images) and on a molecule."""
    backbone, objective = field("painn")
    calc = Denoise3DCalculator(model=(backbone, objective), dtype="float64", compile=False)
    box = water_box()
    ethanol = molecule("ethanol")
    for atoms in (Atoms(numbers=box.z, positions=box.pos, cell=box.cell, pbc=True),
                  Atoms(numbers=ethanol.z, positions=ethanol.pos)):
        atoms.calc = calc
        forces = atoms.get_forces()
        e0, f0 = objective.predict(backbone, calc.batch(atoms))
        assert abs(atoms.get_potential_energy() - float(e0[0])) < 1e-9
        np.testing.assert_allclose(forces, f0.numpy(), rtol=1e-9, atol=1e-10)
