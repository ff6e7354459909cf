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
  GRANARY_META_LOG       meta's log (its start line says how many threads it has)
  GRANARY_BIN_DIR        the built binaries (a meta of a test's own, e2e_fetch_snapshot)
  GRANARY_FILE_ROOT      meta's allowed_file_roots: file:// datasets go there
  GRANARY_PROTO_DIR      the api/ directory of the source tree
  GRANARY_S3_ENDPOINT, GRANARY_S3_CREDENTIALS   the S3 fixture
  GRANARY_TEST_PREFIX    prefix of the uploaded tree in bucket granary-e2e
"""
import contextlib
import os
import subprocess
import tempfile
import threading
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


STALL_S = 3  # meta's --rpc.stall_timeout in run_python_test.sh


def meta_threads(log_path=None):
    """The threads of meta's gRPC server, from its start line in its log
    (the suite's meta's by default)."""
    with open(log_path or os.environ["GRANARY_META_LOG"]) as f:
        for line in f:
            if 'msg="rpc server started"' in line:
                fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                return int(fields["threads"])
    raise AssertionError("no 'rpc server started' line in meta's log")


def register_big(pb, stub, name):
    """Registers dataset name, a file:// tree of about 1.2 MB of snapshot:
    its first 1 MiB chunk alone is more than the 64 KiB window of a client
    that reads nothing (unread_channel), so meta's stream waits on it.
    Returns the GetSnapshotRequest of it."""
    granary_pb2 = pb[0]
    tree = os.path.join(os.environ["GRANARY_FILE_ROOT"], name)
    os.makedirs(tree)
    for i in range(6000):
        open(os.path.join(tree, f"f{i:05d}-" + "x" * 180), "w").close()
    stub.RegisterDataset(granary_pb2.DatasetSpec(name=name, source_uri=f"file://{tree}/"),
                         timeout=60)
    return granary_pb2.GetSnapshotRequest(name=name)


def unread_channel(address):
    """A connection of its own (a local subchannel pool) for streams not
    read, without BDP probes, which would widen its window."""
    return grpc.insecure_channel(address, options=[
        ("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)])


def test_unread_snapshot_streams_keep_no_thread(pb, stub, worker):
    """Clients that open more GetSnapshot streams than meta has threads and
    never read them (HTTP/2 flow control then holds meta's sends) take no
    thread from the unary calls: a ListWorkers and a Heartbeat answer at
    once, the streams past meta's limit are refused as busy (UNAVAILABLE),
    and the stalled ones end with DEADLINE_EXCEEDED after
    rpc.stall_timeout, which gives their threads back."""
    granary_pb2, granary_pb2_grpc = pb
    request = register_big(pb, stub, "py-stall")
    channel = unread_channel(os.environ["GRANARY_META_ADDRESS"])
    unread = SignedMeta(granary_pb2_grpc.MetaStub(channel), "mount", key("mount"))
    opened = time.monotonic()
    streams = [unread.GetSnapshot(request, timeout=30) for _ in range(meta_threads() + 4)]
    try:
        time.sleep(1)  # every stream reached meta
        worker.ListWorkers(granary_pb2.ListWorkersRequest(), timeout=5)
        worker.Heartbeat(granary_pb2.HeartbeatRequest(
            worker_id="py-node-stall", address="10.9.0.9:7480", capacity_bytes=1),
            timeout=5)
        # Read only once the stall timeout has passed: each stream has
        # ended by then, and reading it gives its status at once.
        time.sleep(max(0, opened + STALL_S + 1 - time.monotonic()))
        reading = time.monotonic()
        codes = []
        for s in streams:
            with pytest.raises(grpc.RpcError) as e:
                list(s)
            codes.append(e.value.code())
            if e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                assert "stall timeout" in e.value.details(), e.value.details()
            else:
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
                assert "streaming calls are in progress" in e.value.details()
                assert ("granary-busy", "1") in e.value.trailing_metadata()
        read_s = time.monotonic() - reading
    finally:
        for s in streams:
            s.cancel()
        channel.close()
    stalled = codes.count(grpc.StatusCode.DEADLINE_EXCEEDED)
    assert 0 < stalled < meta_threads(), codes
    assert read_s < 2, read_s
    # Their threads are back: the snapshot streams whole.
    chunks = list(stub.GetSnapshot(request, timeout=30))
    assert sum(len(c.data) for c in chunks) == chunks[0].total_size > 1 << 20


@contextlib.contextmanager
def own_meta(*settings):
    """A granary-meta of the test's own, with the suite's keys and file root
    and the given settings; yields, once it serves, its address as netaddr
    writes it ("unix:///path") and its log's path, and checks that it stops
    cleanly."""
    work = tempfile.mkdtemp(prefix="own-meta-")
    keys = os.environ["GRANARY_META_KEY_DIR"]
    log_path = os.path.join(work, "meta.log")
    with open(log_path, "w") as log:
        meta = subprocess.Popen([
            os.path.join(os.environ["GRANARY_BIN_DIR"], "granary-meta"),
            "--listen", f"unix://{work}/meta.sock", "--data_dir", f"{work}/data",
            "--auth.csi_key_file", f"{keys}/csi", "--auth.worker_key_file", f"{keys}/worker",
            "--auth.mount_key_file", f"{keys}/mount",
            "--allowed_file_roots", os.environ["GRANARY_FILE_ROOT"], *settings],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, seen = time.monotonic() + 15, ""
        with open(log_path) as log:
            while 'msg="granary-meta serving"' not in seen:
                assert meta.poll() is None and time.monotonic() < deadline, \
                    f"granary-meta did not start serving:\n{seen[-4000:]}"
                time.sleep(0.05)
                seen += log.read()
        yield f"unix://{work}/meta.sock", log_path
    finally:
        meta.terminate()
        try:
            rc = meta.wait(timeout=30)
        except subprocess.TimeoutExpired:
            meta.kill()
            rc = meta.wait()
        with open(log_path) as log:
            assert rc == 0, f"granary-meta exited with {rc}:\n{log.read()[-4000:]}"


@pytest.fixture
def one_stream_meta():
    """A meta of its own that serves one GetSnapshot stream at a time
    (--rpc.max_streams 1); yields its address."""
    with own_meta("--rpc.max_streams", "1") as (address, _):
        yield address


def test_fetch_waits_while_meta_is_busy(pb, one_stream_meta):
    """A burst of mounts starting at once: meta serves rpc.max_streams
    GetSnapshot streams and refuses one more with UNAVAILABLE and the
    granary-busy trailing metadata. granary-fuse's client
    (meta_client_fetch_snapshot, in e2e_fetch_snapshot) then waits, with a
    backoff, and gets the snapshot once the stream ahead of it ends, rather
    than failing the mount's start; it says so once in its log. It gives up
    with ERR_BUSY once its build timeout would pass."""
    granary_pb2, granary_pb2_grpc = pb
    address = one_stream_meta
    target = address.replace("unix://", "unix:", 1)  # as grpcio writes it
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=15)
    mount = SignedMeta(granary_pb2_grpc.MetaStub(channel), "mount", key("mount"))
    request = register_big(pb, SignedMeta(granary_pb2_grpc.MetaStub(channel), "csi",
                                          key("csi")), "py-busy")
    hold_channel = unread_channel(target)
    holder = SignedMeta(granary_pb2_grpc.MetaStub(hold_channel), "mount",
                        key("mount")).GetSnapshot(request, timeout=30)
    fetch = None
    try:
        # Meta sends the headers with the first chunk: from then on the
        # holder has meta's one stream, which waits for it to read.
        holder.initial_metadata()
        with pytest.raises(grpc.RpcError) as e:
            list(mount.GetSnapshot(request, timeout=10))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
        assert "GetSnapshot: 1 streaming calls are in progress" in e.value.details()
        assert ("granary-busy", "1") in e.value.trailing_metadata()

        fetch_args = [
            os.path.join(os.environ["GRANARY_BIN_DIR"], "e2e_fetch_snapshot"), address,
            os.path.join(os.environ["GRANARY_META_KEY_DIR"], "mount"), "py-busy"]
        fetch = subprocess.Popen(fetch_args + ["15000"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        time.sleep(1)
        assert fetch.poll() is None, f"the fetch did not wait: {fetch.communicate()}"
        # Meanwhile another, with 1 s for all its tries, gives up saying why.
        short = subprocess.run(fetch_args + ["1000"], capture_output=True, text=True,
                               timeout=10)
        assert short.returncode == 1, short
        assert "granary-meta still busy after" in short.stderr, short.stderr
        assert short.stderr.rstrip().endswith("(busy)"), short.stderr
        assert fetch.poll() is None, f"the fetch did not wait: {fetch.communicate()}"
        # The holder reads at last; meta's stream is free once all is sent.
        chunks = list(holder)
        total = chunks[0].total_size
        assert sum(len(c.data) for c in chunks) == total > 1 << 20
        out, errout = fetch.communicate(timeout=15)
    finally:
        holder.cancel()
        hold_channel.close()
        channel.close()
        if fetch and fetch.poll() is None:
            fetch.kill()
            fetch.wait()
    assert fetch.returncode == 0, errout
    assert out.startswith(f"generation 1 bytes {total} "), out
    waits = [line for line in errout.splitlines() if "granary-meta is busy" in line]
    assert len(waits) == 1 and "level=warn" in waits[0], errout
    assert "dataset=py-busy" in waits[0], waits[0]


def test_calls_without_a_request_keep_no_thread(pb):
    """Any pod that reaches meta's port (no key needed: a call is
    authenticated once its request is in) opens more calls than meta has
    threads, unary and streaming, and sends their headers but never their
    request. They take no thread: a Heartbeat and a ListWorkers answer at
    once, where threads waiting for those requests would be freed only by
    rpc.stall_timeout (10 s here)."""
    granary_pb2, granary_pb2_grpc = pb
    hang = threading.Event()

    def no_request():
        hang.wait()
        yield from ()

    with own_meta("--rpc.max_streams", "1", "--rpc.stall_timeout", "10s") as (address, log):
        channel = grpc.insecure_channel(address.replace("unix://", "unix:", 1))
        grpc.channel_ready_future(channel).result(timeout=15)
        worker = SignedMeta(granary_pb2_grpc.MetaStub(channel), "worker", key("worker"))
        opened = []
        try:
            for i in range(meta_threads(log) + 2):
                method = "/granary.v1.Meta/" + ("Heartbeat", "ListWorkers", "GetSnapshot")[i % 3]
                if method.endswith("GetSnapshot"):
                    opened.append(channel.stream_stream(method)(no_request(), timeout=30))
                else:
                    opened.append(channel.stream_unary(method).future(no_request(), timeout=30))
            time.sleep(0.5)  # every call's headers reached meta
            asked = time.monotonic()
            worker.Heartbeat(granary_pb2.HeartbeatRequest(
                worker_id="py-node-quiet", address="10.9.0.8:7480", capacity_bytes=1),
                timeout=2)
            listed = worker.ListWorkers(granary_pb2.ListWorkersRequest(), timeout=2)
            answered_s = time.monotonic() - asked
            assert not [call for call in opened if call.done()]  # still waiting
        finally:
            for call in opened:
                call.cancel()
            hang.set()
            channel.close()
    assert "py-node-quiet" in [w.id for w in listed.workers]
    assert answered_s < 2, answered_s
