"""The checkpoint file container: data, not pickles of code, written atomically.

Every file is a dict that loads under ``torch.load(weights_only=True)``, with the manifest::

    format          "denoise3d-checkpoint"
    format_version  FORMAT_VERSION (files of READABLE_VERSIONS load)
    kind            "pretrain" | "finetune" | "resume"

What a model checkpoint (pretrain.pt, finetune.pt) holds besides is owned by
:mod:`denoise3d.jobs.checkpoint`; what a resume file holds by :mod:`denoise3d.train.state`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

FORMAT = "denoise3d-checkpoint"
FORMAT_VERSION = 2  # 2: model checkpoints gained "task", "labels" and raw weights for every task
READABLE_VERSIONS = (1, 2)


class CheckpointError(ValueError):
    """A missing, foreign or mismatched checkpoint (one-line message)."""


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write atomically: to a temporary name in the same folder, then rename.

    Under data parallelism only rank 0 writes (all ranks hold the same weights). A failed write
    (full disk, no permission) removes its temporary file and raises :class:`CheckpointError`
    naming the file; a killed writer leaves at most ``NAME.<pid>.tmp``, removed by the next write
    of the same file once that pid is gone. Never a truncated checkpoint.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_writers(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{path}: could not write the checkpoint "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                              f"nothing was replaced") from None


def _remove_dead_writers(path: Path) -> None:
    """Delete ``NAME.<pid>.tmp`` files beside ``path`` whose writing process is gone."""
    for tmp in path.parent.glob(f"{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 1:-len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                tmp.unlink(missing_ok=True)
            except PermissionError:
                pass


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
    if ckpt.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('format_version')}, "
                              f"this denoise3d reads versions {', '.join(map(str, READABLE_VERSIONS))}")
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
