"""PyTorch helpers: the worker's routing rule and its expert statistics, for MoE layers in Python.

``ExpertStatsMeter`` computes exactly the statistics the built-in LibTorch worker reports
(docs/worker.md, "Expert statistics"; worker/moe_layer.cc AccumulateStats and
worker/expert_stats.cc Summarize), so trials of command trainers and of the built-in trainer can
be compared. tests/python/stats_parity.py checks it against the C++ code.

    meter = ExpertStatsMeter(num_experts=8, top_k=2, activation_threshold=0.1)
    with torch.no_grad():
        for x, y in val_loader:
            r = route(router(x), temperature, top_k=2, threshold=0.1)
            ...
            meter.update(r.probs, r.experts, r.first, r.keep)
    moesweep.report(epoch, metrics, [meter.summary(layer=0)])
"""

import math
from typing import NamedTuple, Optional

import torch

__all__ = ["Routing", "route", "ExpertStatsMeter"]


class Routing(NamedTuple):
    probs: torch.Tensor      # [N, E] softmax(logits / temperature)
    log_probs: torch.Tensor  # [N, E]
    experts: torch.Tensor    # [N, k] int64, best first
    first: torch.Tensor      # [N, k] top-k probabilities renormalised once
    keep: torch.Tensor       # [N, k] bool: computed (first >= threshold, or top-1)
    weights: torch.Tensor    # [N, k] mixing weights: 0 for dropped slots, rows sum to 1


def route(logits, temperature=1.0, top_k=2, threshold=0.0):
    """The worker's routing rule (worker/moe_layer.cc Route); differentiable in `logits` [N, E].

    Top-k of p = softmax(logits / temperature), renormalised (`first`); with threshold > 0 and
    top_k > 1, slots with first < threshold are dropped (top-1 always stays) and the kept
    weights renormalised again.
    """
    scaled = logits if temperature == 1.0 else logits / temperature
    log_probs = torch.log_softmax(scaled, dim=-1)
    probs = log_probs.exp()
    values, experts = probs.topk(top_k, dim=-1, largest=True, sorted=True)
    first = values / values.sum(-1, keepdim=True)
    if threshold > 0 and top_k > 1:
        keep = first.detach() >= threshold
        keep[..., 0] = True
        kept = values * keep
        weights = kept / kept.sum(-1, keepdim=True)
    else:
        keep = torch.ones_like(experts, dtype=torch.bool)
        weights = first
    return Routing(probs, log_probs, experts, first, keep, weights)


class ExpertStatsMeter:
    """Running routing statistics of one MoE layer; feed it batch by batch, then summary().

    Sums are kept in float64. Feed it the evaluation batches (the worker measures on the
    validation set, in eval mode) and reset() before each measurement.
    """

    def __init__(self, num_experts, top_k, activation_threshold=0.0):
        if num_experts < 1 or not 1 <= top_k <= num_experts:
            raise ValueError("need num_experts >= 1 and 1 <= top_k <= num_experts, got %d and %d"
                             % (num_experts, top_k))
        self.num_experts = int(num_experts)
        self.top_k = int(top_k)
        self.activation_threshold = float(activation_threshold)
        self.reset()

    def reset(self):
        """Forgets every batch seen."""
        self.routed_slots = [0.0] * self.num_experts  # kept (computed) slots per expert
        self.prob_sum = [0.0] * self.num_experts
        self.tokens = 0.0
        self.topk_slots = 0.0
        self.slots_above_threshold = 0.0
        self.prob_variance_sum = 0.0
        self.entropy_sum = 0.0

    @torch.no_grad()
    def update(self, probs, experts, first, keep=None, log_probs=None):
        """Adds one batch of routing decisions.

        probs [N, E]: router probabilities (after softmax with temperature); experts [N, k]: the
        selected experts, best first; first [N, k]: their probabilities renormalised once (before
        threshold drops); keep [N, k] bool: which slots were computed (default: the worker's rule
        from `first` and activation_threshold); log_probs [N, E]: log of probs if at hand (the
        entropy then uses it, as the worker does). Leading dimensions beyond N are flattened.
        """
        e, k = self.num_experts, self.top_k
        probs = probs.detach()
        if probs.shape[-1] != e:
            raise ValueError("probs: expected last dimension %d (num_experts), got shape %s" % (e, tuple(probs.shape)))
        probs = probs.reshape(-1, e)
        n = probs.shape[0]
        experts = experts.detach().reshape(-1, experts.shape[-1])
        first = first.detach().reshape(-1, first.shape[-1])
        for name, t in (("experts", experts), ("first", first)):
            if tuple(t.shape) != (n, k):
                raise ValueError("%s: expected shape (%d, %d) (tokens, top_k), got %s" % (name, n, k, tuple(t.shape)))
        # Compared in first's own dtype, as the worker does (float32 threshold for float32 weights).
        above = first >= self.activation_threshold
        if keep is None:
            if self.activation_threshold > 0 and k > 1:
                keep = above.clone()
                keep[:, 0] = True
            else:
                keep = torch.ones_like(above)
        else:
            keep = keep.detach().reshape(-1, k).to(torch.bool)
            if tuple(keep.shape) != (n, k):
                raise ValueError("keep: expected shape (%d, %d), got %s" % (n, k, tuple(keep.shape)))
        counts = torch.bincount(experts[keep].reshape(-1).to(torch.int64).cpu(), minlength=e)
        if counts.numel() > e:
            raise ValueError("experts: index %d out of range for %d experts" % (counts.numel() - 1, e))

        p = probs.to(torch.float64)
        if log_probs is not None:
            plogp = p * log_probs.detach().reshape(-1, e).to(torch.float64)
        else:
            plogp = torch.special.xlogy(p, p)  # 0 * log 0 = 0
        prob_sum = p.sum(0).cpu().tolist()
        count_list = counts.tolist()
        for i in range(e):
            self.prob_sum[i] += prob_sum[i]
            self.routed_slots[i] += float(count_list[i])
        self.tokens += float(n)
        self.topk_slots += float(n * k)
        self.slots_above_threshold += float(above.sum().item())
        self.prob_variance_sum += p.var(1, unbiased=False).sum().item()
        self.entropy_sum += -plogp.sum().item()

    def summary(self, layer=0):
        """One ``expert_stats`` entry: layer, usage, importance, usage_variance, activation_rate,
        gate_weight_variance, router_entropy, load_cv (docs/worker.md)."""
        s = {"layer": int(layer), "usage": [], "importance": [], "usage_variance": 0.0, "activation_rate": 0.0,
             "gate_weight_variance": 0.0, "router_entropy": 0.0, "load_cv": 0.0}
        e = self.num_experts
        if self.tokens <= 0:
            return s
        total = sum(self.routed_slots)
        s["usage"] = [c / total if total > 0 else 0.0 for c in self.routed_slots]
        s["importance"] = [p / self.tokens for p in self.prob_sum]
        mean = 1.0 / e
        var = sum((u - mean) ** 2 for u in s["usage"]) / e
        s["usage_variance"] = var
        s["load_cv"] = math.sqrt(var) / mean
        s["activation_rate"] = self.slots_above_threshold / self.topk_slots if self.topk_slots > 0 else 0.0
        s["gate_weight_variance"] = self.prob_variance_sum / self.tokens
        s["router_entropy"] = self.entropy_sum / self.tokens / math.log(e) if e > 1 else 0.0
        return s
