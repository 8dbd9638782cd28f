#!/usr/bin/env bash
# The embedded default main job: pretrain a small EGNN with 3D-EMGP on QM9 training-split
# structures (no labels), then fine-tune HOMO on a small labelled subset from scratch, from
# these pretrained weights and from the shipped denoising-pretrained backbone (3 epochs on the
# 100,000 QM9 training-split structures), with the same budget and seed, and print the three
# test MAEs (meV).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/demo}
denoise3d pretrain configs/demo/pretrain.yaml train.out=$OUT/pretrain "$@"
denoise3d finetune configs/demo/finetune.yaml train.out=$OUT/scratch
denoise3d finetune configs/demo/finetune.yaml train.out=$OUT/pretrained finetune.init=$OUT/pretrain/pretrain.pt
denoise3d finetune configs/demo/finetune.yaml train.out=$OUT/shipped finetune.init=pretrained:qm9-egnn-4x64-denoise
echo
echo "== denoise3d demo: HOMO test MAE, same fine-tuning budget and seed =="
denoise3d summary $OUT/scratch $OUT/pretrained $OUT/shipped
