"""Shared data fixtures: the real QM9 cache (built once per session) and small CSV slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from denoise3d.data.qm9 import qm9pack_csv_files


def csv_lines(n_rows: int, part: int = 1) -> list[str]:
    """Header plus the first ``n_rows`` data lines of qm9pack's ``qm9_part{part}.csv``."""
    out = []
    with open(qm9pack_csv_files()[part - 1]) as f:
        for line in f:
            out.append(line)
            if len(out) > n_rows:
                break
    return out


@pytest.fixture
def qm9_csv_lines():
    """``qm9_csv_lines(n_rows, part=1)``: header + first rows of a qm9pack CSV, as text lines."""
    return csv_lines


@pytest.fixture
def small_csv(tmp_path) -> Path:
    """``<tmp>/src/qm9_part1.csv`` with the first 50 QM9 molecules (edit it freely)."""
    (tmp_path / "src").mkdir()
    path = tmp_path / "src" / "qm9_part1.csv"
    path.write_text("".join(csv_lines(50)))
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
