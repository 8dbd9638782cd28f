"""Exact resume: a run SIGKILLed mid-epoch and resumed ends bit-identical to an uninterrupted one.

The run pretrains with 3D-EMGP (random noise levels and noise: the RNG state matters) and EMA on
real QM9 molecules; resume checkpoints every 3 steps (8 steps per epoch). The killed run is a real
process that sends itself SIGKILL at the start of step 6, two steps after the checkpoint of step 3
(mid-epoch), so work and log rows written after the checkpoint are lost and redone.
"""

import csv
import signal
import subprocess
import sys

import torch

from denoise3d.cli import main

RUN = ["pretrain", "configs/pretrain/emgp_cpu.yaml", "model.hidden=16", "model.layers=2",
       "data.batch_size=8", "data.eval_batch_size=32", "data.max_train=64", "data.max_valid=32",
       "train.epochs=2", "train.threads=1", "train.device=cpu", "train.ema_decay=0.9",
       "train.checkpoint_every=3", "train.log_every=1", "train.seed=5"]

KILLER = """
import os, signal, sys
from denoise3d.train.loop import Trainer
step = Trainer.train_step
def train_step(self, batch):
    if self.step == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, batch)
Trainer.train_step = train_step
from denoise3d.cli import main
main(sys.argv[1:])
"""


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sigkill_and_resume_is_bit_identical(qm9_cache, tmp_path):
    common = [*RUN, f"data.cache_dir={qm9_cache}"]
    assert main([*common, f"train.out={tmp_path / 'straight'}"]) == 0
    out = tmp_path / "killed"
    done = subprocess.run([sys.executable, "-c", KILLER, *common, f"train.out={out}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    ck = torch.load(out / "resume.pt", weights_only=True)
    assert (ck["step"], ck["epoch"], ck["batches_done"]) == (3, 0, 3)  # mid-epoch
    assert not (out / "pretrain.pt").exists()
    assert main([*common, f"train.out={out}", "train.resume=true"]) == 0

    a = torch.load(tmp_path / "straight" / "pretrain.pt", weights_only=True)
    b = torch.load(out / "pretrain.pt", weights_only=True)
    assert a["step"] == b["step"] == 16
    for part in ("backbone", "objectives"):
        sa, sb = a["raw"][part], b["raw"][part]
        if part == "objectives":
            sa, sb = sa["emgp"], sb["emgp"]
        assert all(torch.equal(sa[k], sb[k]) for k in sa), part  # training weights
    assert all(torch.equal(v, b["backbone"]["state"][k]) for k, v in a["backbone"]["state"].items())
    ra, rb = (torch.load(p / "resume.pt", weights_only=True) for p in (tmp_path / "straight", out))
    for group_a, group_b in zip(ra["optimizer"]["state"].values(), rb["optimizer"]["state"].values()):
        assert all(torch.equal(group_a[k], group_b[k]) for k in group_a)  # Adam moments
    # the logs are the uninterrupted run's: rows after the checkpoint were rewritten, not doubled
    la, lb = _rows(tmp_path / "straight" / "log.csv"), _rows(out / "log.csv")
    assert [r["step"] for r in lb] == [r["step"] for r in la] == [str(s) for s in range(1, 17)]
    assert [r["loss"] for r in lb] == [r["loss"] for r in la]
    assert _rows(out / "valid.csv") == _rows(tmp_path / "straight" / "valid.csv")


def test_logs_tensorboard_and_learning_curve(qm9_cache, tmp_path):
    """A short run writes log.csv (loss, lr, molecules/s, skips), valid.csv, TensorBoard events
    (when tensorboard is installed) and the learning-curve PNG."""
    out = tmp_path / "logs"
    assert main([*RUN, f"data.cache_dir={qm9_cache}", "train.epochs=1", f"train.out={out}"]) == 0
    head = (out / "log.csv").read_text().splitlines()[0].split(",")
    assert head[:6] == ["step", "epoch", "loss", "lr", "molecules_per_s", "skipped_steps"]
    assert (out / "valid.csv").is_file() and (out / "learning_curve.png").stat().st_size > 1000
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/molecules_per_s", "valid/loss"} <= set(tags)
    assert len(events.Scalars("train/loss")) == 8


def test_a_wall_time_budget_stops_at_an_epoch_end_and_resumes_exactly(qm9_cache, tmp_path,
                                                                      capsys):
    """train.max_minutes: no epoch starts that the last one's duration says would overrun; the
    stopped run saves what it trained and says so, and resuming it with a larger budget ends
    bit-identical to the run that never stopped."""
    common = [*RUN, f"data.cache_dir={qm9_cache}"]
    assert main([*common, f"train.out={tmp_path / 'straight'}"]) == 0
    out = tmp_path / "budget"
    capsys.readouterr()
    assert main([*common, f"train.out={out}", "train.max_minutes=1e-9"]) == 0
    printed = capsys.readouterr().out
    assert "note: train.max_minutes=1e-09: stopped after epoch 1 of 2, step 8 of 16" in printed
    assert torch.load(out / "pretrain.pt", weights_only=True)["step"] == 8
    assert len(_rows(out / "valid.csv")) == 1
    assert main([*common, f"train.out={out}", "train.resume=true", "train.max_minutes=60"]) == 0
    a = torch.load(tmp_path / "straight" / "pretrain.pt", weights_only=True)
    b = torch.load(out / "pretrain.pt", weights_only=True)
    assert a["step"] == b["step"] == 16
    assert all(torch.equal(v, b["backbone"]["state"][k]) for k, v in a["backbone"]["state"].items())
    assert _rows(out / "valid.csv") == _rows(tmp_path / "straight" / "valid.csv")
    assert torch.load(out / "resume.pt", weights_only=True)["seconds"][0] > 0
