"""Seed 001's runner, `moe_quick_test.py NAME PARAM=VALUE ...`, as a moesweep command trainer.

By hand:      PYTHONPATH=python python3 examples/seed001_quick_test/moe_quick_test.py temp_05 MOE_TEMPERATURE=0.5
Under moesweep (sweep.json here) the worker runs it with {trial_name} {overrides}, and the config
also comes from MOESWEEP_CONFIG_FILE. The model is examples/toy_moe.py: a pure-Python mixture of
logistic experts on random features, so a trial takes about a second.
"""

import difflib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import moesweep  # noqa: E402
import toy_moe  # noqa: E402

DEFAULTS = {
    "MOE_NUM_EXPERTS": 4,
    "MOE_TOP_K": 2,
    "MOE_EXPERT_HIDDEN_DIM": 32,  # random features each expert reads
    "MOE_TEMPERATURE": 0.7,
    "MOE_ACTIVATION_THRESHOLD": 0.1,
    "MOE_WEIGHT_DECAY": 1e-3,
    "LR": 0.5,
    "EPOCHS": 30,
    "TRAIN_SIZE": 300,
    "VAL_SIZE": 200,
    "seed": 0,
}


def main():
    if len(sys.argv) < 2 or "=" in sys.argv[1]:
        sys.exit("usage: moe_quick_test.py NAME [PARAM=VALUE ...]")
    name = sys.argv[1]
    cfg = moesweep.config(DEFAULTS)  # the trial file under moesweep, else PARAM=VALUE arguments
    unknown = [k for k in cfg if k not in DEFAULTS]
    if unknown:
        hints = ["%s%s" % (k, " (did you mean %s?)" % m[0] if (m := difflib.get_close_matches(k, DEFAULTS, 1)) else "")
                 for k in unknown]
        sys.exit("%s: unknown parameter %s" % (name, ", ".join(hints)))
    print("experiment %s: %s" % (name, json.dumps(cfg, sort_keys=True)), file=sys.stderr)
    result = toy_moe.train(
        {"experts": cfg["MOE_NUM_EXPERTS"], "hidden": cfg["MOE_EXPERT_HIDDEN_DIM"], "temperature": cfg["MOE_TEMPERATURE"],
         "top_k": cfg["MOE_TOP_K"], "threshold": cfg["MOE_ACTIVATION_THRESHOLD"], "lr": cfg["LR"],
         "weight_decay": cfg["MOE_WEIGHT_DECAY"], "epochs": cfg["EPOCHS"], "train_size": cfg["TRAIN_SIZE"],
         "val_size": cfg["VAL_SIZE"], "dim": 8, "regimes": 3, "seed": moesweep.seed(cfg["seed"])},
        lambda epoch, metrics, stats: moesweep.report(epoch, metrics, [stats]),
        moesweep.should_stop)
    if result is None:
        sys.exit(moesweep.STOPPED_EXIT_CODE)
    metrics, stats = result
    moesweep.finish(metrics, [stats])
    print("experiment %s: val_accuracy %.4f" % (name, metrics["val_accuracy"]), file=sys.stderr)


if __name__ == "__main__":
    main()
