"""Physics checks every backbone must pass, and the transforms they are built from.

Conventions: positions are rows, ``pos`` (n_atoms, 3); an E(3) element acts as
``x ↦ x Rᵀ + t`` (R orthogonal, det ±1); per-molecule transforms are stacked as
``rot`` (n_graphs, 3, 3), ``shift`` (n_graphs, 3) and picked per atom with ``batch.batch``.
Under it energies are invariant, forces and vector features rotate (``F ↦ F Rᵀ``,
``v ↦ R v`` along the xyz axis of v (n_atoms, 3, F)), invariant node features do not change.

:class:`BackbonePhysicsTests` is a pytest mixin (it needs nothing from pytest itself)::

    class TestMyNet(BackbonePhysicsTests):
        def make_backbone(self):
            return MyNet(hidden=16, layers=2)  # small: every test runs it many times

It checks backbone + a fresh :class:`~denoise3d.models.heads.EnergyHead` in float64 on the
fixture molecules of :mod:`denoise3d.testing.molecules`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from denoise3d.data.batch import PER_ATOM_TARGETS, Batch, Molecule, collate
from denoise3d.models.heads import AtomwiseEnergyHead, EnergyHead, energy_and_forces, energy_forces_stress, strained
from denoise3d.testing.molecules import fixture_molecules, water_box

__all__ = [
    "assert_factorised_matches_reference",
    "random_rotation", "random_transform", "apply_transform", "rotate_vectors", "transform_batch",
    "permute_molecules", "assert_close_scaled", "evaluate", "BackbonePhysicsTests",
]


# ----------------------------------------------------------------------------- transforms
def random_rotation(dtype: torch.dtype = torch.float64, reflect: bool = False, *,
                    n: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Haar-random rotation (det +1), or rotoreflection (det −1) if ``reflect``.

    Returns (3, 3), or (n, 3, 3) when ``n`` is given. Built as Q of the QR decomposition of a
    Gaussian matrix with the signs of R's diagonal moved into Q, then one column flipped as needed.
    """
    a = torch.randn((3, 3) if n is None else (n, 3, 3), dtype=dtype, generator=generator)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # (..., 3, 3)
    want = -1.0 if reflect else 1.0
    flip = torch.where(torch.linalg.det(q) * want < 0, -1.0, 1.0).to(dtype)  # (...,)
    q = q.clone()
    q[..., :, 0] = q[..., :, 0] * flip.unsqueeze(-1)
    return q


def random_transform(n_graphs: int, dtype: torch.dtype = torch.float64, *, rotate: bool = True,
                     reflect: bool = False, translate: bool = True, scale: float = 10.0,
                     generator: torch.Generator | None = None):
    """Per-molecule ``(rot (n_graphs, 3, 3), shift (n_graphs, 3))``; shifts ~ N(0, scale²) Å."""
    if rotate or reflect:
        rot = random_rotation(dtype, reflect, n=n_graphs, generator=generator)
    else:
        rot = torch.eye(3, dtype=dtype).expand(n_graphs, 3, 3).clone()
    shift = torch.randn(n_graphs, 3, dtype=dtype, generator=generator) * scale
    return rot, (shift if translate else torch.zeros_like(shift))


def _per_atom(t: torch.Tensor, batch: torch.Tensor | None, per_graph_dim: int) -> torch.Tensor:
    """Pick per-molecule transforms per atom when ``t`` is stacked over molecules."""
    if t.dim() == per_graph_dim:
        if batch is None:
            raise ValueError("per-molecule transforms need the batch vector")
        return t[batch]
    return t


def apply_transform(pos: torch.Tensor, rot: torch.Tensor, shift: torch.Tensor | None = None,
                    batch: torch.Tensor | None = None) -> torch.Tensor:
    """``x Rᵀ + t`` for pos (n_atoms, 3); rot (3, 3) or (n_graphs, 3, 3) with ``batch``."""
    r = _per_atom(rot, batch, 3)  # (3, 3) or (n_atoms, 3, 3)
    out = pos @ r.t() if r.dim() == 2 else torch.einsum("aij,aj->ai", r, pos)  # (n_atoms, 3)
    if shift is not None:
        out = out + _per_atom(shift, batch, 2)
    return out


def rotate_vectors(v: torch.Tensor, rot: torch.Tensor,
                   batch: torch.Tensor | None = None) -> torch.Tensor:
    """``R v`` for vectors (n_atoms, 3) or vector features (n_atoms, 3, F); no translation."""
    r = _per_atom(rot, batch, 3)
    r = r.expand(v.shape[0], 3, 3) if r.dim() == 2 else r  # (n_atoms, 3, 3)
    if v.dim() == 2:
        return torch.einsum("aij,aj->ai", r, v)
    return torch.einsum("aij,ajf->aif", r, v)


def transform_batch(batch: Batch, rot: torch.Tensor, shift: torch.Tensor | None = None) -> Batch:
    """A copy of ``batch`` with transformed positions (edges and types are unchanged)."""
    return batch.replace(pos=apply_transform(batch.pos, rot, shift, batch.batch))


def permute_molecules(mols: list[Molecule], generator: torch.Generator | None = None):
    """Shuffle the atoms inside each molecule; returns ``(new_mols, perm)``.

    ``perm`` (n_atoms,) int64 maps the collated batches: ``new.pos == old.pos[perm]``. Hop
    matrices and per-atom targets are permuted along, so re-collating keeps edge types consistent.
    """
    new, perm, offset = [], [], 0
    for m in mols:
        p = torch.randperm(len(m.z), generator=generator).numpy()
        targets = {k: (np.asarray(v)[p] if k in PER_ATOM_TARGETS else v)
                   for k, v in m.targets.items()}
        hops = None if m.hops is None else m.hops[np.ix_(p, p)]
        new.append(dataclasses.replace(m, z=m.z[p], pos=m.pos[p], hops=hops, targets=targets))
        perm.append(torch.from_numpy(p) + offset)
        offset += len(m.z)
    return new, torch.cat(perm)


# ----------------------------------------------------------------------------- checks
def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str):
    """``|actual − expected| ≤ rtol · max|expected|`` elementwise (scale-aware closeness)."""
    scale = expected.abs().max().clamp_min(1e-30)
    err = (actual - expected).abs().max()
    assert err <= rtol * scale, f"{what}: max error {err:.3e} > {rtol:.1e} × scale {scale:.3e}"


def evaluate(backbone: nn.Module, head: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """Energy (n_graphs,), forces −∂E/∂pos (n_atoms, 3), node features s and v (or None)."""
    pos = batch.pos.detach().requires_grad_(True)
    b = batch.replace(pos=pos)
    s, v = backbone(b)
    energy = head(s, b)  # (n_graphs,)
    (grad,) = torch.autograd.grad(energy.sum(), pos)
    return {"energy": energy.detach(), "forces": -grad, "s": s.detach(),
            "v": None if v is None else v.detach()}


class BackbonePhysicsTests:
    """Mixin of physics tests for a backbone; define :meth:`make_backbone` (built in float64).

    Class attributes tune it: ``rtol`` (symmetries, relative to each quantity's largest entry),
    ``fd_rtol``/``fd_step`` (finite differences, Å), ``n_fd_coords``, ``seed``.
    """

    rtol = 1e-9
    fd_rtol = 1e-6
    fd_step = 1e-4
    n_fd_coords = 24
    seed = 0
    periodic = True  # radius backbones; False: periodic input must be refused (EGNN)

    def make_backbone(self) -> nn.Module:
        raise NotImplementedError("a BackbonePhysicsTests subclass must define make_backbone()")

    def make_molecules(self) -> list[Molecule]:
        return fixture_molecules()

    # -- helpers
    def _setup(self):
        """(backbone, head, molecules, batch) in float64, eval mode, seeded."""
        torch.manual_seed(self.seed)
        backbone = self.make_backbone().to(torch.float64).eval()
        mols = self.make_molecules()
        batch = collate(mols).to(dtype=torch.float64)
        s, _ = backbone(batch)
        head = EnergyHead(s.shape[-1]).to(torch.float64).eval()
        return backbone, head, mols, batch

    def _generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + 1000 + offset)

    def _check_e3(self, rotate: bool, reflect: bool, translate: bool):
        backbone, head, _, batch = self._setup()
        rot, shift = random_transform(batch.num_graphs, rotate=rotate, reflect=reflect,
                                      translate=translate, generator=self._generator())
        ref = evaluate(backbone, head, batch)
        out = evaluate(backbone, head, transform_batch(batch, rot, shift))
        assert_close_scaled(out["energy"], ref["energy"], self.rtol, "energy invariance")
        assert_close_scaled(out["forces"], rotate_vectors(ref["forces"], rot, batch.batch),
                            self.rtol, "force equivariance")
        assert_close_scaled(out["s"], ref["s"], self.rtol, "node feature invariance")
        if ref["v"] is not None:
            assert_close_scaled(out["v"], rotate_vectors(ref["v"], rot, batch.batch), self.rtol,
                                "vector feature equivariance")

    # -- tests
    def test_rotation(self):
        self._check_e3(rotate=True, reflect=False, translate=False)

    def test_reflection(self):
        self._check_e3(rotate=True, reflect=True, translate=False)

    def test_translation(self):
        self._check_e3(rotate=False, reflect=False, translate=True)

    def test_rotation_reflection_translation(self):
        self._check_e3(rotate=True, reflect=True, translate=True)

    def test_permutation(self):
        backbone, head, mols, batch = self._setup()
        new_mols, perm = permute_molecules(mols, self._generator())
        new_batch = collate(new_mols).to(dtype=torch.float64)
        assert torch.equal(new_batch.pos, batch.pos[perm])
        ref, out = evaluate(backbone, head, batch), evaluate(backbone, head, new_batch)
        assert_close_scaled(out["energy"], ref["energy"], self.rtol, "energy permutation")
        assert_close_scaled(out["forces"], ref["forces"][perm], self.rtol, "force permutation")
        assert_close_scaled(out["s"], ref["s"][perm], self.rtol, "node feature permutation")
        if ref["v"] is not None:
            assert_close_scaled(out["v"], ref["v"][perm], self.rtol, "vector permutation")

    def test_forces_match_finite_differences(self):
        """−∂E/∂x_a against central differences (E(x + h e) − E(x − h e)) / 2h, float64."""
        backbone, head, _, batch = self._setup()
        forces = evaluate(backbone, head, batch)["forces"]
        assert forces.abs().max() > 0, "forces are identically zero: the check would be vacuous"
        g = self._generator()
        n = min(self.n_fd_coords, forces.numel())
        coords = torch.randperm(forces.numel(), generator=g)[:n]
        directions = [torch.zeros_like(batch.pos).view(-1).index_fill_(0, c.view(1), 1.0)
                      .view_as(batch.pos) for c in coords]
        directions += [torch.randn(batch.pos.shape, dtype=batch.pos.dtype, generator=g)
                       for _ in range(3)]

        def total_energy(pos):
            with torch.no_grad():
                s, _ = backbone(batch.replace(pos=pos))
                return head(s, batch).sum()

        h = self.fd_step
        for u in directions:
            fd = (total_energy(batch.pos + h * u) - total_energy(batch.pos - h * u)) / (2 * h)
            analytic = -(forces * u).sum()
            tol = self.fd_rtol * max(float(analytic.abs()), float(forces.abs().max()))
            assert abs(float(fd - analytic)) <= tol, \
                f"dE/du: finite difference {float(fd):.10e} vs autograd {float(analytic):.10e}"

    def test_no_cross_talk_between_molecules(self):
        """∂E_A/∂x_B is exactly zero for molecules A ≠ B of one batch."""
        backbone, head, _, batch = self._setup()
        pos = batch.pos.detach().requires_grad_(True)
        b = batch.replace(pos=pos)
        s, _ = backbone(b)
        energy = head(s, b)
        for g in range(batch.num_graphs):
            (grad,) = torch.autograd.grad(energy[g], pos, retain_graph=True)
            other = batch.batch != g
            assert torch.count_nonzero(grad[other]) == 0, f"molecule {g} leaks into others"
            assert torch.count_nonzero(grad[~other]) > 0, f"molecule {g} has no forces"

    def test_degenerate_geometries_are_finite(self):
        """float32 (the training dtype): two atoms on one spot, an atom 1000 Å from its molecule
        (no neighbour inside any cutoff), a one-atom molecule (no edges at all). Features,
        energies, forces and the double-backward parameter gradients of a force loss (the EFP
        path) are finite, and the lone atom feels no force."""
        torch.manual_seed(self.seed)
        backbone = self.make_backbone().float()
        lone = Molecule(z=np.array([8]), pos=np.zeros((1, 3)))
        mols = [*self.make_molecules()[:2], lone]
        batch = collate(mols).to(dtype=torch.float32)
        pos = batch.pos.clone()
        pos[1] = pos[0]  # first molecule: atoms 0 and 1 coincide
        first = int(batch.natoms[0])
        pos[first] += 1000.0  # second molecule: its first atom far away from the others
        batch = batch.replace(pos=pos)
        s, _ = backbone(batch)
        head = EnergyHead(s.shape[-1])
        energy, forces, s = energy_and_forces(backbone, head, batch, create_graph=True)
        assert torch.isfinite(s).all() and torch.isfinite(energy).all(), "non-finite features"
        assert torch.isfinite(forces).all(), "non-finite forces"
        assert torch.count_nonzero(forces[-1]) == 0, "the one-atom molecule feels a force"
        (forces.square().sum() + energy.sum()).backward()
        for name, p in backbone.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), f"non-finite gradient: {name}"

    # -- periodic structures (issue 18)
    def _periodic(self, mols):
        """(backbone, atomwise energy head, batch) of periodic structures in the bonded form,
        float64."""
        torch.manual_seed(self.seed)
        backbone = self.make_backbone().to(torch.float64).eval()
        batch = collate(mols, graph="bonded").to(dtype=torch.float64)
        batch = batch.replace(  # full precision (collate stores float32): images differ by exact lattice vectors
            pos=torch.from_numpy(np.concatenate([np.asarray(m.pos, np.float64) for m in mols])),
            cell=torch.from_numpy(np.stack([np.zeros((3, 3)) if m.cell is None else
                                            np.asarray(m.cell, np.float64) for m in mols])))
        # the extensive head (Σ_i e(s_i)): the one for periodic systems, and supercells add up
        head = AtomwiseEnergyHead(backbone(batch)[0].shape[-1]).to(torch.float64).eval()
        return backbone, head, batch

    def _refused(self) -> bool:
        """For a backbone without periodic support: a one-line error on a periodic box."""
        if self.periodic:
            return False
        backbone = self.make_backbone().to(torch.float64).eval()
        batch = collate([water_box()], graph="bonded").to(dtype=torch.float64)
        try:
            backbone(batch)
        except ValueError as e:
            assert "periodic" in str(e) and "\n" not in str(e)
            return True
        raise AssertionError("a backbone with periodic = False accepted a periodic box")

    def test_bonded_form_equals_full_graph(self):
        """Molecules: the bonded form (linear, used for large structures) gives what the full
        graph gives."""
        if self._refused():
            return
        backbone, head, mols, batch = self._setup()
        bonded = collate(mols, graph="bonded").to(dtype=torch.float64)
        ref, out = evaluate(backbone, head, batch), evaluate(backbone, head, bonded)
        assert_close_scaled(out["energy"], ref["energy"], self.rtol, "bonded-form energy")
        assert_close_scaled(out["forces"], ref["forces"], self.rtol, "bonded-form forces")

    def test_periodic_images_and_wrapping(self):
        """Moving atoms by lattice vectors (another image of the same crystal) changes nothing."""
        if self._refused():
            return
        box = water_box()
        backbone, head, batch = self._periodic([box])
        ref = evaluate(backbone, head, batch)
        assert ref["forces"].abs().max() > 0
        lattice = np.random.default_rng(self.seed).integers(-2, 3, size=(len(box.z), 3))
        moved = Molecule(z=box.z, pos=box.pos + lattice @ box.cell, cell=box.cell, pbc=box.pbc)
        out = evaluate(backbone, head, self._periodic([moved])[2])
        assert_close_scaled(out["energy"], ref["energy"], self.rtol, "energy under re-wrapping")
        assert_close_scaled(out["forces"], ref["forces"], self.rtol, "forces under re-wrapping")

    def test_periodic_rotation_and_translation(self):
        """Rotating positions and cell together, and translating the positions: E invariant,
        forces rotate."""
        if self._refused():
            return
        box = water_box()
        backbone, head, batch = self._periodic([box])
        ref = evaluate(backbone, head, batch)
        rot = random_rotation(generator=self._generator()).numpy()
        turned = Molecule(z=box.z, pos=box.pos @ rot.T + np.array([0.3, -1.7, 2.2]),
                          cell=box.cell @ rot.T, pbc=box.pbc)
        out = evaluate(backbone, head, self._periodic([turned])[2])
        assert_close_scaled(out["energy"], ref["energy"], self.rtol, "periodic energy invariance")
        assert_close_scaled(out["forces"], ref["forces"] @ torch.from_numpy(rot).T, self.rtol,
                            "periodic force equivariance")

    def test_supercell_energy_per_atom(self):
        """A 2×2×2 supercell has 8× the energy of its cell and the same forces on each copy."""
        if self._refused():
            return
        box = water_box()
        backbone, head, batch = self._periodic([box])
        ref = evaluate(backbone, head, batch)
        shifts = np.array([[a, b, c] for a in range(2) for b in range(2) for c in range(2)])
        big = Molecule(z=np.tile(box.z, 8),
                       pos=np.concatenate([box.pos + s @ box.cell for s in shifts]),
                       cell=box.cell * 2.0, pbc=box.pbc)
        out = evaluate(backbone, head, self._periodic([big])[2])
        assert_close_scaled(out["energy"] / 8, ref["energy"], self.rtol, "supercell energy / 8")
        assert_close_scaled(out["forces"], ref["forces"].repeat(8, 1), self.rtol, "supercell forces")

    def test_periodic_forces_and_stress_match_finite_differences(self):
        """F = −∂E/∂x and σ = (1/V) ∂E/∂ε against central differences in float64, with a
        molecule in the same batch (no cross-talk: it has no stress, so it is batched alone)."""
        if self._refused():
            return
        box = water_box(tilt=0.4)
        backbone, head, batch = self._periodic([box])
        energy, forces, stress, _ = energy_forces_stress(backbone, head, batch)
        assert stress.abs().max() > 0
        ref = evaluate(backbone, head, batch)
        assert_close_scaled(forces, ref["forces"], self.rtol, "forces of the stress path")

        def e(b):
            with torch.no_grad():
                return head(backbone(b)[0], b).sum()

        h, g = self.fd_step, self._generator()
        for _ in range(4):
            u = torch.randn(batch.pos.shape, dtype=torch.float64, generator=g)
            fd = (e(batch.replace(pos=batch.pos + h * u)) - e(batch.replace(pos=batch.pos - h * u))) / (2 * h)
            analytic = -(forces * u).sum()
            assert abs(float(fd - analytic)) <= self.fd_rtol * max(float(analytic.abs()),
                                                                   float(forces.abs().max()))
        volume = float(torch.linalg.det(batch.cell[0]).abs())
        for a, b in [(0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (2, 0)]:
            unit = torch.zeros(1, 3, 3, dtype=torch.float64)
            unit[0, a, b] = 1.0  # strained() symmetrises: dE/dh = V σ_ab
            fd = (e(strained(batch, h * unit)) - e(strained(batch, -h * unit))) / (2 * h) / volume
            analytic = float(stress[0, a, b])
            assert abs(float(fd) - analytic) <= self.fd_rtol * float(stress.abs().max()), \
                f"stress {a}{b}: finite difference {float(fd):.8e} vs autograd {analytic:.8e}"

    def test_periodic_batch_equals_single_structures(self):
        """A periodic box and a molecule in one batch: each as alone (no cross-talk)."""
        if self._refused():
            return
        mols = [water_box(), self.make_molecules()[2], water_box(seed=1, tilt=0.0)]
        backbone, head, batch = self._periodic(mols)
        ref = evaluate(backbone, head, batch)
        for g, mol in enumerate(mols):
            one = evaluate(backbone, head, self._periodic([mol])[2])
            atoms = batch.batch == g
            assert_close_scaled(one["energy"], ref["energy"][g:g + 1], self.rtol, "batched energy")
            assert_close_scaled(one["forces"], ref["forces"][atoms], self.rtol, "batched forces")

    def test_batch_equals_single_molecules(self):
        backbone, head, mols, batch = self._setup()
        ref = evaluate(backbone, head, batch)
        for g, mol in enumerate(mols):
            one = evaluate(backbone, head, collate([mol]).to(dtype=torch.float64))
            atoms = batch.batch == g
            assert_close_scaled(one["energy"], ref["energy"][g:g + 1], self.rtol, "batched energy")
            assert_close_scaled(one["forces"], ref["forces"][atoms], self.rtol, "batched forces")
            assert_close_scaled(one["s"], ref["s"][atoms], self.rtol, "batched features")


def assert_factorised_matches_reference(model: nn.Module, head: nn.Module, batch: Batch,
                                        rtol: float = 1e-10, atol: float = 1e-12) -> None:
    """A backbone's fast path (``model.factorised = True``) equals its straightforward form:
    features, energies, forces and the parameter gradients of a force loss (double backward)."""

    def run(factorised):
        model.factorised = factorised
        model.zero_grad()
        energy, forces, s = energy_and_forces(model, head, batch, create_graph=True)
        forces.square().sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        return [energy.detach(), forces.detach(), s.detach(), *grads]

    for a, b in zip(run(True), run(False)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
