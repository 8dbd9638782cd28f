import re

import pytest

from denoise3d.config import ConfigError, from_dict, load_config, save_config, to_dict


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {hidden: 32}\ntrain: {lr: 1.0e-3}\n")
    cfg = load_config(path, ["train.lr=2e-4", "data.max_train=10", "finetune.init=null"])
    assert cfg.model.hidden == 32 and cfg.model.layers == 7
    assert cfg.train.lr == pytest.approx(2e-4)
    assert cfg.data.max_train == 10 and cfg.finetune.init is None


@pytest.mark.parametrize("override, words", [
    (["train.lrr=1"], "unknown key 'train.lrr'"),
    (["train.lr=abc"], "train.lr: expected float"),
    (["data.batch_size=true"], "data.batch_size: expected int"),
    (["model=3"], "section 'model' must be a mapping"),
    (["nonsense"], "must look like section.key=value"),
])
def test_bad_overrides_are_one_line_errors(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, override)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'train.epoch'"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_roundtrip(tmp_path):
    cfg = load_config(None, ["train.epochs=3"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, words", [
    ("train.lr=0", "train.lr=0.0 must be > 0"),
    ("train.lr=-1e-3", "train.lr=-0.001 must be > 0"),
    ("train.threads=0", "train.threads=0 must be >= 1 or null"),
    ("train.log_every=0", "train.log_every=0 must be >= 1"),
    ("train.epochs=0", "train.epochs=0 must be >= 1"),
    ("train.max_steps=-3", "train.max_steps=-3 must be >= 0 or null"),
    ("data.batch_size=0", "data.batch_size=0 must be >= 1"),
    ("train.ema_decay=1.5", "train.ema_decay=1.5 must be in (0, 1)"),
    ("train.device=foo", "train.device='foo' is not a device"),
])
def test_values_are_validated_when_the_config_loads(override, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(None, [override])


def test_cuda_on_a_build_without_it_is_refused_but_a_saved_device_is_not(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        load_config(None, ["train.device=cuda"])
    saved = to_dict(load_config(None, []))
    saved["train"]["device"] = "cuda"  # a GPU-trained checkpoint's config, read on a CPU
    assert load_config(None, ["data.max_test=5"], base=saved).train.device == "cuda"


def test_a_yaml_list_is_a_one_line_error(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="a config is a mapping of sections"):
        load_config(tmp_path / "list.yaml", ["train.lr=1e-3"])


def test_help_lists_every_key_and_typos_get_a_suggestion(capsys):
    import dataclasses

    from denoise3d.cli import main
    from denoise3d.config import Config, describe

    text = describe()
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(getattr(Config(), section.name)):
            assert f"  {section.name}.{f.name}  " in text
    assert "train.lr  float = 0.0005" in text
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    assert "finetune.energy_head  str = 'atomwise'" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="did you mean 'train.lr'"):
        load_config(None, ["train.lrr=1e-3"])
