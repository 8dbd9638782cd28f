"""Evaluation of a fine-tuned checkpoint on a split: the checkpoint says its task, the task's
module computes its metrics (:func:`denoise3d.jobs.property.evaluate`,
:func:`denoise3d.jobs.energy_force.evaluate`)."""

from __future__ import annotations

import sys
from pathlib import Path

from denoise3d.jobs import checkpoint
from denoise3d.jobs.finetune import TASKS


def evaluate(path, split_name: str | None = None, overrides: list[str] = (),
             allow_unseen: bool = False, compile: bool = False) -> dict:
    """Metrics of the fine-tuned checkpoint ``path`` on ``split_name`` (train / valid / test /
    all) of its data; ``overrides`` (``data.max_test=1000``, ``data.path=other.npz``,
    ``train.device=cuda``) apply to its saved config. ``split_name`` None: "test" of the training
    data, or "all" when ``data.path`` names another file (a note on stderr says so; a split of
    another file is that file's own split by the run's settings, also noted). Structures with
    elements absent from the training data are refused unless ``allow_unseen``. ``compile``: a
    force field's energies and forces run as one compiled program
    (:mod:`denoise3d.models.inference`; property models have no such program and refuse it)."""
    ckpt = checkpoint.load(path, kind="finetune", overrides=overrides)
    if compile and ckpt.task != "energy_force":
        raise ValueError(f"{path}: --compile applies to force fields (finetune.task=energy_force); "
                         f"this checkpoint is a {ckpt.task} model")
    recorded = ckpt.data.get("data_files") or []
    path_now = ckpt.config.data.path
    if (path_now and not Path(path_now).expanduser().exists() and len(recorded) == 1
            and path_now == ckpt.data["config"].get("data", {}).get("path")
            and Path(recorded[0][0]).is_file()):  # a relative training path, another directory
        ckpt.config.data.path = recorded[0][0]
    other, trained_on = other_data(ckpt)
    if split_name is None:
        split_name = "all" if other else "test"
        if other:
            print(f"denoise3d: note: {other} is not the training data ({trained_on}): every "
                  f"structure of it is evaluated (--split test would take its own test split)",
                  file=sys.stderr)
    elif other and split_name != "all":
        print(f"denoise3d: note: --split {split_name} of {other} is that file's own "
              f"{split_name} split by the run's data.fractions / data.split_seed, not structures "
              f"the run held out of {trained_on}; --split all evaluates every structure",
              file=sys.stderr)
    extra = {"compile": True} if compile else {}
    return TASKS[ckpt.task].evaluate(ckpt, split_name, allow_unseen, **extra)


def other_data(ckpt: checkpoint.Checkpoint) -> tuple[str | None, str | None]:
    """``(data.path of the overrides, saved data.path)`` when the overrides name other data than
    the checkpoint was trained on, else ``(None, saved)``. The same data: the same files
    (resolved, so a relative path from another directory or a symlink counts as the same) or
    files of the same bytes (a copy), by the files the checkpoint recorded
    (:func:`~denoise3d.jobs.checkpoint.data_files`); a checkpoint without that record compares
    the paths as written. A path that does not exist is not judged (loading it fails)."""
    saved = ckpt.data["config"].get("data", {}).get("path")
    now = ckpt.config.data.path
    if now == saved or now is None:
        return None, saved
    if not Path(now).expanduser().exists():
        return None, saved
    recorded = ckpt.data.get("data_files")
    if recorded is None:
        same = saved is not None and (Path(now).expanduser().resolve()
                                      == Path(saved).expanduser().resolve())
        return (None if same else now), saved
    current = checkpoint.data_files(now) or []
    if [f for f, _ in current] == [f for f, _ in recorded]:
        return None, saved
    same_bytes = (len(current) == len(recorded)
                  and all(a[1] == b[1] and Path(b[0]).is_file() and _sha1(a[0]) == _sha1(b[0])
                          for a, b in zip(current, recorded)))
    return (None if same_bytes else now), saved


def _sha1(path: str) -> str:
    import hashlib

    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
