"""A tiny Mixture-of-Experts classifier in pure Python (stdlib only), for the small examples.

Binary task: samples come from `regimes` clusters, each labelled by its own linear rule, so a gate
that routes by cluster helps. Model: gate g = softmax(V x / temperature) over `experts` logistic
regressions, each on the same `hidden` random cosine features of x; p(y=1|x) = sum_e g_e sigma(w_e . phi(x)).
Trained by full-gradient steps on the log-likelihood (+ L2). A few hundred samples: well under a
second per trial.
"""

import math
import random


def make_data(n, dim, regimes, seed):
    task = random.Random(1234)  # the task is fixed; `seed` draws the samples
    centres = [[task.gauss(0, 3) for _ in range(dim)] for _ in range(regimes)]
    rules = [[task.gauss(0, 1) for _ in range(dim)] for _ in range(regimes)]
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        r = rng.randrange(regimes)
        z = [rng.gauss(0, 1) for _ in range(dim)]
        x = [c + v for c, v in zip(centres[r], z)]
        data.append((x, 1 if sum(a * b for a, b in zip(z, rules[r])) > 0 else 0))
    return data


def softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def sigmoid(v):
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


class ToyMoE:
    def __init__(self, dim, experts, hidden, temperature, seed):
        rng = random.Random(seed)
        self.temperature = temperature
        self.proj = [([rng.gauss(0, 1 / math.sqrt(dim)) for _ in range(dim)], rng.uniform(0, 2 * math.pi))
                     for _ in range(hidden)]
        self.gate = [[rng.gauss(0, 0.1) for _ in range(dim + 1)] for _ in range(experts)]
        self.experts = [[rng.gauss(0, 0.1) for _ in range(hidden + 1)] for _ in range(experts)]

    def features(self, x):
        return [math.cos(sum(a * b for a, b in zip(w, x)) + b) for w, b in self.proj] + [1.0]

    def forward(self, x, phi):
        xb = x + [1.0]
        g = softmax([sum(a * b for a, b in zip(v, xb)) / self.temperature for v in self.gate])
        s = [sigmoid(sum(a * b for a, b in zip(w, phi))) for w in self.experts]
        return g, s, min(max(sum(ge * se for ge, se in zip(g, s)), 1e-7), 1 - 1e-7)

    def step(self, data, phis, lr, weight_decay):
        """One full-batch gradient step; returns the mean negative log-likelihood before it."""
        gg = [[0.0] * len(v) for v in self.gate]
        ge_ = [[0.0] * len(w) for w in self.experts]
        loss = 0.0
        for (x, y), phi in zip(data, phis):
            g, s, q = self.forward(x, phi)
            loss -= math.log(q if y else 1 - q)
            dq = (q - y) / (q * (1 - q))  # d(-log lik)/dq
            xb = x + [1.0]
            for e in range(len(g)):
                de = dq * g[e] * s[e] * (1 - s[e])
                ge_[e] = [a + de * p for a, p in zip(ge_[e], phi)]
                dz = dq * g[e] * (s[e] - q) / self.temperature
                gg[e] = [a + dz * v for a, v in zip(gg[e], xb)]
        n = len(data)
        for params, grads in ((self.gate, gg), (self.experts, ge_)):
            for w, g in zip(params, grads):
                for i in range(len(w)):
                    w[i] -= lr * (g[i] / n + weight_decay * w[i])
        return loss / n

    def evaluate(self, data, phis, top_k=1, threshold=0.0):
        """Accuracy, mean NLL and routing statistics (the worker's definitions, docs/worker.md)."""
        e = len(self.gate)
        k = min(top_k, e)
        correct, loss = 0, 0.0
        routed, prob_sum = [0.0] * e, [0.0] * e
        above = var_sum = ent_sum = 0.0
        for (x, y), phi in zip(data, phis):
            g, _, q = self.forward(x, phi)
            correct += (q > 0.5) == bool(y)
            loss -= math.log(q if y else 1 - q)
            top = sorted(range(e), key=lambda i: -g[i])[:k]
            first = [g[i] / sum(g[j] for j in top) for i in top]
            for j, i in enumerate(top):
                above += first[j] >= threshold
                if j == 0 or threshold <= 0 or first[j] >= threshold:
                    routed[i] += 1
            prob_sum = [a + b for a, b in zip(prob_sum, g)]
            var_sum += sum((v - 1 / e) ** 2 for v in g) / e
            ent_sum -= sum(v * math.log(v) for v in g if v > 0)
        n = len(data)
        usage = [c / sum(routed) for c in routed]
        var = sum((u - 1 / e) ** 2 for u in usage) / e
        stats = {"layer": 0, "usage": usage, "importance": [p / n for p in prob_sum], "usage_variance": var,
                 "activation_rate": above / (n * k), "gate_weight_variance": var_sum / n,
                 "router_entropy": ent_sum / n / math.log(e) if e > 1 else 0.0, "load_cv": math.sqrt(var) * e}
        return correct / n, loss / n, stats


def train(cfg, report, should_stop):
    """Trains on cfg's keys (experts, hidden, temperature, top_k, threshold, lr, weight_decay,
    epochs, train_size, val_size, dim, regimes, seed); calls report(epoch, metrics, stats) after
    each epoch; returns the last metrics and stats, or None when should_stop() turned true."""
    data = make_data(cfg["train_size"] + cfg["val_size"], cfg["dim"], cfg["regimes"], 99)
    train_set, val_set = data[:cfg["train_size"]], data[cfg["train_size"]:]
    model = ToyMoE(cfg["dim"], cfg["experts"], cfg["hidden"], cfg["temperature"], cfg["seed"])
    phi_t = [model.features(x) for x, _ in train_set]
    phi_v = [model.features(x) for x, _ in val_set]
    metrics = stats = None
    for epoch in range(1, cfg["epochs"] + 1):
        if should_stop():
            return None
        train_loss = model.step(train_set, phi_t, cfg["lr"], cfg["weight_decay"])
        acc, val_loss, stats = model.evaluate(val_set, phi_v, cfg["top_k"], cfg["threshold"])
        metrics = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_accuracy": acc}
        report(epoch, metrics, stats)
    return metrics, stats
