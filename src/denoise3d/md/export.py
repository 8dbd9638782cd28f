"""A fine-tuned force field as one self-contained TorchScript file: ``denoise3d export``.

The file maps ``(z, positions, cell, pbc)`` to the energy (eV), forces (eV/Å) and, for a cell
periodic in all three directions, the stress (eV/Å³, 3 × 3, ASE's sign: positive under
tension), exactly as :class:`~denoise3d.md.calculator.Denoise3DCalculator` does (topology
"auto"). Everything the calculator does runs inside the program, in torch:

* **bond perception** (:mod:`denoise3d.data.bonds`): covalent bonds ``d < 1.15 (r_i + r_j)``
  between atoms and periodic images (vesin), then the 1-, 2- and 3-hop pairs by walking the bond
  list with composed lattice shifts (:func:`hops_from_bonds`, a torch port of the numpy one);
* the calculator's **topology cache**: the perceived bonds are kept while the atomic numbers and
  periodic directions stay the same and no bond breaks (beyond 1.5 (r_i + r_j)) or forms, so an
  MD run sees a continuous energy surface (``reset()`` forgets the cache);
* the **neighbour search** (vesin's TorchScript class) and the hop type of each pair, or EGNN's
  fully connected graph of a molecule;
* the **training domain**: structures with elements absent from the training data are refused;
* the readers' **structure check**: shapes, atomic numbers 1..54, finite coordinates, and no two
  atoms (or an atom and a periodic image) closer than 0.1 Å, each refused with a message;
* the backbone's :meth:`features`, the energy head, and forces / stress by autograd.

Loading needs torch and ``vesin-torch`` only (``import vesin_torch`` registers the neighbour
list class), not denoise3d::

    import torch, vesin_torch
    model = torch.jit.load("model.pt")
    out = model(z, pos, cell, pbc)   # int64 (n,), float64 (n, 3) Å, float64 (3, 3) Å, bool (3,)
    out["energy"], out["forces"], out.get("stress")

The program runs in the dtype it was exported in (``--dtype``; inputs are converted, outputs
are float64): float64 reproduces the library to ~1e-12, float32 to float32 rounding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import torch
import vesin_torch  # noqa: F401 - registers torch.classes.vesin, which the program calls
from torch import nn

from denoise3d.data.bonds import BOND_FACTOR
from denoise3d.data.elements import COVALENT_RADII, MAX_Z
from denoise3d.data.readers import MIN_DISTANCE
from denoise3d.md.calculator import BREAK_FACTOR
from denoise3d.models.radial import N_EDGE_TYPES

__all__ = ["ExportedForceField", "export", "hops_from_bonds"]

OTHER = N_EDGE_TYPES - 1


def pair_keys(i: torch.Tensor, j: torch.Tensor, shift: torch.Tensor, n: int,
              reach: int) -> torch.Tensor:
    """:func:`denoise3d.data.bonds.pair_keys` (TorchScript)."""
    base = 2 * reach + 1
    key = i * n + j
    for k in range(3):
        key = key * base + (shift[:, k] + reach)
    return key


def _ranges(start: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Concatenated ``arange(start[k], start[k] + counts[k])``."""
    total = int(counts.sum())
    offsets = torch.cumsum(counts, 0) - counts
    within = torch.arange(total, dtype=torch.long, device=start.device) - torch.repeat_interleave(
        offsets, counts)
    return torch.repeat_interleave(start, counts) + within


def hops_from_bonds(n: int, bi: torch.Tensor, bj: torch.Tensor, bs: torch.Tensor,
                    max_hop: int = 3) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`denoise3d.data.bonds.hops_from_bonds` in torch (TorchScript): the pairs within
    ``max_hop`` bonds, (P,), (P,), (P, 3) int64 and hop (P,) int64, sorted by pair key."""
    dev = bi.device
    if bi.numel() == 0:
        e = torch.zeros(0, dtype=torch.long, device=dev)
        return e, e, torch.zeros(0, 3, dtype=torch.long, device=dev), e
    reach = max_hop * int(bs.abs().max())
    order = torch.argsort(bi, stable=True)
    bi, bj, bs = bi[order], bj[order], bs[order]
    start = torch.searchsorted(bi, torch.arange(n + 1, dtype=torch.long, device=dev))
    atoms = torch.arange(n, dtype=torch.long, device=dev)
    seen = pair_keys(atoms, atoms, torch.zeros(n, 3, dtype=torch.long, device=dev), n, reach)
    outs: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    src, dst, s = bi, bj, bs
    for hop in range(1, max_hop + 1):
        keys = pair_keys(src, dst, s, n, reach)
        uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        first = torch.full((uniq.numel(),), keys.numel(), dtype=torch.long, device=dev)
        first = first.scatter_reduce(0, inverse, torch.arange(keys.numel(), device=dev), "amin")
        new = ~torch.isin(uniq, seen)
        pick = first[new]
        src, dst, s, keys = src[pick], dst[pick], s[pick], uniq[new]
        outs.append((src, dst, s, torch.full_like(src, hop), keys))
        seen = torch.cat([seen, keys])
        if hop == max_hop or src.numel() == 0:
            break
        counts = start[dst + 1] - start[dst]  # extend each path by every bond of its end atom
        rows = torch.repeat_interleave(torch.arange(src.numel(), device=dev), counts)
        b = _ranges(start[dst], counts)
        src, dst, s = src[rows], bj[b], s[rows] + bs[b]
    i = torch.cat([o[0] for o in outs])
    j = torch.cat([o[1] for o in outs])
    shift = torch.cat([o[2] for o in outs])
    hop_ = torch.cat([o[3] for o in outs])
    order = torch.argsort(torch.cat([o[4] for o in outs]))
    return i[order], j[order], shift[order], hop_[order]


class ExportedForceField(nn.Module):
    """``forward(z, pos, cell, pbc) -> {"energy", "forces"[, "stress"]}`` (see the module
    docstring); built by :func:`export`, scripted there."""

    def __init__(self, backbone: nn.Module, objective: nn.Module, elements: List[int],
                 dtype: torch.dtype):
        super().__init__()
        from denoise3d.models.inference import Potential

        self.potential = Potential(backbone.to(dtype).eval(), objective.to(dtype).eval())
        self.full_graph = bool(getattr(backbone, "full_graph", False))
        self.cutoff = float(getattr(backbone, "cutoff", 0.0))
        self.dtype = dtype
        self.bond_factor, self.break_factor, self.other = BOND_FACTOR, BREAK_FACTOR, OTHER
        self.min_distance = MIN_DISTANCE
        self.min_distance_text = f"{MIN_DISTANCE:g}"
        self.register_buffer("radii", torch.as_tensor(COVALENT_RADII, dtype=torch.float64))
        known = torch.zeros(MAX_Z + 1, dtype=torch.bool)
        known[torch.as_tensor(elements, dtype=torch.long)] = True
        self.register_buffer("known", known)
        # the topology cache (as Denoise3DCalculator's): atoms, pbc, bonds, hop pairs
        self.cached = False
        self.cache_z = torch.zeros(0, dtype=torch.long)
        self.cache_pbc = torch.zeros(3, dtype=torch.bool)
        self.cache_bonds = torch.zeros(0, 5, dtype=torch.long)  # (B, [i, j, S])
        self.cache_pairs = torch.zeros(0, 6, dtype=torch.long)  # (P, [i, j, S, edge type])
        self.perceived = 0

    def _search(self, cutoff: float, pos: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
                quantities: str) -> List[torch.Tensor]:
        nl = torch.classes.vesin._NeighborList(cutoff, True, False, "auto", 0.0, 1)
        return nl.compute(points=pos, box=cell, periodic=pbc, quantities=quantities, copy=True)

    def _bonds(self, z: torch.Tensor, pos: torch.Tensor, cell: torch.Tensor,
               pbc: torch.Tensor) -> torch.Tensor:
        """(B, 5) [i, j, S] of the covalent bonds (both directions)."""
        if z.numel() < 2 and not bool(pbc.any()):
            return torch.zeros(0, 5, dtype=torch.long, device=z.device)
        r = self.radii[z]
        out = self._search(self.bond_factor * 2.0 * float(r.max()), pos, cell, pbc, "ijSd")
        i, j, s, d = out[0].long(), out[1].long(), out[2].long(), out[3]
        close = d < self.min_distance
        if bool(close.any()):  # as the readers' check: one atom written twice
            k = int(torch.nonzero(close)[0, 0])
            if int(i[k]) == int(j[k]):
                raise RuntimeError("atom " + str(int(i[k])) + " is closer than "
                                   + self.min_distance_text + " Å to its own periodic image "
                                   "(the cell is too small)")
            raise RuntimeError("atoms " + str(int(i[k])) + " and " + str(int(j[k])) + " coincide "
                               "(closer than " + self.min_distance_text + " Å)")
        bond = d < self.bond_factor * (r[i] + r[j])
        return torch.cat([i[bond].unsqueeze(1), j[bond].unsqueeze(1), s[bond]], dim=1)

    def _bonds_changed(self, z: torch.Tensor, pos: torch.Tensor, cell: torch.Tensor,
                       pbc: torch.Tensor) -> bool:
        b = self.cache_bonds
        r = self.radii[z]
        n = z.numel()
        if b.shape[0] > 0:
            vec = pos[b[:, 1]] + b[:, 2:].to(pos.dtype) @ cell - pos[b[:, 0]]
            if bool((torch.linalg.vector_norm(vec, dim=1) > self.break_factor * (r[b[:, 0]] + r[b[:, 1]])).any()):
                return True
        now = self._bonds(z, pos, cell, pbc)
        if now.shape[0] == 0:
            return False
        reach = int(now[:, 2:].abs().max())
        if b.shape[0] > 0:
            reach = max(reach, int(b[:, 2:].abs().max()))
        have = pair_keys(b[:, 0], b[:, 1], b[:, 2:], n, reach)
        want = pair_keys(now[:, 0], now[:, 1], now[:, 2:], n, reach)
        return not bool(torch.isin(want, have).all())

    def _topology(self, z: torch.Tensor, pos: torch.Tensor, cell: torch.Tensor,
                  pbc: torch.Tensor) -> torch.Tensor:
        """(P, 6) [i, j, S, edge type] hop pairs, perceived again only when needed."""
        same = (self.cached and self.cache_z.shape == z.shape and bool(torch.equal(self.cache_z, z))
                and bool(torch.equal(self.cache_pbc, pbc)))
        if same and not self._bonds_changed(z, pos, cell, pbc):
            return self.cache_pairs
        bad = ~self.known[z]
        if bool(bad.any()):
            unseen = ", ".join([str(int(v)) for v in torch.unique(z[bad])])
            raise RuntimeError("atomic number(s) " + unseen + " never seen in training: the "
                               "predictions would be meaningless (export with --allow-unseen-"
                               "elements to predict anyway)")
        bonds = self._bonds(z, pos, cell, pbc)
        i, j, s, hop = hops_from_bonds(z.numel(), bonds[:, 0], bonds[:, 1], bonds[:, 2:])
        self.cache_pairs = torch.cat([i.unsqueeze(1), j.unsqueeze(1), s, (hop - 1).unsqueeze(1)], 1)
        self.cache_bonds, self.cache_z, self.cache_pbc = bonds, z.clone(), pbc.clone()
        self.cached = True
        self.perceived += 1
        return self.cache_pairs

    @torch.jit.export
    def reset(self) -> None:
        """Perceive the bonds again on the next call."""
        self.cached = False

    def _lookup(self, pairs: torch.Tensor, i: torch.Tensor, j: torch.Tensor, s: torch.Tensor,
                n: int) -> torch.Tensor:
        """Edge types (E,) of the pairs (i, j, S): their hop type, OTHER if unlisted."""
        out = torch.full_like(i, self.other)
        if pairs.shape[0] == 0:
            return out
        reach = int(pairs[:, 2:5].abs().max())
        if s.numel() > 0:
            reach = max(reach, int(s.abs().max()))
        keys = pair_keys(pairs[:, 0], pairs[:, 1], pairs[:, 2:5], n, reach)
        keys, order = torch.sort(keys)
        types = pairs[:, 5][order]
        wanted = pair_keys(i, j, s, n, reach)
        at = torch.searchsorted(keys, wanted).clamp(max=keys.numel() - 1)
        return torch.where(keys[at] == wanted, types[at], out)

    def forward(self, z: torch.Tensor, pos: torch.Tensor, cell: torch.Tensor,
                pbc: torch.Tensor) -> Dict[str, torch.Tensor]:
        z = z.long()
        pos64 = pos.detach().to(torch.float64)
        cell64 = cell.detach().to(torch.float64)
        pbc = pbc.to(torch.bool)
        n = z.numel()
        if (z.dim() != 1 or n == 0 or pos.dim() != 2 or pos.shape[0] != n or pos.shape[1] != 3
                or cell.numel() != 9 or pbc.numel() != 3):
            raise RuntimeError("expected z (n,) with n >= 1, pos (n, 3), cell (3, 3), pbc (3,); got "
                               + str(list(z.shape)) + ", " + str(list(pos.shape)) + ", "
                               + str(list(cell.shape)) + ", " + str(list(pbc.shape)))
        if bool((z < 1).any()) or bool((z >= self.known.shape[0]).any()):
            raise RuntimeError("unsupported element: atomic numbers must be 1.."
                               + str(self.known.shape[0] - 1))
        if not bool(torch.isfinite(pos64).all()):
            raise RuntimeError("non-finite coordinates")
        if self.full_graph and bool(pbc.any()):
            raise RuntimeError("EGNN is not defined for periodic structures (it runs over every "
                               "pair of atoms of one molecule)")
        pairs = self._topology(z, pos64, cell64, pbc)
        if self.full_graph:
            ij = torch.nonzero(~torch.eye(n, dtype=torch.bool, device=z.device))
            i, j = ij[:, 0], ij[:, 1]
            s = torch.zeros(i.numel(), 3, dtype=torch.long, device=z.device)
        else:
            found = self._search(self.cutoff, pos64, cell64, pbc, "ijS")
            i, j, s = found[0].long(), found[1].long(), found[2].long()
        edge_type = self._lookup(pairs, i, j, s, n)
        x = pos64.to(self.dtype).requires_grad_(True)
        box = cell64.to(self.dtype)
        with_stress = bool(pbc.all())
        strain = torch.zeros(3, 3, dtype=self.dtype, device=z.device).requires_grad_(with_stress)
        if with_stress:  # x ↦ x (I + ε), cell ↦ cell (I + ε), ε = sym(strain) (heads.strained)
            eps = 0.5 * (strain + strain.t())
            xs, boxs = x + x @ eps, box + box @ eps
        else:
            xs, boxs = x, box
        offset = s.to(self.dtype) @ boxs
        index = torch.zeros(n, dtype=torch.long, device=z.device)
        energy = self.potential(xs, z, index, 1, torch.stack([i, j]), edge_type, offset)
        inputs = [x, strain] if with_stress else [x]
        grads = torch.autograd.grad([energy.sum()], inputs)
        out = {"energy": energy[0].detach().to(torch.float64)}
        g0 = grads[0]
        assert g0 is not None
        out["forces"] = -g0.to(torch.float64)
        if with_stress:
            g1 = grads[1]
            assert g1 is not None
            out["stress"] = g1.to(torch.float64) / torch.linalg.det(cell64).abs()
        return out


def export(checkpoint, out, dtype: str = "float64", allow_unseen: bool = False) -> dict:
    """Write the TorchScript program of the force-field ``checkpoint`` to ``out`` (written via a
    temporary file: a failed export leaves nothing); returns a summary."""
    from denoise3d.data.elements import MAX_Z as _MAX_Z
    from denoise3d.jobs.energy_force import load_force_field

    if dtype not in ("float32", "float64"):
        raise ValueError(f"--dtype must be float32 or float64, got {dtype!r}")
    out = Path(out)
    _, backbone, objective, domain = load_force_field(checkpoint)
    elements = (list(range(1, _MAX_Z + 1)) if allow_unseen or domain.elements is None
                else sorted(domain.elements))
    module = ExportedForceField(backbone, objective, elements, getattr(torch, dtype))
    try:
        scripted = torch.jit.script(module)
    except Exception as e:  # noqa: BLE001 - one line naming the backbone
        raise ValueError(f"{checkpoint}: {type(backbone).__name__} could not be exported to "
                         f"TorchScript ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    scripted.save(str(tmp))
    tmp.replace(out)
    return {"checkpoint": str(checkpoint), "out": str(out), "backbone": type(backbone).__name__,
            "dtype": dtype, "elements": elements, "inputs": "z (n,) int64, pos (n, 3) Å, cell "
            "(3, 3) Å, pbc (3,) bool", "outputs": "energy eV, forces eV/Å" + (
                "; molecules only (no periodic cell)" if getattr(backbone, "full_graph", False)
                else ", stress eV/Å³ (all three directions periodic)"), "load": "import torch, vesin_torch; "
            "torch.jit.load(path)"}
