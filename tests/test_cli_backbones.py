"""Every backbone from the CLI on real QM9, a few steps each: pretrain with 3D-EMGP and Gaussian
denoising (Zaidi et al.) as one recipe, then fine-tune from that checkpoint.

Model sections come from configs/backbones/<name>_cpu.yaml, shrunk to a tiny width.
"""

import json

import pytest
import torch

from denoise3d.cli import main

DATA = ["data.batch_size=16", "data.eval_batch_size=64", "data.max_train=32", "data.max_valid=16",
        "data.max_test=16", "train.epochs=1", "train.threads=1"]
TINY = {  # width 16; GNS-TAT keeps its 3 x 3 blocks (TAT's eta = 0.8 needs that depth)
    "schnet": ["model.hidden=16", "model.layers=2", "model.num_rbf=8"],
    "painn": ["model.hidden=16", "model.layers=2", "model.num_rbf=8"],
    "torchmd_et": ["model.hidden=16", "model.layers=2", "model.num_rbf=8", "model.num_heads=4"],
    "mace": ["model.hidden=16"],
    "gns": ["model.hidden=16", "model.layers=2", "model.mlp_hidden=16", "model.num_rbf=8"],
    "gns_tat": ["model.hidden=16", "model.mlp_hidden=16", "model.num_rbf=8"],
}
RECIPE = "pretrain.objectives=[{name: emgp, weight: 1.0}, {name: denoise, weight: 1.0}]"


@pytest.mark.parametrize("name", sorted(TINY))
def test_pretrain_then_finetune(name, qm9_cache, tmp_path):
    config = f"configs/backbones/{name}_cpu.yaml"
    common = [*TINY[name], *DATA, f"data.cache_dir={qm9_cache}"]
    assert main(["pretrain", config, *common, RECIPE, f"train.out={tmp_path / 'pt'}"]) == 0
    ckpt = torch.load(tmp_path / "pt" / "pretrain.pt", weights_only=True)
    assert ckpt["backbone"]["name"] == name and set(ckpt["objectives"]) == {"emgp", "denoise"}
    assert ckpt["step"] == 2
    init = tmp_path / "pt" / "pretrain.pt"
    assert main(["finetune", config, *common, "finetune.target=homo", f"finetune.init={init}",
                 f"train.out={tmp_path / 'ft'}"]) == 0
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert 0 < metrics["test_mae"] < 1e5 and metrics["steps"] == 2
    ft = torch.load(tmp_path / "ft" / "finetune.pt", weights_only=True)
    pt_state = ckpt["backbone"]["state"]
    assert ft["backbone"]["kwargs"] == ckpt["backbone"]["kwargs"]
    assert any(not torch.equal(ft["backbone"]["state"][k], pt_state[k]) for k in pt_state)
