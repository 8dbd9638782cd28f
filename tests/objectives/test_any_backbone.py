"""Any objective with any registered backbone: one forward + backward, finite, on real molecules."""

import pytest
import torch

from denoise3d.models import BACKBONES, build_backbone
from denoise3d.objectives import build_objective
from denoise3d.objectives.property import PropertyRegression
from denoise3d.testing import molecule_batch

H = 16
SIZES = {"gns": dict(iterations=1, mlp_hidden=H),  # (GNS defaults: 3 iterations of 1024-wide MLPs)
         "gns_tat": dict(layers=3, iterations=3, mlp_hidden=H)}  # TAT needs >= 9 blocks
RECIPES = [("emgp", {}), ("emgp", {"target": "gaussian"}), ("emgp", {"target": "distance"}),
           ("emgp", {"force": "direct"}), ("denoise", {"mask_prob": 0.75}),
           ("denoise", {"vector": "gradient"}), ("pospred", {}), ("attrmask", {})]


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_objective_runs_on_every_backbone(backbone):
    torch.manual_seed(0)
    batch = molecule_batch().to(dtype=torch.float32)
    batch.targets["homo"] = torch.randn(batch.num_graphs)
    model = build_backbone(backbone, **{"hidden": H, "layers": 2, **SIZES.get(backbone, {})})
    objectives = [build_objective(name, H, **params) for name, params in RECIPES]
    objectives.append(PropertyRegression(H, "homo", noisy_nodes_weight=0.01).train())
    for (name, params), obj in zip(RECIPES + [("noisy_nodes", {})], objectives):
        model.zero_grad()
        loss, logs = obj(model, batch)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert torch.isfinite(loss) and grads, (name, params)
        assert all(torch.isfinite(g).all() for g in grads), (name, params)
