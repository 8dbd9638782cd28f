"""One place for units. Internal units: length Å, energy eV, force eV/Å.

Readers convert their file's units to internal units on load; metrics convert internal units
to the field's customary reporting units (``REPORT``) and carry the unit in their name.
"""

HARTREE_EV = 27.211386245988  # eV per Hartree (CODATA 2018)
KCALMOL_EV = 0.0433641043  # eV per kcal/mol
BOHR_ANGSTROM = 0.529177210903  # Å per bohr
EV_MEV = 1000.0

# conversion factors *to* internal units, keyed by file unit name
TO_INTERNAL = {
    "Ha": HARTREE_EV,
    "eV": 1.0,
    "meV": 1.0 / EV_MEV,
    "kcal/mol": KCALMOL_EV,
    "kcal/mol/Å": KCALMOL_EV,
    "Å": 1.0,
    "bohr": BOHR_ANGSTROM,
}


def to_internal(value, unit: str):
    """Convert ``value`` given in ``unit`` to internal units (Å, eV)."""
    try:
        return value * TO_INTERNAL[unit]
    except KeyError:
        raise ValueError(f"unknown unit {unit!r}; known: {sorted(TO_INTERNAL)}") from None
