"""Fast inference of a force field: energies and forces of a batch through one compiled program.

Training needs the double backward and a graph that can be differentiated again; inference needs
neither. A force field is split into

* the **integer graph** of a batch (:func:`graph_inputs`): the neighbour pairs (vesin) and their
  hop types for the radius backbones, the batch's full graph for EGNN, and each edge's constant
  lattice offset ``S·cell``. Not differentiated; and
* the **potential** (:class:`Potential`), a pure tensor function
  ``E(pos, z, graph index, n_graphs, edges, hop types, offsets)`` (n_graphs,) float64, eV: the
  backbone's :meth:`features` of the edge vectors ``x_j − x_i + S·cell`` and the energy head.

:class:`ForceField` compiles ``(E, ∂E/∂pos)`` of the potential as one inference program
(``torch.func.grad_and_value`` under ``torch.compile``, dynamic shapes, parameters frozen in as
constants, C++ wrapper on CPU), so one program serves every size of structure and every number
of edges; forces are ``F = −∂E/∂pos`` (eV/Å) exactly as in training, only computed by fused
kernels. Outputs equal the eager path's (:meth:`EnergyForceRegression.predict`) to float
rounding (``tests/models/test_inference.py``: 1e-5 relative in float32). Stress (a derivative
through the cell) stays on the eager path.

Compiling takes ~30-60 s once per process (and dtype/device); it pays off for MD and large
evaluations. The frozen program keeps the weights it was compiled with: build a new
``ForceField`` after changing them. If compilation fails (no C compiler, an unsupported device),
the eager program runs instead with one warning.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from denoise3d.models.neighbours import edge_types_of, neighbour_pairs

__all__ = ["Potential", "ForceField", "graph_inputs"]


class Potential(nn.Module):
    """``E = potential(pos, z, index, num_graphs, edge_index, edge_type, offset)``, (n_graphs,)
    float64, eV, a pure function of tensors (compilable, scriptable).

    pos (n, 3) Å; z (n,) int64; index (n,) int64 graph of each atom; edge_index (2, E) int64
    (receiver i, sender j); edge_type (E,) int64 hop types; offset (E, 3) Å, the lattice offset
    ``S·cell`` of each edge (zeros for molecules).
    """

    def __init__(self, backbone: nn.Module, objective: nn.Module):
        super().__init__()
        self.backbone, self.objective = backbone, objective

    def forward(self, pos: torch.Tensor, z: torch.Tensor, index: torch.Tensor, num_graphs: int,
                edge_index: torch.Tensor, edge_type: torch.Tensor,
                offset: torch.Tensor) -> torch.Tensor:
        vec = pos.index_select(0, edge_index[1]) - pos.index_select(0, edge_index[0]) + offset
        s, _ = self.backbone.features(z, edge_index, edge_type, vec)
        return self.objective.energy_of(s, z, index, num_graphs)


@torch.no_grad()
def graph_inputs(backbone: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(edge_index (2, E), edge_type (E,), offset (E, 3))`` of ``batch`` for ``backbone``: its
    radius graph (:func:`~denoise3d.models.neighbours.neighbour_pairs`, hop types from the
    batch) or, for a full-graph backbone (EGNN), the batch's own edges."""
    if getattr(backbone, "full_graph", False):
        batch.require_full_graph(type(backbone).__name__, "it runs over every pair of atoms of "
                                 "one molecule; use a radius backbone")
        e = batch.edge_index
        return e, batch.edge_type, batch.pos.new_zeros(e.shape[1], 3)
    i, j, shift = neighbour_pairs(batch, backbone.cutoff)
    offset = batch.pos.new_zeros(i.shape[0], 3)
    if batch.periodic:
        cell = batch.cell.to(batch.pos.dtype).index_select(0, batch.batch.index_select(0, i))
        offset = torch.einsum("ek,ekl->el", shift.to(batch.pos.dtype), cell)  # (E, 3)
    return torch.stack([i, j]), edge_types_of(batch, i, j, shift), offset


def _options(device: torch.device) -> dict:
    # freezing: weights become constants (inference only); cpp_wrapper: less Python per call
    return {"freezing": True, **({"cpp_wrapper": True} if device.type == "cpu" else {})}


class ForceField:
    """``ForceField(backbone, objective, compile=True)(batch) -> (E (g,) float64 eV, F (n, 3)
    eV/Å)``, detached, for an energy + force objective (:mod:`denoise3d.objectives.energy_force`).

    ``compile=False`` runs the potential eagerly (autograd for the forces), ``True`` compiles
    ``grad_and_value`` of it on the first call (see the module docstring). Modules are put in
    eval mode.
    """

    def __init__(self, backbone: nn.Module, objective: nn.Module, compile: bool = True):
        self.backbone = backbone.eval()
        self.potential = Potential(backbone, objective.eval())
        self.program = torch.func.grad_and_value(self._energy, has_aux=True)
        self.compile = bool(compile)
        self.compiled = None

    def _energy(self, pos, *args):
        e = self.potential(pos, *args)
        return e.sum(), e

    def run(self, pos, z, index, num_graphs, edge_index, edge_type, offset):
        """(E, F) from the potential's tensors (:class:`Potential`)."""
        args = (pos.detach(), z, index, int(num_graphs), edge_index, edge_type, offset)
        with torch.no_grad():
            if self.compile:
                try:
                    if self.compiled is None:
                        self.compiled = torch.compile(self.program, dynamic=True,
                                                      options=_options(pos.device))
                    grad, (_, energy) = self.compiled(*args)
                    return energy, -grad
                except Exception as e:  # noqa: BLE001 - any compiler failure: run eagerly
                    print(f"warning: torch.compile failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); running the force "
                          f"field uncompiled", file=sys.stderr)
                    self.compile = False
        with torch.enable_grad():  # eager: plain autograd (torch.func's eager grad is slower)
            pos = args[0].requires_grad_(True)
            energy = self.potential(*args)
            (grad,) = torch.autograd.grad(energy.sum(), pos)
        return energy.detach(), -grad

    def __call__(self, batch):
        edge_index, edge_type, offset = graph_inputs(self.backbone, batch)
        return self.run(batch.pos, batch.z, batch.batch, batch.num_graphs, edge_index, edge_type,
                        offset)
