"""EnergyForceRegression: E and F = −∇E in eV, the 3D-EMGP loss, training-split statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from denoise3d.config import load_config
from denoise3d.jobs.energy_force import energy_force_objective, report
from denoise3d.objectives.energy_force import EnergyForceRegression
from denoise3d.units import KCALMOL_EV


@pytest.fixture
def labelled(helpers):
    b = helpers.make_batch()
    g = torch.Generator().manual_seed(7)
    return b.replace(targets={"energy": -300.0 + torch.randn(b.num_graphs, generator=g,
                                                             dtype=torch.float64),
                              "forces": torch.randn(b.num_atoms, 3, generator=g,
                                                    dtype=torch.float64)})


def test_energy_is_destandardised_and_forces_are_its_negative_gradient(toy, labelled):
    obj = EnergyForceRegression(16, mean=-300.0, std=2.5).double()
    s, _ = toy(labelled)
    raw = obj.head(s, labelled)
    energy, forces = obj.predict(toy, labelled)
    torch.testing.assert_close(energy, raw * 2.5 - 300.0)
    # F = −∂E/∂x against central finite differences, float64
    h, atom = 1e-5, 4
    for axis in range(3):
        shifted = []
        for sign in (1, -1):
            pos = labelled.pos.clone()
            pos[atom, axis] += sign * h
            shifted.append(obj.predict(toy, labelled.replace(pos=pos))[0].sum())
        fd = -(shifted[0] - shifted[1]) / (2 * h)
        assert float(forces[atom, axis]) == pytest.approx(float(fd), rel=1e-6, abs=1e-8)


def test_loss_is_weighted_standardised_l1(toy, labelled):
    obj = EnergyForceRegression(16, energy_weight=0.2, force_weight=0.8, mean=-300.0,
                                std=2.0).double()
    energy, forces = obj.predict(toy, labelled)
    e_mae = (energy - labelled.targets["energy"]).abs().mean()
    f_mae = (forces - labelled.targets["forces"]).abs().mean()
    loss, logs = obj(toy, labelled)
    torch.testing.assert_close(loss, (0.2 * e_mae + 0.8 * f_mae) / 2.0)
    assert logs["energy_mae_meV"] == pytest.approx(1000 * float(e_mae))
    assert logs["force_mae_meV_A"] == pytest.approx(1000 * float(f_mae))


def test_force_loss_trains_the_backbone_through_the_double_backward(toy, labelled):
    obj = EnergyForceRegression(16, energy_weight=0.0, force_weight=1.0).double().train()
    loss, _ = obj(toy, labelled)
    loss.backward()
    grads = [p.grad for p in toy.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert obj.head.mlp[0].weight.grad.abs().sum() > 0


def test_eval_under_no_grad(toy, labelled):
    obj = EnergyForceRegression(16).double().eval()
    with torch.no_grad():
        loss, _ = obj(toy, labelled)
        energy, forces = obj.predict(toy, labelled)
    assert torch.isfinite(loss) and not forces.requires_grad and forces.abs().sum() > 0


def test_statistics_come_from_the_training_frames(tmp_path):
    class Frames:  # what energy_force_objective reads from a trajectory dataset
        target_names, atom_target_names = ("energy",), ("forces",)
        labels: dict = {}  # none declared (made outside a source): its stored arrays say

        def target(self, name):
            return np.array([1.0, 3.0, 100.0, 200.0])

    cfg = load_config(None, ["model.hidden=8", "finetune.energy_weight=0.5",
                             "finetune.energy_head=mlp_of_sum"])  # mean and std: this head
    obj = energy_force_objective(cfg, Frames(), [0, 1])
    assert float(obj.mean) == 2.0 and float(obj.std) == 1.0 and obj.energy_weight == 0.5


def test_report_units():
    out = report({"energy_mae": KCALMOL_EV, "force_mae": 0.001})
    assert out["energy_mae_kcal_mol"] == pytest.approx(1.0)
    assert out["energy_mae_meV"] == pytest.approx(1000 * KCALMOL_EV)
    assert out["force_mae_meV_A"] == pytest.approx(1.0)
    assert out["force_mae_kcal_mol_A"] == pytest.approx(0.001 / KCALMOL_EV)
