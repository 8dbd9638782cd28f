"""train.threads: null takes the free cores at start-up (train.seed.auto_threads)."""

import torch

from denoise3d.train import seed


def test_auto_threads_counts_free_cores(monkeypatch, tmp_path):
    loadavg = tmp_path / "loadavg"
    monkeypatch.setattr(seed.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    real_path = seed.Path
    monkeypatch.setattr(seed, "Path", lambda p: loadavg if p == "/proc/loadavg" else real_path(p))
    for running, want in ((1, 4), (2, 3), (4, 1), (9, 1)):  # the count includes this process
        loadavg.write_text(f"0.5 0.4 0.3 {running}/120 4242\n")
        assert seed.auto_threads(samples=2, interval=0) == want
    loadavg.write_text("garbage")
    assert seed.auto_threads(samples=1, interval=0) is None  # unreadable: torch's default


def test_seed_everything_sets_auto_threads_when_none_given(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(seed, "auto_threads", lambda: 1)
        seed.seed_everything(0, None)
        assert torch.get_num_threads() == 1
        seed.seed_everything(0, 2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
