"""moesweep trainer library: the Python side of a command trainer.

A sweep's ``trainer.command`` runs your script once per trial. The script reads its config with
``config()``, reports progress with ``report()``, ends with ``finish()`` and checks ``should_stop()``
between batches. Each report is one stdout line ``@moesweep {json}``; everything else on stdout
is log. Run by hand (no moesweep around), the same script takes ``key=value`` arguments and its
reports are just printed.

    import moesweep
    cfg = moesweep.config({"lr": 1e-3, "epochs": 5})
    for epoch in range(1, cfg["epochs"] + 1):
        ...train; stop early if moesweep.should_stop()...
        moesweep.report(epoch, {"val_accuracy": acc, "train_loss": loss})
    moesweep.finish({"val_accuracy": acc})

Standard library only. ``moesweep.Client`` (the coordinator's API from Python: submit, watch,
trials...) lives in ``moesweep.client`` and needs grpcio and protobuf; it is imported only when
first used, so a trainer never imports grpc.
"""

import json
import math
import os
import pkgutil
import signal
import sys
import threading

# The client's generated stubs (moesweep/v1/moesweep_pb2.py) live in a build folder, not in this
# source tree: let another "moesweep" folder on sys.path (e.g. build/python, added by ctest)
# contribute subpackages.
__path__ = pkgutil.extend_path(__path__, __name__)

__all__ = [
    "PREFIX", "STOPPED_EXIT_CODE", "EXPERT_STAT_FIELDS", "config", "parse_overrides", "under_moesweep",
    "trial_id", "seed", "output_dir", "report", "finish", "format_report", "should_stop",
    "install_stop_handler", "stop_requested",
]  # Not Client / ClientError: `from moesweep import *` must not import grpc.
__version__ = "0.1.0"

# Names served by moesweep.client, imported on first use (it needs grpc; trainers don't).
_CLIENT_NAMES = ("Client", "ClientError")


def __getattr__(name):
    if name in _CLIENT_NAMES:
        from . import client
        return getattr(client, name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))

PREFIX = "@moesweep "
# Exit status for "stopped on request": what a process killed by SIGTERM reports (128 + 15).
STOPPED_EXIT_CODE = 128 + signal.SIGTERM
# The worker refuses a report with a longer metric name (worker/agent/report_line.h).
MAX_METRIC_NAME_BYTES = 128
# Fields of one expert_stats entry (ExpertLayerStats in the proto).
EXPERT_STAT_FIELDS = ("layer", "usage", "importance", "usage_variance", "activation_rate",
                      "gate_weight_variance", "router_entropy", "load_cv")

# True once SIGTERM arrived (see install_stop_handler). Read it through should_stop():
# `from moesweep import stop_requested` copies the value once.
stop_requested = False

_write_lock = threading.Lock()
_handler_installed = False


def under_moesweep():
    """True when this process was started by a moesweep worker."""
    return bool(os.environ.get("MOESWEEP_CONFIG_FILE"))


def parse_value(text):
    """A JSON scalar when `text` is one (1024, 0.7, true, null, "x"), else the text itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if not isinstance(value, (dict, list)) else text


def parse_overrides(argv):
    """{key: value} from ``--key=value`` / ``key=value`` items; other items are ignored."""
    out = {}
    for item in argv:
        body = item[2:] if item.startswith("--") else item
        key, sep, text = body.partition("=")
        if sep and key and not key.startswith("-"):
            out[key] = parse_value(text)
    return out


def config(defaults=None, argv=None):
    """The trial config: `defaults` updated by the trial's keys (and "seed").

    Under moesweep the keys come from the JSON file MOESWEEP_CONFIG_FILE, and a SIGTERM handler is
    installed (see should_stop). By hand they come from ``--key=value`` / ``key=value`` items of
    `argv` (default sys.argv[1:]), values parsed as JSON scalars when possible, else strings.
    """
    cfg = dict(defaults or {})
    path = os.environ.get("MOESWEEP_CONFIG_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            trial = json.load(f)
        if not isinstance(trial, dict):
            raise ValueError("%s: expected a JSON object, got %s" % (path, type(trial).__name__))
        cfg.update(trial)
        install_stop_handler()
    else:
        cfg.update(parse_overrides(sys.argv[1:] if argv is None else argv))
    return cfg


def _env_int(name):
    text = os.environ.get(name)
    return int(text) if text not in (None, "") else None


def trial_id():
    """The trial's id (MOESWEEP_TRIAL_ID), or None by hand."""
    return _env_int("MOESWEEP_TRIAL_ID")


def seed(default=0):
    """The trial's seed (MOESWEEP_SEED), or `default` by hand."""
    value = _env_int("MOESWEEP_SEED")
    return default if value is None else value


def output_dir():
    """The attempt's own folder (MOESWEEP_OUTPUT_DIR); by hand ./moesweep-output, created."""
    path = os.environ.get("MOESWEEP_OUTPUT_DIR") or os.path.join(os.getcwd(), "moesweep-output")
    os.makedirs(path, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------
# Reports

def _number(value, what):
    """float(value) for ints, floats, numpy and one-element torch scalars; TypeError otherwise."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError("%s must be a number, got %s %r" % (what, type(value).__name__, value))
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise TypeError("%s must be a number, got %s %r (%s)" % (what, type(value).__name__, value, e)) from None


def _sequence(value, what):
    if hasattr(value, "tolist"):  # numpy arrays, torch tensors
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError("%s must be a list of numbers, got %s" % (what, type(value).__name__))
    return [_number(v, "%s[%d]" % (what, i)) for i, v in enumerate(value)]


def _metrics(metrics):
    if not hasattr(metrics, "items"):
        raise TypeError("metrics must be a dict of name -> number, got %s" % type(metrics).__name__)
    out = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name or len(name.encode()) > MAX_METRIC_NAME_BYTES:
            raise TypeError("metric names must be non-empty strings of at most %d bytes, got %r"
                            % (MAX_METRIC_NAME_BYTES, name))
        out[name] = _number(value, "metric %r" % name)
    return out


def _layer_stats(entry, index):
    if not hasattr(entry, "items"):
        raise TypeError("expert_stats[%d] must be a dict, got %s" % (index, type(entry).__name__))
    out = {}
    for key, value in entry.items():
        what = "expert_stats[%d].%s" % (index, key)
        if key not in EXPERT_STAT_FIELDS:
            raise ValueError("%s: unknown field (expected one of %s)" % (what, ", ".join(EXPERT_STAT_FIELDS)))
        if key == "layer":
            out[key] = int(_number(value, what))
        elif key in ("usage", "importance"):
            out[key] = _sequence(value, what)
        else:
            out[key] = _number(value, what)
    return out


def format_report(step=None, metrics=None, expert_stats=None, final=False):
    """The report line (without newline) that report() prints; raises on bad values."""
    body = {}
    if step is not None:
        value = _number(step, "step")
        if not (value >= 0 and value == int(value)):
            raise ValueError("step must be a non-negative integer, got %r" % (step,))
        body["step"] = int(value)
    if metrics is not None:
        body["metrics"] = _metrics(metrics)
    if expert_stats is not None:
        if hasattr(expert_stats, "items"):  # one layer given alone
            expert_stats = [expert_stats]
        body["expert_stats"] = [_layer_stats(e, i) for i, e in enumerate(expert_stats)]
    if "metrics" not in body and "expert_stats" not in body:
        raise ValueError("a report needs metrics, expert_stats or both")
    if final:
        body["final"] = True
    # allow_nan: NaN / Infinity / -Infinity are written bare; the worker reads them.
    return PREFIX + json.dumps(body, separators=(",", ":"), allow_nan=True)


def _emit(line):
    with _write_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()  # The worker reads stdout as it comes; never leave a report buffered.


def report(step, metrics, expert_stats=None):
    """Prints one progress report and flushes. `metrics`: {name: number}; `expert_stats`: a list of
    per-layer dicts (see EXPERT_STAT_FIELDS; moesweep.torch.ExpertStatsMeter.summary makes one)."""
    _emit(format_report(step, metrics, expert_stats))


def finish(metrics, expert_stats=None, step=None):
    """Prints the final report: its metrics are the trial's final metrics."""
    _emit(format_report(step, metrics, expert_stats, final=True))


# ---------------------------------------------------------------------------------------------
# Stopping

def _on_sigterm(signum, frame):
    global stop_requested
    if stop_requested:  # A second SIGTERM: die as if unhandled.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    stop_requested = True


def install_stop_handler():
    """Makes SIGTERM set the stop flag instead of killing the process (config() does this under
    moesweep). Must be called from the main thread; a second SIGTERM still kills."""
    global _handler_installed
    if not _handler_installed:
        signal.signal(signal.SIGTERM, _on_sigterm)
        _handler_installed = True


def should_stop():
    """True once the worker asked this trial to stop (SIGTERM on cancel or worker shutdown).

    Check it between batches; when true, exit promptly (e.g. after the current batch, without
    finish(); sys.exit(STOPPED_EXIT_CODE)), well before the worker's grace period ends and it
    sends SIGKILL.
    """
    return stop_requested
