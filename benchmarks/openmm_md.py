"""MD in OpenMM with an exported force field (openmmtorch's TorchForce), checked against the ASE
calculator (issue 19).

Two stages, two environments:

1. ``run`` needs torch, vesin-torch, openmm, openmmtorch and ase, and not denoise3d (the
   exported file is self-contained). It wraps the exported program as a TorchForce (positions
   nm -> Å, energy eV -> kJ/mol, forces eV/Å -> kJ/mol/nm), runs NVE (velocity Verlet) from
   the structure with velocities drawn at --temperature, and writes every --interval steps the
   positions (Å) and OpenMM's potential and kinetic energies (eV) to an .npz, with ms/step.
2. ``compare`` (the project's environment) recomputes the potential energy of every written
   frame with ``Denoise3DCalculator`` in float64 and prints the largest difference and the NVE
   drift.

    python -m venv /tmp/omm && /tmp/omm/bin/pip install torch==2.13.0 \\
        && /tmp/omm/bin/pip install openmm openmmtorch vesin-torch ase numpy
    denoise3d export finetune.pt model64.pt --dtype float64
    /tmp/omm/bin/python benchmarks/openmm_md.py run model64.pt start.xyz --out omm.npz
    python benchmarks/openmm_md.py compare finetune.pt omm.npz
"""

from __future__ import annotations

import argparse
import json
import time

EV_KJ_MOL = 96.48533212331002  # 1 eV in kJ/mol


def run(args) -> None:
    import ase.io
    import numpy as np
    import openmm
    import openmmtorch
    import torch
    import vesin_torch  # noqa: F401 - the exported program's neighbour list
    from openmm import unit

    torch.set_num_threads(args.threads)
    atoms = ase.io.read(args.structure, index=args.frame)
    model = torch.jit.load(args.model)

    class ForOpenMM(torch.nn.Module):
        def __init__(self, model, z):
            super().__init__()
            self.model = model
            self.register_buffer("z", z)
            self.ev = EV_KJ_MOL  # TorchScript reads attributes, not globals

        def forward(self, positions: torch.Tensor):
            pos = positions.to(torch.float64) * 10.0  # nm -> Å
            out = self.model(self.z, pos, torch.zeros(3, 3, dtype=torch.float64),
                             torch.zeros(3, dtype=torch.bool))
            return out["energy"] * self.ev, out["forces"] * (self.ev * 10.0)  # kJ/mol, per nm

    wrapped = torch.jit.script(ForOpenMM(model, torch.as_tensor(atoms.numbers, dtype=torch.long)))
    path = args.out + ".force.pt"
    wrapped.save(path)
    force = openmmtorch.TorchForce(path)
    force.setOutputsForces(True)
    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(float(m) * unit.amu)
    system.addForce(force)
    integrator = openmm.VerletIntegrator(args.timestep * unit.femtoseconds)
    platform = openmm.Platform.getPlatformByName(args.platform)
    context = openmm.Context(system, integrator, platform)
    context.setPositions(atoms.positions * 0.1 * unit.nanometer)
    context.setVelocitiesToTemperature(args.temperature * unit.kelvin, args.seed)
    frames, epot, ekin = [], [], []

    def record():
        state = context.getState(getPositions=True, getEnergy=True)
        frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
        epot.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / EV_KJ_MOL)
        ekin.append(state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / EV_KJ_MOL)

    record()
    t0 = time.perf_counter()
    for _ in range(args.steps // args.interval):
        integrator.step(args.interval)
        record()
    seconds = time.perf_counter() - t0
    np.savez(args.out, z=atoms.numbers, positions=np.asarray(frames), epot=np.asarray(epot),
             ekin=np.asarray(ekin), ms_per_step=1000 * seconds / args.steps)
    total = np.asarray(epot) + np.asarray(ekin)
    print(json.dumps({"openmm": openmm.__version__, "openmmtorch": getattr(openmmtorch, "__version__", "?"),
                      "torch": torch.__version__, "platform": args.platform, "atoms": len(atoms),
                      "steps": args.steps, "ms_per_step": 1000 * seconds / args.steps,
                      "total_energy_drift_eV": float(total.max() - total.min()),
                      "out": args.out}, indent=1))


def compare(args) -> None:
    import numpy as np
    from ase import Atoms

    from denoise3d.md.calculator import Denoise3DCalculator

    d = np.load(args.trajectory)
    calc = Denoise3DCalculator(args.checkpoint, dtype="float64", compile=False)
    ours = []
    for pos in d["positions"]:
        atoms = Atoms(numbers=d["z"], positions=pos)
        atoms.calc = calc
        ours.append(atoms.get_potential_energy())
    diff = np.abs(np.asarray(ours) - d["epot"])
    total = d["epot"] + d["ekin"]
    print(json.dumps({"frames": len(ours), "max_abs_energy_difference_eV": float(diff.max()),
                      "potential_energy_range_eV": float(np.ptp(d["epot"])),
                      "total_energy_drift_eV": float(np.ptp(total)),
                      "openmm_ms_per_step": float(d["ms_per_step"])}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="stage", required=True)
    r = sub.add_parser("run")
    r.add_argument("model")
    r.add_argument("structure")
    r.add_argument("--frame", type=int, default=0)
    r.add_argument("--out", default="omm.npz")
    r.add_argument("--steps", type=int, default=200)
    r.add_argument("--interval", type=int, default=10)
    r.add_argument("--timestep", type=float, default=0.5, help="fs")
    r.add_argument("--temperature", type=float, default=300.0, help="K")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--platform", default="Reference")
    r.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("compare")
    c.add_argument("checkpoint")
    c.add_argument("trajectory")
    args = p.parse_args()
    run(args) if args.stage == "run" else compare(args)


if __name__ == "__main__":
    main()
