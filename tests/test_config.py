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
