"""Data-parallel training with PyTorch's own ``torch.distributed``, launched by torchrun or SLURM.

Launch (one process per GPU, or per CPU socket with gloo)::

    torchrun --nproc_per_node 4 -m denoise3d pretrain config.yaml          # one node
    torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d \\
             --rdzv_endpoint HOST:29500 -m denoise3d pretrain config.yaml  # several nodes
    srun python -m denoise3d pretrain config.yaml                           # SLURM (see README)

:func:`init_distributed` reads torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (or maps
SLURM's ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID``) and joins the process group:
NCCL when training on CUDA, gloo on CPU.

**Gradients.** Instead of wrapping the model in ``DistributedDataParallel`` we all-reduce the
gradients ourselves after ``backward`` — one flattened bucket per step, one ``dist.all_reduce``.
Reason: several heads own parameters that get no gradient in some configurations (EnergyHead's
last bias under force-only losses, the unused readout of VectorHead, EMGP's scale head with
``inp_weight=0``). DDP then needs ``find_unused_parameters=True`` (an extra graph traversal per
step, and errors when the unused set changes). Here a parameter without gradient contributes zeros
plus a 0 flag; after the reduction a parameter that no rank touched keeps ``grad=None`` (exactly
what a single process would see, so Adam and weight decay behave identically). The bucket also
carries each rank's molecule count and a non-finite flag, so

    grad = Σ_r n_r g_r / Σ_r n_r          (the gradient of the mean loss over the global batch)

and every rank decides identically whether to step, skip or raise. Parameters are broadcast from
rank 0 at start, so all ranks hold the same weights forever after (same gradients, same updates).

**Data.** :class:`ShardedLoader` gives rank ``r`` the batches ``k·W + r`` of the underlying
loader's epoch (``W`` = world size): step ``k`` of a W-process run with ``batch_size=B`` sees the
same molecules as step ``k`` of a one-process run with ``batch_size=W·B``. Training drops the
incomplete trailing group of batches (all ranks step together); evaluation keeps every batch and
reduces (sum, count) pairs with :func:`all_reduce_sums`: no padding, no sample counted twice.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["DistEnv", "init_distributed", "ShardedLoader", "eval_shard", "all_reduce_sums",
           "sync_gradients", "broadcast_module"]


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _slurm_to_torchrun_env() -> None:
    """Under ``srun`` without torchrun: map SLURM's task variables to torchrun's names."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_JOB_NODELIST", os.environ.get("SLURM_NODELIST", "localhost"))
        os.environ["MASTER_ADDR"] = _first_host(nodes)
    os.environ.setdefault("MASTER_PORT", "29500")


def _first_host(nodelist: str) -> str:
    """First host of a SLURM node list: ``gpu[03-05,07]`` -> ``gpu03``, ``a,b`` -> ``a``."""
    head = nodelist.split(",")[0] if "[" not in nodelist.split(",")[0] else nodelist
    if "[" not in head:
        return head
    prefix, rest = head.split("[", 1)
    return prefix + rest.split(",")[0].split("-")[0].rstrip("]")


def current() -> DistEnv:
    """The environment of an initialised process group, or the single-process one."""
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistEnv()


def init_distributed(device: torch.device) -> tuple[DistEnv, torch.device]:
    """Join the process group if launched with several processes; returns (env, device).

    On CUDA each process takes GPU ``LOCAL_RANK`` and NCCL; on CPU, gloo. A single process
    (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) returns the single-process environment unchanged.
    """
    _slurm_to_torchrun_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv(), device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=30))
    return DistEnv(dist.get_rank(), dist.get_world_size(), local), device


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers to every rank (the start of data parallelism)."""
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def sync_gradients(params: list[torch.nn.Parameter], n_local: int, bad_local: bool,
                   loss_sum: float, env: DistEnv) -> tuple[int, bool, float]:
    """Molecule-weighted mean of the gradients over ranks, in one all-reduce.

    ``n_local``: molecules in this rank's batch; ``bad_local``: this rank's loss is non-finite
    (its gradient then counts as zeros; the step is skipped or raises everywhere); ``loss_sum``:
    this rank's mean loss times ``n_local`` (for the log). Returns (global molecule count, any
    rank bad, global loss sum). Parameters no rank gave a gradient keep ``grad=None``.
    """
    if not env.enabled:
        return n_local, bad_local, loss_sum
    ref = params[0]
    grads = [p.grad.reshape(-1) if p.grad is not None and not bad_local
             else torch.zeros(p.numel(), dtype=p.dtype, device=p.device) for p in params]
    flags = torch.tensor([float(p.grad is not None) for p in params], dtype=ref.dtype, device=ref.device)
    head = torch.tensor([0.0 if bad_local else loss_sum, float(n_local), float(bad_local)],
                        dtype=ref.dtype, device=ref.device)
    bucket = torch.cat([torch.cat(grads) * float(n_local), flags, head])
    dist.all_reduce(bucket)
    loss_total, n_total, bad = float(bucket[-3]), int(round(float(bucket[-2]))), float(bucket[-1]) > 0
    offset = 0
    for p, used in zip(params, bucket[-3 - len(params):-3].tolist()):
        g = bucket[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
        p.grad = None if used == 0 else (g / max(n_total, 1)).clone()
    return n_total, bad, loss_total


def all_reduce_sums(values: list[float]) -> list[float]:
    """Sum plain numbers over ranks (float64, exact for counts); identity in one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), on every rank; ``[obj]`` in one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _batches(loader) -> list[np.ndarray]:
    if not hasattr(loader, "index_batches"):
        raise TypeError(f"{type(loader).__name__} has no index_batches(): cannot shard it")
    return loader.index_batches()


class ShardedLoader:
    """Rank ``rank``'s share of ``loader``'s batches: ``k·world + rank`` for k = 0, 1, ...

    ``train=True`` drops the trailing incomplete group (every rank has the same number of
    steps); ``train=False`` keeps all batches (ranks may differ by one; reduce sums, not steps).
    """

    def __init__(self, loader, rank: int, world_size: int, train: bool = True):
        self.loader, self.rank, self.world, self.train = loader, rank, world_size, train
        self.dataset = getattr(loader, "dataset", None)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def index_batches(self) -> list[np.ndarray]:
        b = _batches(self.loader)
        if self.train:
            b = b[:len(b) // self.world * self.world]
        return b[self.rank::self.world]

    def make(self, idx):
        return self.loader.make(idx)

    def __len__(self) -> int:
        n = len(self.loader)
        if self.train:
            return n // self.world
        return len(range(self.rank, n, self.world))

    def __iter__(self) -> Iterator:
        for idx in self.index_batches():
            yield self.make(idx)


def eval_shard(loader):
    """``loader`` split across ranks for evaluation (no duplicates), or itself in one process."""
    env = current()
    if not env.enabled or not hasattr(loader, "index_batches"):
        return loader
    return ShardedLoader(loader, env.rank, env.world_size, train=False)
