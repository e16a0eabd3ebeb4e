"""moesweep.Client: the coordinator's SweepService from Python (needs grpcio and protobuf).

    import moesweep
    c = moesweep.Client("coord.example:50051", token=open("alice.token").read(), tls_ca="ca.pem")
    sweep_id = c.submit("sweeps/demo.json")
    for event in c.watch(sweep_id, skip_progress=True):   # resumes by itself after a restart
        print(event["seq"], event["type"])
    print(c.best(sweep_id)["best_config"])
    df = c.trials_frame(sweep_id)                          # pandas, columns as `moesweep export --format csv`

Every answer is plain Python: dicts with the proto's field names, enums as their names
("SWEEP_RUNNING"), int64 as int, and each ``*_json`` text field parsed into the same name without
``_json`` (``config_json`` -> ``config``; None when empty). Errors are ``ClientError`` with the gRPC
code and the coordinator's message.
"""

import json
import os
import time

import grpc

from . import _stubs

pb, pb_grpc = _stubs.load()

__all__ = ["Client", "ClientError"]

# GetSweep of a sweep with many large stages is not paged; accept what the CLI accepts.
MAX_RECEIVE_BYTES = 64 << 20
TOKEN_ENV = "MOESWEEP_TOKEN"


class ClientError(Exception):
    """A call failed. ``code`` is the grpc.StatusCode, ``code_name`` its name ("NOT_FOUND"),
    ``details`` the coordinator's message (e.g. the JSON path of a bad spec key)."""

    def __init__(self, code, details, method=""):
        self.code = code
        self.code_name = code.name if hasattr(code, "name") else str(code)
        self.details = details or ""
        self.method = method
        where = " (%s)" % method if method else ""
        super().__init__("%s%s: %s" % (self.code_name, where, self.details))

    @classmethod
    def from_rpc_error(cls, error, method=""):
        return cls(error.code(), error.details(), method)


# ---------------------------------------------------------------------------------------------
# Protobuf -> plain Python. Not json_format.MessageToDict: that writes int64 as strings and NaN
# as "NaN" (the JSON mapping), and renamed its flag for default values in protobuf 5.26.

def _scalar(field, value):
    if field.enum_type is not None:
        v = field.enum_type.values_by_number.get(value)
        return v.name if v is not None else value
    if field.message_type is not None:
        return to_dict(value)
    return value


def _parse_json_text(text):
    return json.loads(text) if text else None


def to_dict(message):
    """`message` as a dict: every field (unset messages as None), `*_json` fields parsed."""
    out = {}
    for field in message.DESCRIPTOR.fields:
        name = field.name
        value = getattr(message, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[name] = {k: _scalar(value_field, v) for k, v in value.items()}
        elif field.label == field.LABEL_REPEATED:
            out[name] = [_scalar(field, v) for v in value]
        elif field.message_type is not None:
            out[name] = to_dict(value) if message.HasField(name) else None
        elif field.type == field.TYPE_STRING and name.endswith("_json"):
            out[name[:-len("_json")]] = _parse_json_text(value)
        else:
            out[name] = _scalar(field, value)
    return out


def _enum_value(enum, prefix, value, what):
    """The number of `value` in `enum`: a number, "SUCCEEDED", "succeeded" or "TRIAL_SUCCEEDED"."""
    if isinstance(value, int):
        return value
    names = [n for n in enum.keys() if not n.endswith("_UNSPECIFIED")]
    text = str(value).upper()
    for candidate in (text, prefix + text):
        if candidate in names:
            return enum.Value(candidate)
    raise ValueError("%s: unknown %r (known: %s)" % (what, value, ", ".join(
        n[len(prefix):].lower() if n.startswith(prefix) else n for n in names)))


# ---------------------------------------------------------------------------------------------

class Client:
    """A connection to one coordinator's SweepService.

    target: "host:port". token: sent as "authorization: Bearer TOKEN" on every call; None takes
    $MOESWEEP_TOKEN when set (as the CLI does). tls_ca: a PEM file path or PEM bytes of the CA
    that signed the coordinator's certificate, or True for the system's roots; None is plaintext.
    tls_cert / tls_key: a client certificate, for a coordinator started with --tls-client-ca.
    timeout: seconds per unary call (watch has none). Thread-safe, as grpc channels are.
    """

    def __init__(self, target, token=None, tls_ca=None, timeout=10, tls_cert=None, tls_key=None):
        self.target = target
        self.timeout = timeout
        if token is None:
            token = os.environ.get(TOKEN_ENV) or None
        self._metadata = ()
        if token is not None:
            token = token.strip()  # a token read from a file ends with a newline
            if not token or any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7e for c in token):
                raise ValueError("token: must be non-empty printable ASCII without blanks")
            self._metadata = (("authorization", "Bearer " + token),)
        options = [
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            # Reconnect soon after a coordinator restart (gRPC's default backoff grows to 120 s);
            # the same as the CLI's channel (rpc/channel.cc).
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.min_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ]
        if tls_ca is None:
            if tls_cert or tls_key:
                raise ValueError("tls_cert/tls_key need tls_ca (a client certificate is only sent over TLS)")
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            if bool(tls_cert) != bool(tls_key):
                raise ValueError("tls_cert and tls_key go together")
            credentials = grpc.ssl_channel_credentials(
                root_certificates=None if tls_ca is True else _pem(tls_ca),
                private_key=_pem(tls_key) if tls_key else None,
                certificate_chain=_pem(tls_cert) if tls_cert else None)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._sweeps = pb_grpc.SweepServiceStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "moesweep.Client(%r)" % self.target

    def _call(self, method, request):
        try:
            return getattr(self._sweeps, method)(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise ClientError.from_rpc_error(e, method) from None

    # -- writes ---------------------------------------------------------------------------------

    def submit(self, spec):
        """Submits a sweep and returns its id. `spec`: a dict, a path to a JSON sweep file, or JSON text."""
        if isinstance(spec, dict):
            text = json.dumps(spec)
        elif isinstance(spec, (str, os.PathLike)) and not str(spec).lstrip().startswith("{"):
            with open(spec, encoding="utf-8") as f:
                text = f.read()
        elif isinstance(spec, str):
            text = spec
        else:
            raise TypeError("submit: expected a dict, a path or JSON text, got %s" % type(spec).__name__)
        return self._call("SubmitSweep", pb.SubmitSweepRequest(spec_json=text)).sweep_id

    def cancel(self, sweep_id):
        """Cancels a sweep: {"state", "trials_cancelled", "trials_stopping"}."""
        return to_dict(self._call("CancelSweep", pb.CancelSweepRequest(sweep_id=sweep_id)))

    # -- reads ----------------------------------------------------------------------------------

    def sweeps(self):
        """Every sweep, newest first (without "spec"; sweep() has it)."""
        request = pb.ListSweepsRequest()
        return [to_dict(s) for s in self._pages("ListSweeps", request, "sweeps")]

    def sweep(self, sweep_id):
        """{"sweep": {...}, "stages": [...]}: the sweep and every stage's result so far."""
        return to_dict(self._call("GetSweep", pb.GetSweepRequest(sweep_id=sweep_id)))

    def trials(self, sweep_id, stage=None, state=None, page_size=0):
        """The sweep's trials in id order, optionally of one stage (0 = baseline) and one state
        ("succeeded", "TRIAL_FAILED", ...). Follows every page; page_size 0 lets the coordinator
        fill each page (up to about 2 MiB)."""
        request = pb.ListTrialsRequest(sweep_id=sweep_id, limit=page_size)
        if stage is not None:
            request.stage = stage
        if state is not None:
            request.state = _enum_value(pb.TrialState, "TRIAL_", state, "state")
        return [to_dict(t) for t in self._pages("ListTrials", request, "trials")]

    def best(self, sweep_id, stage=None):
        """{"stages": [...], "best_config": {...}}: base + every decided stage's winner."""
        request = pb.GetBestConfigRequest(sweep_id=sweep_id)
        if stage is not None:
            request.stage = stage
        return to_dict(self._call("GetBestConfig", request))

    def _pages(self, method, request, items):
        tokens = set()
        while True:
            response = self._call(method, request)
            yield from getattr(response, items)
            token = response.next_page_token
            if not token:
                return
            if token in tokens:  # never loop forever on a coordinator bug
                raise ClientError(grpc.StatusCode.INTERNAL, "%s returned page token %r twice" % (method, token), method)
            tokens.add(token)
            request.page_token = token

    # -- events ---------------------------------------------------------------------------------

    def watch(self, sweep_id, after_seq=0, skip_progress=False, reconnect_timeout=300.0):
        """Yields the sweep's events (dicts with "seq", "type", and "sweep"/"stage"/"trial") after
        `after_seq`, in order, and returns after SWEEP_FINISHED.

        When the stream breaks (the coordinator restarted, the network dropped: UNAVAILABLE,
        CANCELLED, or an early end), it reconnects and resumes after the last event it yielded,
        so no event is missed or repeated; it gives up with ClientError after `reconnect_timeout`
        seconds without a connection. It fails at once when the coordinator does not answer its
        first call (or the sweep does not exist).
        skip_progress leaves out TRIAL_PROGRESS events (their seq numbers are then skipped).
        Closing the generator (break) ends the call.
        """
        # One unary call first: a wrong address, a coordinator that is down, an unknown sweep or a
        # missing token fail here at once; after it, UNAVAILABLE means "wait for it to come back".
        try:
            self._sweeps.ListTrials(pb.ListTrialsRequest(sweep_id=sweep_id, limit=1), timeout=self.timeout,
                                    metadata=self._metadata)
        except grpc.RpcError as e:
            raise ClientError.from_rpc_error(e, "WatchSweep") from None
        last_seq = after_seq
        backoff = 0.1
        outage_start = None
        while True:
            request = pb.WatchSweepRequest(sweep_id=sweep_id, after_seq=last_seq, skip_progress=skip_progress)
            call = self._sweeps.WatchSweep(request, metadata=self._metadata)
            error = None
            try:
                for event in call:
                    backoff, outage_start = 0.1, None
                    if event.seq <= last_seq:  # a replay that overlaps what was yielded
                        continue
                    last_seq = event.seq
                    yield to_dict(event)
                    if event.type == pb.SWEEP_FINISHED:
                        return
            except grpc.RpcError as e:
                error = e
            finally:
                call.cancel()
            if error is not None:
                code = error.code()
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    raise ClientError.from_rpc_error(error, "WatchSweep") from None
            now = time.monotonic()
            if outage_start is None:
                outage_start = now
            elif now - outage_start > reconnect_timeout:
                why = error.details() if error is not None else "the stream ended before SWEEP_FINISHED"
                raise ClientError(grpc.StatusCode.UNAVAILABLE,
                                  "gave up watching sweep %d after %.0f s: %s" % (sweep_id, reconnect_timeout, why),
                                  "WatchSweep")
            time.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    # -- pandas ---------------------------------------------------------------------------------

    def trials_frame(self, sweep_id, stage=None, state=None):
        """The trials as a pandas DataFrame, one row per trial, with the columns of
        `moesweep export --format csv` (client/export.cc): experiment_id, sweep_id, trial_id, stage,
        stage_name, point_index, seed, status ("completed" for succeeded), attempt, worker,
        start_time, end_time, error, then param.KEY (config values as given), metric.NAME (NaN
        when missing) and expert.lLAYER.STAT. Times are UTC pandas timestamps (NaT when unset)
        instead of the CSV's ISO text."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("Client.trials_frame needs pandas (%s): apt-get install python3-pandas, or "
                              "pip install pandas; Client.trials returns the same data as dicts" % e) from None
        stage_names = {s["stage"]: s["name"] for s in self.sweep(sweep_id)["stages"]}
        trials = self.trials(sweep_id, stage=stage, state=state)
        return pd.DataFrame.from_records(list(trial_rows(trials, stage_names)), columns=trial_columns(trials))


def _pem(value):
    if isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


# The columns of client/export.cc WriteCsv, in its order.
FIXED_COLUMNS = ["experiment_id", "sweep_id", "trial_id", "stage", "stage_name", "point_index", "seed", "status",
                 "attempt", "worker", "start_time", "end_time", "error", "reused_trial_id"]
LAYER_SCALARS = ["usage_variance", "activation_rate", "gate_weight_variance", "router_entropy", "load_cv"]


def _layers(trial):
    return (trial.get("expert_stats") or {}).get("layers") or []


def trial_columns(trials):
    """Column unions over every trial: params in first-seen order, metrics and layers sorted."""
    params = {}
    metrics, layers = set(), set()
    for t in trials:
        for key in t.get("config") or {}:
            params.setdefault(key, None)
        metrics.update(t["metrics"])
        layers.update(layer["layer"] for layer in _layers(t))
    return (FIXED_COLUMNS + ["param." + p for p in params] + ["metric." + m for m in sorted(metrics)] +
            ["expert.l%d.%s" % (l, s) for l in sorted(layers) for s in LAYER_SCALARS])


def _timestamp(seconds):
    import pandas as pd
    return pd.to_datetime(seconds, unit="s", utc=True) if seconds > 0 else pd.NaT


def trial_rows(trials, stage_names):
    for t in trials:
        state = t["state"]
        row = {
            "experiment_id": "sweep%d_trial%d" % (t["sweep_id"], t["trial_id"]),
            "sweep_id": t["sweep_id"], "trial_id": t["trial_id"], "stage": t["stage"],
            "stage_name": stage_names.get(t["stage"], ""), "point_index": t["point_index"], "seed": t["seed"],
            "status": "completed" if state == "TRIAL_SUCCEEDED" else (
                state[len("TRIAL_"):].lower() if isinstance(state, str) and state.startswith("TRIAL_") else "unknown"),
            "attempt": t["attempt"], "worker": t["worker"],
            "start_time": _timestamp(t["started_at"]), "end_time": _timestamp(t["finished_at"]), "error": t["error"],
            "reused_trial_id": t.get("reused_trial_id") or None,
        }
        for key, value in (t.get("config") or {}).items():
            row["param." + key] = value
        for name, value in t["metrics"].items():
            row["metric." + name] = value
        for layer in _layers(t):
            for s in LAYER_SCALARS:
                row["expert.l%d.%s" % (layer["layer"], s)] = layer[s]
        yield row
