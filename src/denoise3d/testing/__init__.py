"""Test helpers shipped with the library (like e3nn's ``assert_equivariant``).

:mod:`denoise3d.testing.physics` — E(3) transforms, permutations and the reusable
:class:`~denoise3d.testing.physics.BackbonePhysicsTests` mixin;
:mod:`denoise3d.testing.molecules` — real QM9 fixture molecules written in code.
"""

from denoise3d.testing.molecules import MOLECULES, fixture_molecules, molecule, molecule_batch
from denoise3d.testing.physics import (BackbonePhysicsTests, apply_transform,
                                       assert_close_scaled, evaluate, permute_molecules,
                                       random_rotation, random_transform, rotate_vectors,
                                       transform_batch)

__all__ = [
    "MOLECULES", "fixture_molecules", "molecule", "molecule_batch", "BackbonePhysicsTests",
    "apply_transform", "assert_close_scaled", "evaluate", "permute_molecules", "random_rotation",
    "random_transform", "rotate_vectors", "transform_batch",
]
