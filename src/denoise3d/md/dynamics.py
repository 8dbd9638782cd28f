"""``denoise3d md``: molecular dynamics with a fine-tuned force field, written as extxyz.

Integrators from ASE: velocity Verlet (``nve``), Langevin (``langevin``, NVT; centre of mass
fixed) and, for a cell periodic in all directions, the isotropic Martyna-Tobias-Klein barostat with
Nosé-Hoover chains (``npt``, ``ase.md.nose_hoover_chain.IsotropicMTKNPT``: thermostat time
constant 100 steps, barostat 1,000 steps; it needs the calculator's stress). Initial velocities
from the Maxwell-Boltzmann distribution at ``temperature`` (seeded), with zero total momentum (and
angular momentum for a molecule). Every ``interval`` steps one frame (positions, cell, energy,
forces, momenta) is appended to the extxyz file. For NVE the summary reports the total-energy
drift as the slope of a straight-line fit, in meV/atom/ps, which measures how well the model's
forces and energy agree along the trajectory; with a cell also the mean volume and density.
A hop type perceived again during the run (a bond formed or broken) is a jump in the energy: for
MD of a system that does not react, keep the starting bond graph (``topology="fixed"`` of the
calculator, ``denoise3d md --fixed-topology``).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

THERMOSTATS = ("nve", "langevin", "npt")


def make_dynamics(atoms, thermostat: str, timestep: float, temperature: float,
                  friction: float, rng, pressure: float = 1.0):
    """ASE integrator: ``nve`` → VelocityVerlet, ``langevin`` → Langevin (FixCom), ``npt`` →
    IsotropicMTKNPT at ``pressure`` bar (a cell periodic in all three directions)."""
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    if thermostat == "nve":
        return VelocityVerlet(atoms, timestep * units.fs)
    if thermostat == "npt":
        from ase.md.nose_hoover_chain import IsotropicMTKNPT

        if not atoms.pbc.all():
            raise ValueError(f"thermostat npt needs a cell periodic in all three directions "
                             f"(pbc={atoms.pbc.tolist()})")
        dt = timestep * units.fs
        return IsotropicMTKNPT(atoms, dt, temperature_K=temperature, pressure_au=pressure * units.bar,
                               tdamp=100 * dt, pdamp=1000 * dt)
    if thermostat == "langevin":
        atoms.set_constraint(FixCom())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return Langevin(atoms, timestep * units.fs, temperature_K=temperature,
                            friction=friction / units.fs, fixcm=False, rng=rng)
    raise ValueError(f"unknown thermostat {thermostat!r}; choose from {', '.join(THERMOSTATS)}")


def init_velocities(atoms, temperature: float, rng) -> None:
    from ase.md import velocitydistribution as vd

    if len(atoms) < 2 and not atoms.pbc.any():  # one free atom: no internal motion to heat
        atoms.set_momenta(np.zeros((len(atoms), 3)))
        return
    init = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    init(atoms, temperature_K=temperature, rng=rng)
    vd.Stationary(atoms)
    if len(atoms) > 2 and not atoms.pbc.any():  # a crystal has no rotation to remove
        vd.ZeroRotation(atoms)


def run_md(atoms, calc, out: str | Path, steps: int = 1000, timestep: float = 0.5,
           temperature: float = 300.0, thermostat: str = "langevin", friction: float = 0.01,
           interval: int = 10, seed: int = 0, progress: bool = True,
           pressure: float = 1.0) -> dict:
    """Run MD of ``atoms`` with calculator ``calc``; frames to ``out`` (extxyz); a summary dict.

    ``timestep`` fs, ``temperature`` K (initial velocities, and the bath for Langevin and NPT),
    ``friction`` fs⁻¹, ``pressure`` bar (NPT). Energies in the summary are eV, drift meV/atom/ps.
    """
    import ase.io
    from tqdm import tqdm

    if steps < 0 or interval < 1 or timestep <= 0 or not temperature >= 0:
        raise ValueError(f"need steps >= 0, interval >= 1, timestep > 0, temperature >= 0 K; got "
                         f"{steps}, {interval}, {timestep}, {temperature}")
    out = Path(out)
    if out.suffix not in (".extxyz", ".xyz"):
        raise ValueError(f"--out {out}: MD frames are written as extxyz; name it .extxyz or .xyz")
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    atoms = atoms.copy()
    atoms.calc = calc
    init_velocities(atoms, temperature, rng)
    dyn = make_dynamics(atoms, thermostat, timestep, temperature, friction, rng, pressure)
    totals, temps, volumes = [], [], []
    out.unlink(missing_ok=True)

    def record():
        e_pot = atoms.get_potential_energy()
        totals.append(e_pot + atoms.get_kinetic_energy())
        temps.append(atoms.get_temperature())
        volumes.append(atoms.get_volume() if atoms.pbc.all() else float("nan"))
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
    times_ps = np.arange(len(totals)) * interval * timestep / 1000.0
    times_ps[-1] = steps * timestep / 1000.0  # the last chunk may be shorter than interval
    slope = np.polyfit(times_ps, totals, 1)[0] if len(totals) > 1 else 0.0  # eV/ps
    summary = {"trajectory": str(out), "thermostat": thermostat, "atoms": len(atoms),
               "steps": steps, "timestep_fs": timestep, "simulated_ps": steps * timestep / 1000.0,
               "frames": len(totals), "seconds": seconds,
               "steps_per_second": steps / max(seconds, 1e-9),
               "mean_temperature_K": float(np.mean(temps)),
               "total_energy_drift_eV": float(totals[-1] - totals[0]),
               # conserved only in NVE: with a thermostat or barostat the drift says nothing
               "total_energy_drift_meV_per_atom_per_ps": (float(slope) * 1000.0 / len(atoms)
                                                          if thermostat == "nve" else None),
               "total_energy_max_deviation_eV": float(np.max(np.abs(totals - totals[0])))}
    if atoms.pbc.all():
        from ase import units

        mass = atoms.get_masses().sum() / units.mol  # g
        volume = float(np.mean(volumes))  # Å³
        summary.update({"mean_volume_A3": volume, "mean_density_g_cm3": mass / (volume * 1e-24),
                        "pressure_bar": pressure if thermostat == "npt" else None})
    return summary
