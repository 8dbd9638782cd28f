"""Issue 9: is a pretrained energy model already a force field, before any fine-tuning?

For each shipped pretrained checkpoint whose objective trains an energy model (3D-EMGP's
energy head, Gaussian denoising with ``vector: gradient``), take its forces F = −∇E on frames
of a GFN2-xTB trajectory it never saw and compare them with the xTB forces:

* cosine: Σ F·F* / (|F| |F*|) over all atoms and components (1 = same directions);
* best-scale MAE: min_a mean|a F − F*| via the least-squares a (the energy scale of the pretrained
  head is arbitrary, fine-tuning sets it), against the zero-force MAE mean|F*|.

    python benchmarks/pretraining_benefit/zero_shot.py                 # aspirin, ethanol, malonaldehyde
    python benchmarks/pretraining_benefit/zero_shot.py --frames 200 --md17-dir /data/md17
    python benchmarks/pretraining_benefit/zero_shot.py \
        --checkpoints runs/pretraining_benefit/pretrain/denoise-p1/pretrain.pt   # any pretrain checkpoint

A fine-tuned force field (``finetune.task=energy_force``, e.g. one trained on other molecules'
xTB forces by ``benchmarks/xtb_pretraining/run.py``) is taken as it is: its forces are in eV/Å,
so the table gives its MAE at scale 1 as well.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import MD17_DIR, trajectory  # noqa: E402

from denoise3d import pretrained  # noqa: E402
from denoise3d.jobs import checkpoint  # noqa: E402
from denoise3d.data.dataset import BatchLoader  # noqa: E402
from denoise3d.data.md17 import load_md17  # noqa: E402
from denoise3d.units import KCALMOL_EV  # noqa: E402


def forces_of_energy_model(init: str, ds, idx) -> tuple[np.ndarray, np.ndarray] | None:
    """(F = −∇E of the checkpoint's own energy head (arbitrary energy unit per Å), the
    trajectory's forces (eV/Å)), both (n_atoms_total, 3); None without an energy model."""
    ckpt = checkpoint.load(init)
    if ckpt.data["kind"] == "finetune":
        return forces_of_force_field(init, ds, idx)
    found = ckpt.energy_head()
    if found is None:
        return None
    from denoise3d.models.heads import EnergyHead, energy_and_forces

    backbone = ckpt.backbone()
    head = EnergyHead(ckpt.config.model.hidden)
    head.load_state_dict(found[1])
    backbone.eval(), head.eval()
    out, ref = [], []
    for batch in BatchLoader(ds, idx, batch_size=100, shuffle=False):
        _, f, _ = energy_and_forces(backbone, head, batch, create_graph=False)
        out.append(f.detach().double().numpy())
        ref.append(batch.targets["forces"].double().numpy())
    return np.concatenate(out), np.concatenate(ref)


def forces_of_force_field(init: str, ds, idx) -> tuple[np.ndarray, np.ndarray]:
    """(F of a fine-tuned energy + force checkpoint (eV/Å), the trajectory's forces (eV/Å))."""
    from denoise3d.jobs.energy_force import load_force_field
    from denoise3d.models.inference import ForceField

    _, backbone, objective, _ = load_force_field(init, allow_unseen=True)
    program = ForceField(backbone, objective, compile=False)
    out, ref = [], []
    for batch in BatchLoader(ds, idx, batch_size=100, shuffle=False):
        _, f = program(batch)
        out.append(f.detach().double().numpy())
        ref.append(batch.targets["forces"].double().numpy())
    return np.concatenate(out), np.concatenate(ref)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--molecules", default="aspirin,ethanol,malonaldehyde")
    p.add_argument("--frames", type=int, default=500, help="frames per molecule (evenly spaced)")
    p.add_argument("--md17-dir", default=str(MD17_DIR))
    p.add_argument("--checkpoints", default=",".join(pretrained.PREFIX + n for n in pretrained.available()),
                   help="comma list of pretrain checkpoints: paths or pretrained:NAME (default: the shipped ones)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print("| molecule | pretrained | cosine(F, F_xTB) | best-scale MAE (kcal/mol/Å) | MAE at scale 1 "
          "(force fields; kcal/mol/Å) | zero-force MAE (kcal/mol/Å) |")
    print("|---|---|---|---|---|---|")
    for mol in args.molecules.split(","):
        path = trajectory(Path(args.md17_dir), mol)
        ds = load_md17(path)
        idx = np.linspace(0, len(ds) - 1, min(args.frames, len(ds))).astype(np.int64)
        for init in args.checkpoints.split(","):
            force_field = checkpoint.load(init).data["kind"] == "finetune"
            found = forces_of_energy_model(init, ds, idx)
            if found is None:
                continue
            f, ref = found
            cos = float((f * ref).sum() / (np.linalg.norm(f) * np.linalg.norm(ref)))
            a = float((f * ref).sum() / (f * f).sum())
            mae = float(np.abs(a * f - ref).mean()) / KCALMOL_EV
            zero = float(np.abs(ref).mean()) / KCALMOL_EV
            raw = f"{float(np.abs(f - ref).mean()) / KCALMOL_EV:.2f}" if force_field else ""
            name = init.removeprefix(pretrained.PREFIX)
            print(f"| {mol} | {name} | {cos:.3f} | {mae:.2f} | {raw} | {zero:.2f} |", flush=True)


if __name__ == "__main__":
    main()
