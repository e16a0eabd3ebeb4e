"""moesweep.Client against a real coordinator process (ctest: python_client).

Each test class starts the build's moesweep-coordinator ($MOESWEEP_COORDINATOR_BIN) on a free
loopback port with a temporary database and stops it by pid. A fake worker thread, speaking
WorkerService with the same generated stubs, leases trials and completes them with a score made
from the config, so sweeps finish in about a second without LibTorch.
"""

import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

try:
    import grpc
    import moesweep
    from moesweep import client as mclient
    from moesweep.client import pb, pb_grpc
    CLIENT_MISSING = None
except ImportError as e:
    CLIENT_MISSING = "moesweep.Client is not importable (%s)" % e

COORDINATOR = os.environ.get("MOESWEEP_COORDINATOR_BIN", "")

SPEC = {
    "name": "py-client",
    "objective": {"metric": "val_accuracy", "goal": "maximize"},
    "seeds": [1, 2],
    "base": {"epochs": 1},
    "baseline": {"use_moe": False},
    "stages": [
        {"name": "core", "grid": {"temperature": [0.3, 0.7, 1.5]}},
        {"name": "width", "grid": {"expert_hidden_dim": [512, 1024]}},
    ],
    "lease_seconds": 5,
}
TRIALS_STAGE1 = 2 + 3 * 2  # baseline + core
TRIALS_TOTAL = TRIALS_STAGE1 + 2 * 2


def fake_score(cfg):
    """Best at temperature 0.7 and width 1024; the dense baseline is worse than any MoE point."""
    if cfg.get("use_moe") is False:
        return 0.3 + 0.001 * cfg["seed"]
    return (0.9 - abs(cfg.get("temperature", 0.7) - 0.7) * 0.2
            - abs(cfg.get("expert_hidden_dim", 1024) - 1024) / 10240 + 0.001 * cfg["seed"])


def setUpModule():
    if CLIENT_MISSING:
        raise unittest.SkipTest(CLIENT_MISSING + "; install python3-grpcio python3-protobuf and build the "
                                "moesweep_python_stubs target")
    if not os.access(COORDINATOR, os.X_OK):
        raise unittest.SkipTest("MOESWEEP_COORDINATOR_BIN is not an executable (%r); ctest sets it" % COORDINATOR)
    os.environ.pop("MOESWEEP_TOKEN", None)  # the tests say which token each client has


class CoordinatorProcess:
    """A moesweep-coordinator on 127.0.0.1; `port` stays the same across restart()."""

    def __init__(self, workdir, extra_args=()):
        self.workdir = workdir
        self.db = os.path.join(workdir, "sweeps.db")
        self.log = os.path.join(workdir, "coordinator.log")
        self.extra_args = list(extra_args)
        self.port = 0
        self.proc = None

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        offset = os.path.getsize(self.log) if os.path.exists(self.log) else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [COORDINATOR, "--listen", "127.0.0.1:%d" % self.port, "--db", self.db] + self.extra_args,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(self.log, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
            m = re.search(r"serving on \S+ \(port (\d+)\)", text)
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                raise AssertionError("coordinator exited with %d:\n%s" % (self.proc.returncode, text))
            time.sleep(0.02)
        raise AssertionError("coordinator did not start within 30 s:\n" + text)

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class FakeWorker(threading.Thread):
    """Leases trials and completes them (one progress report each) until stopped; rides out a
    coordinator restart by retrying each call."""

    def __init__(self, address, token=None, trial_seconds=0.0):
        super().__init__(daemon=True)
        self.address = address
        self.metadata = (("authorization", "Bearer " + token),) if token else ()
        self.trial_seconds = trial_seconds
        self.stopping = threading.Event()
        self.completed = 0
        self.errors = []

    def stop(self):
        self.stopping.set()
        self.join(timeout=15)

    def _retry(self, fn):
        deadline = time.monotonic() + 30
        while not self.stopping.is_set():
            try:
                return fn()
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return None

    def run(self):
        channel = grpc.insecure_channel(self.address, options=[("grpc.initial_reconnect_backoff_ms", 100),
                                                               ("grpc.min_reconnect_backoff_ms", 100),
                                                               ("grpc.max_reconnect_backoff_ms", 500)])
        stub = pb_grpc.WorkerServiceStub(channel)
        try:
            while not self.stopping.is_set():
                try:
                    lease = stub.AcquireTrial(pb.AcquireTrialRequest(worker="py-fake", wait_seconds=0.5,
                                                                     trainer_kinds=["builtin"]),
                                              timeout=5, metadata=self.metadata)
                except grpc.RpcError:
                    time.sleep(0.05)
                    continue
                if lease.has_trial:
                    try:
                        self._run_trial(stub, lease)
                    except grpc.RpcError as e:  # a lease lost over a restart: it will be requeued
                        self.errors.append("%s: %s" % (e.code().name, e.details()))
        finally:
            channel.close()

    def _run_trial(self, stub, lease):
        cfg = json.loads(lease.config_json)
        score = fake_score(cfg)
        layer = pb.ExpertLayerStats(layer=0, usage=[0.5, 0.5], importance=[0.5, 0.5], usage_variance=0.0,
                                    activation_rate=0.9, gate_weight_variance=0.01, router_entropy=0.8, load_cv=0.0)
        self._retry(lambda: stub.ReportProgress(
            pb.ReportProgressRequest(lease_token=lease.lease_token, step=1,
                                     metrics={"epoch": 1, "val_accuracy": score - 0.01}),
            timeout=5, metadata=self.metadata))
        time.sleep(self.trial_seconds)
        self._retry(lambda: stub.CompleteTrial(
            pb.CompleteTrialRequest(lease_token=lease.lease_token, outcome=pb.CompleteTrialRequest.SUCCEEDED,
                                    metrics={"val_accuracy": score, "train_loss": 1 - score},
                                    expert_stats=pb.ExpertStats(layers=[layer])),
            timeout=5, metadata=self.metadata))
        self.completed += 1


class CoordinatorTestCase(unittest.TestCase):
    coordinator_args = ()

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="moesweep-pyclient-")
        cls.coordinator = CoordinatorProcess(cls.tmp, cls.coordinator_args)
        cls.coordinator.start()

    @classmethod
    def tearDownClass(cls):
        cls.coordinator.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)


class ReadsAndWritesTest(CoordinatorTestCase):
    """No worker: sweeps stay at their first stage."""

    def setUp(self):
        self.client = moesweep.Client(self.coordinator.address)
        self.addCleanup(self.client.close)

    def test_submit_a_dict_and_a_path_then_read_them_back(self):
        first = self.client.submit(SPEC)
        path = os.path.join(self.tmp, "spec.json")
        with open(path, "w") as f:
            json.dump(dict(SPEC, name="from-a-file"), f)
        second = self.client.submit(path)
        self.assertIsInstance(first, int)
        self.assertGreater(second, first)

        listed = {s["sweep_id"]: s for s in self.client.sweeps()}
        self.assertEqual(listed[first]["name"], "py-client")
        self.assertEqual(listed[second]["name"], "from-a-file")
        self.assertEqual(listed[first]["state"], "SWEEP_RUNNING")
        self.assertIsNone(listed[first]["spec"])  # ListSweeps leaves the spec out

        got = self.client.sweep(first)
        self.assertEqual(got["sweep"]["sweep_id"], first)
        self.assertEqual(got["sweep"]["spec"]["objective"]["metric"], "val_accuracy")  # parsed JSON
        self.assertEqual(got["sweep"]["trials_total"], TRIALS_STAGE1)
        self.assertEqual([(s["stage"], s["name"]) for s in got["stages"]], [(0, "baseline"), (1, "core"), (2, "width")])

    def test_trials_filter_by_stage_and_state_and_follow_every_page(self):
        sweep_id = self.client.submit(SPEC)
        everything = self.client.trials(sweep_id)
        self.assertEqual(len(everything), TRIALS_STAGE1)
        self.assertEqual([t["trial_id"] for t in everything], sorted(t["trial_id"] for t in everything))
        self.assertEqual(everything[2]["config"]["temperature"], 0.3)
        self.assertEqual(everything[2]["point"], {"temperature": 0.3})
        self.assertEqual(len(self.client.trials(sweep_id, stage=0)), 2)
        self.assertEqual({t["stage"] for t in self.client.trials(sweep_id, stage=1)}, {1})
        self.assertEqual(len(self.client.trials(sweep_id, state="pending")), TRIALS_STAGE1)
        self.assertEqual(len(self.client.trials(sweep_id, state="TRIAL_PENDING", stage=1)), 6)
        self.assertEqual(self.client.trials(sweep_id, state="succeeded"), [])
        with self.assertRaisesRegex(ValueError, "unknown 'finished'.*succeeded"):
            self.client.trials(sweep_id, state="finished")

        calls = []
        real = self.client._sweeps.ListTrials

        def counting(request, **kwargs):
            calls.append(request.page_token)
            return real(request, **kwargs)

        with mock.patch.object(self.client._sweeps, "ListTrials", counting):
            paged = self.client.trials(sweep_id, page_size=3)
            paged_stage = self.client.trials(sweep_id, stage=1, state="pending", page_size=4)
        self.assertEqual(paged, everything)
        self.assertEqual(len(paged_stage), 6)
        self.assertEqual(len(calls), 3 + 2)  # 8 trials in pages of 3, then 6 in pages of 4
        self.assertEqual(calls[0], "")
        self.assertNotEqual(calls[1], "")

    def test_best_before_any_result(self):
        sweep_id = self.client.submit(SPEC)
        best = self.client.best(sweep_id)
        self.assertEqual(best["best_config"], {"epochs": 1})  # base: no stage decided yet
        self.assertEqual(len(best["stages"]), 3)
        self.assertEqual(len(self.client.best(sweep_id, stage=1)["stages"]), 1)

    def test_cancel(self):
        sweep_id = self.client.submit(SPEC)
        answer = self.client.cancel(sweep_id)
        self.assertEqual(answer["state"], "SWEEP_CANCELLED")
        self.assertEqual(answer["trials_cancelled"], TRIALS_STAGE1)
        self.assertEqual(len(self.client.trials(sweep_id, state="cancelled")), TRIALS_STAGE1)
        self.assertEqual(self.client.cancel(sweep_id)["state"], "SWEEP_CANCELLED")  # a no-op the second time
        events = list(self.client.watch(sweep_id, skip_progress=True))
        self.assertEqual(events[-1]["type"], "SWEEP_FINISHED")
        self.assertEqual(events[-1]["sweep"]["state"], "SWEEP_CANCELLED")

    def test_errors_carry_the_code_and_the_coordinators_message(self):
        with self.assertRaises(moesweep.ClientError) as caught:
            self.client.sweep(999999)
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(caught.exception.code_name, "NOT_FOUND")

        bad = json.loads(json.dumps(SPEC))
        bad["base"]["temprature"] = 0.5
        with self.assertRaises(moesweep.ClientError) as caught:
            self.client.submit(bad)
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("base.temprature", caught.exception.details)
        self.assertIn("temperature", str(caught.exception))

        with self.assertRaises(moesweep.ClientError) as caught:
            list(self.client.watch(999999))
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_an_unreachable_coordinator_fails_at_once(self):
        with socket_port() as port:
            with moesweep.Client("127.0.0.1:%d" % port, timeout=5) as c:
                started = time.monotonic()
                with self.assertRaises(moesweep.ClientError) as caught:
                    next(c.watch(1))
                self.assertEqual(caught.exception.code, grpc.StatusCode.UNAVAILABLE)
                self.assertLess(time.monotonic() - started, 5)
                with self.assertRaises(moesweep.ClientError):
                    c.sweeps()

    def test_trials_frame_needs_pandas_and_says_so(self):
        sweep_id = self.client.submit(SPEC)
        with mock.patch.dict(sys.modules, {"pandas": None}):
            with self.assertRaisesRegex(ImportError, "python3-pandas"):
                self.client.trials_frame(sweep_id)


class socket_port:
    """A loopback port that nothing listens on (bound, never listened)."""

    def __enter__(self):
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()


class FinishedSweepTest(CoordinatorTestCase):
    """One sweep driven to its end by a fake worker, watched live."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client = moesweep.Client(cls.coordinator.address)
        cls.worker = FakeWorker(cls.coordinator.address)
        cls.worker.start()
        cls.sweep_id = cls.client.submit(SPEC)
        cls.events = list(cls.client.watch(cls.sweep_id))

    @classmethod
    def tearDownClass(cls):
        cls.worker.stop()
        cls.client.close()
        super().tearDownClass()

    def test_watch_sees_every_event_once_and_ends_after_sweep_finished(self):
        seqs = [e["seq"] for e in self.events]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        types = [e["type"] for e in self.events]
        self.assertEqual(types[0], "SWEEP_SUBMITTED")
        self.assertEqual(types[-1], "SWEEP_FINISHED")
        self.assertEqual(types.count("SWEEP_FINISHED"), 1)
        self.assertEqual(types.count("TRIAL_FINISHED"), TRIALS_TOTAL)
        finished = [e["trial"] for e in self.events if e["type"] == "TRIAL_FINISHED"]
        reused = [t for t in finished if t.get("reused_trial_id")]
        # A trial that reused an identical one's results (the carried winner again) never ran.
        self.assertEqual(types.count("TRIAL_PROGRESS"), TRIALS_TOTAL - len(reused))
        self.assertEqual(self.events[-1]["sweep"]["state"], "SWEEP_SUCCEEDED")
        finished = [e["trial"] for e in self.events if e["type"] == "TRIAL_FINISHED"]
        self.assertTrue(all(t["state"] == "TRIAL_SUCCEEDED" for t in finished))
        self.assertEqual(finished[0]["metrics"]["val_accuracy"], max(finished[0]["metrics"]["val_accuracy"], 0))

    def test_watch_from_a_sequence_number_and_without_progress(self):
        after = 5
        rest = list(self.client.watch(self.sweep_id, after_seq=after))
        self.assertEqual(rest, self.events[after:])
        quiet = list(self.client.watch(self.sweep_id, skip_progress=True))
        self.assertEqual([e["seq"] for e in quiet],
                         [e["seq"] for e in self.events if e["type"] != "TRIAL_PROGRESS"])

    def test_best_and_results(self):
        best = self.client.best(self.sweep_id)
        self.assertEqual(best["best_config"]["temperature"], 0.7)
        self.assertEqual(best["best_config"]["expert_hidden_dim"], 1024)
        core = [s for s in best["stages"] if s["name"] == "core"][0]
        self.assertEqual(core["state"], "STAGE_SUCCEEDED")
        self.assertEqual(core["winner"]["n"], 2)
        self.assertEqual(core["winner_config"]["temperature"], 0.7)
        self.assertTrue(core["has_baseline"])
        self.assertGreater(core["delta_to_baseline"], 0.5)
        self.assertEqual(self.client.sweep(self.sweep_id)["sweep"]["state"], "SWEEP_SUCCEEDED")
        done = self.client.trials(self.sweep_id, state="succeeded")
        self.assertEqual(len(done), TRIALS_TOTAL)
        self.assertEqual(done[0]["expert_stats"]["layers"][0]["usage"], [0.5, 0.5])
        self.assertAlmostEqual(done[0]["metrics"]["val_accuracy"], fake_score(done[0]["config"]))

    def test_trials_frame_has_the_csv_export_columns(self):
        try:
            import pandas as pd
        except ImportError as e:
            self.skipTest("pandas is not installed (%s); apt-get install python3-pandas" % e)
        df = self.client.trials_frame(self.sweep_id)
        self.assertEqual(len(df), TRIALS_TOTAL)
        self.assertEqual(list(df.columns[:len(mclient.FIXED_COLUMNS)]), mclient.FIXED_COLUMNS)
        for column in ("param.temperature", "param.expert_hidden_dim", "param.seed", "param.use_moe",
                       "metric.train_loss", "metric.val_accuracy", "expert.l0.usage_variance", "expert.l0.load_cv"):
            self.assertIn(column, df.columns)
        self.assertEqual(set(df["status"]), {"completed"})
        self.assertEqual(set(df["stage_name"]), {"baseline", "core", "width"})
        first = df.iloc[0]
        self.assertEqual(first["experiment_id"], "sweep%d_trial%d" % (self.sweep_id, first["trial_id"]))
        self.assertTrue(pd.api.types.is_datetime64_any_dtype(df["end_time"]))
        self.assertAlmostEqual(df["expert.l0.activation_rate"].iloc[0], 0.9)
        stage1 = self.client.trials_frame(self.sweep_id, stage=1)
        self.assertEqual(len(stage1), 6)
        means = stage1.groupby("param.temperature")["metric.val_accuracy"].mean()
        self.assertEqual(means.idxmax(), 0.7)


class DocsExampleTest(CoordinatorTestCase):
    """docs/python-client.md's notebook, run as written against a coordinator and a fake worker."""

    def test_the_notebook_runs(self):
        source = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
        with open(os.path.join(source, "docs", "python-client.md"), encoding="utf-8") as f:
            blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
        self.assertGreaterEqual(len(blocks), 4)
        code = "\n".join(blocks)
        self.assertIn('"127.0.0.1:50051"', code)
        code = code.replace('"127.0.0.1:50051"', repr(self.coordinator.address))
        code = code.replace('"sweeps/demo.json"', repr(os.path.join(source, "sweeps", "demo.json")))
        worker = FakeWorker(self.coordinator.address)
        worker.start()
        self.addCleanup(worker.stop)
        workdir = os.path.join(self.tmp, "notebook")
        os.makedirs(workdir)
        done = subprocess.run([sys.executable, "-c", code], cwd=workdir, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=120,
                              env=dict(os.environ, MPLBACKEND="Agg"))
        self.assertEqual(done.returncode, 0, done.stdout)
        self.assertIn("SWEEP_SUCCEEDED", done.stdout)
        self.assertIn("stage core decided", done.stdout)
        try:
            import matplotlib  # noqa: F401
            self.assertEqual([n for n in os.listdir(workdir) if n.endswith(".png")], ["sweep-1.png"])
        except ImportError:
            pass


class WatchAcrossRestartTest(unittest.TestCase):
    """kill -9 of the coordinator mid-sweep: the generator reconnects to the restarted coordinator
    and goes on after its last event."""

    def test_seqs_are_exactly_one_to_n_across_a_kill_and_restart(self):
        tmp = tempfile.mkdtemp(prefix="moesweep-pyclient-restart-")
        self.addCleanup(shutil.rmtree, tmp, True)
        coordinator = CoordinatorProcess(tmp)
        coordinator.start()
        self.addCleanup(coordinator.stop)
        client = moesweep.Client(coordinator.address)
        self.addCleanup(client.close)
        worker = FakeWorker(coordinator.address, trial_seconds=0.15)
        sweep_id = client.submit(SPEC)
        worker.start()
        self.addCleanup(worker.stop)

        seen = []
        restarted = False
        for event in client.watch(sweep_id, reconnect_timeout=60):
            seen.append(event)
            if not restarted and event["type"] == "TRIAL_FINISHED":
                coordinator.kill9()  # mid-sweep: trials leased, others pending
                time.sleep(0.5)
                coordinator.start()
                restarted = True
        self.assertTrue(restarted)
        seqs = [e["seq"] for e in seen]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        self.assertEqual(seen[-1]["type"], "SWEEP_FINISHED")
        self.assertEqual(seen[-1]["sweep"]["state"], "SWEEP_SUCCEEDED")
        # What the generator yielded is exactly what the database holds: nothing lost or altered.
        replay = list(client.watch(sweep_id))
        self.assertEqual([(e["seq"], e["type"]) for e in replay], [(e["seq"], e["type"]) for e in seen])
        self.assertEqual(len(client.trials(sweep_id, state="succeeded")), TRIALS_TOTAL)


    def test_gives_up_when_the_coordinator_stays_away(self):
        tmp = tempfile.mkdtemp(prefix="moesweep-pyclient-gone-")
        self.addCleanup(shutil.rmtree, tmp, True)
        coordinator = CoordinatorProcess(tmp)
        coordinator.start()
        self.addCleanup(coordinator.stop)
        with moesweep.Client(coordinator.address) as client:
            events = client.watch(client.submit(SPEC), reconnect_timeout=1.0)
            self.assertEqual(next(events)["type"], "SWEEP_SUBMITTED")
            coordinator.kill9()
            started = time.monotonic()
            with self.assertRaises(moesweep.ClientError) as caught:
                list(events)
            self.assertEqual(caught.exception.code, grpc.StatusCode.UNAVAILABLE)
            self.assertIn("gave up watching sweep", caught.exception.details)
            self.assertLess(time.monotonic() - started, 15)


class TokenAuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="moesweep-pyclient-auth-")
        cls.submit_token = secrets.token_hex(32)
        cls.read_token = secrets.token_hex(32)
        lines = [cls._hash_line("submit", cls.submit_token, "alice"), cls._hash_line("read", cls.read_token, "dash")]
        tokens = os.path.join(cls.tmp, "tokens.txt")
        with open(tokens, "w") as f:
            f.write("\n".join(lines) + "\n")
        cls.coordinator = CoordinatorProcess(cls.tmp, ["--token-file", tokens])
        cls.coordinator.start()

    @classmethod
    def tearDownClass(cls):
        cls.coordinator.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @staticmethod
    def _hash_line(role, token, name):
        done = subprocess.run([COORDINATOR, "hash-token", role, name], input=token + "\n",
                              stdout=subprocess.PIPE, universal_newlines=True, check=True)
        return done.stdout.strip()

    def test_the_right_token_works(self):
        with moesweep.Client(self.coordinator.address, token=self.submit_token + "\n") as c:
            sweep_id = c.submit(SPEC)
            self.assertEqual(c.sweep(sweep_id)["sweep"]["name"], "py-client")
            self.assertEqual(c.cancel(sweep_id)["state"], "SWEEP_CANCELLED")
            self.assertEqual(list(c.watch(sweep_id, skip_progress=True))[-1]["type"], "SWEEP_FINISHED")

    def test_the_token_can_come_from_the_environment(self):
        with mock.patch.dict(os.environ, {"MOESWEEP_TOKEN": self.read_token}):
            with moesweep.Client(self.coordinator.address) as c:
                self.assertIsInstance(c.sweeps(), list)

    def test_without_a_token_every_call_is_unauthenticated(self):
        with moesweep.Client(self.coordinator.address) as c:
            for call in (lambda: c.sweeps(), lambda: c.submit(SPEC), lambda: next(c.watch(1))):
                with self.assertRaises(moesweep.ClientError) as caught:
                    call()
                self.assertEqual(caught.exception.code, grpc.StatusCode.UNAUTHENTICATED)
        with moesweep.Client(self.coordinator.address, token="not-a-listed-token-0123456789") as c:
            with self.assertRaises(moesweep.ClientError) as caught:
                c.sweeps()
            self.assertEqual(caught.exception.code_name, "UNAUTHENTICATED")

    def test_a_read_token_may_not_submit(self):
        with moesweep.Client(self.coordinator.address, token=self.read_token) as c:
            c.sweeps()
            with self.assertRaises(moesweep.ClientError) as caught:
                c.submit(SPEC)
            self.assertEqual(caught.exception.code, grpc.StatusCode.PERMISSION_DENIED)


@unittest.skipUnless(shutil.which("openssl"), "openssl is not installed")
class TlsTest(CoordinatorTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="moesweep-pyclient-tls-")
        cls.cert, key = os.path.join(cls.tmp, "server.pem"), os.path.join(cls.tmp, "server.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", cls.cert, "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cls.coordinator = CoordinatorProcess(cls.tmp, ["--tls-cert", cls.cert, "--tls-key", key])
        cls.coordinator.start()

    def test_tls_with_the_ca(self):
        with moesweep.Client(self.coordinator.address, tls_ca=self.cert) as c:
            sweep_id = c.submit(SPEC)
            self.assertEqual(c.sweep(sweep_id)["sweep"]["sweep_id"], sweep_id)
        with open(self.cert, "rb") as f:
            pem = f.read()
        with moesweep.Client(self.coordinator.address, tls_ca=pem) as c:
            self.assertTrue(c.sweeps())

    def test_plaintext_to_a_tls_coordinator_fails(self):
        with moesweep.Client(self.coordinator.address, timeout=5) as c:
            with self.assertRaises(moesweep.ClientError) as caught:
                c.sweeps()
            self.assertEqual(caught.exception.code, grpc.StatusCode.UNAVAILABLE)


class ToDictTest(unittest.TestCase):
    def test_plain_python_values(self):
        trial = pb.Trial(trial_id=2**40, sweep_id=3, config_json='{"lr": 0.001}', point_json="",
                         state=pb.TRIAL_FAILED, metrics={"loss": float("nan")})
        d = mclient.to_dict(trial)
        self.assertEqual(d["trial_id"], 2**40)  # int, not the JSON mapping's string
        self.assertEqual(d["config"], {"lr": 0.001})
        self.assertIsNone(d["point"])
        self.assertNotIn("config_json", d)
        self.assertEqual(d["state"], "TRIAL_FAILED")
        self.assertTrue(math.isnan(d["metrics"]["loss"]))
        self.assertIsNone(d["expert_stats"])
        event = mclient.to_dict(pb.SweepEvent(seq=1, type=pb.STAGE_STARTED, stage=pb.StageResult(stage=0)))
        self.assertEqual(event["stage"]["stage"], 0)
        self.assertIsNone(event["trial"])


if __name__ == "__main__":
    unittest.main()
