"""Pretrained backbones shipped inside the package, for ``finetune.init=pretrained:NAME``.

Each one is ``NAME.pt`` beside its model card ``NAME.md`` (data, objective, steps, measured
downstream benefit): a pretrain checkpoint holding the backbone's weights only, or a fine-tuned
force field (backbone + energy head, ``finetune.task=energy_force``) to start a force field on
other molecules from (its energy head moves over) or to use as it is (``denoise3d evaluate``,
``Denoise3DCalculator("pretrained:NAME")``). They load offline.
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
        if not Path(init).exists() and init in available():
            raise CheckpointError(f"checkpoint not found: {init} (the shipped one is "
                                  f"{PREFIX}{init})")
        return Path(init)
    name = init[len(PREFIX):]
    if name not in available():
        raise CheckpointError(f"no shipped pretrained checkpoint {name!r} "
                              f"(shipped: {', '.join(available()) or 'none'})")
    return DIR / f"{name}.pt"
