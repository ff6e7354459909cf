"""granary-meta from Python: a client that shares no code with ours.

api/granary.proto is compiled at test time with grpc_tools.protoc into a
temporary directory (e2e/grpc_stubs.py), and the stubs talk to a running granary-meta (started
by run_python_test.sh, which also uploads a small tree to the S3 fixture).
This proves the wire format: field numbers, the service and method names,
status codes and messages are what any gRPC client sees.

Environment (set by run_python_test.sh):
  GRANARY_META_ADDRESS   gRPC target of the running meta ("unix:/path")
  GRANARY_PROTO_DIR      the api/ directory of the source tree
  GRANARY_S3_ENDPOINT, GRANARY_S3_CREDENTIALS   the S3 fixture
  GRANARY_TEST_PREFIX    prefix of the uploaded tree in bucket granary-e2e
"""
import os

import grpc
import pytest

from grpc_stubs import compile_stubs

BUCKET = "granary-e2e"
# What run_python_test.sh uploads: path -> size.
TREE = {"train/a.rec": 4, "train/b.rec": 8, "val/c.rec": 2}


@pytest.fixture(scope="module")
def pb():
    return compile_stubs("granary")


@pytest.fixture(scope="module")
def stub(pb):
    channel = grpc.insecure_channel(os.environ["GRANARY_META_ADDRESS"])
    grpc.channel_ready_future(channel).result(timeout=15)
    yield pb[1].MetaStub(channel)
    channel.close()


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


def test_heartbeat_and_list_workers(pb, stub):
    granary_pb2 = pb[0]
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
