#!/usr/bin/env bash
# The embedded default main job: pretrain a small EGNN with 3D-EMGP on QM9 training-split
# structures (no labels), then fine-tune HOMO on a small labelled subset from scratch and from
# the pretrained weights, with the same budget and seed, and print both test MAEs (meV).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/demo}
denoise3d pretrain configs/demo/pretrain.yaml train.out=$OUT/pretrain "$@"
denoise3d finetune configs/demo/finetune.yaml train.out=$OUT/scratch
denoise3d finetune configs/demo/finetune.yaml train.out=$OUT/pretrained finetune.init=$OUT/pretrain/pretrain.pt
echo
echo "== denoise3d demo: HOMO test MAE, same fine-tuning budget and seed =="
denoise3d summary $OUT/scratch $OUT/pretrained
