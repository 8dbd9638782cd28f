"""Pretrained backbones shipped inside the package, for ``finetune.init=pretrained:NAME``.

Each one is ``NAME.pt`` (a pretrain checkpoint holding the backbone's weights only) beside its
model card ``NAME.md`` (data, objective, steps, measured downstream benefit). They load offline.
"""

from __future__ import annotations

from pathlib import Path

from denoise3d.train.checkpoint import CheckpointError

DIR = Path(__file__).resolve().parent
PREFIX = "pretrained:"


def available() -> list[str]:
    """Names of the shipped checkpoints."""
    return sorted(p.stem for p in DIR.glob("*.pt"))


def card(name: str) -> str:
    """The model card of a shipped checkpoint (markdown)."""
    return (DIR / f"{name}.md").read_text()


def resolve(init: str) -> Path:
    """``finetune.init`` as a file: ``pretrained:NAME`` is a shipped checkpoint, anything else a path."""
    if not init.startswith(PREFIX):
        return Path(init)
    name = init[len(PREFIX):]
    if name not in available():
        raise CheckpointError(f"no shipped pretrained checkpoint {name!r} "
                              f"(shipped: {', '.join(available()) or 'none'})")
    return DIR / f"{name}.pt"
