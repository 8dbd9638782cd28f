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
