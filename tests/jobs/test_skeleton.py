"""The job skeleton from outside: nothing written before the run is validated, one run per folder,
keys that do not apply refused, the kept epoch, raw weights beside the EMA for every task."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from denoise3d.cli import main
from denoise3d.config import load_config
from denoise3d.jobs import property as property_task
from denoise3d.jobs.lock import LOCK_NAME
from denoise3d.jobs.skeleton import run

TINY = ["configs/finetune/qm9_cpu.yaml", "model.hidden=16", "model.layers=2",
        "data.batch_size=16", "data.eval_batch_size=64", "data.max_train=32", "data.max_valid=32",
        "data.max_test=32", "train.epochs=1", "train.threads=1"]


@pytest.fixture(scope="module")
def finished(qm9_cache, tmp_path_factory):
    """A finished fine-tuning run (EMA on): its folder."""
    out = tmp_path_factory.mktemp("done")
    assert main(["finetune", *TINY, f"data.cache_dir={qm9_cache}", "train.ema_decay=0.9",
                 f"train.out={out}"]) == 0
    return out


@pytest.mark.parametrize("bad, words", [
    (["model.hidden=32", "train.resume=true"], "was run with model.hidden=16, this config has "
                                               "model.hidden=32"),  # resume: the same run only
    (["finetune.target=lumo", "train.resume=true"], "was run with finetune.target=homo"),
    (["data.max_train=8"], "no training batch: 8 training structures and data.batch_size=16 "
                              "(a partial last batch is dropped); data.batch_size=8 or less trains"),
    (["data.epoch_size=8"], "no training batch: data.epoch_size=8 samples per epoch and "
                            "data.batch_size=16 (a partial last batch is dropped); "
                            "data.batch_size=8 or less trains"),
    (["data.top_k=3"], "data.top_k does not apply to data.dataset=qm9"),
    (["train.max_minutes=0"], "train.max_minutes=0: a training budget is a positive number of "
                              "minutes (null = none)"),
    (["train.max_minutes=-1"], "train.max_minutes=-1"),
    (["train.max_minutes=nan"], "train.max_minutes=nan"),
    (["finetune.target=forces"], "unknown finetune.target 'forces'"),
    (["finetune.init=/nonexistent.pt"], "checkpoint not found"),
    (["train.scheduler=nope"], "unknown train.scheduler"),
])
def test_a_rejected_run_leaves_the_folder_as_it_was(finished, qm9_cache, bad, words, capsys):
    before = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["finetune", *TINY, f"data.cache_dir={qm9_cache}", "train.ema_decay=0.9",
                 f"train.out={finished}", *bad]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err
    after = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    assert after == before  # config.yaml byte-identical, no LOCK left, nothing added


def test_a_second_run_on_a_live_folder_is_refused(finished, qm9_cache, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (finished / LOCK_NAME).write_text(f"{holder.pid}\n")
        config = (finished / "config.yaml").read_bytes()
        assert main(["finetune", *TINY, f"data.cache_dir={qm9_cache}", "train.seed=5",
                     f"train.out={finished}"]) == 2
        err = capsys.readouterr().err
        assert f"in use by a running denoise3d process (pid {holder.pid})" in err
        assert (finished / "config.yaml").read_bytes() == config
    finally:
        holder.kill()
        holder.wait()
        (finished / LOCK_NAME).unlink()


def test_the_checkpoint_keeps_raw_weights_labels_and_units(finished):
    ckpt = torch.load(finished / "finetune.pt", weights_only=True)
    assert ckpt["format_version"] == 2 and ckpt["task"] == "property"
    assert ckpt["labels"] == {"homo": {"per": "structure", "unit": "eV", "report_unit": "meV"}}
    assert ckpt["units"] == {"positions": "Å", "homo": "eV"}
    assert ckpt["ema"]["decay"] == 0.9 and ckpt["ema"]["num_updates"] == 2
    assert set(ckpt["raw"]["backbone"]) == set(ckpt["backbone"]["state"])
    assert any(not torch.equal(ckpt["raw"]["backbone"][k], v)
               for k, v in ckpt["backbone"]["state"].items())  # EMA and raw weights differ
    assert ckpt["objectives"]["property"]["params"]["target"] == "homo"
    assert not (finished / LOCK_NAME).exists()


def test_keys_in_a_config_file_are_checked_against_the_dataset(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  dataset: qm9\n  train_frames: 100\n")
    assert main(["finetune", str(bad), f"train.out={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err
    assert "data.train_frames does not apply to data.dataset=qm9 (it is read by md17" in err
    assert not (tmp_path / "x").exists()


def test_no_finite_validation_epoch_is_an_error_not_a_crash(qm9_cache, tmp_path):
    def build(cfg):
        job = property_task.build(cfg)
        job.validate = lambda trainer, valid: {job.select: math.nan}
        return job

    cfg = load_config(TINY[0], [*TINY[1:], f"data.cache_dir={qm9_cache}",
                                f"train.out={tmp_path}"])
    with pytest.raises(FloatingPointError, match="no epoch gave a finite validation homo_mae_meV"):
        run(cfg, build)
    assert not (tmp_path / "finetune.pt").exists() and not (tmp_path / "metrics.json").exists()
    assert not (tmp_path / LOCK_NAME).exists()


def test_labels_come_from_the_dataset(qm9_cache, tmp_path):
    metrics = run(load_config(TINY[0], [*TINY[1:], f"data.cache_dir={qm9_cache}",
                                        "finetune.target=mu", f"train.out={tmp_path}"]),
                  property_task.build)
    assert metrics["unit"] == "D" and metrics["target"] == "mu"
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def test_skip_mode_that_skipped_every_step_is_an_error(qm9_cache, tmp_path):
    def build(cfg):
        job = property_task.build(cfg)
        head = job.objectives["property"][1]
        forward = head.forward

        def poisoned(backbone, batch):
            loss, logs = forward(backbone, batch)
            return loss * float("nan"), logs

        head.forward = poisoned
        return job

    cfg = load_config(TINY[0], [*TINY[1:], f"data.cache_dir={qm9_cache}", "train.nonfinite=skip",
                                f"train.out={tmp_path}"])
    with pytest.raises(FloatingPointError, match="every one of the 2 steps had a non-finite"):
        run(cfg, build)
    assert not (tmp_path / "finetune.pt").exists()


def test_zero_step_pretraining_is_refused_and_says_nothing_was_saved(qm9_cache, tmp_path, capsys):
    assert main(["pretrain", "configs/pretrain/emgp_cpu.yaml", "model.hidden=16", "model.layers=2",
                 f"data.cache_dir={qm9_cache}", "data.max_train=32", "data.max_valid=16",
                 "data.batch_size=8", "train.max_steps=0", f"train.out={tmp_path / 'p'}"]) == 2
    assert "train.max_steps=0: pretraining would take no step" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_a_frozen_backbone_keeps_its_weights_and_the_head_learns(qm9_cache, tmp_path):
    metrics = run(load_config(TINY[0], [*TINY[1:], f"data.cache_dir={qm9_cache}",
                                        "finetune.freeze_backbone=true", "finetune.init="
                                        "pretrained:qm9-egnn-4x64-denoise", "model.hidden=64",
                                        "model.layers=4", f"train.out={tmp_path}"]),
                  property_task.build)
    from denoise3d import pretrained

    start = torch.load(pretrained.resolve("pretrained:qm9-egnn-4x64-denoise"), weights_only=True)
    end = torch.load(tmp_path / "finetune.pt", weights_only=True)
    for k, v in start["backbone"]["state"].items():
        assert torch.equal(end["backbone"]["state"][k], v), k
    assert metrics["steps"] == 2 and np.isfinite(metrics["test_mae"])


def test_a_training_epoch_that_leaves_out_many_samples_says_so(qm9_cache, tmp_path, capsys):
    from denoise3d.data.dataset import BatchLoader
    from denoise3d.jobs.skeleton import left_out_per_epoch

    def note(n, size, epoch_size=None):
        return left_out_per_epoch(BatchLoader(None, np.arange(n), batch_size=size, shuffle=True,
                                              drop_last=True, epoch_size=epoch_size))

    assert "leaves out 16 (33 %" in note(48, 32) and "1 step(s) per epoch" in note(48, 32)
    assert note(64, 32) == "" and note(330, 32) == ""  # none, or 10 of 330 (3 %)
    assert "1000 training samples per epoch" in note(100, 300, epoch_size=1000)
    from denoise3d.data.batching import DynamicBatchLoader

    class Sizes:  # 48 molecules of 10 atoms packed by 400 atoms: batches of 40 and 8
        natoms = np.full(48, 10)

    packed = DynamicBatchLoader(Sizes(), np.arange(48), max_atoms=400, shuffle=True, drop_last=True)
    assert "data.max_atoms=400: 1 step(s) per epoch, and each shuffled epoch leaves out 8 (17 %" \
        in left_out_per_epoch(packed)
    assert left_out_per_epoch(BatchLoader(None, np.arange(48), batch_size=32)) == ""  # evaluation
    # and the run prints it: 24 training structures, batches of 16
    assert main(["finetune", *TINY, f"data.cache_dir={qm9_cache}", "data.max_train=24",
                 f"train.out={tmp_path / 'run'}"]) == 0
    assert "each shuffled epoch leaves out 8 (33 %" in capsys.readouterr().out


def test_a_fine_tuning_stopped_by_its_time_budget_says_so_in_its_metrics(qm9_cache, tmp_path):
    assert main(["finetune", *TINY, f"data.cache_dir={qm9_cache}", "train.epochs=3",
                 "train.max_minutes=1e-9", f"train.out={tmp_path}"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["best_epoch"] == 1  # 32 structures, batches of 16
    assert metrics["stopped"].startswith("train.max_minutes=1e-09: stopped after epoch 1 of 3, "
                                         "step 2 of 6")
    assert 0 < metrics["train_minutes"] < 5
