"""Finds the gRPC stubs generated from proto/moesweep/v1/moesweep.proto, generating them if need be.

The stubs are never committed. They come, in this order, from:
  1. ``moesweep.v1`` on the import path: what ``pip install ./python`` puts into the installed
     package (python/setup.py runs protoc), or the build folder's ``python/`` that CMake fills
     (target ``moesweep_python_stubs``; ctest puts it on PYTHONPATH; moesweep/__init__.py lets a
     second ``moesweep`` folder on sys.path add subpackages);
  2. a per-user cache, generated now from the .proto with ``protoc`` and ``grpc_python_plugin``
     (Debian: protobuf-compiler, protobuf-compiler-grpc) or, failing those, the ``grpc_tools``
     module (pip grpcio-tools). The .proto is found through $MOESWEEP_PROTO_DIR, else the
     checkout this file lives in (python/../proto).

Debian 12's python3-grpc-tools is too old for the proto3 ``optional`` fields the .proto uses, so
the system protoc (3.21) is preferred over it.
"""

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

PROTO_REL = os.path.join("moesweep", "v1", "moesweep.proto")


def _missing_runtime(e):
    return ImportError(
        "moesweep.Client needs grpcio and protobuf (%s): apt-get install python3-grpcio python3-protobuf, "
        "or pip install grpcio protobuf" % e)


def _import_stubs():
    from .v1 import moesweep_pb2, moesweep_pb2_grpc  # noqa: generated
    return moesweep_pb2, moesweep_pb2_grpc


def proto_dir():
    """The folder that holds moesweep/v1/moesweep.proto, or None."""
    candidates = [os.environ.get("MOESWEEP_PROTO_DIR", "")]
    here = os.path.dirname(os.path.abspath(__file__))
    candidates.append(os.path.join(os.path.dirname(os.path.dirname(here)), "proto"))  # checkout: python/../proto
    for d in candidates:
        if d and os.path.isfile(os.path.join(d, PROTO_REL)):
            return d
    return None


def generate(proto_root, out_dir):
    """Runs protoc on proto_root/moesweep/v1/moesweep.proto into out_dir (moesweep/v1/*_pb2*.py).

    Raises RuntimeError saying what is missing or what protoc printed.
    """
    proto = os.path.join(proto_root, PROTO_REL)
    args = ["-I" + proto_root, "--python_out=" + out_dir, "--grpc_python_out=" + out_dir, proto]
    protoc, plugin = shutil.which("protoc"), shutil.which("grpc_python_plugin")
    if protoc and plugin:
        cmd = [protoc, "--plugin=protoc-gen-grpc_python=" + plugin] + args
    else:
        try:
            import grpc_tools  # noqa: F401  (pip grpcio-tools)
        except ImportError:
            raise RuntimeError(
                "cannot generate the gRPC stubs: need protoc and grpc_python_plugin on PATH "
                "(apt-get install protobuf-compiler protobuf-compiler-grpc) or pip grpcio-tools") from None
        cmd = [sys.executable, "-m", "grpc_tools.protoc"] + args
    os.makedirs(out_dir, exist_ok=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if done.returncode != 0:
        raise RuntimeError("%s failed (exit %d): %s" % (cmd[0], done.returncode, done.stdout.strip()))


def _cache_root():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "moesweep")


def _generate_into_cache(proto_root):
    with open(os.path.join(proto_root, PROTO_REL), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    final = os.path.join(_cache_root(), "stubs-" + digest)
    if not os.path.isfile(os.path.join(final, "moesweep", "v1", "moesweep_pb2_grpc.py")):
        os.makedirs(_cache_root(), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="stubs-tmp-", dir=_cache_root())
        try:
            generate(proto_root, tmp)
            try:
                os.rename(tmp, final)  # atomic; another process may have won the race
            except OSError:
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(final, "moesweep")


def load():
    """(moesweep_pb2, moesweep_pb2_grpc); raises ImportError saying how to get them."""
    try:
        import grpc  # noqa: F401
        import google.protobuf  # noqa: F401
    except ImportError as e:
        raise _missing_runtime(e) from None
    try:
        return _import_stubs()
    except ImportError as e:
        if getattr(e, "name", None) not in ("moesweep.v1", "moesweep.v1.moesweep_pb2", "moesweep.v1.moesweep_pb2_grpc"):
            raise
        first = e
    root = proto_dir()
    if root is None:
        raise ImportError("the moesweep gRPC stubs are not installed (%s) and moesweep.proto was not found to "
                          "generate them: pip install ./python from a checkout, build the CMake target "
                          "moesweep_python_stubs and put BUILD/python on PYTHONPATH, or set MOESWEEP_PROTO_DIR "
                          "to the checkout's proto/ folder" % first)
    try:
        package_dir = _generate_into_cache(root)
    except (RuntimeError, OSError) as e:
        raise ImportError("the moesweep gRPC stubs are not installed and generating them failed: %s" % e) from None
    package = sys.modules[__package__]
    if package_dir not in package.__path__:
        package.__path__.append(package_dir)
    importlib.invalidate_caches()
    return _import_stubs()
