"""Periodic structures and the bonded (linear) form of a batch (issue 18): bonds by the minimum
image, hop types equal to the dense ones, neighbour pairs equal to ASE's."""

import numpy as np
import pytest
import torch

from denoise3d.data.batch import Molecule, collate
from denoise3d.data.bonds import bonded_pairs, hop_matrix
from denoise3d.models.neighbours import neighbour_pairs, radius_edges
from denoise3d.testing import fixture_molecules
from denoise3d.testing.molecules import molecule, water_box


def dense(n, i, j, hop):
    out = np.full((n, n), 4, np.int8)
    np.fill_diagonal(out, 0)
    out[i, j] = hop
    return out


@pytest.mark.parametrize("m", fixture_molecules(), ids=lambda m: str(len(m.z)))
def test_bonded_pairs_equal_the_dense_hops(m):
    i, j, shift, hop = bonded_pairs(m.z, m.pos)
    assert np.array_equal(dense(len(m.z), i, j, hop), hop_matrix(m.z, m.pos))
    assert not shift.any()


def test_a_molecule_across_the_boundary_keeps_its_bonds():
    """Ethanol wrapped into a 6 Å cell: by the minimum image its hops are the unwrapped ones
    (a molecular reader without the cell would see 4-6 Å 'bonds')."""
    m = molecule("ethanol")
    cell = np.diag([6.0, 6.5, 7.0])
    pos = m.pos - m.pos.mean(0)  # across the corner at the origin
    wrapped = pos % np.diag(cell)
    i, j, shift, hop = bonded_pairs(m.z, wrapped, cell, np.ones(3, bool))
    assert shift.any()  # some bonds go through an image
    assert np.array_equal(dense(len(m.z), i, j, hop), hop_matrix(m.z, pos))
    bond = hop == 1
    d = np.linalg.norm(wrapped[j[bond]] + shift[bond] @ cell - wrapped[i[bond]], axis=1)
    assert d.max() < 1.6  # C-C 1.5 Å, not a 4.4 Å "bond"
    with pytest.raises(ValueError, match="periodic"):
        collate([Molecule(z=m.z, pos=wrapped, cell=cell, pbc=np.ones(3, bool))])  # full graph


def test_neighbour_pairs_equal_ase():
    """A triclinic water box whose cell is shorter than twice the cutoff (several images of a
    pair), batched between two molecules: the pairs are ASE's, never across structures."""
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    box = water_box()
    mols = [molecule("ethanol"), box, molecule("water")]
    batch = collate(mols, graph="bonded").to(dtype=torch.float64)
    batch = batch.replace(pos=torch.from_numpy(np.concatenate([m.pos for m in mols])),
                          cell=torch.from_numpy(np.stack([np.zeros((3, 3)), box.cell, np.zeros((3, 3))])))
    cutoff = 5.0
    i, j, s = neighbour_pairs(batch, cutoff)
    got = {(int(a), int(b), *map(int, c)) for a, b, c in zip(i, j, s)}
    assert len(got) == len(i)
    want, start = set(), 0
    for m in mols:
        atoms = Atoms(numbers=m.z, positions=m.pos, cell=m.cell if m.cell is not None else None,
                      pbc=m.pbc is not None)
        a, b, c = neighbor_list("ijS", atoms, cutoff)
        want |= {(int(x) + start, int(y) + start, *map(int, t)) for x, y, t in zip(a, b, c)}
        start += len(m.z)
    assert got == want
    g = radius_edges(batch, cutoff)
    per = box.cell
    assert (g.shift.abs().sum(1) > 0).sum() > 0
    first = len(mols[0].z)
    k = torch.nonzero(g.shift.abs().sum(1) > 0)[0, 0]
    a, b = int(g.edge_index[0, k]), int(g.edge_index[1, k])
    expect = box.pos[b - first] + g.shift[k].numpy() @ per - box.pos[a - first]
    np.testing.assert_allclose(g.vec[k].numpy(), expect, atol=1e-12)


def test_edge_types_of_images():
    """Each radius edge of the box has its pair's hop type: 1-hop only for an O-H of one
    molecule through the right image, 2-hop for its H-H, other for everything else."""
    box = water_box()
    batch = collate([box], graph="bonded").to(dtype=torch.float64)
    g = radius_edges(batch, 5.0)
    i, j = g.edge_index
    d = g.dist
    bonded = g.edge_type == 0
    assert int(bonded.sum()) == 2 * 16 and float(d[bonded].max()) < 1.2
    assert int((g.edge_type == 1).sum()) == 2 * 8  # H-H of each water
    assert float(d[g.edge_type == 3].min()) > 1.2
    z = batch.z
    assert bool(((z[i[bonded]] == 8) ^ (z[j[bonded]] == 8)).all())
