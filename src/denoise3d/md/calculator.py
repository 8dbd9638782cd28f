"""An ASE calculator serving a fine-tuned force field (``finetune.task=energy_force``).

Energies in eV, forces in eV/Å, stress in eV/Å³ (ASE's units and conventions, also ours: the
stress is ``(1/V) ∂E/∂ε`` in Voigt order xx, yy, zz, yz, xz, xy, positive under tension).

Structures: molecules for every backbone; periodic cells (``atoms.pbc``, any directions) for the
radius backbones (SchNet, PaiNN, TorchMD-ET, GNS), with stress when all three directions are
periodic. EGNN is defined on the fully connected graph of a molecule (3D-EMGP) and refuses a
periodic structure with a one-line error.

Each call builds the one-structure :class:`~denoise3d.data.batch.Batch` of the current positions
with the 3D-EMGP hop edge types: for EGNN the full graph, for radius backbones the bonded form
(linear in the number of atoms; the backbone's own neighbour search runs inside its forward). The
bond graph (covalent radii, minimum image) is checked on every call in linear time, on the pairs
of the radius graph's own neighbour search (one search per call): while the
atomic numbers, the periodic directions and the bonds stay the same (in whatever cell: NPT
changes it every step) the cached hop types are reused; when one
changes (another structure, a bond formed, a bond stretched past ``BREAK_FACTOR``) the hops are
perceived again from the new geometry (:mod:`denoise3d.data.bonds`). Structures with an element
absent from the training data are refused (``allow_unseen_elements=True`` lifts that); a
composition never seen in training is warned about once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from denoise3d.config import device_named
from denoise3d.data.batch import Batch, Molecule, collate, hops_to_edge_type
from denoise3d.data.bonds import (BOND_FACTOR, bond_list, bond_search_cutoff, hops_from_bonds,
                                  pair_keys)
from denoise3d.data.elements import COVALENT_RADII
from denoise3d.models.heads import voigt
from denoise3d.models.inference import ForceField
from denoise3d.models.neighbours import OTHER, search_pairs

__all__ = ["Denoise3DCalculator"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# A bond counts as broken only beyond 1.5 (r_i + r_j) (C-H: 1.6 Å), not at the perception
# threshold 1.15 (r_i + r_j) (C-H: 1.23 Å), which thermal C-H stretches cross at MD temperatures:
# with the threshold alone the hop types flickered during the 300 K NVE run of
# tests/md/test_dynamics.py and the total energy jumped (a discontinuous energy surface).
BREAK_FACTOR = 1.5


class Topology:
    """The bond graph and hop pairs of one structure (all arrays numpy): ``z`` (N,), ``pbc`` (3,), ``bonds`` (i, j, shift) and ``pairs`` (i, j, shift, hop) as
    :func:`denoise3d.data.bonds.hops_from_bonds` returns them."""

    def __init__(self, z, pos, cell, pbc):
        self.z, self.pbc = z.copy(), pbc.copy()
        bi, bj, bs, _ = bond_list(z, pos, cell, pbc)
        self.bonds = (bi, bj, bs)
        self.pairs = hops_from_bonds(len(z), bi, bj, bs)
        self.reach = int(np.abs(bs).max()) if len(bs) else 0

    def same_atoms(self, z, pbc) -> bool:
        return np.array_equal(self.z, z) and np.array_equal(self.pbc, pbc)

    def bonds_changed(self, pos, cell, pairs=None) -> bool:
        """A cached bond longer than ``BREAK_FACTOR`` (r_i + r_j), or a new bonded pair closer than
        the perception threshold, in the current cell (NPT changes it every step); linear in the
        number of atoms. ``pairs``: this geometry's neighbour pairs ``(i, j, S)`` numpy, from a
        search at least :func:`~denoise3d.data.bonds.bond_search_cutoff` wide (the radius graph of the same call),
        so that no second neighbour search is needed; None searches."""
        bi, bj, bs = self.bonds
        r = COVALENT_RADII[self.z]
        d = np.linalg.norm(pos[bj] + bs @ cell - pos[bi], axis=1)
        if (d > BREAK_FACTOR * (r[bi] + r[bj])).any():
            return True
        if pairs is None:
            ni, nj, ns, _ = bond_list(self.z, pos, cell, self.pbc)
        else:
            ni, nj, ns = pairs
            dn = np.linalg.norm(pos[nj] + ns @ cell - pos[ni], axis=1)
            bonded = dn < BOND_FACTOR * (r[ni] + r[nj])
            ni, nj, ns = ni[bonded], nj[bonded], ns[bonded]
        reach = max(self.reach, int(np.abs(ns).max()) if len(ns) else 0)
        now = pair_keys(ni, nj, ns, len(self.z), reach)
        return not np.isin(now, pair_keys(bi, bj, bs, len(self.z), reach)).all()

    def dense_hops(self) -> np.ndarray:
        """(N, N) hop matrix (EGNN's full graph; molecules only)."""
        n = len(self.z)
        i, j, _, hop = self.pairs
        hops = np.full((n, n), 4, np.int8)
        np.fill_diagonal(hops, 0)
        hops[i, j] = hop
        return hops


class Denoise3DCalculator(Calculator):
    """``Denoise3DCalculator(checkpoint, device="cpu")``: energy (eV), forces (eV/Å) and, for a
    fully periodic cell on a radius backbone, stress (eV/Å³).

    ``topology``: "auto" (default) re-perceives the hop types when the bond graph changes;
    "fixed" keeps the first structure's while the atomic numbers stay the same (MD of one
    molecule whose bonds must not change, as its force field was trained).

    ``dtype`` "float32" (default) or "float64" (e.g. for finite-difference checks). ``model``:
    a ``(backbone, objective)`` pair to serve instead of a checkpoint (tests, notebooks).

    ``compile`` (default True): energies and forces run as one compiled inference program
    (:class:`~denoise3d.models.inference.ForceField`; ~30-60 s to compile on the first call,
    then several times faster per call); False runs the same program eagerly. While the
    topology is unchanged a call only searches neighbours (vesin) and looks their hop types up
    in the cached topology: no batch is built. Stress runs on the eager path.
    """

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, checkpoint: str | Path | None = None, device: str = "cpu",
                 dtype: str | torch.dtype = "float32", model: tuple | None = None,
                 allow_unseen_elements: bool = False, topology: str = "auto",
                 compile: bool = True, **kwargs):
        super().__init__(**kwargs)
        if (checkpoint is None) == (model is None):
            raise ValueError("give either a checkpoint or model=(backbone, objective)")
        self.device = device_named(device)  # a bad name fails before the checkpoint loads
        self.domain = None  # the training domain (checkpoints only)
        if model is None:
            from denoise3d.jobs.energy_force import load_force_field

            _, backbone, objective, self.domain = load_force_field(
                checkpoint, allow_unseen=allow_unseen_elements)
        else:
            backbone, objective = model
        self.dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        self.backbone = backbone.to(self.device, self.dtype).eval()
        self.objective = objective.to(self.device, self.dtype).eval()
        self.full_graph = bool(getattr(backbone, "full_graph", False))  # EGNN
        if topology not in ("auto", "fixed"):
            raise ValueError(f"topology must be 'auto' or 'fixed', got {topology!r}")
        self.fixed = topology == "fixed"  # keep the first bond graph while the atoms are the same
        self.topology: Topology | None = None
        self.perceived = 0  # how many times the hop types were perceived (tests, diagnostics)
        self.forcefield = ForceField(self.backbone, self.objective, compile=compile)
        self._inputs_of: tuple | None = None  # (topology, its tensors) for potential_inputs

    def reset_topology(self) -> None:
        """Perceive bonds again from the next structure."""
        self.topology = None

    def current_topology(self, atoms, pairs=None, pairs_cutoff: float = 0.0) -> Topology:
        """The cached topology while the atoms, the periodic directions and the bonds are unchanged
        (:meth:`Topology.bonds_changed`, given this geometry's neighbour ``pairs`` (i, j, S)
        within ``pairs_cutoff`` Å when they reach far enough), else perceived again from this
        geometry (and the training domain checked)."""
        z, pos = atoms.get_atomic_numbers(), atoms.get_positions()
        cell, pbc = np.asarray(atoms.cell.array, np.float64), np.asarray(atoms.pbc, bool)
        t = self.topology
        if t is not None and t.same_atoms(z, pbc):
            if pairs is not None and pairs_cutoff < bond_search_cutoff(z):
                pairs = None
            if self.fixed or not t.bonds_changed(pos, cell, pairs):
                return t
        from denoise3d.data.readers import checked

        checked(z, pos, "Denoise3DCalculator")  # each new structure: elements, finite, no overlap
        if self.domain is not None:
            from denoise3d.data.elements import MAX_Z

            self.domain.check(np.bincount(z, minlength=MAX_Z + 1), "Denoise3DCalculator")
        self.topology = Topology(z, pos, cell, pbc)
        self.perceived += 1
        return self.topology

    def hops(self, atoms) -> np.ndarray:
        """(N, N) bond hops of a molecule (:meth:`current_topology`)."""
        return self.current_topology(atoms).dense_hops()

    def batch(self, atoms) -> Batch:
        """The one-structure batch of ``atoms`` at full precision, on the calculator's device."""
        z, pos = atoms.get_atomic_numbers(), atoms.get_positions()
        self.refuse_periodic_full_graph(atoms)
        topo = self.current_topology(atoms)
        if self.full_graph:
            batch = collate([Molecule(z=z, pos=pos, hops=topo.dense_hops())])
        else:
            i, j, shift, hop = topo.pairs
            n = len(z)
            batch = Batch(
                z=torch.from_numpy(z.astype(np.int64)), pos=torch.from_numpy(pos),
                batch=torch.zeros(n, dtype=torch.long), natoms=torch.tensor([n]),
                edge_index=torch.from_numpy(np.stack([i, j])),
                edge_type=hops_to_edge_type(torch.from_numpy(hop.astype(np.int64))),
                ids=torch.tensor([0]), edge_shift=torch.from_numpy(shift),
                cell=torch.from_numpy(np.asarray(atoms.cell.array, np.float64)).unsqueeze(0),
                pbc=torch.from_numpy(np.asarray(atoms.pbc, bool)).unsqueeze(0))
        batch = batch.to(self.device, self.dtype)
        return batch.replace(pos=torch.as_tensor(pos, dtype=self.dtype, device=self.device))

    def potential_inputs(self, atoms, pos: torch.Tensor):
        """``(z, graph index, edge_index, edge_type, offset)`` of ``atoms`` for the force field's
        potential (:class:`denoise3d.models.inference.Potential`) from the cached topology: the
        atom tensors and EGNN's full graph are kept while the topology is; radius backbones
        search neighbours and look their hop types up in the topology's pairs."""
        self.refuse_periodic_full_graph(atoms)
        if not self.full_graph:  # one neighbour search serves the radius graph and the bond check
            cell = torch.as_tensor(np.asarray(atoms.cell.array, np.float64), device=self.device)
            pbc = torch.as_tensor(np.asarray(atoms.pbc, bool), device=self.device)
            found = search_pairs(self.backbone.cutoff, pos.detach().double(), cell, pbc)
            topo = self.current_topology(atoms, tuple(t.cpu().numpy() for t in found),
                                         self.backbone.cutoff)
        else:
            topo = self.current_topology(atoms)
        if self._inputs_of is None or self._inputs_of[0] is not topo:
            i, j, shift, hop = topo.pairs
            n = len(topo.z)
            atom = (torch.as_tensor(topo.z.astype(np.int64), device=self.device),
                    torch.zeros(n, dtype=torch.long, device=self.device))
            if self.full_graph:
                ii, jj = np.nonzero(~np.eye(n, dtype=bool))  # block order: i, then j
                edges = torch.from_numpy(np.stack([ii, jj])).to(self.device)
                types = hops_to_edge_type(torch.from_numpy(topo.dense_hops()[ii, jj]))
                graph = (edges, types.to(self.device))
            else:  # keys are made per call: their reach must cover the neighbours' shifts
                graph = tuple(torch.from_numpy(a).to(self.device) for a in (i, j, shift)) + (
                    hops_to_edge_type(torch.from_numpy(hop.astype(np.int64))).to(self.device),
                    int(np.abs(shift).max()) if len(shift) else 0, {})
            self._inputs_of = (topo, atom, graph)
        _, (z, index), graph = self._inputs_of
        if self.full_graph:
            return z, index, graph[0], graph[1], pos.new_zeros(graph[0].shape[1], 3)
        i, j, shift = found
        offset = shift.to(pos.dtype) @ cell.to(pos.dtype)  # (E, 3) Å
        pi, pj, ps, types, pair_reach, keys_by_reach = graph
        edge_type = torch.full_like(i, OTHER)
        if pi.numel():
            reach = max(pair_reach, int(shift.abs().max()) if shift.numel() else 0)
            if reach not in keys_by_reach:  # (keys sorted, their hop types)
                keys, order = torch.sort(pair_keys(pi, pj, ps, len(atoms), reach))
                keys_by_reach[reach] = (keys, types[order])
            keys, sorted_types = keys_by_reach[reach]
            wanted = pair_keys(i, j, shift, len(atoms), reach)
            at = torch.searchsorted(keys, wanted).clamp(max=keys.numel() - 1)
            edge_type = torch.where(keys[at] == wanted, sorted_types[at], edge_type)
        return z, index, torch.stack([i, j]), edge_type, offset

    def refuse_periodic_full_graph(self, atoms) -> None:
        """A one-line ValueError for a periodic structure and a full-graph backbone (EGNN)."""
        if self.full_graph and self.atoms_periodic(atoms):
            raise ValueError(f"Denoise3DCalculator: {type(self.backbone).__name__} is not defined "
                             f"for periodic structures (it runs over every pair of atoms of one "
                             f"molecule); fine-tune a radius backbone (schnet, painn, torchmd_et, gns) "
                             f"for periodic cells")

    @staticmethod
    def atoms_periodic(atoms) -> bool:
        return bool(np.asarray(atoms.pbc).any())

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        want_stress = "stress" in properties
        if want_stress and not (self.atoms.pbc.all() and not self.full_graph):
            raise PropertyNotImplementedError(
                "stress needs a cell periodic in all three directions and a radius backbone")
        if want_stress:
            batch = self.batch(self.atoms)
            energy, forces, stress = self.objective.predict_with_stress(self.backbone, batch)
            self.results["stress"] = voigt(stress[0]).cpu().numpy().astype(np.float64)
        else:
            pos = torch.as_tensor(self.atoms.get_positions(), dtype=self.dtype, device=self.device)
            z, index, edge_index, edge_type, offset = self.potential_inputs(self.atoms, pos)
            energy, forces = self.forcefield.run(pos, z, index, 1, edge_index, edge_type, offset)
        self.results.update({"energy": float(energy[0]),
                             "forces": forces.cpu().numpy().astype(np.float64)})
