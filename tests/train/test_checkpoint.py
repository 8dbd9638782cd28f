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


def test_a_failed_write_leaves_no_temporary_file_and_names_the_file(tmp_path, monkeypatch):
    """A full disk, by fault injection: torch reports it as a RuntimeError mid-write."""
    path = tmp_path / "pretrain.pt"
    save_checkpoint(path, {"kind": "pretrain", "x": 1})
    before = path.read_bytes()

    def full_disk(obj, f, *a, **k):
        open(f, "wb").write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="pretrain.pt: could not write the checkpoint"):
        save_checkpoint(path, {"kind": "pretrain", "x": 2})
    assert path.read_bytes() == before and list(tmp_path.glob("*.tmp")) == []


def test_a_dead_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"resume.pt.{dead.pid}.tmp"
    stale.write_bytes(b"half a checkpoint")
    save_checkpoint(tmp_path / "resume.pt", {"kind": "resume"})
    assert not stale.exists() and (tmp_path / "resume.pt").is_file()
