"""grpcio stubs compiled at test time from a .proto of api/, for the Python
end-to-end tests: a client that shares no code with ours proves the wire
format (field numbers, service and method names) as any gRPC client sees it.

The wrappers that run the tests put this directory on PYTHONPATH and set
GRANARY_PROTO_DIR to the api/ directory of the source tree.
"""
import importlib
import os
import sys
import tempfile

from grpc_tools import protoc


def compile_stubs(name):
    """(NAME_pb2, NAME_pb2_grpc) for api/NAME.proto, compiled under TMPDIR."""
    out = tempfile.mkdtemp(prefix="granary-pb-")
    proto_dir = os.environ["GRANARY_PROTO_DIR"]
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.join(proto_dir, f"{name}.proto"),
    ])
    assert rc == 0, f"protoc failed on api/{name}.proto"
    sys.path.insert(0, out)
    return importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc")
