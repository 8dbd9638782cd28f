"""Issue 17, item 1: why EGNN energy + force training from scratch sits on the zero-force plateau.

One variant of the EGNN edge input at a time, trained with the benefit runner's force-field
recipe (``benchmarks/pretraining_benefit/finetune_md17.yaml``: 1,000 frames, batch 32, Adam 5e-4,
0.2 L1(E) + 0.8 L1(F), energy std normalisation) for STEPS steps; prints the validation force MAE
every 10 epochs (kcal/mol/Å, beside the zero-force baseline) and a final JSON line.

    python benchmarks/egnn_plateau/variants.py TRAJECTORY.npz VARIANT [STEPS] [SEED]

VARIANT is a comma list of key=value:
  feat=orig      the library's EGNN (d² only, the official form)
  feat=d2        the same layer re-implemented here (concatenated input; its own initial draw)
  feat=d         the distance instead of d²
  feat=rbf       K Gaussians of d on [0, rmax] instead of d² (K=32, rmax=10 by default)
  feat=d2rbf     d² and the Gaussians (what ``model.num_rbf`` adds to the library's EGNN)
  graph=hops     keep only the 1-, 2- and 3-hop pairs (drop the "other" pairs of the full graph)
  bk=NAME        the library's backbone NAME instead (schnet, painn, ...)
  loss=mse       squared errors instead of L1;  lr=X;  ew=X (energy weight);  head=atomwise
  wd=X           multiply the initial d² weights by X
The plateau scheduler steps every 10 epochs here (the runner: every epoch). One thread.
"""
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from denoise3d.config import load_config
from denoise3d.jobs import energy_force as ef
from denoise3d.data.batching import loader
from denoise3d.train.evaluate import force_field_errors
from denoise3d.models.egnn import EGNN, squared_distances
from denoise3d.models.ops import scatter_sum
from denoise3d.train.seed import seed_everything

npz, variant = sys.argv[1], sys.argv[2]
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 3100
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
opts = dict(kv.split("=") for kv in variant.split(",") if "=" in kv)
feat = opts.get("feat", "d2")       # d2 | d | rbf
loss_kind = opts.get("loss", "l1")  # l1 | mse
lr = float(opts.get("lr", 5e-4))
head = opts.get("head", "mlp_of_sum")
ew = float(opts.get("ew", 0.2))
RECIPE = Path(__file__).resolve().parents[1] / "pretraining_benefit" / "finetune_md17.yaml"
cfg = load_config(RECIPE,
                  [f"data.path={npz}", f"train.seed={seed}", "train.threads=1", f"finetune.energy_head={head}",
                   f"finetune.energy_weight={ew}", f"finetune.force_weight={1-ew}", f"model.backbone={opts.get('bk', 'egnn')}"])
torch.set_num_threads(1)
seed_everything(seed, 1)
job = ef.build(cfg)
obj = job.objectives["energy_force"][1]
H = cfg.model.hidden

class Layer(nn.Module):
    def __init__(s, K):
        super().__init__()
        s.edge_mlp = nn.Sequential(nn.Linear(2*H+K+4, H), nn.SiLU(), nn.Linear(H, H), nn.SiLU())
        s.gate = nn.Linear(H, 1)
        s.node_mlp = nn.Sequential(nn.Linear(2*H, H), nn.SiLU(), nn.Linear(H, H))
    def forward(s, h, ei, et, g):
        m = s.edge_mlp(torch.cat([h[ei[0]], h[ei[1]], g, F.one_hot(et, 4).to(h.dtype)], 1))
        m = m * torch.sigmoid(s.gate(m))
        return h + s.node_mlp(torch.cat([h, scatter_sum(m, ei[0], h.shape[0])], 1))

class Net(nn.Module):
    distance_input = False
    def __init__(s):
        super().__init__()
        s.K = int(opts.get("K", 32)) + (feat == "d2rbf") if feat in ("rbf", "d2rbf") else 1
        s.embedding = nn.Embedding(120, H)
        s.layers = nn.ModuleList(Layer(s.K) for _ in range(cfg.model.layers))
        s.register_buffer("mu", torch.linspace(0, float(opts.get("rmax", 10)), s.K if feat != "d2rbf" else s.K))
    def forward(s, batch):
        d2 = squared_distances(batch.pos, batch.edge_index)
        if feat == "d2": g = d2
        elif feat == "d": g = d2.clamp_min(1e-12).sqrt()
        elif feat == "d2s": g = d2 / float(opts.get("scale", 10))
        elif feat == "d2rbf":
            d = d2.clamp_min(1e-12).sqrt(); mu = s.mu[:-1]; gamma = 1.0 / (mu[1] - mu[0]) ** 2
            g = torch.cat([d2, torch.exp(-gamma * (d - mu) ** 2)], 1)
        else:
            d = d2.clamp_min(1e-12).sqrt(); gamma = 1.0 / (s.mu[1] - s.mu[0]) ** 2
            g = torch.exp(-gamma * (d - s.mu) ** 2)
        h = s.embedding(batch.z)
        ei, et = batch.edge_index, batch.edge_type
        if opts.get("graph") == "hops":
            keep = et < 3
            ei, et, g = ei[:, keep], et[keep], g[keep]
        for l in s.layers: h = l(h, ei, et, g)
        return h, None

bb = job.backbone if feat == "orig" or "bk" in opts else Net()
if "wd" in opts:
    with torch.no_grad():
        for l in bb.layers:
            l.edge_mlp[0].weight[:, 2*H:2*H+1] *= float(opts["wd"])
params = list(bb.parameters()) + list(obj.parameters())
opt = torch.optim.Adam(params, lr=lr)
sched = opts.get("sched", "plateau")
train = loader(job.dataset, job.split["train"], cfg.data, train=True, seed=seed)
valid = loader(job.dataset, job.split["valid"], cfg.data, train=False)
plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.9, patience=5, min_lr=1e-6)
step, epoch, t0 = 0, 0, time.time()
b0 = next(iter(train))
e0_, f0_ = obj.predict(bb, b0)
print(f"initial force RMS {float(f0_.square().mean().sqrt()):.4g} eV/A, target RMS {float(b0.targets['forces'].square().mean().sqrt()):.4g}; energy spread {float(e0_.std()):.4g} vs {float(b0.targets['energy'].std()):.4g} eV", flush=True)
zero = float(np.abs(np.asarray(job.dataset.batch(np.asarray(job.split["valid"]), targets=["forces"]).targets["forces"])).mean())*23.06
hist = []
while step < steps:
    train.set_epoch(epoch)
    for b in train:
        bb.train(); obj.train()
        e, f = obj.predict(bb, b, create_graph=True)
        de, df = e - b.targets["energy"], f - b.targets["forces"]
        if loss_kind == "l1":
            loss = (ew * de.abs().mean() + (1-ew) * df.abs().mean()) / obj.std
        else:
            loss = (ew * de.square().mean() + (1-ew) * df.square().mean()) / obj.std**2
        opt.zero_grad(); loss.backward(); opt.step(); step += 1
        if sched == "cosine":
            for g_ in opt.param_groups: g_["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(step / steps, 1)))
        if step >= steps: break
    epoch += 1
    if epoch % 10 == 0 or step >= steps:
        err = force_field_errors(bb, obj, valid, "cpu")
        if sched == "plateau": plateau.step(err["loss"])
        fm = err["force_mae"] * 23.0605
        hist.append((epoch, step, round(fm, 3)))
        print(f"{variant} ep {epoch} step {step} valid F {fm:.3f} kcal/mol/A (zero {zero:.2f}) E {err['energy_mae']*23.0605:.3f} {time.time()-t0:.0f}s", flush=True)
print(json.dumps({"variant": variant, "npz": npz, "seed": seed, "final": hist[-1], "zero": zero, "wall": time.time()-t0}))
