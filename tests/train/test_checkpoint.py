import pytest
import torch

from denoise3d.train.checkpoint import CheckpointError, load_checkpoint, load_state, save_checkpoint


def test_roundtrip_weights_only(tmp_path):
    lin = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "a.pt", {"kind": "pretrain", "config": {"x": 1}, "state": lin.state_dict()})
    raw = torch.load(tmp_path / "a.pt", weights_only=True)  # data, not pickled code
    assert raw["format"] == "denoise3d-checkpoint"
    ckpt = load_checkpoint(tmp_path / "a.pt", kind="pretrain")
    other = torch.nn.Linear(3, 2)
    load_state(other, ckpt["state"], "test", tmp_path / "a.pt")
    assert torch.equal(other.weight, lin.weight)
    assert not (tmp_path / "a.pt.tmp").exists()


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable denoise3d checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a denoise3d checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    save_checkpoint(tmp_path / "ft.pt", {"kind": "finetune"})
    with pytest.raises(CheckpointError, match="a finetune checkpoint, expected a pretrain"):
        load_checkpoint(tmp_path / "ft.pt", kind="pretrain")
    ckpt = torch.load(tmp_path / "ft.pt", weights_only=True)
    ckpt["format_version"] = 99
    torch.save(ckpt, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "v99.pt")


def test_mismatched_weights(tmp_path):
    with pytest.raises(CheckpointError, match="weights do not match"):
        load_state(torch.nn.Linear(3, 2), torch.nn.Linear(4, 2).state_dict(), "backbone", "x.pt")
