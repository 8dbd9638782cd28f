"""MD17-style trajectories labelled with GFN2-xTB: Langevin MD with ASE, forces from ``tblite``.

MD17 ran ab initio MD at 500 K with a 0.5 fs time step and recorded energies and forces along
the trajectory; :func:`generate_trajectory` does the same with GFN2-xTB (Bannwarth et al. 2019,
through the ``tblite`` ASE calculator) instead of DFT:

1. the molecule from SMILES (RDKit: ETKDGv3 embedding seeded by ``seed``, then MMFF94
   optimisation) or from any structure file ASE reads (xyz, extxyz, sdf, pdb, ... or an MD17
   ``.npz``, whose first frame is used);
2. optionally relaxed with xTB (BFGS, fmax 0.05 eV/Å, at most 200 steps), so MD does not start
   with the large forces of a force-field geometry;
3. Maxwell-Boltzmann velocities at the temperature, ASE Langevin dynamics (friction 0.01 fs⁻¹,
   centre of mass fixed with ``FixCom``; the recorded forces are the calculator's, unconstrained),
   ``equilibrate`` steps discarded, then one frame every ``interval`` steps.

Every random choice (embedding, velocities, thermostat noise) is drawn from ``seed``. The output
is an MD17-layout ``.npz`` (:func:`denoise3d.data.md17.write_md17`, kcal/mol) with provenance
keys. Long runs save a partial file ``.<name>.partial.npz`` beside the output every
``checkpoint_every`` frames (atomically); rerunning the same command continues from it (same
positions, momenta and thermostat random stream). The output itself is written once, complete,
under a temporary name and renamed, so it is never half-written.
"""

from __future__ import annotations

import json
import os
import time
import warnings
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from denoise3d.data.md17 import atomic_save, read_md17, write_md17

# The eight MD17 molecules (Chmiela et al. 2017); malonaldehyde is its cis-enol form, as in MD17.
BENCHMARK_MOLECULES = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "benzene": "c1ccccc1",
    "ethanol": "CCO",
    "malonaldehyde": "O=C/C=C\\O",
    "naphthalene": "c1ccc2ccccc2c1",
    "salicylic_acid": "OC(=O)c1ccccc1O",
    "toluene": "Cc1ccccc1",
    "uracil": "O=C1C=CNC(=O)N1",
}
# The benchmark set: 20,000 frames (9,500 train / 500 valid / 10,000 test), one every 5 steps
# (2.5 fs) after 1 ps of equilibration, i.e. 50 ps of MD at 500 K per molecule.
BENCHMARK_SETTINGS = {"frames": 20_000, "interval": 5, "equilibrate": 2000}
THEORY = "GFN2-xTB"


def _require(package: str):
    try:
        return __import__(package)
    except ImportError:
        raise ValueError(f"xTB trajectories need the package {package!r}: "
                         f"pip install tblite ase") from None


def atoms_from_smiles(smiles: str, seed: int = 0):
    """ASE ``Atoms`` of ``smiles`` with hydrogens: RDKit ETKDGv3 (seeded) + MMFF94."""
    from ase import Atoms
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"SMILES {smiles!r}: RDKit cannot parse it")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise ValueError(f"SMILES {smiles!r}: RDKit could not embed a 3D conformer")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    return Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()],
                 positions=mol.GetConformer().GetPositions())


def atoms_from_file(path: str | Path, frame: int = 0):
    """ASE ``Atoms`` of frame ``frame`` of a structure file: anything ``ase.io.read`` reads (xyz,
    extxyz, sdf, pdb, ...) or an MD17-layout ``.npz``. A periodic extxyz frame keeps its cell
    and pbc (``Lattice=``, ``pbc=``)."""
    from ase import Atoms

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"structure file not found: {path}")
    if path.suffix == ".npz":
        arrays, _ = read_md17(path)
        offset = arrays["atom_offset"]
        if not 0 <= frame < len(offset) - 1:
            raise ValueError(f"{path.name}: frame {frame} out of range (0..{len(offset) - 2})")
        a, b = offset[frame], offset[frame + 1]
        return Atoms(numbers=arrays["z"][a:b].astype(int), positions=arrays["pos"][a:b])
    from denoise3d.data.readers import SUFFIXES, file_suffix, periodic_cell, read_structures

    if file_suffix(path) in SUFFIXES:  # our readers: the same checks and frame names as data
        for k, s in enumerate(read_structures(path)):
            if k == frame:
                if s.cell is None:
                    return Atoms(numbers=s.z, positions=s.pos)
                return Atoms(numbers=s.z, positions=s.pos, cell=s.cell, pbc=s.pbc)
        raise ValueError(f"{path.name}: frame {frame} out of range (the file has {k + 1})")
    import ase.io

    try:
        atoms = ase.io.read(path, index=frame)
    except (StopIteration, IndexError):
        raise ValueError(f"{path.name}: frame {frame} out of range") from None
    except Exception as e:  # noqa: BLE001 - ASE raises many kinds; report them in one line
        raise ValueError(f"{path.name}: not a structure file ASE can read "
                         f"({type(e).__name__}: {e})") from None
    from denoise3d.data.readers import checked

    checked(atoms.numbers, atoms.positions, f"{path.name}: frame {frame}")
    periodic_cell(atoms, f"{path.name}: frame {frame}")
    return atoms


def xtb_calculator():
    """tblite's ASE calculator for GFN2-xTB, quiet."""
    _require("tblite")
    from tblite.ase import TBLite

    return TBLite(method=THEORY, verbosity=0)


def _versions() -> str:
    out = []
    for pkg in ("denoise3d", "tblite", "ase", "rdkit"):
        try:
            out.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(out)


def _partial_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial.npz")


def _start_state(atoms, settings: dict, partial: Path):
    """(frames recorded so far as lists, rng) from a matching partial file, else fresh."""
    rng = np.random.default_rng(settings["seed"])
    if not partial.is_file():
        return [], [], [], rng, False
    try:
        with np.load(partial, allow_pickle=False) as f:
            saved = json.loads(str(f["settings"]))
            if saved == settings:
                positions, momenta = f["positions"], f["momenta"]
                rng_state = json.loads(str(f["rng_state"]))
                frames = list(f["R"]), list(f["E"]), list(f["F"])
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"{partial}: a corrupted partial trajectory ({type(e).__name__}: {e}); "
                         f"delete it to start over") from None
    if saved != settings:
        raise ValueError(f"{partial}: a partial run with other settings ({saved}); delete it "
                         f"to start again")
    atoms.set_positions(positions)
    atoms.set_momenta(momenta)
    rng.bit_generator.state = rng_state
    return *frames, rng, True


def _save_partial(partial: Path, atoms, rng, settings: dict, R, E, F) -> None:
    atomic_save(partial, {
        "settings": np.array(json.dumps(settings)), "positions": atoms.get_positions(),
        "momenta": atoms.get_momenta(), "rng_state": np.array(json.dumps(rng.bit_generator.state)),
        "R": np.asarray(R), "E": np.asarray(E), "F": np.asarray(F)})


def generate_trajectory(out: str | Path, smiles: str | None = None,
                        structure: str | Path | None = None, name: str | None = None,
                        temperature: float = 500.0, timestep: float = 0.5, interval: int = 1,
                        frames: int = 20_000, equilibrate: int = 2000, friction: float = 0.01,
                        seed: int = 0, relax: bool = True, checkpoint_every: int = 1000,
                        progress: bool = True, frame: int = 0) -> Path:
    """Run xTB Langevin MD and write an MD17-layout ``.npz`` to ``out``; returns its path.

    ``temperature`` K, ``timestep`` fs, ``friction`` fs⁻¹, ``interval`` MD steps between frames,
    ``equilibrate`` MD steps discarded before the first frame; ``frame``: which structure of a
    multi-frame ``structure`` file starts the run (0 = the first). See the module docstring.
    """
    _require("ase")
    from ase import units
    from ase.constraints import FixCom
    from ase.md import velocitydistribution as vd
    from ase.md.langevin import Langevin
    from tqdm import tqdm

    out = Path(out)
    if (smiles is None) == (structure is None):
        raise ValueError("give exactly one of a SMILES string or a structure file")
    if frames < 1 or interval < 1 or equilibrate < 0 or timestep <= 0 or temperature <= 0:
        raise ValueError(f"need frames >= 1, interval >= 1, equilibrate >= 0, timestep > 0, "
                         f"temperature > 0; got {frames}, {interval}, {equilibrate}, {timestep}, "
                         f"{temperature}")
    atoms = atoms_from_smiles(smiles, seed) if smiles else atoms_from_file(structure, frame)
    source = {"smiles": smiles} if smiles else {"structure": Path(structure).name}
    settings = {**source, "temperature_K": temperature, "timestep_fs": timestep,
                "interval_steps": interval, "frames": frames, "equilibration_steps": equilibrate,
                "friction_per_fs": friction, "seed": seed, "relaxed": relax}
    atoms.calc = xtb_calculator()
    partial = _partial_path(out)
    R, E, F, rng, resumed = _start_state(atoms, settings, partial)
    if not resumed:
        if relax:
            from ase.optimize import BFGS

            BFGS(atoms, logfile=None).run(fmax=0.05, steps=200)
        init = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
        init(atoms, temperature_K=temperature, rng=rng)
        vd.Stationary(atoms)
    atoms.set_constraint(FixCom())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # ASE's notice about the fixcm default
        dyn = Langevin(atoms, timestep * units.fs, temperature_K=temperature,
                       friction=friction / units.fs, fixcm=False, rng=rng)
    t0, start = time.perf_counter(), len(R)
    label = name or (smiles or Path(structure).stem)
    with tqdm(total=frames, initial=start, desc=f"xTB MD {label}", unit="frame",
              disable=not progress, mininterval=1.0) as bar:
        if not resumed and equilibrate:
            dyn.run(equilibrate)
        while len(R) < frames:
            if R:  # the first frame is the state right after equilibration
                dyn.run(interval)
            R.append(atoms.get_positions())
            E.append(atoms.get_potential_energy())  # eV, cached from the last step
            F.append(atoms.get_forces(apply_constraint=False))  # eV/Å
            bar.update(1)
            if len(R) % checkpoint_every == 0 and len(R) < frames:
                _save_partial(partial, atoms, rng, settings, R, E, F)
    seconds = time.perf_counter() - t0
    steps = (0 if resumed else equilibrate) + (frames - max(start, 1)) * interval
    write_md17(out, atoms.numbers, np.asarray(R), np.asarray(E), np.asarray(F),
               name=label, theory=THEORY, method=f"{THEORY} (tblite), ASE Langevin MD",
               generator=_versions(), created=time.strftime("%Y-%m-%dT%H:%M:%S"),
               wall_seconds=seconds, md_steps_per_second=steps / max(seconds, 1e-9), **settings)
    partial.unlink(missing_ok=True)
    return out


def generate_benchmark_set(out_dir: str | Path, seed: int = 0, molecules=None,
                           progress: bool = True, **overrides) -> list[Path]:
    """The eight MD17 molecules as xTB trajectories ``<out_dir>/<molecule>.npz``
    (:data:`BENCHMARK_SETTINGS`, 500 K, 0.5 fs); finished files are kept, partial ones resumed."""
    out_dir = Path(out_dir).expanduser()
    names = list(BENCHMARK_MOLECULES) if not molecules else list(molecules)
    unknown = sorted(set(names) - set(BENCHMARK_MOLECULES))
    if unknown:
        raise ValueError(f"unknown benchmark molecule(s) {unknown}; known: "
                         f"{', '.join(BENCHMARK_MOLECULES)}")
    paths = []
    for mol in names:
        path = out_dir / f"{mol}.npz"
        if not path.is_file():
            generate_trajectory(path, smiles=BENCHMARK_MOLECULES[mol], name=mol, seed=seed,
                                progress=progress, **{**BENCHMARK_SETTINGS, **overrides})
        paths.append(path)
    return paths


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def rattled(structures, sigmas, seed: int = 0) -> list:
    """Off-equilibrium copies of ``structures`` (ASE ``Atoms``): for every structure and every
    σ in ``sigmas`` (Å) one copy with each Cartesian coordinate displaced by σ·N(0, 1), drawn in
    that order from ``numpy.random.default_rng(seed)``. Each copy records ``info["rattle_sigma"]``
    (Å) and ``info["source_frame"]``. Near an equilibrium geometry σ ≈ 0.03 Å gives force
    components of about the size of a 500 K MD trajectory's (GFN2-xTB ethanol: mean |F| 19
    kcal/mol/Å at 0.03 Å, 33 at 0.05). ValueError for a σ that is not positive."""
    sigmas = [float(s) for s in sigmas]
    bad = [s for s in sigmas if not (s > 0 and np.isfinite(s))]
    if not sigmas or bad:
        raise ValueError(f"rattle: every sigma must be a positive number of Å (got {sigmas})")
    rng = np.random.default_rng(seed)
    out = []
    for k, atoms in enumerate(structures):
        for sigma in sigmas:
            copy = atoms.copy()
            copy.calc = None
            # set_positions applies constraints: atoms fixed by FixAtoms stay where they are
            copy.set_positions(atoms.positions + sigma * rng.standard_normal(atoms.positions.shape))
            copy.info.update(rattle_sigma=sigma, source_frame=k)
            out.append(copy)
    return out


def _label_one(item):
    """(energy, forces, stress or None) of one structure with GFN2-xTB, or the error's text."""
    k, atoms = item
    atoms = atoms.copy()
    atoms.calc = xtb_calculator()
    try:
        stress = atoms.get_stress() if atoms.pbc.all() else None
        return k, atoms.get_potential_energy(), atoms.get_forces(), stress, None
    except Exception as e:  # noqa: BLE001 - tblite raises several kinds; one line
        return k, None, None, None, f"{type(e).__name__}: {e}"


def label_structures(structures, out: str | Path, progress: bool = True, workers: int = 1) -> dict:
    """Label structures (ASE ``Atoms``, molecules or periodic cells) with GFN2-xTB (tblite) and
    write them to ``out`` as extxyz: energy (eV), forces (eV/Å) and, for a cell periodic in all
    three directions, stress (eV/Å³, Voigt) as ASE stores calculator results; cells and pbc are
    kept (``Lattice``, ``pbc``), and so is ``Atoms.info``, plus ``info["theory"]`` =
    "GFN2-xTB". ``workers`` > 1 labels in that many
    processes (one thread each; the output order is the input's). Written to a temporary file
    and renamed when complete, so a killed run leaves no half file; a frame xTB cannot label is
    a ValueError naming it, and nothing is written. Returns a summary (frames, seconds per
    frame, theory, versions)."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator
    from tqdm import tqdm

    if workers < 1:
        raise ValueError(f"workers must be at least 1 (got {workers})")
    structures = list(structures)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    frames, t0 = [], time.perf_counter()
    items = list(enumerate(structures))
    pool = None
    try:
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            saved = {k: os.environ.get(k) for k in _THREAD_VARS}
            os.environ.update(dict.fromkeys(_THREAD_VARS, "1"))  # inherited by the spawned
            try:
                pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
            results = pool.map(_label_one, items, chunksize=16)
        else:
            results = map(_label_one, items)
        for k, energy, forces, stress, error in _unbroken(
                tqdm(results, total=len(items), desc="GFN2-xTB", unit="frame",
                     disable=not progress)):
            if error is not None:
                info = structures[k].info
                where = (f" (copy of input frame {info['source_frame']}, rattled by "
                         f"{info['rattle_sigma']} Å)" if "source_frame" in info else "")
                raise ValueError(f"frame {k}{where}: GFN2-xTB failed ({error})")
            atoms = structures[k].copy()
            atoms.info["theory"] = THEORY  # read back as the data's level of theory (metrics)
            results_k = {"energy": energy, "forces": forces}
            if stress is not None:
                results_k["stress"] = stress
            atoms.calc = SinglePointCalculator(atoms, **results_k)
            frames.append(atoms)
        ase.io.write(tmp, frames, format="extxyz")
        os.replace(tmp, out)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    return {"out": str(out), "frames": len(frames), "theory": THEORY, "workers": workers,
            "seconds_per_frame": seconds / max(len(frames), 1), "versions": _versions()}


def _unbroken(results):
    """``results`` with a labelling process that died (killed for memory, a crash in tblite)
    turned into a one-line error instead of a traceback."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        yield from results
    except BrokenProcessPool:
        raise ValueError("a GFN2-xTB labelling process died (out of memory, or killed); "
                         "nothing was written") from None
