"""The CLI end to end on real QM9 with tiny settings: pretrain -> finetune -> evaluate, and errors."""

import json

import pytest
import torch

from denoise3d.cli import main

TINY = ["model.hidden=16", "model.layers=2", "data.batch_size=16", "data.eval_batch_size=64",
        "data.max_valid=32", "data.max_test=48", "train.threads=1"]


@pytest.fixture(scope="module")
def pretrained(qm9_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("pt")
    rc = main(["pretrain", "configs/pretrain/emgp_cpu.yaml", *TINY, f"data.cache_dir={qm9_cache}",
               "data.max_train=64", "train.epochs=2", f"train.out={out}"])
    assert rc == 0
    return out


def test_pretrain_writes_checkpoint_config_and_logs(pretrained):
    ckpt = torch.load(pretrained / "pretrain.pt", weights_only=True)
    assert ckpt["kind"] == "pretrain" and ckpt["step"] == 8
    assert set(ckpt["objectives"]) == {"emgp"}
    assert (pretrained / "config.yaml").is_file() and (pretrained / "learning_curve.png").is_file()
    rows = (pretrained / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss,lr,molecules_per_s")
    valid = (pretrained / "valid.csv").read_text().splitlines()
    assert len(valid) == 3  # header + 2 epochs


def test_finetune_from_pretrained_and_evaluate(pretrained, qm9_cache, tmp_path, capsys):
    out = tmp_path / "ft"
    rc = main(["finetune", "configs/finetune/qm9_cpu.yaml", *TINY, f"data.cache_dir={qm9_cache}",
               "data.max_train=64", "train.epochs=2", f"train.out={out}", "finetune.target=gap",
               f"finetune.init={pretrained / 'pretrain.pt'}"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["target"] == "gap" and metrics["unit"] == "meV" and metrics["test_size"] == 48
    assert 0 < metrics["test_mae"] < 1e5
    # the backbone started from the pretrained weights
    ft = torch.load(out / "finetune.pt", weights_only=True)
    assert ft["config"]["finetune"]["init"].endswith("pretrain.pt")
    capsys.readouterr()
    assert main(["evaluate", str(out / "finetune.pt"), f"data.cache_dir={qm9_cache}"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["gap_mae_meV"] == pytest.approx(metrics["test_mae"], rel=1e-5)
    assert evaluated["baseline_gap_mae_meV"] == pytest.approx(metrics["baseline_test_mae"], rel=1e-9)


@pytest.mark.parametrize("args, words", [
    (["pretrain", "train.lrr=1"], "unknown key 'train.lrr'"),
    (["finetune", "finetune.target=homoo", "data.max_train=4"], "unknown finetune.target 'homoo'"),
    (["finetune", "finetune.init=/nonexistent.pt"], "checkpoint not found: /nonexistent.pt"),
    (["evaluate", "/nonexistent.pt"], "checkpoint not found"),
    (["pretrain", "pretrain.objectives=[{name: emgpp}]"], "unknown objective 'emgpp'"),
    (["pretrain", "data.dataset=md18"], "unknown data.dataset 'md18'"),
])
def test_bad_input_is_one_line_error(args, words, capsys, qm9_cache):
    assert main([*args, f"data.cache_dir={qm9_cache}"] if args[0] != "evaluate" else args) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_mismatched_checkpoint(pretrained, qm9_cache, tmp_path, capsys):
    rc = main(["finetune", *TINY, "model.hidden=32", f"data.cache_dir={qm9_cache}",
               f"finetune.init={pretrained / 'pretrain.pt'}", f"train.out={tmp_path}"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "differs from the config" in err and "model.hidden=16" in err


def test_environment_failures_are_one_line_errors(qm9_cache, tmp_path, monkeypatch, capsys):
    """No permission to write the output folder, by fault injection (tests may run as root)."""
    import denoise3d.jobs.lock as lock

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro"))

    monkeypatch.setattr(lock, "claim", denied)
    assert main(["finetune", "configs/finetune/qm9_cpu.yaml", *TINY, f"data.cache_dir={qm9_cache}",
                 "data.max_train=32", f"train.out={tmp_path / 'ro'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"denoise3d: error: [Errno 13] Permission denied: '{tmp_path / 'ro'}'"
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "manifest.json").write_text("{broken")
    assert main(["pretrain", "configs/pretrain/emgp_cpu.yaml", "data.dataset=structures",
                 f"data.path={tmp_path / 'cache'}", f"train.out={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"denoise3d: error: {tmp_path / 'cache'}: not a usable cache (")
    (tmp_path / "afile").write_text("x")
    assert main(["finetune", "configs/finetune/qm9_cpu.yaml", *TINY, f"data.cache_dir={qm9_cache}",
                 "data.max_train=32", f"train.out={tmp_path / 'afile'}"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"train.out={tmp_path / 'afile'} is a file, "
                                                    f"not a folder")
