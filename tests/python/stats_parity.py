"""Recomputes the worker's expert statistics with moesweep.torch.ExpertStatsMeter and compares.

Usage: stats_parity.py FIXTURE.json (written by tests/worker/expert_stats_parity_test.cc): a list of
cases {num_experts, top_k, activation_threshold, layer, batches: [{probs, log_probs, experts, first,
keep}], summary: the C++ RoutingStatsAccumulator::Summarize result}. Exit 0 when every statistic
agrees (relative 1e-6), 1 when one does not, 77 when PyTorch is missing.
"""

import json
import math
import sys

try:
    import torch
    from moesweep.torch import ExpertStatsMeter
except ImportError as e:
    if getattr(e, "name", None) == "torch":
        print("skipped: PyTorch is not importable (%s); install python3-torch" % e)
        sys.exit(77)
    raise

REL, ABS = 1e-6, 1e-9
FIELDS = ("usage", "importance", "usage_variance", "activation_rate", "gate_weight_variance",
          "router_entropy", "load_cv")


def compare(name, got, want, problems):
    """Appends a message per statistic that differs; returns the largest relative difference."""
    worst = 0.0
    if got["layer"] != want["layer"]:
        problems.append("%s: layer %r != %r" % (name, got["layer"], want["layer"]))
    for field in FIELDS:
        g, w = got[field], want[field]
        if isinstance(w, list):
            if len(g) != len(w):
                problems.append("%s: %s has %d values, C++ %d" % (name, field, len(g), len(w)))
                continue
            pairs = [("%s[%d]" % (field, i), a, b) for i, (a, b) in enumerate(zip(g, w))]
        else:
            pairs = [(field, g, w)]
        for label, a, b in pairs:
            worst = max(worst, abs(a - b) / max(abs(b), ABS))
            if not math.isclose(a, b, rel_tol=REL, abs_tol=ABS):
                problems.append("%s: %s python %.12g, C++ %.12g" % (name, label, a, b))
    return worst


def main(path):
    with open(path) as f:
        cases = json.load(f)
    problems = []
    for case in cases:
        e, k, t = case["num_experts"], case["top_k"], case["activation_threshold"]
        given = ExpertStatsMeter(e, k, t)     # keep and log_probs from the worker
        derived = ExpertStatsMeter(e, k, t)   # keep from the meter's own rule, entropy from probs
        for b in case["batches"]:
            probs = torch.tensor(b["probs"], dtype=torch.float32)
            log_probs = torch.tensor(b["log_probs"], dtype=torch.float32)
            experts = torch.tensor(b["experts"], dtype=torch.int64)
            first = torch.tensor(b["first"], dtype=torch.float32)
            keep = torch.tensor(b["keep"], dtype=torch.bool)
            given.update(probs, experts, first, keep, log_probs)
            derived.update(probs, experts, first)
        worst = max(compare("%s (%s)" % (case["name"], label), meter.summary(case["layer"]), case["summary"], problems)
                    for label, meter in (("keep given", given), ("keep derived", derived)))
        print("%s: %d batches, activation_rate %.6f, load_cv %.6f, largest relative difference %.2g" % (
            case["name"], len(case["batches"]), case["summary"]["activation_rate"], case["summary"]["load_cv"], worst))
    for p in problems:
        print("MISMATCH " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: stats_parity.py FIXTURE.json")
    sys.exit(main(sys.argv[1]))
