"""Element symbols, atomic numbers and covalent radii (Å)."""

import numpy as np

SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn "
    "Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe"
).split()
MAX_Z = len(SYMBOLS) - 1  # 54 (Xe); embeddings are sized MAX_Z + 1
Z_OF = {s: z for z, s in enumerate(SYMBOLS) if z > 0}

# Single-bond covalent radii in Å (Cordero et al. 2008, sp3 carbon), index = atomic number.
COVALENT_RADII = np.array([
    0.00, 0.31, 0.28, 1.28, 0.96, 0.84, 0.76, 0.71, 0.66, 0.57, 0.58,
    1.66, 1.41, 1.21, 1.11, 1.07, 1.05, 1.02, 1.06, 2.03, 1.76,
    1.70, 1.60, 1.53, 1.39, 1.39, 1.32, 1.26, 1.24, 1.32, 1.22,
    1.22, 1.20, 1.19, 1.20, 1.20, 1.16, 2.20, 1.95, 1.90, 1.75,
    1.64, 1.54, 1.47, 1.46, 1.42, 1.39, 1.45, 1.44, 1.42, 1.39,
    1.39, 1.38, 1.39, 1.40,
])
assert len(COVALENT_RADII) == MAX_Z + 1


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol; ``ValueError`` naming the symbol if unknown."""
    z = Z_OF.get(symbol.strip().capitalize())
    if z is None:
        raise ValueError(f"unknown element {symbol!r}")
    return z
