"""MACE (Batatia et al., NeurIPS 2022): higher-body-order equivariant messages, from ``mace-torch``.

The blocks are the reference implementation's own (``mace.modules``: node embedding, Bessel ×
polynomial-envelope radial basis, the ``RealAgnostic`` interaction blocks and the symmetric
contraction ``EquivariantProductBasisBlock``); this class only wires them to the library's
radius graph and returns the backbone interface. Per layer t, on the radius graph (i receives)::

    A_i     = Σ_j R(d_ij) ⊗ Y(r̂_ij) ⊗ W h_j / avg_num_neighbors     one-particle basis (l ≤ max_ell)
    B_i     = symmetric products of A_i up to order ``correlation``   body order correlation + 1
    h_i^t+1 = Linear(B_i) (+ element-dependent self-connection from layer 2 on)

Hidden irreps ``F×0e + F×1o`` in every layer. Returns ``(s (n, F), v (n, 3, F))``: the last
layer's scalars and its l = 1 features as Cartesian vectors (e3nn's l = 1 order is x, y, z).

Deviations from ``mace.modules.MACE``, for the library's interface: no per-layer energy readouts
(the library's heads read ``s`` of the last layer, as for the other backbones); the last layer
keeps its vectors (MACE keeps only scalars there) so vector heads (denoising, Noisy Nodes) work;
the hop one-hot of 3D-EMGP App. B.4 (``edge_types``) is appended to the radial features, times the
same polynomial envelope, so every message still vanishes smoothly at the cutoff. Elements are a
fixed table (``elements``, as MACE's ``z_table``) plus the mask token Z = 0 of atom-type
masking: the element-dependent weights grow with it.

Needs the optional dependency ``mace-torch`` (``pip install denoise3d[mace]``; it pins e3nn
0.4.4). On CPU the default size (``max_ell=1, correlation=2``, 2 layers × 64) costs 1.0-1.4x a
PaiNN 4 × 64 energy + force step in the step benchmarks and ~2.8x in a whole fine-tuning run
here; ``max_ell=3, correlation=3`` (the MACE paper's) ~14x (``benchmarks/mace_step_cost.py``,
``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from typing import Optional, Sequence

import torch

from denoise3d.data.elements import MAX_Z
from denoise3d.models.ops import safe_norm
from denoise3d.models.radial import RadiusBackbone

__all__ = ["MACE"]

QM9_ELEMENTS = (1, 6, 7, 8, 9)
_WEIGHTS_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def _mace_modules():
    """``(mace.modules, e3nn.o3)``. Importing mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD for the
    whole process (so that e3nn 0.4.4 loads its constants); it is restored afterwards, so other
    ``torch.load`` calls keep torch's safe default."""
    before = os.environ.get(_WEIGHTS_ENV)
    try:  # quiet: mace prints a CUDA-acceleration notice and e3nn / TorchScript warn on import
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            from mace import modules  # first: it lets e3nn 0.4.4 load its constants under torch >= 2.6
            from e3nn import o3
    except ImportError as e:  # pragma: no cover - the dev environment installs it
        raise ImportError("model.backbone=mace needs the optional dependency mace-torch: "
                          "pip install 'denoise3d[mace]'") from e
    finally:
        if before is None:
            os.environ.pop(_WEIGHTS_ENV, None)
        else:
            os.environ[_WEIGHTS_ENV] = before
    return modules, o3


class MACE(RadiusBackbone):
    """MACE backbone: ``forward(batch) -> (s (n, F), v (n, 3, F))``.

    hidden: channels F per irrep; layers: interactions (≥ 1); cutoff (Å) and num_rbf Bessel
    functions with MACE's polynomial envelope (p = 5); max_ell: spherical harmonics order of the
    messages; correlation: order of the symmetric product (body order correlation + 1);
    avg_num_neighbors: the message normaliser (MACE sets it from the data; ~16 for organic
    molecules at 5 Å); elements: atomic numbers the model takes (a structure with another is a
    ``ValueError``).
    """

    vector_features = True

    def __init__(self, hidden: int = 64, layers: int = 2, cutoff: float = 5.0, num_rbf: int = 8,
                 max_ell: int = 1, correlation: int = 2, avg_num_neighbors: float = 16.0,
                 elements: Sequence[int] = QM9_ELEMENTS, edge_types: bool = True):
        super().__init__()
        with warnings.catch_warnings():  # e3nn scripts its codegen at construction: TorchScript warnings
            warnings.filterwarnings("ignore", message=".*TorchScript type system.*")
            warnings.filterwarnings("ignore", message=".*torch.jit.script. is deprecated.*")
            self._build(hidden, layers, cutoff, num_rbf, max_ell, correlation, avg_num_neighbors,
                        elements, edge_types)

    def _build(self, hidden, layers, cutoff, num_rbf, max_ell, correlation, avg_num_neighbors,
               elements, edge_types) -> None:
        modules, o3 = _mace_modules()
        elements = sorted({int(z) for z in elements})
        if not elements or elements[0] < 1 or elements[-1] > MAX_Z:
            raise ValueError(f"MACE elements must be atomic numbers 1..{MAX_Z}, got {elements}")
        if layers < 1 or max_ell < 1 or correlation < 1:
            raise ValueError("MACE needs layers >= 1, max_ell >= 1 and correlation >= 1")
        self.hidden, self.cutoff, self.edge_types = hidden, float(cutoff), bool(edge_types)
        self.elements = tuple(elements)
        # one-hot slot 0 is the mask token Z = 0 of atom-type masking (Zaidi et al.), as row 0
        # of the other backbones' embeddings; slots 1.. are the elements
        index = torch.full((MAX_Z + 1,), -1, dtype=torch.long)
        index[0] = 0
        index[torch.tensor(elements)] = torch.arange(1, len(elements) + 1)
        self.register_buffer("element_index", index, persistent=False)
        n_el = len(elements) + 1
        node_attr_irreps = o3.Irreps(f"{n_el}x0e")
        hidden_irreps = o3.Irreps(f"{hidden}x0e+{hidden}x1o")
        self.node_embedding = modules.LinearNodeEmbeddingBlock(node_attr_irreps, o3.Irreps(f"{hidden}x0e"))
        self.radial = modules.RadialEmbeddingBlock(r_max=float(cutoff), num_bessel=num_rbf,
                                                   num_polynomial_cutoff=5)
        n_edge = num_rbf + (4 if edge_types else 0)
        edge_feats_irreps = o3.Irreps(f"{n_edge}x0e")
        sh_irreps = o3.Irreps.spherical_harmonics(max_ell)
        self.spherical_harmonics = o3.SphericalHarmonics(sh_irreps, normalize=True,
                                                         normalization="component")
        interaction_irreps = (sh_irreps * hidden).sort()[0].simplify()
        self.interactions = torch.nn.ModuleList()
        self.products = torch.nn.ModuleList()
        for t in range(layers):
            cls = modules.RealAgnosticInteractionBlock if t == 0 else modules.RealAgnosticResidualInteractionBlock
            inter = cls(node_attrs_irreps=node_attr_irreps,
                        node_feats_irreps=o3.Irreps(f"{hidden}x0e") if t == 0 else hidden_irreps,
                        edge_attrs_irreps=sh_irreps, edge_feats_irreps=edge_feats_irreps,
                        target_irreps=interaction_irreps, hidden_irreps=hidden_irreps,
                        avg_num_neighbors=float(avg_num_neighbors), radial_MLP=[64, 64, 64])
            self.interactions.append(inter)
            self.products.append(modules.EquivariantProductBasisBlock(
                node_feats_irreps=inter.target_irreps, target_irreps=hidden_irreps,
                correlation=correlation, num_elements=n_el, use_sc=t > 0))

    @torch.jit.unused
    def forward(self, batch) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        bad = self.element_index[batch.z.clamp(0, MAX_Z)] < 0
        if bool(bad.any()):
            z = sorted({int(x) for x in batch.z[bad]})
            raise ValueError(f"MACE backbone: element(s) Z={z} are not in model.elements="
                             f"{list(self.elements)}; set model.elements to every element of the data")
        return super().forward(batch)

    def features(self, z: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                 vec: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(s, v)`` of the edges ``edge_index`` (2, E) (receiver i, sender j) with hop types (E,)
        and vectors ``vec = x_j + S·cell − x_i`` (E, 3) Å."""
        attrs = torch.nn.functional.one_hot(self.element_index[z], len(self.elements) + 1).to(vec.dtype)
        mace_edges = edge_index.flip(0)  # MACE: row 0 sends, row 1 receives
        rel = -vec  # MACE's edge vector x_receiver − x_sender
        lengths = safe_norm(rel, dim=-1, keepdim=True)  # (E, 1)
        envelope = self.radial.cutoff_fn(lengths)  # (E, 1), MACE's polynomial envelope (p = 5)
        edge_feats = self.radial.bessel_fn(lengths) * envelope  # = RadialEmbeddingBlock's output
        if self.edge_types:
            hop = torch.nn.functional.one_hot(edge_type, 4).to(vec.dtype) * envelope
            edge_feats = torch.cat([edge_feats, hop], dim=-1)
        edge_attrs = self.spherical_harmonics(rel)
        h = self.node_embedding(attrs)
        for t, (interaction, product) in enumerate(zip(self.interactions, self.products)):
            h, sc = interaction(node_attrs=attrs, node_feats=h, edge_attrs=edge_attrs,
                                edge_feats=edge_feats, edge_index=mace_edges, first_layer=t == 0)
            h = product(node_feats=h, sc=sc, node_attrs=attrs)
        s = h[:, :self.hidden]
        v = h[:, self.hidden:].reshape(-1, self.hidden, 3).transpose(1, 2)  # (n, 3, F), x y z
        return s, v
