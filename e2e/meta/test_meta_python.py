"""granary-meta from Python: a client that shares no code with ours.

api/granary.proto is compiled at test time with grpc_tools.protoc into a
temporary directory (e2e/grpc_stubs.py), and the stubs talk to a running granary-meta (started
by run_python_test.sh, which also uploads a small tree to the S3 fixture).
This proves the wire format: field numbers, the service and method names,
status codes and messages are what any gRPC client sees, and the call
signatures (e2e/grpc_stubs.py signs them independently of meta_auth.c).

Environment (set by run_python_test.sh):
  GRANARY_META_ADDRESS   gRPC target of the running meta ("unix:/path")
  GRANARY_META_KEY_DIR   the role keys meta was started with: csi, worker, mount
  GRANARY_PROTO_DIR      the api/ directory of the source tree
  GRANARY_S3_ENDPOINT, GRANARY_S3_CREDENTIALS   the S3 fixture
  GRANARY_TEST_PREFIX    prefix of the uploaded tree in bucket granary-e2e
"""
import os
import time

import grpc
import pytest

from grpc_stubs import SignedMeta, compile_stubs, meta_auth, read_key

BUCKET = "granary-e2e"
# What run_python_test.sh uploads: path -> size.
TREE = {"train/a.rec": 4, "train/b.rec": 8, "val/c.rec": 2}


@pytest.fixture(scope="module")
def pb():
    return compile_stubs("granary")


def key(role):
    return read_key(os.path.join(os.environ["GRANARY_META_KEY_DIR"], role))


@pytest.fixture(scope="module")
def plain(pb):
    """The stub as any pod on the network has it: no key."""
    channel = grpc.insecure_channel(os.environ["GRANARY_META_ADDRESS"])
    grpc.channel_ready_future(channel).result(timeout=15)
    yield pb[1].MetaStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def stub(plain):
    """granary-csi's view: calls signed with the csi role's key."""
    return SignedMeta(plain, "csi", key("csi"))


@pytest.fixture(scope="module")
def worker(plain):
    return SignedMeta(plain, "worker", key("worker"))


@pytest.fixture(scope="module")
def mount(plain):
    return SignedMeta(plain, "mount", key("mount"))


def spec(pb, name, **overrides):
    granary_pb2 = pb[0]
    fields = dict(
        name=name,
        source_uri=f"s3://{BUCKET}/{os.environ['GRANARY_TEST_PREFIX']}",
        endpoint=os.environ["GRANARY_S3_ENDPOINT"],
        credentials_ref=os.environ["GRANARY_S3_CREDENTIALS"],
        options=granary_pb2.DatasetOptions(
            block_size=4 << 20, cache_policy=granary_pb2.CACHE_POLICY_LRU, pin=True),
    )
    fields.update(overrides)
    return granary_pb2.DatasetSpec(**fields)


def test_register_get_and_idempotence(pb, stub):
    granary_pb2 = pb[0]
    d = stub.RegisterDataset(spec(pb, "py-small"), timeout=60)
    assert d.generation == 1
    assert d.state == granary_pb2.DATASET_STATE_READY
    assert d.files == len(TREE)
    assert d.dirs == 3  # root, train, val
    assert d.bytes == sum(TREE.values())
    assert d.created_unix_ms > 1_600_000_000_000
    assert d.spec.name == "py-small"
    assert d.spec.options.block_size == 4 << 20
    assert d.spec.options.cache_policy == granary_pb2.CACHE_POLICY_LRU
    assert d.spec.options.pin

    got = stub.GetDataset(granary_pb2.GetDatasetRequest(name="py-small"), timeout=10)
    assert got == d

    again = stub.RegisterDataset(spec(pb, "py-small"), timeout=60)
    assert again.created_unix_ms == d.created_unix_ms

    listed = stub.ListDatasets(granary_pb2.ListDatasetsRequest(), timeout=10)
    assert "py-small" in [x.spec.name for x in listed.datasets]


def test_statuses_and_messages(pb, stub):
    granary_pb2 = pb[0]
    with pytest.raises(grpc.RpcError) as e:
        stub.GetDataset(granary_pb2.GetDatasetRequest(name="never-registered"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "never-registered" in e.value.details()

    with pytest.raises(grpc.RpcError) as e:
        stub.RegisterDataset(spec(pb, "py-bad", source_uri="gs://x/y/"), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "source_uri" in e.value.details()

    stub.RegisterDataset(spec(pb, "py-conflict"), timeout=60)
    with pytest.raises(grpc.RpcError) as e:
        stub.RegisterDataset(spec(pb, "py-conflict", region="eu-west-1"), timeout=10)
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "region" in e.value.details()


def test_snapshot_chunks_are_contiguous(pb, stub):
    granary_pb2 = pb[0]
    stub.RegisterDataset(spec(pb, "py-snap"), timeout=60)
    chunks = list(stub.GetSnapshot(granary_pb2.GetSnapshotRequest(name="py-snap"), timeout=30))
    assert chunks
    total = chunks[0].total_size
    offset = 0
    for c in chunks:
        assert c.generation == 1
        assert c.total_size == total
        assert c.offset == offset
        assert 0 < len(c.data) <= 1 << 20
        offset += len(c.data)
    assert offset == total


def test_heartbeat_and_list_workers(pb, worker):
    granary_pb2 = pb[0]
    stub = worker
    r1 = stub.Heartbeat(granary_pb2.HeartbeatRequest(
        worker_id="py-node-b", address="10.9.0.2:7480", capacity_bytes=1000, used_bytes=10),
        timeout=10)
    r2 = stub.Heartbeat(granary_pb2.HeartbeatRequest(
        worker_id="py-node-a", address="10.9.0.1:7480", capacity_bytes=2000, used_bytes=20),
        timeout=10)
    assert r2.membership_version > r1.membership_version
    assert r2.interval_ms == 5000 and r2.expiry_ms == 15000  # the daemon's defaults
    w = stub.ListWorkers(granary_pb2.ListWorkersRequest(), timeout=10)
    assert w.version == r2.membership_version
    ids = [x.id for x in w.workers]
    assert ids == sorted(ids)
    a = next(x for x in w.workers if x.id == "py-node-a")
    assert a.address == "10.9.0.1:7480"
    assert a.capacity_bytes == 2000 and a.used_bytes == 20
    assert a.last_seen_unix_ms > 1_600_000_000_000


def refused(code, fn, *args, **kwargs):
    """The call fails with code; returns its details."""
    with pytest.raises(grpc.RpcError) as e:
        r = fn(*args, **kwargs)
        if hasattr(r, "__next__"):
            list(r)  # a stream fails when read
    assert e.value.code() == code, e.value.details()
    return e.value.details()


def test_unsigned_calls_are_unauthenticated(pb, plain, stub, mount):
    """What any pod on the network tried: register a dataset with another
    volume's credentials, delete or refresh one, join the membership."""
    granary_pb2 = pb[0]
    stub.RegisterDataset(spec(pb, "py-owned"), timeout=60)
    unauth = grpc.StatusCode.UNAUTHENTICATED
    d = refused(unauth, plain.RegisterDataset, spec(pb, "py-intruder"), timeout=10)
    assert "RegisterDataset: unsigned call" in d and "authorization" in d
    refused(unauth, plain.DeleteDataset, granary_pb2.DeleteDatasetRequest(name="py-owned"),
            timeout=10)
    refused(unauth, plain.RefreshDataset, granary_pb2.RefreshDatasetRequest(name="py-owned"),
            timeout=10)
    refused(unauth, plain.Heartbeat, granary_pb2.HeartbeatRequest(
        worker_id="py-evil", address="10.6.6.6:7480"), timeout=10)
    refused(unauth, plain.ListDatasets, granary_pb2.ListDatasetsRequest(), timeout=10)
    refused(unauth, lambda: list(plain.GetSnapshot(
        granary_pb2.GetSnapshotRequest(name="py-owned"), timeout=10)))
    # A made-up header is no better.
    refused(unauth, plain.DeleteDataset, granary_pb2.DeleteDatasetRequest(name="py-owned"),
            timeout=10, metadata=[("authorization", "Bearer let-me-in")])
    # Nothing changed.
    names = [x.spec.name for x in stub.ListDatasets(granary_pb2.ListDatasetsRequest(),
                                                    timeout=10).datasets]
    assert "py-owned" in names and "py-intruder" not in names
    ids = [w.id for w in mount.ListWorkers(granary_pb2.ListWorkersRequest(), timeout=10).workers]
    assert "py-evil" not in ids


def test_roles_keep_to_their_methods(pb, stub, worker, mount):
    granary_pb2 = pb[0]
    denied = grpc.StatusCode.PERMISSION_DENIED
    beat = granary_pb2.HeartbeatRequest(worker_id="py-evil", address="10.6.6.6:7480")
    d = refused(denied, mount.Heartbeat, beat, timeout=10)
    assert d == "Heartbeat: role 'mount' may not call it (worker only)", d
    refused(denied, stub.Heartbeat, beat, timeout=10)
    refused(denied, mount.RegisterDataset, spec(pb, "py-by-mount"), timeout=10)
    refused(denied, mount.DeleteDataset, granary_pb2.DeleteDatasetRequest(name="py-small"),
            timeout=10)
    refused(denied, worker.RegisterDataset, spec(pb, "py-by-worker"), timeout=10)
    refused(denied, worker.RefreshDataset, granary_pb2.RefreshDatasetRequest(name="py-small"),
            timeout=10)
    # What each may do.
    stub.RegisterDataset(spec(pb, "py-small"), timeout=60)
    assert mount.GetDataset(granary_pb2.GetDatasetRequest(name="py-small"),
                            timeout=10).spec.name == "py-small"
    assert list(mount.GetSnapshot(granary_pb2.GetSnapshotRequest(name="py-small"), timeout=30))
    worker.Heartbeat(granary_pb2.HeartbeatRequest(worker_id="py-node-c", address="10.9.0.3:7480"),
                     timeout=10)
    stub.RefreshDataset(granary_pb2.RefreshDatasetRequest(name="py-small"), timeout=60)


def test_forged_and_replayed_signatures_are_denied(pb, plain):
    granary_pb2 = pb[0]
    denied = grpc.StatusCode.PERMISSION_DENIED
    beat = granary_pb2.HeartbeatRequest(worker_id="py-evil", address="10.6.6.6:7480")
    # The mount role's key (which every mount holds) in the worker's name.
    d = refused(denied, plain.Heartbeat, beat, timeout=10,
                metadata=meta_auth("worker", key("mount"), "Heartbeat", beat))
    assert d == "Heartbeat: the signature of role 'worker' does not match", d
    # A worker's signature seen on the network, replayed past the window.
    old = int(time.time()) - 301
    d = refused(denied, plain.Heartbeat, beat, timeout=10,
                metadata=meta_auth("worker", key("worker"), "Heartbeat", beat, ts=old))
    assert "away from granary-meta's clock (at most 300 allowed)" in d, d
    # ... or reused at once on another request (another address).
    real = granary_pb2.HeartbeatRequest(worker_id="py-node-d", address="10.9.0.4:7480")
    captured = meta_auth("worker", key("worker"), "Heartbeat", real)
    plain.Heartbeat(real, timeout=10, metadata=captured)
    refused(denied, plain.Heartbeat, beat, timeout=10, metadata=captured)
    # The key never appears in what meta answers.
    assert key("worker").decode() not in d
