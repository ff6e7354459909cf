"""Only a node's worker pod may heartbeat as that node's worker: granary-meta
asks the apiserver (TokenReview) whose token a Heartbeat carries, and the
worker role's key alone, which every worker pod holds, is not enough to
point a worker id at another address (docs/security.md, "Who may call
granary-meta")."""
import os
import sys
import time

import grpc
import pytest

import kube

sys.path.insert(0, os.path.join(kube.SRC, "e2e"))
from grpc_stubs import meta_auth  # noqa: E402

IDENTITY_MD = "granary-worker-identity"
TOKEN_FILE = "/var/run/secrets/granary/identity/token"
AUDIENCE = "granary-meta"
EVIL_ADDRESS = "10.255.255.1:7480"


@pytest.fixture(scope="module")
def meta():
    pb, plain = kube.meta_plain_stub()
    _, signed = kube.meta_stub()
    return pb, plain, signed, kube.meta_key("worker")


def pod_of(component):
    pods = kube.get("pods", namespace=kube.NS)["items"]
    names = [p["metadata"]["name"] for p in pods
             if p["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
             and p["spec"].get("nodeName") == kube.NODE and p["status"].get("phase") == "Running"]
    assert names, f"no running {component} pod on {kube.NODE}"
    return names[0]


def worker_token():
    """The token the kubelet projects into the node's worker pod for meta."""
    return kube.kubectl("-n", kube.NS, "exec", pod_of("worker"), "-c", "granary-worker", "--",
                        "cat", TOKEN_FILE).strip()


def members(pb, signed):
    reply = signed.ListWorkers(pb.ListWorkersRequest(), timeout=10)
    return {w.id: w for w in reply.workers}


def heartbeat(pb, plain, key, worker_id, address, token=None, capacity=1 << 30, used=0):
    """A Heartbeat signed with the worker role's key, with token (None: no
    identity token at all) as its second credential."""
    beat = pb.HeartbeatRequest(worker_id=worker_id, address=address, capacity_bytes=capacity,
                               used_bytes=used)
    md = meta_auth("worker", key, "Heartbeat", beat)
    if token is not None:
        md.append((IDENTITY_MD, token))
    return plain.Heartbeat(beat, timeout=15, metadata=md)


def refused(code, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as e:
        heartbeat(*args, **kwargs)
    assert e.value.code() == code, (e.value.code(), e.value.details())
    return e.value.details()


def unchanged(pb, signed, before):
    now = members(pb, signed)
    assert kube.NODE in now, now.keys()
    assert now[kube.NODE].address == before.address, (now[kube.NODE].address, before.address)
    assert "not-" + kube.NODE not in now, now.keys()
    assert EVIL_ADDRESS not in [w.address for w in now.values()], now


def test_worker_heartbeats_keep_it_a_member(meta):
    pb, _, signed, _ = meta
    first = kube.wait_for(f"worker {kube.NODE} in meta's membership",
                          lambda: members(pb, signed).get(kube.NODE))
    # Heartbeats come every 5 s (meta.heartbeat.interval): the worker's own
    # keep being accepted, with its pod's token.
    later = kube.wait_for("a newer heartbeat of the node's worker",
                          lambda: (lambda w: w if w and w.last_seen_unix_ms > first.last_seen_unix_ms
                                   else None)(members(pb, signed).get(kube.NODE)), timeout=30)
    assert later.address == first.address


def test_the_workers_own_token_is_accepted_for_its_node(meta):
    """The positive control of the refusals below: the same signing, with
    the pod's token and its own node, is served."""
    pb, plain, signed, key = meta
    me = kube.wait_for(f"worker {kube.NODE}", lambda: members(pb, signed).get(kube.NODE))
    reply = heartbeat(pb, plain, key, kube.NODE, me.address, worker_token(),
                      capacity=me.capacity_bytes, used=me.used_bytes)
    assert reply.interval_ms > 0


def test_worker_token_for_another_worker_id_is_denied(meta):
    pb, plain, signed, key = meta
    before = kube.wait_for(f"worker {kube.NODE}", lambda: members(pb, signed).get(kube.NODE))
    d = refused(grpc.StatusCode.PERMISSION_DENIED, pb, plain, key, "not-" + kube.NODE,
                EVIL_ADDRESS, worker_token())
    assert f"on node '{kube.NODE}', not on 'not-{kube.NODE}'" in d, d
    unchanged(pb, signed, before)


def test_another_service_accounts_token_is_denied(meta):
    """The node plugin's pod on the same node: the right node, the wrong
    service account, so it cannot take over the node's worker id."""
    pb, plain, signed, key = meta
    before = kube.wait_for(f"worker {kube.NODE}", lambda: members(pb, signed).get(kube.NODE))
    node_pod = pod_of("node")
    token = kube.kubectl("-n", kube.NS, "create", "token", "granary-node", "--audience", AUDIENCE,
                         "--bound-object-kind", "Pod", "--bound-object-name", node_pod,
                         "--duration", "10m").strip()
    d = refused(grpc.StatusCode.PERMISSION_DENIED, pb, plain, key, kube.NODE, EVIL_ADDRESS, token)
    assert f"system:serviceaccount:{kube.NS}:granary-node" in d, d
    assert f"system:serviceaccount:{kube.NS}:granary-worker" in d, d
    assert token not in d
    unchanged(pb, signed, before)


def test_worker_service_account_token_of_no_pod_is_denied(meta):
    """A token of the workers' account that no pod holds (kubectl create
    token) names no node."""
    pb, plain, signed, key = meta
    before = kube.wait_for(f"worker {kube.NODE}", lambda: members(pb, signed).get(kube.NODE))
    token = kube.kubectl("-n", kube.NS, "create", "token", "granary-worker", "--audience", AUDIENCE,
                         "--duration", "10m").strip()
    d = refused(grpc.StatusCode.PERMISSION_DENIED, pb, plain, key, kube.NODE, EVIL_ADDRESS, token)
    assert "names no node" in d, d
    unchanged(pb, signed, before)


def test_token_for_another_audience_is_unauthenticated(meta):
    pb, plain, signed, key = meta
    before = kube.wait_for(f"worker {kube.NODE}", lambda: members(pb, signed).get(kube.NODE))
    token = kube.kubectl("-n", kube.NS, "create", "token", "granary-worker",
                         "--duration", "10m").strip()
    refused(grpc.StatusCode.UNAUTHENTICATED, pb, plain, key, kube.NODE, EVIL_ADDRESS, token)
    refused(grpc.StatusCode.UNAUTHENTICATED, pb, plain, key, kube.NODE, EVIL_ADDRESS, "not-a-token")
    unchanged(pb, signed, before)


def test_heartbeat_without_a_token_is_unauthenticated(meta):
    pb, plain, signed, key = meta
    before = kube.wait_for(f"worker {kube.NODE}", lambda: members(pb, signed).get(kube.NODE))
    d = refused(grpc.StatusCode.UNAUTHENTICATED, pb, plain, key, kube.NODE, EVIL_ADDRESS)
    assert IDENTITY_MD in d, d
    unchanged(pb, signed, before)
    # The worker itself was never refused meanwhile: it is still a member a
    # heartbeat interval later.
    time.sleep(6)
    unchanged(pb, signed, before)
