"""``denoise3d md``: molecular dynamics with a fine-tuned force field, written as extxyz.

Velocity Verlet (NVE) or Langevin (NVT; centre of mass fixed) from ASE; initial velocities from
the Maxwell-Boltzmann distribution at ``temperature`` (seeded), with zero total momentum and
angular momentum. Every ``interval`` steps one frame (positions, energy, forces, momenta) is
appended to the extxyz file. The summary reports the total-energy drift, which for NVE measures
how well the model's forces and energy agree along the trajectory.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

THERMOSTATS = ("nve", "langevin")


def make_dynamics(atoms, thermostat: str, timestep: float, temperature: float,
                  friction: float, rng):
    """ASE integrator: ``nve`` → VelocityVerlet, ``langevin`` → Langevin (FixCom)."""
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    if thermostat == "nve":
        return VelocityVerlet(atoms, timestep * units.fs)
    if thermostat == "langevin":
        atoms.set_constraint(FixCom())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return Langevin(atoms, timestep * units.fs, temperature_K=temperature,
                            friction=friction / units.fs, fixcm=False, rng=rng)
    raise ValueError(f"unknown thermostat {thermostat!r}; choose from {', '.join(THERMOSTATS)}")


def init_velocities(atoms, temperature: float, rng) -> None:
    from ase.md import velocitydistribution as vd

    init = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    init(atoms, temperature_K=temperature, rng=rng)
    vd.Stationary(atoms)
    if len(atoms) > 2:
        vd.ZeroRotation(atoms)


def run_md(atoms, calc, out: str | Path, steps: int = 1000, timestep: float = 0.5,
           temperature: float = 300.0, thermostat: str = "langevin", friction: float = 0.01,
           interval: int = 10, seed: int = 0, progress: bool = True) -> dict:
    """Run MD of ``atoms`` with calculator ``calc``; frames to ``out`` (extxyz); a summary dict.

    ``timestep`` fs, ``temperature`` K (initial velocities, and the bath for Langevin),
    ``friction`` fs⁻¹. Energies in the summary are eV.
    """
    import ase.io
    from tqdm import tqdm

    if steps < 0 or interval < 1 or timestep <= 0:
        raise ValueError(f"need steps >= 0, interval >= 1, timestep > 0; got {steps}, {interval}, "
                         f"{timestep}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    atoms = atoms.copy()
    atoms.calc = calc
    init_velocities(atoms, temperature, rng)
    dyn = make_dynamics(atoms, thermostat, timestep, temperature, friction, rng)
    totals, temps = [], []
    out.unlink(missing_ok=True)

    def record():
        e_pot = atoms.get_potential_energy()
        totals.append(e_pot + atoms.get_kinetic_energy())
        temps.append(atoms.get_temperature())
        ase.io.write(out, atoms, format="extxyz", append=True)

    bar = tqdm(total=steps, desc=f"MD {thermostat}", unit="step", disable=not progress,
               mininterval=1.0)
    t0 = time.perf_counter()
    record()
    done = 0
    while done < steps:
        k = min(interval, steps - done)
        dyn.run(k)
        done += k
        bar.update(k)
        record()
    bar.close()
    seconds = time.perf_counter() - t0
    totals = np.asarray(totals)
    return {"trajectory": str(out), "thermostat": thermostat, "steps": steps,
            "timestep_fs": timestep, "frames": len(totals), "seconds": seconds,
            "steps_per_second": steps / max(seconds, 1e-9),
            "mean_temperature_K": float(np.mean(temps)),
            "total_energy_drift_eV": float(totals[-1] - totals[0]),
            "total_energy_max_deviation_eV": float(np.max(np.abs(totals - totals[0])))}
