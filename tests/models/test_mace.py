"""MACE (mace-torch blocks): physics (inherited, scalars and vectors), the element table, sizes."""

import numpy as np
import pytest
import torch

from denoise3d.config import ModelConfig
from denoise3d.data.batch import Molecule
from denoise3d.models import MACE, backbone_from_config
from denoise3d.testing import BackbonePhysicsTests, molecule_batch


class TestMACEPhysics(BackbonePhysicsTests):
    # untrained MACE gives tiny forces on the water box (~1e-3): the O(h²) error of a 1e-4
    # central difference is then ~1e-6 relative, at the tolerance; a smaller step is exact
    fd_step = 2e-5

    def make_backbone(self):
        return MACE(hidden=8, layers=2, num_rbf=6, max_ell=2, correlation=3)


class TestMACEDefaultPhysics(BackbonePhysicsTests):
    n_fd_coords = 8
    fd_step = 2e-5

    def make_backbone(self):
        return MACE(hidden=8)  # max_ell 1, correlation 2, 2 layers


def test_vector_features_are_cartesian_and_nonzero():
    """v is (n, 3, F) and rotates as x, y, z (the physics mixin checks the rotation; here the
    shapes and that the l = 1 part is actually used)."""
    torch.manual_seed(0)
    model = MACE(hidden=8).double()
    batch = molecule_batch()
    s, v = model(batch)
    assert s.shape == (batch.num_atoms, 8) and v.shape == (batch.num_atoms, 3, 8)
    assert v.abs().max() > 1e-3


def test_unknown_element_is_a_clear_error():
    model = MACE(hidden=8, elements=[1, 8])
    water = Molecule(z=np.array([8, 1, 1]), pos=np.array([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
    model(molecule_batch([water], dtype=torch.float32))
    methanol_c = Molecule(z=np.array([6, 8]), pos=np.array([[0.0, 0, 0], [1.4, 0, 0]]))
    with pytest.raises(ValueError, match=r"Z=\[6\] are not in model.elements=\[1, 8\]"):
        model(molecule_batch([methanol_c], dtype=torch.float32))


def test_config_settings_reach_the_model():
    model = backbone_from_config(ModelConfig(backbone="mace", hidden=8, layers=1, max_ell=2,
                                             correlation=3, elements=[1, 6, 8, 16]))
    assert model.elements == (1, 6, 8, 16) and len(model.interactions) == 1
    assert model.spherical_harmonics.irreps_out.lmax == 2


def test_importing_mace_leaves_torch_load_safe():
    import os

    MACE(hidden=4, layers=1)
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
