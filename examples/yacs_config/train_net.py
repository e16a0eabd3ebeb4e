"""Seed 002's shape, `train_net.py --config_file CFG.yml [KEY VALUE ...]`, as a moesweep command trainer.

A yacs-style config: the defaults below, merged with the file (YAML when python3-yaml is installed,
else JSON; YAML reads JSON too), then with KEY VALUE pairs from the command line. Keys may be nested
({"MODEL": {"MOE": {"TEMPERATURE": 0.5}}}) or dotted ("MODEL.MOE.TEMPERATURE": 0.5); an unknown key
or a value of the wrong type is an error, as in yacs. Under moesweep the sweep passes {config_file}:
the trial's keys (dotted) plus "seed".

    PYTHONPATH=python python3 examples/yacs_config/train_net.py --config_file examples/yacs_config/moe_optimal.yml

The model is examples/toy_moe.py (pure Python, about a second per run).
"""

import argparse
import copy
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import moesweep  # noqa: E402
import toy_moe  # noqa: E402

try:
    import yaml
except ImportError:  # python3-yaml is optional: JSON is YAML too
    yaml = None

_C = {
    "MODEL": {
        "MOE": {
            "NUM_EXPERTS": 4,
            "TOP_K": 2,
            "EXPERT_HIDDEN_DIM": 32,
            "TEMPERATURE": 0.7,
            "ACTIVATION_THRESHOLD": 0.1,
        },
    },
    "DATASETS": {"TRAIN_SIZE": 300, "VAL_SIZE": 200},
    "SOLVER": {"BASE_LR": 0.5, "MAX_EPOCHS": 30, "WEIGHT_DECAY": 1e-3, "SEED": 0},
}


def set_key(cfg, dotted, value):
    node, parts = cfg, dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            raise KeyError("Non-existent config key: %s" % ".".join(parts[:i + 1]))
        if i < len(parts) - 1:
            node = node[part]
    old = node[parts[-1]]
    if isinstance(old, dict):
        if not isinstance(value, dict):
            raise ValueError("%s: expected a mapping, got %r" % (dotted, value))
        for k, v in value.items():
            set_key(cfg, dotted + "." + k, v)
        return
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(old):
        raise ValueError("%s: expected %s, got %r" % (dotted, type(old).__name__, value))
    node[parts[-1]] = value


def load_file(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    data = yaml.safe_load(text) if yaml else json.loads(text)
    return data or {}


def setup_cfg(argv):
    parser = argparse.ArgumentParser(description="Tiny MoE trainer with a yacs-style config")
    parser.add_argument("--config_file", default="", help="YAML or JSON config file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.1")
    args = parser.parse_args(argv)
    cfg = copy.deepcopy(_C)
    if args.config_file:
        for key, value in load_file(args.config_file).items():
            set_key(cfg, "SOLVER.SEED" if key == "seed" else key, value)  # moesweep adds "seed"
    if len(args.opts) % 2:
        parser.error("opts must be KEY VALUE pairs, got %r" % args.opts)
    for key, text in zip(args.opts[::2], args.opts[1::2]):
        set_key(cfg, key, moesweep.parse_value(text))
    return cfg


def main():
    try:
        cfg = setup_cfg(sys.argv[1:])
    except (KeyError, ValueError, OSError) as e:
        sys.exit("config error: %s" % (e.args[0] if isinstance(e, KeyError) else e))
    moesweep.install_stop_handler()  # moesweep.config() is not used here, so ask for it directly
    moe, solver, data = cfg["MODEL"]["MOE"], cfg["SOLVER"], cfg["DATASETS"]
    print("running with config:\n%s" % json.dumps(cfg, indent=2), file=sys.stderr)
    result = toy_moe.train(
        {"experts": moe["NUM_EXPERTS"], "hidden": moe["EXPERT_HIDDEN_DIM"], "temperature": moe["TEMPERATURE"],
         "top_k": moe["TOP_K"], "threshold": moe["ACTIVATION_THRESHOLD"], "lr": solver["BASE_LR"],
         "weight_decay": solver["WEIGHT_DECAY"], "epochs": solver["MAX_EPOCHS"], "train_size": data["TRAIN_SIZE"],
         "val_size": data["VAL_SIZE"], "dim": 8, "regimes": 3, "seed": solver["SEED"]},
        lambda epoch, metrics, stats: moesweep.report(epoch, metrics, [stats]),
        moesweep.should_stop)
    if result is None:
        sys.exit(moesweep.STOPPED_EXIT_CODE)
    metrics, stats = result
    moesweep.finish(metrics, [stats])


if __name__ == "__main__":
    main()
