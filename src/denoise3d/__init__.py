"""denoise3d: pretrain 3D molecular GNNs by denoising, fine-tune them on properties and forces.

Internal units everywhere: positions in Å, energies in eV, forces in eV/Å.
Readers convert on load (see :mod:`denoise3d.units`); metrics carry their unit in their name.
"""

__version__ = "0.1.0"
