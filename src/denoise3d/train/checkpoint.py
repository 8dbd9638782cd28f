"""Checkpoints are data, not pickles of code: state dicts plus a manifest.

Layout of the saved dict (loads under ``torch.load(weights_only=True)``)::

    format          "denoise3d-checkpoint"
    format_version  FORMAT_VERSION
    kind            "pretrain" | "finetune"
    config          the resolved Config as a plain dict
    backbone        {"name", "kwargs", "state"}
    objectives      {name: {"weight", "params", "state"}}  (heads live in objectives)
    metrics, step   plain numbers
    ema, raw        only with train.ema_decay: {"decay", ...} and the raw training weights
                    {"backbone": state, "objectives": {name: state}}

Every "state" holds the weights to evaluate and to fine-tune from: the EMA weights when EMA is
on (Zaidi et al. evaluate EMA weights), the training weights otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

FORMAT = "denoise3d-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A missing, foreign or mismatched checkpoint (one-line message)."""


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write atomically: to a temporary name in the same folder, then rename.

    Under data parallelism only rank 0 writes (all ranks hold the same weights); a killed writer
    leaves at most a stray ``*.tmp``, never a truncated checkpoint.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict:
    """Load and check the manifest; ``kind`` restricts to "pretrain" or "finetune"."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise CheckpointError(f"{path}: not a readable denoise3d checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a denoise3d checkpoint (no '{FORMAT}' manifest)")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('format_version')}, "
                              f"this denoise3d reads version {FORMAT_VERSION}")
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(f"{path}: a {ckpt.get('kind')} checkpoint, expected a {kind} checkpoint")
    return ckpt


def load_state(module: torch.nn.Module, state: dict, what: str, path) -> None:
    """``load_state_dict(strict=True)`` with a one-line error on mismatch."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = [ln.strip() for ln in str(e).splitlines() if ln.strip()][1:2]
        raise CheckpointError(f"{path}: {what} weights do not match this model "
                              f"({first[0] if first else 'state dict mismatch'})") from None
