"""Mixed precision is a GPU option: on CPU a request for bf16/fp16 trains in float32 and says so."""

import pytest
import torch

from denoise3d.config import ConfigError
from denoise3d.train.loop import _autocast_dtype


def test_cpu_trains_in_float32_with_a_message(capsys):
    assert _autocast_dtype("bf16", torch.device("cpu"), verbose=True) is None
    assert "train.precision=bf16 is for GPUs; training on cpu in float32" in capsys.readouterr().out
    assert _autocast_dtype("fp32", torch.device("cpu"), verbose=True) is None


def test_cuda_autocast_dtypes_and_unknown_names():
    assert _autocast_dtype("bf16", torch.device("cuda"), verbose=False) is torch.bfloat16
    assert _autocast_dtype("fp16", torch.device("cuda"), verbose=False) is torch.float16
    with pytest.raises(ConfigError, match="unknown train.precision 'fp8'"):
        _autocast_dtype("fp8", torch.device("cpu"), verbose=False)
