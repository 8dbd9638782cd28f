"""Every backbone's forward+backward time on 64 QM9 molecules (17–19 atoms) at its CPU size.

    python benchmarks/backbone_speed.py [--threads 1] [--repeat 10] [--size cpu|paper]

Sizes are the ``model`` sections of ``configs/backbones/<name>_<size>.yaml``. Reports min/median
wall-clock ms per step for (a) forward + backward of Σ E (fine-tuning on properties; the Gaussian
denoising step costs about the same) and (b) forward + forces (create_graph) + backward of ‖F‖²
(the 3D-EMGP EFP step, double backward), plus the number of radius-graph edges.

Measured with ``--threads 1`` on one core of the shared 2-core machine while other jobs ran
(load average ≈ 4, so figures may be up to ~2x pessimistic), ms min/median:

    size  backbone     params  edges  forward+backward   EFP step
    cpu   egnn  64x4    0.10M  19334     151 / 221       384 / 400
    cpu   schnet 64x4   0.08M  18006     129 / 147       257 / 314
    cpu   painn 64x4    0.20M  18006     250 / 357       918 / 1121
    cpu   torchmd_et    0.24M  18006     299 / 325       857 / 1267
    cpu   gns 64 3x2    0.13M  18006     228 / 238       615 / 645
    cpu   gns_tat 64 3x3 0.16M 18006     478 / 545      1076 / 1322
    paper egnn 128x7    0.70M  19334     698 / 699      1840 / 2054
    paper schnet 128x7  0.52M  19334     651 / 666      1652 / 1781   (10 Å: every pair)
    paper painn 128x7   1.34M  18006     926 / 1812     3272 / 3845
    paper torchmd_et    1.52M  18006    1797 / 1824     7315 / 10006

At 5 Å a QM9 radius graph keeps ~93 % of the fully connected pairs, so radius-graph
backbones save little on QM9; per-edge vector tensors (E, 3, F) dominate PaiNN and TorchMD-ET.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from egnn_speed import qm9_molecules, time_ms  # noqa: E402

from denoise3d.models import backbone_from_config  # noqa: E402
from denoise3d.config import load_config  # noqa: E402
from denoise3d.data.batch import collate  # noqa: E402
from denoise3d.models import EnergyHead, energy_and_forces  # noqa: E402
from denoise3d.models.neighbours import radius_edges  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "backbones"
NAMES = ("egnn", "schnet", "painn", "torchmd_et", "gns", "gns_tat")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--size", default="cpu", choices=["cpu", "paper"])
    parser.add_argument("--only", nargs="*", default=NAMES)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    batch = collate(qm9_molecules())
    print(f"{batch.num_graphs} molecules, {batch.num_atoms} atoms, "
          f"{batch.edge_index.shape[1]} full-graph edges, {args.threads} thread(s), "
          f"{args.size} sizes; ms min/median")
    for name in args.only:
        torch.manual_seed(0)
        cfg = load_config(CONFIGS / f"{name}_{args.size}.yaml").model
        model = backbone_from_config(cfg)
        head = EnergyHead(cfg.hidden)
        n_params = sum(p.numel() for p in model.parameters())
        edges = (radius_edges(batch, model.cutoff).edge_index.shape[1]
                 if hasattr(model, "cutoff") else batch.edge_index.shape[1])

        def energy_step():
            s, _ = model(batch)
            head(s, batch).sum().backward()

        def efp_step():
            _, forces, _ = energy_and_forces(model, head, batch, create_graph=True)
            forces.square().sum().backward()

        print(f"{name:>10} {n_params / 1e6:6.2f}M params {edges:6d} edges | forward+backward "
              f"{time_ms(energy_step, args.repeat)} | EFP step {time_ms(efp_step, args.repeat)}",
              flush=True)


if __name__ == "__main__":
    main()
