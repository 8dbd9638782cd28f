import pytest

from denoise3d.config import ConfigError
from denoise3d.train.optim import lr_factor


def test_warmup_then_cosine():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(50, 100, 0, "constant") == 1.0
    with pytest.raises(ConfigError, match="unknown train.scheduler"):
        lr_factor(0, 10, 0, "linear")


def test_warmup_start_floor_and_cycle():
    """Zaidi et al. Table 3 shape: 1e-5 -> 1e-4 over the warm-up, cosine to 1e-7 over a cycle."""
    start, floor = 1e-5 / 1e-4, 1e-7 / 1e-4
    assert lr_factor(0, 300, 10, "cosine", start, floor, 500) == pytest.approx(0.1)
    assert lr_factor(5, 300, 10, "cosine", start, floor, 500) == pytest.approx(0.55)
    assert lr_factor(10, 300, 10, "cosine", start, floor, 500) == pytest.approx(1.0)
    assert lr_factor(255, 300, 10, "cosine", start, floor, 500) == pytest.approx(0.5 + floor / 2)
    assert lr_factor(500, 300, 10, "cosine", start, floor, 500) == pytest.approx(floor)
    assert lr_factor(900, 300, 10, "cosine", start, floor, 500) == pytest.approx(floor)
    assert lr_factor(100, 100, 10, "cosine", None, 0.2) == pytest.approx(0.2)  # cycle = total
