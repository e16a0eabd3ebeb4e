#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/ from the project's own specs: sweeps/*.json and
examples/**/sweep.json. Run it again after adding a sweep file; it rewrites only the generated
seeds (named gen-*) and leaves the hand-written ones (report_line/*, anything not gen-*) alone.

  sweep_spec/        each spec file as is
  stage_planner/     each spec + NUL + outcome bytes (some succeed, some fail, one NaN)
  trial_config/      base, base + baseline, base + each stage's first point (built-in specs),
                     plus tests/worker/testdata/tiny.json
  command_template/  config JSON + NUL + the command's elements, NUL-separated (command specs)
"""
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def write(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "gen-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def main():
    for folder in ["sweep_spec", "stage_planner", "trial_config", "command_template"]:
        for old in glob.glob(os.path.join(CORPUS, folder, "gen-*")):
            os.remove(old)
    specs = sorted(glob.glob(os.path.join(ROOT, "sweeps", "*.json")))
    specs += sorted(glob.glob(os.path.join(ROOT, "examples", "**", "sweep.json"), recursive=True))
    for path in specs:
        rel = os.path.relpath(path, ROOT)
        name = rel.replace(os.sep, "-")
        text = open(path, "rb").read()
        write("sweep_spec", name, text)
        # Outcome bytes: state byte (3 = succeeded, 4 = failed; 0x40 = an objective follows) and
        # the objective's selector byte (see fuzz_util.h ByteReader::Double).
        outcomes = bytes([0x43, 5, 40, 0x43, 5, 44, 4, 1, ord("x"), 0x43, 0, 0x43, 5, 20] * 8)
        write("stage_planner", name, text + b"\0" + outcomes)
        spec = json.loads(text)
        base = spec.get("base", {})
        trainer = spec.get("trainer")
        if trainer and "command" in trainer:
            config = dict(base)
            for stage in spec.get("stages", []):
                for key, values in stage.get("grid", {}).items():
                    config[key] = values[0]
            config["seed"] = spec.get("seeds", [0])[0]
            fields = [json.dumps(config)] + trainer["command"]
            write("command_template", name, "\0".join(fields))
            continue
        write("trial_config", name, json.dumps(base, indent=1))
        if "baseline" in spec:
            write("trial_config", name.replace(".json", "-baseline.json"), json.dumps({**base, **spec["baseline"]}))
        for i, stage in enumerate(spec.get("stages", [])):
            point = {k: v[0] for k, v in stage.get("grid", {}).items()}
            write("trial_config", name.replace(".json", f"-stage{i}.json"), json.dumps({**base, **point, "seed": 1}))
    tiny = os.path.join(ROOT, "tests", "worker", "testdata", "tiny.json")
    if os.path.exists(tiny):
        write("trial_config", "tests-worker-tiny.json", open(tiny, "rb").read())
    print(f"make_corpus: {len(specs)} specs -> {CORPUS}", file=sys.stderr)


if __name__ == "__main__":
    main()
