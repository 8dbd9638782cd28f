"""Data parallelism: torchrun with 2 CPU processes (gloo) equals one process with the doubled batch.

The two-process run and the one-process run see the same molecules at every step (rank r takes
batches k·2 + r of the size-B order; one process takes batch k of the size-2B order, the same
molecules) and start from the same weights, so they differ only in float32 summation order
(per-rank means, then the all-reduce, instead of one mean over 2B): ~1e-7 relative per step.
After 8 Adam steps (lr 5e-4) we measured a largest parameter difference of 1.5e-8; the tolerance
2e-6 is 100x that and 250x below one Adam step (lr), so a wrong averaging (one rank's data only)
fails. Adam is blind to the gradient's scale, so the gradient norm is also compared: summing
instead of averaging over ranks would double it.
"""

import csv
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from denoise3d.cli import main
from denoise3d.data.dataset import BatchLoader
from denoise3d.train.distributed import ShardedLoader, _first_host

RUN = ["finetune", "configs/finetune/qm9_cpu.yaml", "model.hidden=16", "model.layers=2",
       "data.max_train=64", "data.max_valid=24", "data.max_test=24", "data.eval_batch_size=16",
       "train.epochs=2", "train.threads=1", "train.device=cpu", "train.ema_decay=0.99",
       "train.seed=3", "train.log_every=1", "train.tensorboard=false"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_two_process_gloo_run_equals_one_process_with_doubled_batch(qm9_cache, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "denoise3d",
           *RUN, f"data.cache_dir={qm9_cache}", "data.batch_size=8", f"train.out={tmp_path / 'ddp'}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert main([*RUN, f"data.cache_dir={qm9_cache}", "data.batch_size=16",
                 f"train.out={tmp_path / 'one'}"]) == 0
    ddp = torch.load(tmp_path / "ddp" / "resume.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "resume.pt", weights_only=True)
    assert ddp["step"] == one["step"] == 8 and ddp["world_size"] == 2
    for key in one["model"]:
        torch.testing.assert_close(ddp["model"][key], one["model"][key], rtol=0, atol=2e-6)
    for key in one["ema"]["state"]:
        torch.testing.assert_close(ddp["ema"]["state"][key], one["ema"]["state"][key], rtol=0, atol=2e-6)
    log_ddp, log_one = _rows(tmp_path / "ddp" / "log.csv"), _rows(tmp_path / "one" / "log.csv")
    assert [r["step"] for r in log_ddp] == [str(s) for s in range(1, 9)]
    for a, b in zip(log_ddp, log_one):  # global loss and gradient norm, not one rank's
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-5)
        assert float(a["grad_norm"]) == pytest.approx(float(b["grad_norm"]), rel=1e-5)
    # exact evaluation: each validation / test molecule counted once over the two ranks
    v_ddp, v_one = _rows(tmp_path / "ddp" / "valid.csv"), _rows(tmp_path / "one" / "valid.csv")
    assert [float(r["homo_mae_meV"]) for r in v_ddp] == pytest.approx(
        [float(r["homo_mae_meV"]) for r in v_one], rel=1e-5)
    ckpt = torch.load(tmp_path / "ddp" / "finetune.pt", weights_only=True)
    assert ckpt["metrics"]["test_size"] == 24 and ckpt["metrics"]["steps"] == 8


def test_sharded_loader_splits_steps_and_covers_evaluation_once(qm9):
    base = BatchLoader(qm9, np.arange(50), batch_size=8, shuffle=True, seed=0, drop_last=False)
    train = [ShardedLoader(base, r, 2, train=True) for r in range(2)]
    assert [len(t) for t in train] == [3, 3]  # 7 batches: the trailing odd one is dropped
    step0 = np.concatenate([t.index_batches()[0] for t in train])
    assert np.array_equal(step0, base.order()[:16])  # = batch 0 of a size-16 loader
    evals = [ShardedLoader(base, r, 2, train=False) for r in range(2)]
    assert [len(e) for e in evals] == [4, 3]
    seen = np.concatenate([b for e in evals for b in e.index_batches()])
    assert np.array_equal(np.sort(seen), np.arange(50))


@pytest.mark.parametrize("nodes, first", [("gpu[03-05,07]", "gpu03"), ("a,b", "a"),
                                          ("node1", "node1"), ("n[1,4]", "n1")])
def test_slurm_master_is_the_first_node(nodes, first):
    assert _first_host(nodes) == first


def _sync_worker(rank: int, store: str):
    """Two gloo ranks: molecule-weighted mean, a parameter only rank 1 uses, one nobody uses,
    and a non-finite loss on one rank seen by both."""
    import torch.distributed as dist

    from denoise3d.train.distributed import DistEnv, all_reduce_sums, sync_gradients

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    env = DistEnv(rank, 2, rank)
    a, b, c = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    a.grad = torch.full((3,), float(rank + 1))
    b.grad = torch.full((3,), 2.0) if rank == 1 else None
    n_local = [1, 3][rank]
    n, bad, loss_sum = sync_gradients([a, b, c], n_local, False, 10.0 * n_local, env)
    assert (n, bad, loss_sum) == (4, False, 40.0)
    assert torch.allclose(a.grad, torch.full((3,), (1 * 1 + 3 * 2) / 4))
    assert torch.allclose(b.grad, torch.full((3,), 3 * 2 / 4))  # zeros from rank 0
    assert c.grad is None  # no rank touched it: Adam skips it as in one process
    a.grad = torch.ones(3)
    n, bad, _ = sync_gradients([a, b, c], n_local, rank == 1, float("nan"), env)
    assert bad  # both ranks decide to skip / raise
    assert all_reduce_sums([1.0, rank]) == [2.0, 1.0]
    dist.destroy_process_group()


def test_gradient_all_reduce_weights_by_molecules_and_keeps_unused_parameters_none(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_sync_worker, args=(str(tmp_path / "store"),), nprocs=2, join=True)


def test_slurm_variables_map_to_torchrun_names(monkeypatch):
    from denoise3d.train import distributed

    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
           "SLURM_JOB_NODELIST": "gpu[12-13]"}
    monkeypatch.setattr(os, "environ", env)  # a private environment, restored after the test
    distributed._slurm_to_torchrun_env()
    assert [env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")] \
        == ["5", "8", "1", "gpu12", "29500"]
