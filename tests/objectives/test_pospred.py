"""PosPred baseline: corruption, no leak of the masked positions, exact target, symmetry, training."""

import pytest
import torch
from torch import nn

from denoise3d.models.ops import scatter_sum
from denoise3d.objectives import OBJECTIVES, PosPred


class Oracle(nn.Module):
    """A 'vector head' that returns a fixed displacement (to check the loss's target)."""

    def __init__(self, disp):
        super().__init__()
        self.disp = disp

    def forward(self, s, v, batch):
        return self.disp


def test_masked_atoms_sit_at_the_visible_centroid(helpers):
    b = helpers.make_batch(sizes=(20, 7, 1, 3))
    torch.manual_seed(0)
    moved, mask = PosPred(16).corrupt(b)
    counts = scatter_sum(mask.long(), b.batch, b.num_graphs)
    assert counts.tolist() == [3, 1, 0, 1]  # max(1, ⌊0.15 n⌋), one atom always visible
    assert torch.equal(moved.pos[~mask], b.pos[~mask])
    for g in range(b.num_graphs):
        sel = b.batch == g
        vis = sel & ~mask
        torch.testing.assert_close(moved.pos[sel & mask],
                                   b.pos[vis].mean(0).expand_as(moved.pos[sel & mask]))


def test_visible_centroid_does_not_leak_positions_but_the_paper_centroid_does(helpers):
    b = helpers.make_batch(sizes=(9, 12))
    torch.manual_seed(1)
    moved, mask = PosPred(16).corrupt(b)
    elsewhere = b.replace(pos=torch.where(mask.unsqueeze(-1), b.pos + 3.0, b.pos))
    torch.manual_seed(1)
    moved2, _ = PosPred(16).corrupt(elsewhere)
    assert torch.equal(moved2.pos, moved.pos)  # the input is blind to the masked positions
    # centroid="all" (the paper): with one masked atom m, x_m − μ = Σ_{j visible} (μ − x_j)
    torch.manual_seed(1)
    moved_all, mask_all = PosPred(16, centroid="all").corrupt(b)
    for g in range(b.num_graphs):
        sel = b.batch == g
        (m,) = torch.nonzero(sel & mask_all).flatten().tolist()  # 1 masked atom in n ≤ 13
        mu = moved_all.pos[m]
        recovered = mu + (mu - moved_all.pos[sel & ~mask_all]).sum(0)
        torch.testing.assert_close(recovered, b.pos[m], rtol=1e-12, atol=1e-12)


def test_exact_displacement_gives_zero_loss_and_target_sign(helpers, toy):
    b = helpers.make_batch()
    obj = PosPred(16).double()
    torch.manual_seed(2)
    moved, mask = obj.corrupt(b)
    obj.head = Oracle(b.pos - moved.pos)  # Δ = X − X': points from the centroid back to X
    loss, logs = obj.loss_from_moved(toy, b, moved, mask)
    assert loss.item() < 1e-28 and logs["mse"] < 1e-28  # (x' + (x − x')) − x rounds
    obj.head = Oracle(torch.zeros_like(b.pos))  # no move: error = ‖μ − x_i‖² on masked atoms
    loss, _ = obj.loss_from_moved(toy, b, moved, mask)
    expected = ((moved.pos - b.pos) ** 2).sum(-1)[mask].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("vector", ["direct", "gradient"])
def test_loss_is_e3_invariant(helpers, toy, gen, vector):
    """Same mask, molecule moved by g ∈ E(3): same loss (equivariant head, invariant target)."""
    b, n = helpers.make_batch(), helpers.make_batch().num_graphs
    obj = PosPred(16, vector=vector).double()
    torch.manual_seed(4)
    moved, mask = obj.corrupt(b)
    loss, _ = obj.loss_from_moved(toy, b, moved, mask)
    g = helpers.random_e3(n, gen)
    loss_g, _ = obj.loss_from_moved(toy, b.replace(pos=helpers.apply_e3(b.pos, b.batch, *g)),
                                    moved.replace(pos=helpers.apply_e3(moved.pos, b.batch, *g)),
                                    mask)
    assert abs(loss_g.item() - loss.item()) < 1e-10 * loss.item()


def test_pospred_trains(helpers):
    torch.manual_seed(0)
    b = helpers.make_batch(sizes=(9, 8, 12), dtype=torch.float32)
    backbone, obj = helpers.ToyBackbone(hidden=16), PosPred(16, mask_ratio=0.3)
    losses = helpers.adam_losses(backbone, obj, b, steps=30)
    assert OBJECTIVES["pospred"] is PosPred
    assert losses[-1] < 0.7 * losses[0], losses
    for bad in ({"centroid": "origin"}, {"vector": "x"}, {"mask_ratio": 2.0}):
        with pytest.raises(ValueError):
            PosPred(8, **bad)
