"""grpcio stubs compiled at test time from a .proto of api/, for the Python
end-to-end tests: a client that shares no code with ours proves the wire
format (field numbers, service and method names) as any gRPC client sees it.

The wrappers that run the tests put this directory on PYTHONPATH and set
GRANARY_PROTO_DIR to the api/ directory of the source tree. meta_auth and
SignedMeta sign granary-meta calls with a role's key, as the daemons do.
"""
import hashlib
import hmac
import importlib
import os
import sys
import tempfile
import time

from grpc_tools import protoc

META_SERVICE = "/granary.v1.Meta/"


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


def meta_auth(role, key, method, request, ts=None):
    """The gRPC metadata that signs one granary-meta call (docs/meta.md,
    "Authentication"): role "csi", "worker" or "mount", key the role's key
    (bytes), method the short method name ("Heartbeat"), request the message
    sent. ts: Unix seconds to sign with (default now)."""
    ts = int(time.time()) if ts is None else ts
    body = hashlib.sha256(request.SerializeToString()).hexdigest()
    text = "\n".join(["granary-meta", role, META_SERVICE + method, str(ts), body])
    sig = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return [("authorization", f"Granary-HMAC role={role},ts={ts},sig={sig}")]


def read_key(path):
    """A key file as the daemons read it: one trailing newline stripped."""
    with open(path, "rb") as f:
        key = f.read()
    if key.endswith(b"\n"):
        key = key[:-1]
    if key.endswith(b"\r"):
        key = key[:-1]
    return key


class SignedMeta:
    """A granary.v1.Meta stub whose every call is signed as role with key:
    signed.GetDataset(request, timeout=10) as with the plain stub."""

    def __init__(self, stub, role, key):
        self._stub, self._role, self._key = stub, role, key

    def __getattr__(self, method):
        call = getattr(self._stub, method)

        def signed(request, **kwargs):
            return call(request, metadata=meta_auth(self._role, self._key, method, request),
                        **kwargs)
        return signed
