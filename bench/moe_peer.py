#!/usr/bin/python3
"""Eager PyTorch peer of `moesweep-worker run` for the moe_mlp model (the worker benchmark).

Reads the same trial config JSON as the worker, fills in the defaults of common/trial_schema.cc,
and trains the model that docs/worker.md describes, written the way a PyTorch user would write it:
torch.nn modules (one nn.Sequential per expert in an nn.ModuleList), sparse dispatch by sorting
the kept (token, expert) slots by expert and index_add_, torch.optim.AdamW,
torch.nn.utils.clip_grad_norm_, a per-step cosine schedule set through param_groups.

    /usr/bin/python3 bench/moe_peer.py CONFIG.json [--threads T] [--epochs N] [--profile] [--json OUT]
                                       [--device cpu|cuda] [--precision fp32|bf16]

Per-epoch lines go to stderr (like the worker's), a JSON summary to stdout. samples_per_sec covers
the training phase of an epoch only (batch gather, forward, losses, backward, clipping, optimizer),
not data loading or evaluation, exactly like the worker's metric.

--profile times the phases of every step (forward, parameter-diversity forward, backward of the
main loss, backward of the diversity term, clipping, optimizer, zero_grad). It does the same
arithmetic: the diversity term is backpropagated on its own, which accumulates the same gradients.

Only what the worker benchmarks need is supported: model moe_mlp, and dataset fashion-mnist or
synthetic. For synthetic the peer draws random data of the config's shape (input_dim features,
num_classes labels): the GPU benchmark (bench/gpu_bench.sh) compares throughput, which does not
depend on the values. --device cuda trains on the GPU; --precision bf16 runs the forward under
torch.autocast(bfloat16), weights and optimizer in float32. Use Debian's /usr/bin/python3
(python3-torch 1.13, the LibTorch build the worker links) on the CPU, and the machine's PyTorch on a
GPU.
"""
import argparse
import contextlib
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# Defaults of every key the peer reads, from common/trial_schema.cc (BuildKeys).
DEFAULTS = {
    "model": "moe_mlp", "use_moe": True, "d_model": 64, "num_blocks": 1, "num_experts": 8, "top_k": 2,
    "expert_hidden_dim": 1024, "expert_layers": 2, "gate_layers": 2, "temperature": 0.7,
    "expert_dropout": 0.1, "gate_dropout": 0.1, "activation_threshold": 0.1, "residual_weight": 1.0,
    "balance_loss_weight": 0.01, "sparsity_loss_weight": 0.001, "diversity_loss_weight": 0.01,
    "output_diversity_weight": 0.0, "js_divergence_weight": 0.0, "z_loss_weight": 0.0,
    "epochs": 5, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.01, "warmup_epochs": 0, "grad_clip": 1.0,
    "label_smoothing": 0.0, "mixup_alpha": 0.0, "mixup_prob": 0.0, "early_stopping_patience": 0,
    "seed": 0, "data_seed": 1234, "dataset": "synthetic", "train_size": 0, "val_size": 0,
    "input_dim": 32, "num_classes": 10,
    "data_dir": "/usr/share/datasets/fashion-mnist",
}
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


def load_config(path):
    with open(path) as f:
        raw = json.load(f)
    c = dict(DEFAULTS)
    c.update(raw)
    if c["model"] != "moe_mlp":
        sys.exit("moe_peer.py: only model moe_mlp is implemented")
    if c["dataset"] not in ("fashion-mnist", "synthetic"):
        sys.exit("moe_peer.py: only datasets fashion-mnist and synthetic are implemented")
    if c["early_stopping_patience"] != 0:
        sys.exit("moe_peer.py: early stopping is not implemented")
    return c


# ---------------------------------------------------------------------------------------------
# Data: the first train_size / val_size samples of the official train / test files.

def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = struct.unpack(">" + "I" * (magic & 0xFF), data[4:4 + 4 * (magic & 0xFF)])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def load_random(c):
    """Random data of the config's shape (synthetic: 4096 / 1024 samples unless sized)."""
    g = torch.Generator().manual_seed(c["data_seed"])
    def split(n):
        x = torch.randn(n, c["input_dim"], generator=g)
        return x, torch.randint(0, c["num_classes"], (n,), generator=g)
    return split(c["train_size"] or 4096), split(c["val_size"] or 1024), c["num_classes"]


def load_fashion(c):
    d = c["data_dir"]
    def split(prefix, n):
        x = read_idx(os.path.join(d, f"{prefix}-images-idx3-ubyte.gz"))
        y = read_idx(os.path.join(d, f"{prefix}-labels-idx1-ubyte.gz"))
        if n > 0:
            x, y = x[:n], y[:n]
        x = torch.from_numpy(x.reshape(len(x), -1).astype(np.float32))
        return (x / 255.0 - FASHION_MEAN) / FASHION_STD, torch.from_numpy(y.astype(np.int64))
    return split("train", c["train_size"]), split("t10k", c["val_size"]), 10


# ---------------------------------------------------------------------------------------------
# Model

class Expert(nn.Module):
    """Linear(d,h) -> GELU -> Dropout -> [Linear(h,h) -> GELU -> Dropout] x (L-1) -> Linear(h,d)."""

    def __init__(self, d, h, layers, dropout):
        super().__init__()
        mods, width = [], d
        for _ in range(layers):
            mods += [nn.Linear(width, h), nn.GELU(), nn.Dropout(dropout)]
            width = h
        mods.append(nn.Linear(width, d))
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x)

    def forward_no_dropout(self, x):
        for m in self.net:
            if not isinstance(m, nn.Dropout):
                x = m(x)
        return x


class MoELayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, self.E, self.k = c["d_model"], c["num_experts"], c["top_k"]
        self.use_moe = c["use_moe"]
        self.temperature, self.threshold = c["temperature"], c["activation_threshold"]
        self.residual_weight = c["residual_weight"]
        self.w = {k: c[k] for k in ("balance_loss_weight", "sparsity_loss_weight", "z_loss_weight",
                                    "diversity_loss_weight", "output_diversity_weight", "js_divergence_weight")}
        n_exp = self.E if self.use_moe else 1
        self.experts = nn.ModuleList(
            Expert(d, c["expert_hidden_dim"], c["expert_layers"], c["expert_dropout"]) for _ in range(n_exp))
        if self.use_moe:
            self.gate = (nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(c["gate_dropout"]), nn.Linear(d, self.E))
                         if c["gate_layers"] >= 2 else nn.Linear(d, self.E))
        self.norm = nn.LayerNorm(d)
        self.aux = {}      # weighted auxiliary losses of the last training forward
        self.div_term = None  # the weighted parameter-diversity term (kept apart for --profile)
        self.div_seconds = 0.0  # time spent computing it (forward), for --profile

    def param_diversity(self):
        # Mean pairwise cosine similarity of the experts' flattened parameters, via
        # sum_{i != j} u_i . u_j = |sum_i u_i|^2 - E (the worker's O(E P) formulation; a Gram
        # matrix u @ u.T would cost O(E^2 P)). Summed expert by expert rather than through one
        # stacked [E, P] tensor: at E = 32 that tensor is 34 MB, above glibc's largest mmap
        # threshold (32 MB), so every step would page-fault a few fresh copies of it in (~1 s a
        # step on the benchmark VM).
        s = sum(F.normalize(torch.cat([p.reshape(-1) for p in ex.parameters()]), dim=0) for ex in self.experts)
        return (s.dot(s) - self.E) / (self.E * (self.E - 1))

    def forward(self, x):
        r = self.residual_weight
        residual = x if r == 1.0 else x * r
        if not self.use_moe:
            return self.norm(residual + self.experts[0](x))
        logits = self.gate(x)
        scaled = logits if self.temperature == 1.0 else logits / self.temperature
        log_probs = F.log_softmax(scaled, dim=1)
        probs = log_probs.exp()
        values, experts = probs.topk(self.k, dim=1)
        first = values / values.sum(1, keepdim=True)
        if self.threshold > 0 and self.k > 1:
            keep = first.detach() >= self.threshold
            keep[:, 0] = True  # the top-1 always stays
            kept = values * keep
            weights = kept / kept.sum(1, keepdim=True)
        else:
            keep = torch.ones_like(experts, dtype=torch.bool)
            weights = first

        # Sparse dispatch: sort the kept (token, slot) pairs by expert, run each expert on its
        # contiguous slice, scale by the routing weight and index_add_ back.
        slots = keep.reshape(-1).nonzero().squeeze(1)
        slot_experts, order = torch.sort(experts.reshape(-1)[slots], stable=True)
        slots = slots[order]
        tokens = torch.div(slots, self.k, rounding_mode="floor")
        counts = torch.bincount(slot_experts, minlength=self.E)
        counts_list = counts.tolist()
        chunks = x.index_select(0, tokens).split(counts_list)
        y = torch.cat([self.experts[e](chunk) for e, chunk in enumerate(chunks) if counts_list[e] > 0])
        w = weights.reshape(-1).index_select(0, slots).unsqueeze(1)
        mixed = torch.zeros_like(x).index_add_(0, tokens, y * w)
        out = self.norm(residual + mixed)

        self.aux, self.div_term = {}, None
        if self.training:
            E, wt = self.E, self.w
            if wt["balance_loss_weight"] > 0:
                share = counts.float() / slots.numel()
                self.aux["balance"] = wt["balance_loss_weight"] * E * (share * probs.mean(0)).sum()
            if wt["sparsity_loss_weight"] > 0:
                self.aux["entropy"] = wt["sparsity_loss_weight"] * -(probs * log_probs).sum(1).mean()
            if wt["z_loss_weight"] > 0:
                self.aux["z"] = wt["z_loss_weight"] * torch.logsumexp(logits, 1).pow(2).mean()
            if wt["diversity_loss_weight"] > 0 and E > 1:
                t = time.perf_counter()
                self.div_term = wt["diversity_loss_weight"] * self.param_diversity()
                self.div_seconds += time.perf_counter() - t
            if (wt["output_diversity_weight"] > 0 or wt["js_divergence_weight"] > 0) and E > 1:
                means = torch.stack([ex.forward_no_dropout(x).mean(0) for ex in self.experts])  # [E, d]
                if wt["output_diversity_weight"] > 0:
                    s = F.normalize(means, dim=1).sum(0)
                    self.aux["out_div"] = wt["output_diversity_weight"] * (s.dot(s) - E) / (E * (E - 1))
                if wt["js_divergence_weight"] > 0:
                    logq = F.log_softmax(means, 1)
                    q = logq.exp()
                    logm = ((q.unsqueeze(1) + q.unsqueeze(0)) * 0.5).log()
                    kl = (q.unsqueeze(1) * (logq.unsqueeze(1) - logm)).sum(2)
                    js = ((kl + kl.t()) * 0.5).sum() / (E * (E - 1))
                    self.aux["js"] = -wt["js_divergence_weight"] * js
        return out


class MoeMlp(nn.Module):
    def __init__(self, c, in_features, classes):
        super().__init__()
        self.input = nn.Linear(in_features, c["d_model"])
        self.blocks = nn.ModuleList(MoELayer(c) for _ in range(c["num_blocks"]))
        self.head = nn.Linear(c["d_model"], classes)

    def forward(self, x):
        h = F.gelu(self.input(x.flatten(1)))
        for block in self.blocks:
            h = block(h)
        return self.head(h)


# ---------------------------------------------------------------------------------------------
# Training

def scheduled_lr(base, step, warmup, total):
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.inference_mode()
def evaluate(model, x, y):
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), 1024):
        logits = model(x[start:start + 1024])
        yb = y[start:start + 1024]
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return loss_sum / len(x), correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, help="override the config's epochs (the schedule follows it)")
    ap.add_argument("--profile", action="store_true", help="time the phases of each step")
    ap.add_argument("--foreach", action="store_true", help="torch.optim.AdamW(foreach=True) (default: False, torch 1.13's default)")
    ap.add_argument("--json", help="also write the summary here")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast the forward")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    c = load_config(args.config)
    if args.epochs:
        c["epochs"] = args.epochs
    device = torch.device(args.device)
    if args.precision == "bf16" and device.type != "cuda":
        sys.exit("moe_peer.py: --precision bf16 needs --device cuda (CPU autocast of torch 1.13 breaks on layer_norm)")
    (train_x, train_y), (val_x, val_y), classes = load_fashion(c) if c["dataset"] == "fashion-mnist" else load_random(c)
    train_x, train_y, val_x, val_y = (t.to(device) for t in (train_x, train_y, val_x, val_y))
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if args.precision == "bf16"
                else contextlib.nullcontext())
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    torch.manual_seed(c["seed"])  # initialisation and dropout
    shuffle = torch.Generator().manual_seed(c["seed"])
    model = MoeMlp(c, train_x.shape[1], classes).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=c["weight_decay"], foreach=args.foreach or None)
    params = list(model.parameters())

    n = len(train_x)
    batch = min(c["batch_size"], n)
    steps_per_epoch = (n + batch - 1) // batch
    total_steps = c["epochs"] * steps_per_epoch
    warmup_steps = min(total_steps, c["warmup_epochs"] * steps_per_epoch)
    mixup = c["mixup_alpha"] > 0 and c["mixup_prob"] > 0
    beta = torch.distributions.Beta(c["mixup_alpha"], c["mixup_alpha"]) if mixup else None

    phases = ["forward", "div_forward", "backward", "div_backward", "clip", "optimizer", "zero_grad"]
    timing = {p: 0.0 for p in phases}
    epochs_out, step = [], 0
    for epoch in range(1, c["epochs"] + 1):
        model.train()
        prof = {p: 0.0 for p in phases}
        order = torch.randperm(n, generator=shuffle).to(device)
        loss_sum, seen = 0.0, 0
        t_epoch = time.perf_counter()
        for b in range(steps_per_epoch):
            idx = order[b * batch:(b + 1) * batch]
            x, y = train_x[idx], train_y[idx]
            y2, lam = None, 1.0
            if mixup and torch.rand(1, generator=shuffle).item() < c["mixup_prob"]:
                lam = beta.sample().item()
                partner = torch.randperm(len(idx), generator=shuffle).to(device)
                x = x * lam + x[partner] * (1 - lam)
                y2 = y[partner]
            t0 = time.perf_counter()
            with autocast:
                logits = model(x).float()
            loss = F.cross_entropy(logits, y, label_smoothing=c["label_smoothing"])
            if y2 is not None:
                loss = loss * lam + F.cross_entropy(logits, y2, label_smoothing=c["label_smoothing"]) * (1 - lam)
            for block in model.blocks:
                for term in block.aux.values():
                    loss = loss + term
            t2 = time.perf_counter()
            div = [blk.div_term for blk in model.blocks if blk.div_term is not None]
            div_seconds = sum(blk.div_seconds for blk in model.blocks)  # ran inside model(x)
            for blk in model.blocks:
                blk.div_seconds = 0.0
            total = loss + sum(div) if div else loss
            loss_value = total.item()
            if not math.isfinite(loss_value):
                sys.exit(f"training loss is {loss_value} at epoch {epoch}, batch {b + 1}")
            if args.profile:
                loss.backward()
                t3 = time.perf_counter()
                if div:
                    sum(div).backward()
                t4 = time.perf_counter()
            else:
                total.backward()
                t3 = t4 = time.perf_counter()
            if c["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(params, c["grad_clip"])
            t5 = time.perf_counter()
            lr_now = scheduled_lr(c["lr"], step, warmup_steps, total_steps)
            for g in opt.param_groups:
                g["lr"] = lr_now
            opt.step()
            t6 = time.perf_counter()
            opt.zero_grad()
            t7 = time.perf_counter()
            step += 1
            loss_sum += loss_value * len(idx)
            seen += len(idx)
            if args.profile:
                for p, dt in zip(phases, (t2 - t0 - div_seconds, div_seconds, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6)):
                    prof[p] += dt
        sync()
        epoch_seconds = time.perf_counter() - t_epoch
        val_loss, val_acc = evaluate(model, val_x, val_y)
        rec = {"epoch": epoch, "train_loss": loss_sum / seen, "val_loss": val_loss, "val_accuracy": val_acc,
               "lr": lr_now, "samples_per_sec": seen / epoch_seconds, "train_phase_seconds": epoch_seconds}
        if args.profile:
            rec["profile_seconds"] = prof
            if epoch > 1:
                for p in phases:
                    timing[p] += prof[p]
        epochs_out.append(rec)
        print("epoch {} ".format(epoch) + " ".join(f"{k}={v:.6g}" for k, v in rec.items()
                                                   if k not in ("epoch", "profile_seconds")),
              file=sys.stderr, flush=True)

    after = epochs_out[1:] or epochs_out
    summary = {
        "config": args.config, "threads": args.threads, "foreach": args.foreach, "device": args.device,
        "precision": args.precision,
        "torch": torch.__version__, "params_total": sum(p.numel() for p in params),
        "samples_per_sec_after_warmup": sum(len(train_x) for _ in after) / sum(e["train_phase_seconds"] for e in after),
        "val_accuracy": epochs_out[-1]["val_accuracy"], "epochs": epochs_out,
    }
    if args.profile:
        summary["profile_seconds_after_warmup"] = timing
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
