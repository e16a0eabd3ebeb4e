"""A PyTorch Mixture-of-Experts classifier trained as a moesweep command trainer.

Under moesweep (sweeps/pytorch_moe.json) the trial config comes from the worker; by hand:

    PYTHONPATH=python python3 examples/pytorch_moe/train.py MOE_TEMPERATURE=0.5 epochs=3

Model: flatten -> Linear(in, D_MODEL) -> GELU -> MOE_LAYERS x MoELayer -> Linear(D_MODEL, classes).
MoELayer (seed 004's shape, with the worker's routing rule): router -> softmax(logits / T) -> top-k ->
renormalise (drop slots below MOE_ACTIVATION_THRESHOLD, top-1 always stays) -> experts (MLPs) on
their tokens only -> weighted sum; out = LayerNorm(x + sum). Loss: cross-entropy + Switch load
balance (E * sum f_e P_e) + router entropy, summed over layers. USE_MOE=false replaces each MoE
layer by one expert-shaped FFN (the dense baseline).

Data: Fashion-MNIST from Debian's dataset-fashion-mnist (first train_size / val_size samples of the
train and test files), or a synthetic mixture-of-regimes task (dataset=synthetic; also what
dataset=auto uses when the files are missing).
"""

import difflib
import gzip
import math
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import moesweep
from moesweep.torch import ExpertStatsMeter, route

DEFAULTS = {
    # Data
    "dataset": "auto",  # auto | fashion-mnist | synthetic
    "data_dir": "/usr/share/datasets/fashion-mnist",
    "train_size": 4000,
    "val_size": 1000,
    "data_seed": 1234,
    "input_dim": 32,  # synthetic only
    "num_classes": 10,  # synthetic only
    "n_regimes": 4,  # synthetic only
    # Model (seed 001's names)
    "USE_MOE": True,
    "D_MODEL": 64,
    "MOE_LAYERS": 1,
    "MOE_NUM_EXPERTS": 4,
    "MOE_TOP_K": 2,
    "MOE_EXPERT_HIDDEN_DIM": 128,
    "MOE_EXPERT_LAYERS": 1,
    "MOE_GATE_LAYERS": 1,
    "MOE_TEMPERATURE": 0.7,
    "MOE_EXPERT_DROPOUT": 0.1,
    "MOE_GATE_DROPOUT": 0.1,
    "MOE_ACTIVATION_THRESHOLD": 0.1,
    "MOE_BALANCE_LOSS_WEIGHT": 0.01,
    "MOE_SPARSITY_LOSS_WEIGHT": 0.001,
    # Training
    "epochs": 2,
    "batch_size": 128,
    "lr": 2e-3,
    "weight_decay": 0.01,
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "threads": 1,  # CPU intra-op threads
    "save_model": False,  # write model.pt to the attempt's output folder
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def check_config(cfg):
    """Command trainers get free-form keys: refuse the ones this script does not know (typos)."""
    for key in cfg:
        if key not in DEFAULTS:
            near = difflib.get_close_matches(key, DEFAULTS, n=1)
            sys.exit("unknown config key %r%s" % (key, " (did you mean %r?)" % near[0] if near else ""))
    if not 1 <= cfg["MOE_TOP_K"] <= cfg["MOE_NUM_EXPERTS"]:
        sys.exit("MOE_TOP_K must be in [1, MOE_NUM_EXPERTS], got %r and %r" % (cfg["MOE_TOP_K"], cfg["MOE_NUM_EXPERTS"]))


# ---------------------------------------------------------------------------------------------
# Data

def read_idx(path, count):
    """The first `count` items of an idx file (.gz or plain) as a uint8 tensor [count, ...]."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        magic = f.read(4)
        if len(magic) != 4 or magic[:2] != b"\0\0" or magic[2] != 0x08:
            raise ValueError("%s: not an idx file of bytes" % path)
        dims = struct.unpack(">%dI" % magic[3], f.read(4 * magic[3]))
        n = dims[0] if count <= 0 else min(count, dims[0])
        item = math.prod(dims[1:])
        data = f.read(n * item)
        if len(data) != n * item:
            raise ValueError("%s: truncated" % path)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape((n,) + tuple(dims[1:]))


def find_idx(data_dir, stem):
    for name in (stem + ".gz", stem):
        if os.path.exists(os.path.join(data_dir, name)):
            return os.path.join(data_dir, name)
    return None


def fashion_mnist(cfg):
    paths = {}
    for split, stem in (("train", "train"), ("val", "t10k")):
        for kind, suffix in (("x", "images-idx3-ubyte"), ("y", "labels-idx1-ubyte")):
            path = find_idx(cfg["data_dir"], "%s-%s" % (stem, suffix))
            if path is None:
                raise FileNotFoundError("%s: no %s-%s[.gz] (apt-get install dataset-fashion-mnist)"
                                        % (cfg["data_dir"], stem, suffix))
            paths[split, kind] = path
    out = {}
    for split, size in (("train", cfg["train_size"]), ("val", cfg["val_size"])):
        x = read_idx(paths[split, "x"], size).reshape(-1, 784).float()
        y = read_idx(paths[split, "y"], size).long()
        out[split] = ((x / 255 - 0.2860) / 0.3530, y)
    return out, 10


def synthetic(cfg):
    """Clusters ("regimes"), each labelled by its own random linear rule: routing by regime helps."""
    g = torch.Generator().manual_seed(cfg["data_seed"])
    f, c, r = cfg["input_dim"], cfg["num_classes"], cfg["n_regimes"]
    centres = torch.randn(r, f, generator=g) * 3
    rules = torch.randn(r, f, c, generator=g)

    def draw(n, stream):
        gs = torch.Generator().manual_seed(cfg["data_seed"] * 1000003 + stream)
        regime = torch.randint(r, (n,), generator=gs)
        z = torch.randn(n, f, generator=gs)
        y = torch.einsum("nf,nfc->nc", z, rules[regime]).argmax(1)
        return centres[regime] + z, y

    return {"train": draw(cfg["train_size"], 1), "val": draw(cfg["val_size"], 2)}, c


def load_data(cfg):
    name = cfg["dataset"]
    if name == "auto":
        name = "fashion-mnist" if find_idx(cfg["data_dir"], "train-images-idx3-ubyte") else "synthetic"
    if name == "fashion-mnist":
        return fashion_mnist(cfg) + (name,)
    if name == "synthetic":
        return synthetic(cfg) + (name,)
    sys.exit("dataset must be auto, fashion-mnist or synthetic, got %r" % name)


# ---------------------------------------------------------------------------------------------
# Model

def mlp(d_in, hidden, d_out, layers, dropout):
    mods, width = [], d_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
        width = hidden
    return nn.Sequential(*mods, nn.Linear(width, d_out))


class MoELayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["D_MODEL"]
        self.use_moe = bool(cfg["USE_MOE"])
        self.num_experts = cfg["MOE_NUM_EXPERTS"] if self.use_moe else 1
        self.top_k = cfg["MOE_TOP_K"]
        self.temperature = cfg["MOE_TEMPERATURE"]
        self.threshold = cfg["MOE_ACTIVATION_THRESHOLD"]
        hidden, layers, dropout = cfg["MOE_EXPERT_HIDDEN_DIM"], cfg["MOE_EXPERT_LAYERS"], cfg["MOE_EXPERT_DROPOUT"]
        self.experts = nn.ModuleList(mlp(d, hidden, d, layers, dropout) for _ in range(self.num_experts))
        if self.use_moe:
            gate = [] if cfg["MOE_GATE_LAYERS"] < 2 else [nn.Linear(d, d), nn.GELU(), nn.Dropout(cfg["MOE_GATE_DROPOUT"])]
            self.router = nn.Sequential(*gate, nn.Linear(d, self.num_experts))
        self.norm = nn.LayerNorm(d)
        self.meter = ExpertStatsMeter(self.num_experts, self.top_k, self.threshold) if self.use_moe else None
        self.collect_stats = False
        self.aux = {}

    def forward(self, x):
        if not self.use_moe:
            return self.norm(x + self.experts[0](x))
        r = route(self.router(x), self.temperature, self.top_k, self.threshold)
        mixed = torch.zeros_like(x)
        flat_experts, flat_keep, flat_w = r.experts.reshape(-1), r.keep.reshape(-1), r.weights.reshape(-1)
        slots = torch.arange(flat_experts.numel(), device=x.device)
        counts = torch.zeros(self.num_experts, device=x.device)
        for e, expert in enumerate(self.experts):
            mine = slots[(flat_experts == e) & flat_keep]
            counts[e] = mine.numel()
            if mine.numel() == 0:
                continue  # An idle expert costs nothing.
            tokens = mine // self.top_k
            mixed = mixed.index_add(0, tokens, expert(x[tokens]) * flat_w[mine].unsqueeze(1))
        if self.training:
            share = counts / counts.sum()  # f_e: share of computed slots (no gradient)
            self.aux = {"balance": self.num_experts * (share * r.probs.mean(0)).sum(),
                        "entropy": -(r.probs * r.log_probs).sum(1).mean()}
        if self.collect_stats:
            self.meter.update(r.probs, r.experts, r.first, r.keep, r.log_probs)
        return self.norm(x + mixed)


class MoEClassifier(nn.Module):
    def __init__(self, cfg, d_in, classes):
        super().__init__()
        d = cfg["D_MODEL"]
        self.embed = nn.Sequential(nn.Linear(d_in, d), nn.GELU())
        self.moe = nn.ModuleList(MoELayer(cfg) for _ in range(cfg["MOE_LAYERS"]))
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        h = self.embed(x.flatten(1))
        for layer in self.moe:
            h = layer(h)
        return self.head(h)

    def params_active(self):
        total = sum(p.numel() for p in self.parameters())
        for layer in self.moe:
            if layer.use_moe:
                per_expert = sum(p.numel() for p in layer.experts[0].parameters())
                total -= (layer.num_experts - layer.top_k) * per_expert
        return total


# ---------------------------------------------------------------------------------------------
# Training

def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("device %r: CUDA is not available here (CUDA_VISIBLE_DEVICES=%r)"
                 % (name, os.environ.get("CUDA_VISIBLE_DEVICES")))
    return torch.device(name)


@torch.no_grad()
def evaluate(model, x, y, batch_size=1024):
    model.eval()
    for layer in model.moe:
        layer.collect_stats = layer.use_moe
        if layer.meter:
            layer.meter.reset()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size])
        loss_sum += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
        correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    stats = []
    for i, layer in enumerate(model.moe):
        layer.collect_stats = False
        if layer.meter:
            stats.append(layer.meter.summary(layer=i))
    return loss_sum / len(x), correct / len(x), stats


def main():
    cfg = moesweep.config(DEFAULTS)
    check_config(cfg)
    torch.set_num_threads(max(1, int(cfg["threads"])))
    torch.manual_seed(cfg["seed"])
    device = pick_device(cfg["device"])
    data, classes, dataset = load_data(cfg)
    (xt, yt), (xv, yv) = [(x.to(device), y.to(device)) for x, y in (data["train"], data["val"])]
    model = MoEClassifier(cfg, xt[0].numel(), classes).to(device)
    params_total = sum(p.numel() for p in model.parameters())
    log("trial %s: %s, %d train / %d val, device %s, %d parameters"
        % (moesweep.trial_id(), dataset, len(xt), len(xv), device, params_total))

    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    steps = cfg["epochs"] * math.ceil(len(xt) / cfg["batch_size"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    gen = torch.Generator().manual_seed(cfg["seed"])
    w_bal, w_sparse = cfg["MOE_BALANCE_LOSS_WEIGHT"], cfg["MOE_SPARSITY_LOSS_WEIGHT"]
    best = (-1.0, 0)
    start = time.monotonic()
    for epoch in range(1, cfg["epochs"] + 1):
        model.train()
        t0, loss_sum, seen = time.monotonic(), 0.0, 0
        order = torch.randperm(len(xt), generator=gen).to(device)
        for b, i in enumerate(range(0, len(xt), cfg["batch_size"])):
            if moesweep.should_stop():  # SIGTERM: the worker is stopping this trial.
                log("stop requested at epoch %d, batch %d" % (epoch, b))
                sys.exit(moesweep.STOPPED_EXIT_CODE)
            idx = order[i:i + cfg["batch_size"]]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            for layer in model.moe:
                if layer.use_moe:
                    loss = loss + w_bal * layer.aux["balance"] + w_sparse * layer.aux["entropy"]
            if not torch.isfinite(loss):
                sys.exit("training loss is %s at epoch %d, batch %d" % (loss.item(), epoch, b))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
        train_seconds = time.monotonic() - t0
        val_loss, val_acc, stats = evaluate(model, xv, yv)
        best = max(best, (val_acc, -epoch))
        metrics = {"epoch": epoch, "train_loss": loss_sum / seen, "val_loss": val_loss, "val_accuracy": val_acc,
                   "lr": opt.param_groups[0]["lr"], "samples_per_sec": seen / max(train_seconds, 1e-9)}
        moesweep.report(epoch, metrics, stats or None)
        log("epoch %d: train_loss %.4f val_loss %.4f val_accuracy %.4f" % (epoch, metrics["train_loss"], val_loss, val_acc))

    if cfg["save_model"]:
        torch.save(model.state_dict(), os.path.join(moesweep.output_dir(), "model.pt"))
    metrics.update(best_epoch=-best[1], params_total=params_total, params_active=model.params_active(),
                   train_seconds=time.monotonic() - start)
    moesweep.finish(metrics, stats or None, step=cfg["epochs"])


if __name__ == "__main__":
    main()
