"""The package's imports run one way (DESIGN.md §5), kept by this test rather than by discipline:

    config, units  <-  data, train  <-  pretrained  <-  models  <-  objectives  <-  jobs
                   <-  md, testing  <-  cli  <-  __main__

A module may import from its own package and from any lower layer, never from a higher one or a
sibling of its own layer (data and train stay independent). Imports inside functions count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "denoise3d"
LAYERS = [
    {"config", "units"},
    {"data", "train"},
    {"pretrained"},  # the shipped checkpoints (read through train's file container)
    {"models"},
    {"objectives"},
    {"jobs"},
    {"md", "testing"},
    {"cli"},
    {"__main__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def part(module: str) -> str:
    """The top-level part of ``denoise3d.X.Y``: ``X``."""
    return module.split(".")[1]


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, denoise3d.* module) of every import in a file, nested ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "denoise3d" else \
                [f"denoise3d.{a.name}" for a in node.names]
            out += [(node.lineno, n) for n in names if n.startswith("denoise3d.")]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("denoise3d.")]
    return out


def own_part(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


FILES = sorted(p for p in SRC.rglob("*.py") if own_part(p) != "__init__")


def test_every_part_has_a_layer():
    assert {own_part(p) for p in FILES} <= set(LAYER), "a new top-level part needs a layer here"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_run_one_way(path):
    mine = own_part(path)
    bad = [f"line {line}: {module}" for line, module in imports(path)
           if part(module) != mine and LAYER[part(module)] >= LAYER[mine]]
    assert not bad, f"{path.relative_to(SRC)} ({mine}, layer {LAYER[mine]}) imports upward: {bad}"


def test_the_check_catches_an_upward_import(tmp_path):
    """The rule is live: a data module importing a job would be caught."""
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from denoise3d.jobs.skeleton import run\n")
    assert [(2, "denoise3d.jobs.skeleton")] == imports(fake)
    assert LAYER[part("denoise3d.jobs.skeleton")] > LAYER["data"]
