"""benchmarks/gpu_check.sh (issue 19): valid bash, and without CUDA its CPU fallback runs the
three benchmarks (printed with --dry-run; the benchmarks themselves are run by hand)."""

import subprocess


def test_gpu_check_is_valid_bash_with_a_cpu_fallback():
    subprocess.run(["bash", "-n", "benchmarks/gpu_check.sh"], check=True)
    out = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], check=True,
                         capture_output=True, text=True).stdout
    for script in ("pretrain_step.py", "md17_step.py", "calculator_vs_xtb.py"):
        assert f"benchmarks/{script} --device" in out
    assert "device:" in out.splitlines()[0]
