"""Every radius-graph backbone: continuity at the cutoff, locality, and config → kwargs."""

import numpy as np
import pytest
import torch

from denoise3d.jobs.checkpoint import Checkpoint, backbone_entry
from denoise3d.models import backbone_from_config, model_kwargs
from denoise3d.config import Config, ConfigError, ModelConfig
from denoise3d.data.batch import Molecule
from denoise3d.models import BACKBONES, GNS, GNSTAT, MACE, PaiNN, SchNet, TorchMDET, build_backbone
from denoise3d.models.heads import EnergyHead
from denoise3d.testing import molecule_batch
from denoise3d.train.checkpoint import CheckpointError

SMALL = {  # the physics-test sizes
    "schnet": lambda **kw: SchNet(hidden=16, layers=2, num_rbf=12, **kw),
    "painn": lambda **kw: PaiNN(hidden=16, layers=2, num_rbf=10, **kw),
    "torchmd_et": lambda **kw: TorchMDET(hidden=16, layers=2, num_rbf=10, num_heads=4, **kw),
    "mace": lambda **kw: MACE(hidden=16, layers=2, num_rbf=10, avg_num_neighbors=1.0, **kw),
    "gns": lambda **kw: GNS(hidden=16, layers=2, iterations=2, mlp_hidden=16, mlp_layers=2,
                            num_rbf=10, **kw),
    "gns_tat": lambda **kw: GNSTAT(hidden=16, layers=3, iterations=3, mlp_hidden=16,
                                   mlp_layers=3, num_rbf=10, **kw),
}


def test_registry():
    assert set(BACKBONES) == {"egnn", "schnet", "painn", "torchmd_et", "mace", "gns", "gns_tat"}
    assert isinstance(build_backbone("gns_tat", hidden=8, layers=3, iterations=3, mlp_hidden=8),
                      GNSTAT)


def _pair(d: float) -> Molecule:
    return Molecule(z=np.array([8, 1]), pos=np.array([[0.0, 0.0, 0.0], [d, 0.0, 0.0]]))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_energy_and_features_are_continuous_at_the_cutoff(name):
    """O–H at d = c ∓ δ: inside, one edge; outside, none. Every message carries f_c(d), which
    vanishes with zero slope at c, so outputs differ by O(δ²), while at c − 0.5 Å they do not."""
    torch.manual_seed(0)
    model = SMALL[name](cutoff=3.0).double()
    head = EnergyHead(16).double()

    def run(d):
        batch = molecule_batch([_pair(d)])
        s, v = model(batch)
        return head(s, batch), s, v

    inside, outside, near = run(3.0 - 1e-4), run(3.0 + 1e-4), run(2.5)
    for a, b in zip(inside, outside):
        if a is not None:
            assert (a - b).abs().max() < 1e-6
    # the neighbour at 2.5 Å matters, far more than at the cutoff (MACE's p = 5 envelope is
    # 0.09 there, so its untrained energy moves by ~1e-5 only)
    jump = (inside[0] - outside[0]).abs().max()
    assert (near[0] - outside[0]).abs().max() > max(1e-6, 1e3 * jump)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_an_atom_beyond_the_cutoff_is_alone(name):
    """Water plus an atom 20 Å away, as one molecule: the far atom's features equal those of a
    one-atom molecule and water's those of water alone (hop types off: they would see the
    extra atom as 'other')."""
    torch.manual_seed(0)
    model = SMALL[name](edge_types=False).double()
    pos = np.array([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [20.0, 0, 0]])
    both = Molecule(z=np.array([8, 1, 1, 6]), pos=pos)
    s_both, v_both = model(molecule_batch([both]))
    s_water, v_water = model(molecule_batch([Molecule(z=both.z[:3], pos=pos[:3])]))
    s_c, _ = model(molecule_batch([Molecule(z=both.z[3:], pos=pos[3:])]))
    torch.testing.assert_close(s_both[:3], s_water, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s_both[3:], s_c, rtol=1e-12, atol=1e-12)
    if v_both is not None:
        torch.testing.assert_close(v_both[:3], v_water, rtol=1e-12, atol=1e-12)
        assert torch.count_nonzero(v_both[3]) == 0


def test_model_kwargs_pass_only_the_settings_that_are_set():
    assert model_kwargs(ModelConfig()) == {"hidden": 128, "layers": 7}  # EGNN unchanged
    cfg = ModelConfig(backbone="torchmd_et", hidden=32, layers=2, cutoff=4.0, num_heads=4)
    assert model_kwargs(cfg) == {"hidden": 32, "layers": 2, "cutoff": 4.0, "num_heads": 4}
    model = backbone_from_config(cfg)
    assert model.cutoff == 4.0 and model.attention[0].heads == 4
    with pytest.raises(ConfigError, match="num_heads=4 is not a setting of backbone 'schnet'"):
        model_kwargs(ModelConfig(backbone="schnet", num_heads=4))
    with pytest.raises(ConfigError, match="model.num_heads=4 is not a setting of backbone 'egnn'"):
        model_kwargs(ModelConfig(num_heads=4))
    assert model_kwargs(ModelConfig(num_rbf=50)) == {"hidden": 128, "layers": 7, "num_rbf": 50}
    with pytest.raises(ConfigError, match="unknown model.backbone 'nope'"):
        model_kwargs(ModelConfig(backbone="nope"))


def test_checkpoint_rebuilds_the_same_architecture():
    cfg = ModelConfig(backbone="gns", hidden=8, layers=1, iterations=2, mlp_hidden=8, cutoff=4.0)
    backbone = backbone_from_config(cfg)
    ckpt = Checkpoint("x.pt", {"backbone": backbone_entry(cfg, backbone.state_dict())},
                      Config(model=cfg))
    rebuilt = ckpt.backbone()
    for a, b in zip(backbone.state_dict().values(), rebuilt.state_dict().values()):
        assert torch.equal(a, b)
    other = ModelConfig(backbone="gns", hidden=8, layers=1, iterations=2, mlp_hidden=8, num_rbf=7)
    with pytest.raises(CheckpointError, match="set model.cutoff=4.0, model.num_rbf=null"):
        ckpt.backbone(other)


def test_checkpoint_architecture_compares_resolved_defaults():
    """An EGNN saved without num_rbf (the official form, every shipped EGNN) loads under a
    config that says num_rbf=0, and is refused under num_rbf=50 with the setting to use."""
    cfg = ModelConfig(hidden=8, layers=1)
    ckpt = Checkpoint("x.pt", {"backbone": backbone_entry(cfg, backbone_from_config(cfg).state_dict())},
                      Config(model=cfg))
    ckpt.backbone(ModelConfig(hidden=8, layers=1, num_rbf=0))
    with pytest.raises(CheckpointError, match="set model.num_rbf=null"):
        ckpt.backbone(ModelConfig(hidden=8, layers=1, num_rbf=50))


def test_backbone_configs():
    """configs/backbones/<name>_{paper,cpu}.yaml: valid model sections for their backbone; the
    CPU ones build (the paper GNS sizes, ~80M parameters, are only checked for their kwargs)."""
    from pathlib import Path

    from denoise3d.config import load_config

    files = sorted(Path(__file__).resolve().parents[2].glob("configs/backbones/*.yaml"))
    assert {f.stem for f in files} == {f"{n}_{s}" for n in BACKBONES for s in ("paper", "cpu")}
    for f in files:
        cfg = load_config(f).model
        assert f.stem.rsplit("_", 1)[0] == cfg.backbone
        kwargs = model_kwargs(cfg)
        if f.stem.endswith("_cpu") or not cfg.backbone.startswith("gns"):
            backbone_from_config(cfg)
        elif cfg.backbone == "gns_tat":
            assert kwargs["layers"] * kwargs["iterations"] == 30 and kwargs["hidden"] == 512
