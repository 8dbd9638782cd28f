#!/usr/bin/env bash
# One GPU check, under 10 minutes on one GPU (issue 19): the 3D-EMGP pretraining step (QM9,
# EGNN 7 x 128, batch 64), the MD17 energy + force fine-tuning step (aspirin, batch 100) in fp32
# and bf16 autocast, and the ASE calculator against GFN2-xTB (fp32, compiled and eager; the
# calculator has no autocast: forces in bf16 would not be a force field). Prints molecules/s, frames/s and
# ms/call with the device name; paste the output into benchmarks/RESULTS.md.
#
#     bash benchmarks/gpu_check.sh            # cuda if torch sees one, else the CPU fallback
#     bash benchmarks/gpu_check.sh --dry-run  # print the commands only
#
# Without CUDA it runs the same commands on the CPU with a few steps (a check that they work,
# not a measurement). PYTHON overrides the interpreter (default: .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DRY=${1:-}

if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    DEVICE=cuda
    "$PY" -c 'import torch; print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)'
    STEPS=(--steps 30 --warmup 5)
    CALLS=(--calls 200 --warmup 20)
    PRECISIONS=(fp32 bf16)
else
    DEVICE=cpu
    echo "device: no CUDA device visible to torch; CPU fallback (a few steps: checks, not figures)"
    STEPS=(--steps 2 --warmup 1 --threads 1)
    CALLS=(--calls 3 --warmup 1 --threads 1)
    PRECISIONS=(fp32)
fi

run() {
    echo "+ $*"
    if [ "$DRY" != "--dry-run" ]; then
        "$@"
    fi
}

for precision in "${PRECISIONS[@]}"; do
    echo "== pretraining step, $DEVICE, $precision"
    run "$PY" benchmarks/pretrain_step.py --device "$DEVICE" --precision "$precision" "${STEPS[@]}"
    echo "== energy + force step, $DEVICE, $precision"
    run "$PY" benchmarks/md17_step.py --device "$DEVICE" --precision "$precision" "${STEPS[@]}"
done
echo "== calculator vs GFN2-xTB (aspirin), $DEVICE, fp32, compiled (the default) and eager"
run "$PY" benchmarks/calculator_vs_xtb.py --device "$DEVICE" "${CALLS[@]}"
run "$PY" benchmarks/calculator_vs_xtb.py --device "$DEVICE" --no-compile "${CALLS[@]}"
