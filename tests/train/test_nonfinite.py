"""Non-finite losses and gradients: a clear error naming the batch, or counted skips; safe maths."""

import numpy as np
import pytest
import torch
from torch import nn

from denoise3d.models import backbone_from_config as make_backbone
from denoise3d.config import ModelConfig, TrainConfig
from denoise3d.data.dataset import BatchLoader
from denoise3d.objectives.property import PropertyRegression
from denoise3d.data.batch import Molecule
from denoise3d.testing.molecules import fixture_molecules, molecule_batch
from denoise3d.train.loop import Trainer

POISON = 7  # dataset index of the molecule whose loss (or gradient) goes non-finite


class Poisoned(nn.Module):
    """A property loss that turns NaN (``kind="loss"``) or has a NaN gradient with a finite value
    (``kind="grad"``) on batches holding molecule POISON."""

    def __init__(self, kind: str):
        super().__init__()
        self.inner, self.kind = PropertyRegression(16, "homo"), kind

    def forward(self, backbone, batch):
        loss, logs = self.inner(backbone, batch)
        if POISON in batch.ids.tolist():
            if self.kind == "loss":
                loss = loss * float("nan")
            else:  # sqrt at 0: value 0, gradient inf * 0 = NaN
                loss = loss + torch.sqrt(0.0 * sum(p.sum() for p in self.inner.parameters()))
        return loss, logs


def _run(qm9, tmp_path, kind, mode):
    loader = BatchLoader(qm9, np.arange(32), batch_size=8, shuffle=True, seed=0, drop_last=True)
    cfg = TrainConfig(epochs=2, nonfinite=mode, out=str(tmp_path), log_every=1, tensorboard=False,
                      device="cpu")
    trainer = Trainer(make_backbone(ModelConfig(hidden=16, layers=2)),
                      {"property": (1.0, Poisoned(kind))}, cfg, tmp_path)
    return trainer, trainer.fit(loader)


@pytest.mark.parametrize("kind, words", [("loss", "non-finite loss nan"),
                                         ("grad", "non-finite gradient (norm nan)")])
def test_error_names_the_batch_molecules(qm9, tmp_path, kind, words):
    with pytest.raises(FloatingPointError) as err:
        _run(qm9, tmp_path, kind, "error")
    msg = str(err.value)
    assert words in msg and "molecules [" in msg and str(POISON) in msg and "train.nonfinite=skip" in msg


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_skip_mode_counts_and_logs_skipped_steps(qm9, tmp_path, kind):
    trainer, _ = _run(qm9, tmp_path, kind, "skip")
    assert trainer.skipped == 2 and trainer.step == 8  # one poisoned batch per epoch
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].split(",")[5] == "skipped_steps" and rows[-1].split(",")[5] == "2"
    assert sum(r.split(",")[2] == "nan" for r in rows[1:]) == 2  # the skipped steps' loss


@pytest.mark.parametrize("name", ["egnn", "schnet", "painn", "torchmd_et", "gns"])
def test_gradients_are_finite_for_coincident_and_isolated_atoms(name):
    """Safe norms: two atoms at the same place (d = 0) and a lone atom (no edges in a radius
    graph, one atom in its molecule) give finite energies and gradients."""
    mols = fixture_molecules(["methane", "water"]) + [
        Molecule(z=np.array([1]), pos=np.zeros((1, 3))),  # a one-atom molecule
        Molecule(z=np.array([6, 8]), pos=np.array([[0.0, 0, 0], [40.0, 0, 0]]))]  # 40 Å apart
    batch = molecule_batch(mols, dtype=torch.float32)
    pos = batch.pos.clone()
    pos[1] = pos[0]  # coincident pair in the first molecule
    batch = batch.replace(pos=pos.requires_grad_(True))
    backbone = make_backbone(ModelConfig(backbone=name, hidden=16, layers=2))
    s, _ = backbone(batch)
    s.sum().backward()
    assert torch.isfinite(s).all() and torch.isfinite(batch.pos.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in backbone.parameters() if p.grad is not None)
