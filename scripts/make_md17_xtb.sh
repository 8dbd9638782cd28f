#!/usr/bin/env bash
# The generated MD17 benchmark set: the eight MD17 molecules (aspirin, benzene, ethanol,
# malonaldehyde, naphthalene, salicylic acid, toluene, uracil) as GFN2-xTB trajectories, made
# like MD17 (Langevin MD at 500 K, 0.5 fs steps) with a fixed seed: 20,000 frames each, one every
# 5 steps after 1 ps of equilibration (= 50 ps of MD per molecule), so 9,500 / 500 / 10,000
# train / valid / test frames. Written outside git to $DENOISE3D_CACHE/md17_xtb (default
# ~/.cache/denoise3d/md17_xtb/<molecule>.npz, MD17 layout, kcal/mol, with provenance keys).
#
# Time on one core of the 2-core dev machine (measured xTB speed, MD steps/s): ethanol ~700,
# malonaldehyde ~500, benzene ~400, uracil ~280, toluene ~270, naphthalene ~170,
# salicylic acid ~170, aspirin ~110 -> about 1 hour for the set (aspirin alone ~15 min).
# Rerunning skips finished molecules and resumes an interrupted one from its partial file.
#
#   scripts/make_md17_xtb.sh                         # all eight
#   scripts/make_md17_xtb.sh --molecules ethanol,uracil
#   scripts/make_md17_xtb.sh --out-dir /data/md17_xtb
set -euo pipefail
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # xTB's OpenMP threads (1 = share the machine)
exec denoise3d data xtb-md --benchmark-set --seed 0 "$@"
