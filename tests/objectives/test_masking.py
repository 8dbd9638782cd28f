"""Mask samplers and the AttrMask baseline: exact counts, uniformity, no label in the input."""

import pytest
import torch

from denoise3d.data.elements import MAX_Z, SYMBOLS
from denoise3d.models import EGNN
from denoise3d.objectives import OBJECTIVES, AttrMask
from denoise3d.objectives.masking import (MASK_Z, mask_types, sample_bernoulli_mask,
                                          sample_fraction_mask, type_loss)


def test_mask_token_is_no_element_and_is_embedded():
    assert MASK_Z == 0 and SYMBOLS[MASK_Z] == "X"
    egnn = EGNN(hidden=4, layers=1)
    assert egnn.embedding.num_embeddings == MAX_Z + 1  # row 0 exists, no real atom uses it


def test_fraction_mask_counts_and_uniformity():
    natoms = torch.tensor([1, 2, 5, 7, 20, 29])
    batch = torch.repeat_interleave(torch.arange(6), natoms)
    perm = torch.randperm(batch.numel())  # molecules need not be contiguous
    batch = batch[perm]
    gen = torch.Generator().manual_seed(0)
    expect = torch.tensor([1, 1, 1, 1, 3, 4])  # max(1, ⌊0.15 n⌋), as in the official code
    hits = torch.zeros(batch.numel())
    for _ in range(400):
        mask = sample_fraction_mask(batch, natoms, 0.15, generator=gen)
        counts = torch.zeros(6, dtype=torch.long).index_add_(0, batch, mask.long())
        assert torch.equal(counts, expect)
        hits += mask.float()
    freq = hits / 400  # each atom of molecule m is masked with probability k_m / n_m
    torch.testing.assert_close(freq, (expect / natoms).float()[batch], atol=0.1, rtol=0)
    visible = sample_fraction_mask(batch, natoms, 0.15, min_visible=1)
    counts = torch.zeros(6, dtype=torch.long).index_add_(0, batch, visible.long())
    assert counts.tolist() == [0, 1, 1, 1, 3, 4]  # a 1-atom molecule keeps its only atom


def test_bernoulli_mask_rate():
    mask = sample_bernoulli_mask(20000, 0.75, generator=torch.Generator().manual_seed(0))
    assert abs(float(mask.float().mean()) - 0.75) < 0.02


def test_attrmask_input_never_carries_the_label(helpers, toy):
    b = helpers.make_batch(sizes=(20, 13, 7))
    obj = AttrMask(16).double()
    seen = []
    torch.manual_seed(3)
    masked, mask = obj.corrupt(b)
    assert torch.equal(masked.z, mask_types(b.z, mask)) and (masked.z[mask] == MASK_Z).all()
    assert torch.equal(masked.z[~mask], b.z[~mask]) and torch.equal(masked.pos, b.pos)
    # same random draw, different true types at the masked atoms -> identical input
    other = b.replace(z=torch.where(mask, (b.z % 9) + 1, b.z))
    torch.manual_seed(3)
    masked2, mask2 = obj.corrupt(other)
    assert torch.equal(mask2, mask) and torch.equal(masked2.z, masked.z)

    def spy(batch):
        seen.append(batch.z.clone())
        return toy(batch)

    loss, logs = obj.loss_from_masked(spy, b, masked, mask)
    assert torch.equal(seen[0], masked.z)
    s, _ = toy(masked)
    expected = torch.nn.functional.cross_entropy(obj.type_head(s[mask]), b.z[mask])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12) and set(logs) == {"ce", "acc"}


def test_type_loss_without_masked_atoms_is_zero_and_differentiable(helpers, toy):
    b = helpers.make_batch(sizes=(3, 4))
    s, _ = toy(b)
    loss, acc = type_loss(AttrMask(16).double().type_head, s, b.z, torch.zeros(b.num_atoms, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and acc != acc


def test_attrmask_trains(helpers):
    torch.manual_seed(0)
    b = helpers.make_batch(sizes=(9, 8, 12), dtype=torch.float32)
    backbone, obj = helpers.ToyBackbone(hidden=16), AttrMask(16, mask_ratio=0.3)
    losses = helpers.adam_losses(backbone, obj, b, steps=30)
    assert OBJECTIVES["attrmask"] is AttrMask
    assert losses[-1] < 0.5 * losses[0], losses
    with pytest.raises(ValueError):
        AttrMask(8, mask_ratio=0.0)
