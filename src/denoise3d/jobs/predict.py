"""Predictions for structures without labels: ``denoise3d predict CHECKPOINT FILE --out OUT``.

A force field gives each structure's energy (eV) and forces (eV/Å); a property model its label
in the label's internal unit (eV for energies). Structures come from any structure file the
readers know (xyz, extxyz, SDF, ASE db, a directory; :mod:`denoise3d.data.readers`); bonds (hop
types) are perceived per structure, by the minimum image for a periodic cell (radius backbones
only: EGNN refuses one in one line); a force field also gives the stress (eV/Å³, Voigt) of a
cell periodic in all directions, and the extxyz output keeps the cell. Output by suffix: ``.extxyz`` (ASE: energy, forces and
stress as the frame's calculator results, properties in ``info``, units in ``info["units"]``) or
``.csv`` (one row per structure; column names carry the unit; stress as six Voigt columns, empty
for a structure that is not fully periodic; forces are not written to CSV). The summary's
``outputs`` lists each output with its unit (stress only when some structure has one). Structures with
an element absent from the training data are refused, as in ``evaluate``.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

from denoise3d.config import device_named
from denoise3d.data.batch import Molecule, collate
from denoise3d.data.bonds import hop_matrix
from denoise3d.data.elements import MAX_Z
from denoise3d.jobs import checkpoint
from denoise3d.jobs.energy_force import force_field_from
from denoise3d.models.heads import voigt

FORMATS = (".extxyz", ".csv")
VOIGT = ("xx", "yy", "zz", "yz", "xz", "xy")  # ASE's order


def predictor(ckpt: checkpoint.Checkpoint, compile: bool = False):
    """``(models, run, units)``: the modules to move to a device, ``run(batch) -> {output:
    per-structure values}`` and ``{output: unit}`` of a fine-tuned checkpoint; ``compile``: a
    force field's energies and forces through the compiled program (not the stress)."""
    if compile and ckpt.task != "energy_force":
        raise ValueError(f"{ckpt.path}: --compile applies to force fields "
                         f"(finetune.task=energy_force); this checkpoint is a {ckpt.task} model")
    if ckpt.task == "energy_force":
        from denoise3d.models.inference import ForceField

        _, backbone, objective = force_field_from(ckpt)
        program = ForceField(backbone, objective, compile=compile)

        def run(batch):
            if batch.pbc is not None and bool(batch.pbc.all()):
                energy, forces, stress = objective.predict_with_stress(backbone, batch)
                extra = {"stress": list(voigt(stress).double().cpu())}
            else:
                energy, forces = program(batch)
                extra = {"stress": [None] * batch.num_graphs}
            return {"energy": energy.tolist(),
                    "forces": list(torch.split(forces.double().cpu(), batch.natoms.tolist())),
                    **extra}

        return (backbone, objective), run, {"energy": "eV", "forces": "eV/Å", "stress": "eV/Å³"}
    from denoise3d.jobs.property import model_from

    backbone, heads = model_from(ckpt)

    @torch.no_grad()
    def run(batch):
        s, _ = backbone(batch)  # one forward for every head
        return {n: head.head(s, batch).double().cpu().tolist() for n, head in heads.items()}

    return (backbone, *heads.values()), run, {n: ckpt.data.get("units", {}).get(n, "")
                                               for n in heads}


def predict(path, structures, out, allow_unseen: bool = False, batch_size: int = 64,
            device: str = "cpu", compile: bool = False) -> dict:
    """Predict every structure of ``structures`` with checkpoint ``path``, ``batch_size`` per
    call; write ``out`` (.extxyz or .csv); returns a summary (count, structures/s, outputs and
    units). ``compile``: see :func:`predictor`."""
    from denoise3d.data.readers import read_structures

    out = Path(out)
    if out.suffix not in FORMATS:
        raise ValueError(f"--out {out}: write .extxyz or .csv")
    ckpt = checkpoint.load(path, kind="finetune")
    models, run, units = predictor(ckpt, compile)
    records = list(read_structures(structures))  # one-line errors name the file and frame
    if not records:
        raise ValueError(f"{structures}: no structures")
    counts = np.stack([np.bincount(r.z, minlength=MAX_Z + 1) for r in records])
    checkpoint.Domain.of(ckpt, allow_unseen).check(counts, str(structures))
    periodic = [r.cell is not None for r in records]
    full = bool(getattr(models[0], "full_graph", False))
    if any(periodic) and full:
        first = records[periodic.index(True)].name
        raise ValueError(f"{structures}: {first} is periodic, and {type(models[0]).__name__} is "
                         f"not defined for periodic structures (it runs over every pair of atoms of "
                         f"one molecule); use a radius backbone's checkpoint")
    dev = device_named(device)
    for model in models:
        model.to(dev)
    t0 = time.perf_counter()
    values: dict[str, list] = {}
    # structures periodic in all directions (which have a stress) are batched apart from the rest
    stressed = [r.pbc is not None and bool(np.all(r.pbc)) for r in records]
    order = [i for i, p in enumerate(stressed) if p] + [i for i, p in enumerate(stressed) if not p]
    for group in (order[:sum(stressed)], order[sum(stressed):]):
        for start in range(0, len(group), batch_size):
            chunk = [records[i] for i in group[start:start + batch_size]]
            mols = [Molecule(r.z, r.pos, None if r.cell is not None else hop_matrix(r.z, r.pos),
                             cell=r.cell, pbc=r.pbc) for r in chunk]
            batch = collate(mols, graph="full" if full else "bonded").to(dev)
            for k, v in run(batch).items():
                values.setdefault(k, []).extend(v)
    back = np.argsort(order)  # the values in the records' order
    values = {k: [v[i] for i in back] for k, v in values.items()}
    seconds = time.perf_counter() - t0
    if "stress" in values and all(v is None for v in values["stress"]):  # no periodic cell
        del values["stress"]
        units = {k: u for k, u in units.items() if k != "stress"}
    _write(out, records, values, units)
    rate = len(records) / max(seconds, 1e-9)
    print(f"predicted {len(records)} structures ({rate:.1f} structures/s); wrote {out}",
          file=sys.stderr)
    return {"checkpoint": str(path), "structures": len(records), "out": str(out),
            "outputs": units, "structures_per_s": rate}


def _write(out: Path, records, values: dict, units: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".csv":
        scalars = [k for k in units if k not in ("forces", "stress")]
        stress = [f"stress_{c} ({units['stress']})" for c in VOIGT] if "stress" in units else []
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["name", "smiles", "n_atoms", *[f"{k} ({units[k] or 'unitless'})"
                                                       for k in scalars], *stress])
            for i, r in enumerate(records):
                row = [r.name, r.smiles, len(r.z), *[repr(values[k][i]) for k in scalars]]
                if stress:  # empty cells for a structure that is not periodic in all directions
                    v = values["stress"][i]
                    row += [repr(float(x)) for x in v] if v is not None else [""] * 6
                w.writerow(row)
    else:
        import ase.io
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        frames = []
        for i, r in enumerate(records):
            atoms = Atoms(numbers=r.z, positions=r.pos, cell=r.cell, pbc=r.pbc)
            atoms.info["units"] = ",".join(f"{k}:{u or 'unitless'}" for k, u in units.items())
            if r.name:  # an empty value would break the extxyz comment line
                atoms.info["name"] = r.name
            if "forces" in units:
                stress = values.get("stress", [None] * len(records))[i]
                atoms.calc = SinglePointCalculator(
                    atoms, energy=values["energy"][i], forces=values["forces"][i].numpy(),
                    **({"stress": stress.numpy()} if stress is not None else {}))
            else:
                atoms.info.update({k: v[i] for k, v in values.items()})
            frames.append(atoms)
        ase.io.write(tmp, frames, format="extxyz")
    tmp.replace(out)
