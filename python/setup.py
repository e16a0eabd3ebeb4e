"""Build hook: `pip install ./python` (from a checkout) also generates the client's gRPC stubs.

Everything else is in pyproject.toml. The stubs (moesweep/v1/moesweep_pb2.py, moesweep_pb2_grpc.py)
are generated from ../proto/moesweep/v1/moesweep.proto into the wheel with protoc and
grpc_python_plugin (Debian: protobuf-compiler, protobuf-compiler-grpc) or else the grpc_tools
module (pip grpcio-tools). Without either, or without ../proto (an sdist built elsewhere), the
trainer library installs alone and a warning says so; moesweep.Client then tries again at import
time (moesweep/_stubs.py).
"""

import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        sys.path.insert(0, HERE)
        try:
            from moesweep import _stubs
        finally:
            sys.path.pop(0)
        root = os.environ.get("MOESWEEP_PROTO_DIR") or os.path.join(os.path.dirname(HERE), "proto")
        if not os.path.isfile(os.path.join(root, _stubs.PROTO_REL)):
            self.warn("moesweep: %s not found; the client's gRPC stubs are not generated" % _stubs.PROTO_REL)
            return
        try:
            _stubs.generate(root, self.build_lib)
        except RuntimeError as e:
            self.warn("moesweep: %s; moesweep.Client will try again at import time" % e)
            return
        # protoc writes no __init__.py; make moesweep.v1 a regular package in the wheel.
        init = os.path.join(self.build_lib, "moesweep", "v1", "__init__.py")
        if not os.path.exists(init):
            open(init, "w").close()


setup(cmdclass={"build_py": BuildPyWithStubs})
