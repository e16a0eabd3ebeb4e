"""Tests of the moesweep Python library (run with PYTHONPATH=python; ctest does)."""

import contextlib
import io
import json
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from unittest import mock

import moesweep

try:
    import torch
    import moesweep.torch as mtorch
    TORCH_MISSING = None
except ImportError as e:  # python3-torch not installed
    TORCH_MISSING = "PyTorch is not importable (%s); install python3-torch to run these tests" % e

PYTHONPATH = os.path.dirname(os.path.dirname(os.path.abspath(moesweep.__file__)))
MOESWEEP_ENV = ("MOESWEEP_CONFIG_FILE", "MOESWEEP_TRIAL_ID", "MOESWEEP_SEED", "MOESWEEP_OUTPUT_DIR")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in MOESWEEP_ENV}
    env.update(extra)
    return env


def captured(fn, *args, **kwargs):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fn(*args, **kwargs)
    return out.getvalue()


def parse_report(line):
    assert line.startswith(moesweep.PREFIX), line
    return json.loads(line[len(moesweep.PREFIX):])


class ConfigTest(unittest.TestCase):
    def test_reads_the_trial_file_over_the_defaults(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "config.json")
            with open(path, "w") as f:
                json.dump({"lr": 0.01, "MOE_TEMPERATURE": 0.7, "seed": 42}, f)
            old = signal.getsignal(signal.SIGTERM)
            try:
                with mock.patch.dict(os.environ, clean_env(MOESWEEP_CONFIG_FILE=path, MOESWEEP_SEED="42",
                                                           MOESWEEP_TRIAL_ID="17", MOESWEEP_OUTPUT_DIR=d),
                                     clear=True):
                    cfg = moesweep.config({"lr": 1e-3, "epochs": 2}, argv=["lr=5"])
                    self.assertEqual(cfg, {"lr": 0.01, "epochs": 2, "MOE_TEMPERATURE": 0.7, "seed": 42})
                    self.assertTrue(moesweep.under_moesweep())
                    self.assertEqual(moesweep.trial_id(), 17)
                    self.assertEqual(moesweep.seed(), 42)
                    self.assertEqual(moesweep.output_dir(), d)
            finally:
                signal.signal(signal.SIGTERM, old)
                moesweep._handler_installed = False

    def test_a_file_that_is_not_an_object_is_refused(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            f.write("[1, 2]")
            f.flush()
            with mock.patch.dict(os.environ, clean_env(MOESWEEP_CONFIG_FILE=f.name), clear=True):
                with self.assertRaisesRegex(ValueError, "expected a JSON object"):
                    moesweep.config()

    def test_by_hand_argv_overrides_the_defaults(self):
        with mock.patch.dict(os.environ, clean_env(), clear=True):
            cfg = moesweep.config({"lr": 1e-3, "dataset": "fashion-mnist", "epochs": 2},
                                  argv=["trial_name", "--lr=0.01", "epochs=3", "dataset=synthetic",
                                        "use_moe=false", "note=a=b", "--flag", "-x=1", "name=\"7\""])
            self.assertEqual(cfg, {"lr": 0.01, "epochs": 3, "dataset": "synthetic", "use_moe": False,
                                   "note": "a=b", "name": "7"})
            self.assertIsInstance(cfg["epochs"], int)
            self.assertFalse(moesweep.under_moesweep())
            self.assertIsNone(moesweep.trial_id())
            self.assertEqual(moesweep.seed(7), 7)

    def test_by_hand_reads_sys_argv(self):
        with mock.patch.dict(os.environ, clean_env(), clear=True), \
                mock.patch.object(sys, "argv", ["train.py", "MOE_TOP_K=2"]):
            self.assertEqual(moesweep.config({"MOE_TOP_K": 1}), {"MOE_TOP_K": 2})

    def test_defaults_are_not_modified(self):
        defaults = {"lr": 1.0}
        with mock.patch.dict(os.environ, clean_env(), clear=True):
            moesweep.config(defaults, argv=["lr=2"])
        self.assertEqual(defaults, {"lr": 1.0})


class ReportTest(unittest.TestCase):
    def test_report_is_one_prefixed_json_line(self):
        out = captured(moesweep.report, 3, {"val_accuracy": 0.81, "train_loss": 0.52})
        self.assertTrue(out.endswith("\n"))
        self.assertEqual(out.count("\n"), 1)
        self.assertEqual(parse_report(out.strip()),
                         {"step": 3, "metrics": {"val_accuracy": 0.81, "train_loss": 0.52}})

    def test_expert_stats_are_carried(self):
        stats = [{"layer": 0, "usage": [0.25, 0.75], "importance": (0.4, 0.6), "usage_variance": 0.0625,
                  "activation_rate": 1, "gate_weight_variance": 0.01, "router_entropy": 0.97, "load_cv": 0.5}]
        body = parse_report(captured(moesweep.report, 1, {"val_accuracy": 0.5}, stats).strip())
        self.assertEqual(body["expert_stats"][0]["importance"], [0.4, 0.6])
        self.assertEqual(body["expert_stats"][0]["activation_rate"], 1.0)
        self.assertNotIn("final", body)

    def test_non_finite_values_are_written_bare(self):
        out = captured(moesweep.report, 2, {"train_loss": float("nan"), "a": float("inf"), "b": -math.inf})
        self.assertIn('"train_loss":NaN', out)
        self.assertIn('"a":Infinity', out)
        self.assertIn('"b":-Infinity', out)
        self.assertTrue(math.isnan(parse_report(out.strip())["metrics"]["train_loss"]))

    def test_non_numeric_metrics_are_refused(self):
        for bad in ("0.5", None, [1.0], {"x": 1}):
            with self.assertRaisesRegex(TypeError, "metric 'acc' must be a number"):
                moesweep.format_report(1, {"acc": bad})
        with self.assertRaises(TypeError):
            moesweep.format_report(1, [("acc", 1.0)])

    def test_step_must_be_a_non_negative_integer(self):
        self.assertIn('"step":4', moesweep.format_report(4.0, {"x": 1}))
        for bad in (-1, 2.5, float("nan")):
            with self.assertRaisesRegex(ValueError, "step must be a non-negative integer"):
                moesweep.format_report(bad, {"x": 1})

    def test_a_report_needs_something_to_report(self):
        with self.assertRaisesRegex(ValueError, "needs metrics, expert_stats or both"):
            moesweep.format_report(1)

    def test_unknown_expert_stat_fields_are_refused(self):
        with self.assertRaisesRegex(ValueError, r"expert_stats\[0\]\.usge: unknown field"):
            moesweep.format_report(1, None, [{"layer": 0, "usge": [1.0]}])

    def test_numeric_types_with_float_are_converted(self):
        class Scalar:  # what numpy and torch scalars look like to the library
            def __float__(self):
                return 0.25
        body = parse_report(moesweep.format_report(1, {"acc": Scalar(), "n": 3, "ok": True}))
        self.assertEqual(body["metrics"], {"acc": 0.25, "n": 3.0, "ok": 1.0})

    def test_finish_marks_the_final_report(self):
        body = parse_report(captured(moesweep.finish, {"val_accuracy": 0.9}).strip())
        self.assertEqual(body, {"metrics": {"val_accuracy": 0.9}, "final": True})

    def test_reports_reach_a_pipe_at_once(self):
        # The worker reads reports while the trainer runs: they must not sit in a pipe buffer.
        code = "import moesweep, time\nmoesweep.report(1, {'x': 1.0})\ntime.sleep(30)\n"
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                env=clean_env(PYTHONPATH=PYTHONPATH, PYTHONUNBUFFERED=""))
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 10)
            self.assertTrue(ready, "no report line within 10 s")
            self.assertEqual(parse_report(proc.stdout.readline().decode().strip())["metrics"], {"x": 1.0})
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()


class StopTest(unittest.TestCase):
    def setUp(self):
        self.old = signal.getsignal(signal.SIGTERM)
        moesweep.stop_requested = False
        moesweep._handler_installed = False

    def tearDown(self):
        signal.signal(signal.SIGTERM, self.old)
        moesweep.stop_requested = False
        moesweep._handler_installed = False

    def test_sigterm_sets_the_flag(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            f.write("{}")
            f.flush()
            with mock.patch.dict(os.environ, clean_env(MOESWEEP_CONFIG_FILE=f.name), clear=True):
                moesweep.config()
        self.assertFalse(moesweep.should_stop())
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not moesweep.should_stop() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertTrue(moesweep.should_stop())
        self.assertTrue(moesweep.stop_requested)

    def test_by_hand_no_handler_is_installed(self):
        with mock.patch.dict(os.environ, clean_env(), clear=True):
            moesweep.config(argv=[])
        self.assertIs(signal.getsignal(signal.SIGTERM), self.old)

    def test_a_trainer_under_sigterm_exits_promptly(self):
        code = textwrap.dedent("""
            import sys, time, moesweep
            moesweep.config()
            print("ready", flush=True)
            for step in range(3000):
                if moesweep.should_stop():
                    sys.exit(moesweep.STOPPED_EXIT_CODE)
                time.sleep(0.01)
            sys.exit(0)
        """)
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            f.write('{"seed": 1}')
            f.flush()
            proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                    env=clean_env(PYTHONPATH=PYTHONPATH, MOESWEEP_CONFIG_FILE=f.name))
            try:
                self.assertEqual(proc.stdout.readline().strip(), b"ready")
                start = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(timeout=10), moesweep.STOPPED_EXIT_CODE)
                self.assertLess(time.monotonic() - start, 5)
            finally:
                proc.kill()
                proc.wait()
                proc.stdout.close()


@unittest.skipIf(TORCH_MISSING, TORCH_MISSING)
class StdlibOnlyTest(unittest.TestCase):
    def test_a_trainer_never_imports_grpc(self):
        # moesweep.Client is imported on first use only; `import *` must not touch it either.
        code = ("import sys, moesweep\nfrom moesweep import *\ncfg = moesweep.config({'a': 1}, argv=[])\n"
                "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google', 'moesweep')))")
        out = subprocess.run([sys.executable, "-c", code], env=clean_env(PYTHONPATH=PYTHONPATH),
                             stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
        self.assertEqual(out.strip(), "['moesweep']")

    def test_unknown_attributes_still_raise(self):
        with self.assertRaises(AttributeError):
            moesweep.no_such_name


class TorchMeterTest(unittest.TestCase):
    """ExpertStatsMeter against a plain per-token reading of docs/worker.md."""

    def reference(self, batches, e, k, threshold):
        tokens = kept_total = above = 0
        routed = [0.0] * e
        prob_sum = [0.0] * e
        var_sum = ent_sum = 0.0
        for probs, experts, first, keep in batches:
            for i in range(probs.shape[0]):
                p = [float(v) for v in probs[i]]
                tokens += 1
                prob_sum = [a + b for a, b in zip(prob_sum, p)]
                mean = sum(p) / e
                var_sum += sum((v - mean) ** 2 for v in p) / e
                ent_sum += -sum(v * math.log(v) for v in p if v > 0)
                for j in range(k):
                    if float(first[i][j]) >= threshold:
                        above += 1
                    if bool(keep[i][j]):
                        routed[int(experts[i][j])] += 1
                        kept_total += 1
        usage = [c / kept_total for c in routed]
        var = sum((u - 1 / e) ** 2 for u in usage) / e
        return {"usage": usage, "importance": [s / tokens for s in prob_sum], "usage_variance": var,
                "activation_rate": above / (tokens * k), "gate_weight_variance": var_sum / tokens,
                "router_entropy": ent_sum / tokens / math.log(e), "load_cv": math.sqrt(var) * e}

    def assert_close(self, got, want):
        for key, value in want.items():
            if isinstance(value, list):
                for a, b in zip(got[key], value):
                    self.assertAlmostEqual(a, b, places=6, msg=key)
            else:
                self.assertAlmostEqual(got[key], value, places=6, msg=key)

    def test_meter_matches_the_definitions(self):
        gen = torch.Generator().manual_seed(3)
        e, k, threshold = 6, 3, 0.3
        meter = mtorch.ExpertStatsMeter(e, k, threshold)
        batches = []
        for n in (50, 17):
            r = mtorch.route(torch.randn(n, e, generator=gen) * 1.5, 0.7, k, threshold)
            meter.update(r.probs, r.experts, r.first, r.keep, r.log_probs)
            batches.append((r.probs, r.experts, r.first, r.keep))
        dropped = sum(int((~b[3]).sum()) for b in batches)
        self.assertGreater(dropped, 0, "the threshold should drop some slots")
        s = meter.summary(layer=2)
        self.assertEqual(s["layer"], 2)
        self.assertAlmostEqual(sum(s["usage"]), 1.0, places=12)
        self.assert_close(s, self.reference(batches, e, k, threshold))
        # The report accepts it as is.
        moesweep.format_report(1, None, [s])

    def test_keep_defaults_to_the_worker_rule(self):
        gen = torch.Generator().manual_seed(5)
        r = mtorch.route(torch.randn(40, 4, generator=gen) * 2, 1.0, 2, 0.55)
        self.assertTrue(bool(r.keep[:, 0].all()))
        self.assertTrue(bool((r.first[:, 0] < 0.55).any()), "a forced top-1 below the threshold")
        a, b = mtorch.ExpertStatsMeter(4, 2, 0.55), mtorch.ExpertStatsMeter(4, 2, 0.55)
        a.update(r.probs, r.experts, r.first, r.keep)
        b.update(r.probs, r.experts, r.first)
        self.assertEqual(a.summary(), b.summary())
        # A forced top-1 below the threshold is computed but not counted as activated.
        self.assertLess(a.summary()["activation_rate"], float(r.keep.sum()) / r.keep.numel())

    def test_route_weights(self):
        r = mtorch.route(torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])), 1.0, 3, 0.2)
        self.assertEqual(r.experts.tolist(), [[0, 1, 2]])
        self.assertEqual(r.keep.tolist(), [[True, True, False]])
        self.assertAlmostEqual(float(r.weights[0, 0]), 0.625, places=6)
        self.assertEqual(float(r.weights[0, 2]), 0.0)

    def test_empty_meter_and_reset(self):
        meter = mtorch.ExpertStatsMeter(4, 2)
        self.assertEqual(meter.summary()["usage"], [])
        r = mtorch.route(torch.zeros(3, 4), 1.0, 2)
        meter.update(r.probs, r.experts, r.first)
        self.assertAlmostEqual(meter.summary()["router_entropy"], 1.0, places=6)
        meter.reset()
        self.assertEqual(meter.tokens, 0)

    def test_shapes_are_checked(self):
        meter = mtorch.ExpertStatsMeter(4, 2)
        with self.assertRaisesRegex(ValueError, "num_experts"):
            meter.update(torch.zeros(3, 5), torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2))
        with self.assertRaisesRegex(ValueError, "top_k"):
            meter.update(torch.zeros(3, 4), torch.zeros(3, 3, dtype=torch.long), torch.zeros(3, 3))


if __name__ == "__main__":
    unittest.main()
