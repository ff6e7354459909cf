"""Datasets as a Kubernetes API: a Dataset object applied with kubectl is
registered by granary-meta's controller, shows its phase, files and size in
`kubectl get datasets`, is mounted by the claim of its name in its
namespace, refreshes on request, recovers from a failure by itself once
the cause is gone, waits to be deleted while pods use it, and survives the
loss of the meta leader in the middle of its registration."""
import json
import os
import signal
import subprocess
import time

import pytest

import kube

TEAM = "team-data"
# A prefix of its own per run: the store outlives the cluster between runs.
PREFIX = f"dataset-crd-{int(time.time())}"


def dataset(name, prefix=PREFIX, secret="s3", extra=None, namespace=TEAM):
    spec = {"source": f"s3://{kube.BUCKET}/{prefix}/",
            "endpoint": kube.ENV["GRANARY_S3_ENDPOINT"], "region": "us-east-1"}
    if secret:
        spec["secretRef"] = {"name": secret}
    spec.update(extra or {})
    return json.dumps({"apiVersion": "granary.io/v1alpha1", "kind": "Dataset",
                       "metadata": {"name": name, "namespace": namespace}, "spec": spec})


def status(name, namespace=TEAM):
    r = kube.kubectl_result("get", "dataset", name, "-n", namespace, "-o", "json")
    return json.loads(r.stdout).get("status", {}) if r.returncode == 0 else None


def wait_phase(name, phase, timeout=120, namespace=TEAM):
    return kube.wait_for(f"Dataset {name} {phase}",
                         lambda: (status(name, namespace) or {}).get("phase") == phase
                         and status(name, namespace), timeout=timeout)


def wait_event(kind, name, what, match, timeout=30):
    """The events about one object of TEAM once one of them (what) satisfies match.
    An event is posted after the change it is about (a status, a gate
    removed), so a test that saw the change polls for it; a failure names
    the events seen last."""
    seen = []

    def found():
        seen[:] = kube.events(TEAM, kind, name)
        return any(match(e) for e in seen) and seen

    try:
        return kube.wait_for(f"{what} about {kind} {name}", found, timeout=timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}; its events: {seen}") from None


def meta_names():
    pb, stub = kube.meta_stub()
    return [d.spec.name for d in stub.ListDatasets(pb.ListDatasetsRequest(), timeout=10).datasets]


def meta_names_or_none():
    import grpc
    try:
        return meta_names()
    except (grpc.RpcError, grpc.FutureTimeoutError):
        return None


def gone(kind, name, namespace=None):
    args = ["get", kind, name] + (["-n", namespace] if namespace else [])
    return kube.kubectl_result(*args).returncode != 0


@pytest.fixture(scope="module")
def team():
    records, size = kube.upload_tfrecords(PREFIX, shards=4, shard_size="4MiB")
    kube.kubectl("create", "namespace", TEAM, check=False)
    kube.apply(kube.credentials_secret("s3", namespace=TEAM))
    # The reads below must go through the node's worker to show as cached.
    kube.wait_worker_joined()
    yield {"records": records, "bytes": size}
    for pod in ("ds-reader", "ds-user"):
        kube.delete("pod", pod, TEAM)
    kube.kubectl("delete", "datasets", "--all", "-n", TEAM, "--timeout=120s", check=False)
    kube.kubectl("delete", "namespace", TEAM, "--timeout=120s", check=False)


def test_apiserver_refuses_bad_values(team):
    cases = [
        ({"blockSize": "3Mi"}, "spec.blockSize"),
        ({"cachePolicy": "fifo"}, "spec.cachePolicy"),
        ({"source": "http://bucket/x/"}, "spec.source"),
        ({"source": "s3://bucket/a/../b/"}, "spec.source"),
        ({"pin": "yes"}, "spec.pin"),
    ]
    for extra, field in cases:
        r = kube.kubectl_result("apply", "-f", "-", input=dataset("bad", extra=extra))
        assert r.returncode != 0, (extra, r.stdout)
        assert field in r.stderr, (extra, r.stderr)
    # The name is a label value of the PV: 63 at most.
    r = kube.kubectl_result("apply", "-f", "-", input=dataset("n" * 64))
    assert r.returncode != 0 and "at most 63" in r.stderr, r.stderr
    assert gone("dataset", "bad", TEAM)


def test_dataset_becomes_ready_and_pods_read_it_by_claim(team):
    t0 = time.monotonic()
    kube.apply(dataset("imagenet"))
    st = wait_phase("imagenet", "Ready")
    print(f"dataset_ready_s={time.monotonic() - t0:.2f}")
    assert st["files"] == 4 and st["bytes"] == team["bytes"], st
    assert st["snapshotGeneration"] == 1 and st["claim"] == "imagenet", st
    assert [c["status"] for c in st["conditions"] if c["type"] == "Ready"] == ["True"], st
    table = kube.kubectl("get", "datasets", "-n", TEAM)
    header, row = table.splitlines()[0].split(), table.splitlines()[1].split()
    assert header == ["NAME", "PHASE", "FILES", "SIZE", "CACHED", "CACHED%", "AGE"], table
    assert row[:4] == ["imagenet", "Ready", "4", st["size"]], table
    # Nothing read yet: nothing cached.
    st = kube.wait_for("cached reported", lambda: "cachedPercent" in status("imagenet")
                       and status("imagenet"), timeout=30)
    assert st["cachedBytes"] == 0 and st["cachedPercent"] == "0%", st
    assert f"{TEAM}.imagenet" in meta_names()
    kube.wait_for("claim Bound", lambda: kube.pvc_phase("imagenet", TEAM) == "Bound")
    pv = kube.get("pv", f"granary-{TEAM}.imagenet")
    assert pv["spec"]["csi"]["volumeHandle"] == f"{TEAM}.imagenet", pv
    assert pv["spec"]["csi"]["nodeStageSecretRef"] == {"name": "s3", "namespace": TEAM}, pv
    kube.apply(kube.reader_pod("ds-reader", "imagenet", kube.tfrecord_read(threads=4),
                               namespace=TEAM))
    kube.wait_for("reader done",
                  lambda: kube.pod_phase("ds-reader", TEAM) in ("Succeeded", "Failed"),
                  timeout=300)
    out = kube.logs("ds-reader", TEAM)
    assert kube.pod_phase("ds-reader", TEAM) == "Succeeded", out
    epochs = kube.parse_read(out)
    assert epochs and epochs[0]["records"] == team["records"], out
    # One epoch read: what the node's cache took of it shows in status
    # within a heartbeat and a report (all of it in most runs; the preload
    # test below asserts 100%).
    t0 = time.monotonic()
    st = kube.wait_for("cached bytes reported", lambda: status("imagenet").get("cachedBytes", 0) > 0
                       and status("imagenet"), timeout=60)
    print(f"cached_reported_s={time.monotonic() - t0:.2f} cached={st['cachedPercent']}")
    assert 0 < st["cachedBytes"] <= team["bytes"], st
    assert [n["node"] for n in st["nodes"]] == [kube.NODE], st
    assert sum(n["cachedBytes"] for n in st["nodes"]) == st["cachedBytes"], st
    row = kube.kubectl("get", "dataset", "imagenet", "-n", TEAM).splitlines()[1].split()
    assert row[4:6] == [st["cached"], st["cachedPercent"]], row
    events = kube.events(TEAM, "Dataset", "imagenet")
    assert any(e.startswith("Registered:") for e in events), events
    kube.delete("pod", "ds-reader", TEAM)


def test_refresh_lists_the_source_into_a_new_generation(team):
    wait_phase("imagenet", "Ready")
    kube.store("put", f"s3://{kube.BUCKET}/{PREFIX}/added.txt", "/etc/hostname")
    kube.kubectl("patch", "dataset", "imagenet", "-n", TEAM, "--type=merge",
                 "-p", '{"spec": {"refresh": "one"}}')
    st = kube.wait_for("generation 2",
                       lambda: (status("imagenet") or {}).get("snapshotGeneration") == 2
                       and status("imagenet")["phase"] == "Ready" and status("imagenet"))
    assert st["files"] == 5 and st["refreshed"] == "one", st
    wait_event("Dataset", "imagenet", "a Refreshed event", lambda e: e.startswith("Refreshed:"))
    # The source cannot change under the name.
    r = kube.kubectl_result("patch", "dataset", "imagenet", "-n", TEAM, "--type=merge",
                            "-p", '{"spec": {"source": "s3://datasets/other/"}}')
    assert r.returncode != 0 and "cannot change" in r.stderr, r.stderr
    # Nor the block size or endpoint by adding or removing one (its own
    # rule sees only a changed value).
    for field, value in (("blockSize", "64Ki"), ("endpoint", None)):
        r = kube.kubectl_result("patch", "dataset", "imagenet", "-n", TEAM, "--type=merge",
                                "-p", json.dumps({"spec": {field: value}}))
        assert r.returncode != 0 and "cannot be added or removed" in r.stderr, (field, r.stderr)


def test_preload_fills_the_caches_and_reports_progress(team):
    # Objects of its own: a block shared with another dataset's identical
    # object counts for the dataset that fetched it first.
    kube.upload_tfrecords(PREFIX + "-warm", shards=3, shard_size="4MiB")
    t0 = time.monotonic()
    kube.apply(dataset("warm", prefix=PREFIX + "-warm", extra={"preload": True}))
    st = kube.wait_for("preload done",
                       lambda: (status("warm") or {}).get("preload", {}).get("state") == "Done"
                       and status("warm"), timeout=120)
    print(f"preload_done_reported_s={time.monotonic() - t0:.2f}")
    # No pod read it: the worker's preload cached every block.
    assert st["preload"]["blocksDone"] == st["preload"]["blocksTotal"] > 0, st
    st = kube.wait_for("warm 100% cached", lambda: status("warm").get("cachedPercent") == "100%"
                       and status("warm"), timeout=60)
    assert st["cachedBytes"] == st["bytes"], st
    assert st["nodes"][0]["preload"] == "done", st
    wide = kube.kubectl("get", "dataset", "warm", "-n", TEAM, "-o", "wide")
    header, row = wide.splitlines()[0].split(), wide.splitlines()[1].split()
    assert header[6:9] == ["GENERATION", "PRELOAD", "REASON"], wide
    assert row[6:9] == ["1", "Done", "Ready"], wide
    # Deleting a Dataset no pod uses drops its blocks on the nodes.
    kube.kubectl("delete", "dataset", "warm", "-n", TEAM, "--timeout=60s")
    worker = json.loads(kube.kubectl("get", "pods", "-n", kube.NS, "-l",
                                     "app.kubernetes.io/component=worker", "-o", "json"))
    name = worker["items"][0]["metadata"]["name"]
    line = kube.wait_for(
        "the worker drops the blocks",
        lambda: [l for l in kube.logs(name, kube.NS).splitlines()
                 if "dataset unregistered" in l and f"dataset={TEAM}.warm" in l], timeout=60)
    assert "dropped_blocks=0" not in line[-1], line


def test_preload_of_prefixes_and_a_prefix_added_in_place(team):
    prefix = PREFIX + "-part"
    _, part_a = kube.upload_tfrecords(prefix + "/a", shards=2, shard_size="4MiB")
    _, part_b = kube.upload_tfrecords(prefix + "/b", shards=1, shard_size="4MiB")
    # What to preload is checked at the apiserver.
    for extra, says in (({"preloadPrefixes": ["a/"]}, "needs spec.preload: true"),
                        ({"preload": True, "preloadPrefixes": ["../a/"]}, "spec.preloadPrefixes")):
        r = kube.kubectl_result("apply", "-f", "-", input=dataset("part", prefix=prefix, extra=extra))
        assert r.returncode != 0 and says in r.stderr, (extra, r.stderr)
    kube.apply(dataset("part", prefix=prefix, extra={"preload": True, "preloadPrefixes": ["a/"]}))
    st = kube.wait_for("a/ preloaded and reported",
                       lambda: (status("part") or {}).get("preload", {}).get("state") == "Done"
                       and status("part").get("cachedBytes") == part_a and status("part"),
                       timeout=120)
    assert st["bytes"] == part_a + part_b, st
    # b/ added: the workers preload again, now both.
    kube.kubectl("patch", "dataset", "part", "-n", TEAM, "--type=merge",
                 "-p", '{"spec": {"preloadPrefixes": ["a/", "b/"]}}')
    st = kube.wait_for("a/ and b/ preloaded", lambda: status("part").get("cachedPercent") == "100%"
                       and status("part"), timeout=120)
    assert st["cachedBytes"] == part_a + part_b and st["preload"]["state"] == "Done", st
    assert st["snapshotGeneration"] == 1, st  # changed in place, not listed again
    kube.kubectl("delete", "dataset", "part", "-n", TEAM, "--timeout=60s")


def gated_pod(name, claim, percent):
    pod = json.loads(kube.reader_pod(name, claim, kube.tfrecord_read(threads=2), namespace=TEAM))
    pod["metadata"]["labels"] = {"granary.io/wait-for-cache": percent}
    pod["spec"]["schedulingGates"] = [{"name": "granary.io/cache"}]
    return json.dumps(pod)


def gates(name):
    return kube.get("pod", name, TEAM)["spec"].get("schedulingGates", [])


def test_gated_pod_starts_once_its_dataset_is_cached(team):
    prefix = PREFIX + "-gated"
    records, size = kube.upload_tfrecords(prefix, shards=2, shard_size="4MiB")
    kube.apply(dataset("gated", prefix=prefix))
    wait_phase("gated", "Ready")
    kube.apply(gated_pod("gated-reader", "gated", "100"))
    kube.apply(gated_pod("gated-typo", "gated", "all"))
    # A label that is no percentage holds nobody: the gate goes, with a warning.
    kube.wait_for("the typo's gate removed", lambda: not gates("gated-typo"), timeout=30)
    wait_event("Pod", "gated-typo", "a BadCacheGate event",
               lambda e: e.startswith("BadCacheGate: label granary.io/wait-for-cache: 'all'"))
    # Nothing cached and nothing preloading: the reader waits, and says why.
    ev = kube.wait_for("a waiting event", lambda: [e for e in kube.events(TEAM, "Pod", "gated-reader")
                                                   if e.startswith("WaitingForCache:")], timeout=30)
    assert "Dataset gated 0% cached; 100% asked" in ev[0], ev
    time.sleep(6)  # more than a round of the gate
    assert gates("gated-reader") == [{"name": "granary.io/cache"}]
    assert kube.pod_phase("gated-reader", TEAM) == "Pending"
    # A preload fills the caches; the gate goes once status says 100%.
    kube.kubectl("patch", "dataset", "gated", "-n", TEAM, "--type=merge",
                 "-p", '{"spec": {"preload": true}}')
    kube.wait_for("gated 100% cached", lambda: status("gated").get("cachedPercent") == "100%",
                  timeout=120)
    t0 = time.monotonic()
    kube.wait_for("the reader's gate removed", lambda: not gates("gated-reader"), timeout=30)
    print(f"gate_removed_after_cached_s={time.monotonic() - t0:.2f}")
    wait_event("Pod", "gated-reader", "a DatasetCached event",
               lambda e: e.startswith("DatasetCached: Dataset gated 100% cached; 100% asked"))
    kube.wait_for("reader done",
                  lambda: kube.pod_phase("gated-reader", TEAM) in ("Succeeded", "Failed"),
                  timeout=300)
    out = kube.logs("gated-reader", TEAM)
    assert kube.pod_phase("gated-reader", TEAM) == "Succeeded", out
    assert kube.parse_read(out)[0]["records"] == records, out
    for pod in ("gated-reader", "gated-typo"):
        kube.delete("pod", pod, TEAM)
    kube.kubectl("delete", "dataset", "gated", "-n", TEAM, "--timeout=60s")


def test_pin_and_policy_changes_reach_the_workers(team):
    wait_phase("imagenet", "Ready")
    kube.kubectl("patch", "dataset", "imagenet", "-n", TEAM, "--type=merge",
                 "-p", '{"spec": {"pin": true, "cachePolicy": "lru"}}')
    worker = json.loads(kube.kubectl("get", "pods", "-n", kube.NS, "-l",
                                     "app.kubernetes.io/component=worker", "-o", "json"))
    name = worker["items"][0]["metadata"]["name"]
    kube.wait_for(
        "the worker takes the new options",
        lambda: [l for l in kube.logs(name, kube.NS).splitlines()
                 if "dataset registered" in l and f"dataset={TEAM}.imagenet" in l
                 and "policy=lru" in l and "pin=1" in l], timeout=60)
    st = kube.wait_for("Ready for the new generation of the object",
                       lambda: status("imagenet").get("observedGeneration") ==
                       kube.get("dataset", "imagenet", TEAM)["metadata"]["generation"]
                       and status("imagenet")["phase"] == "Ready" and status("imagenet"))
    # Changed in place: no listing, the refreshed generation kept (the
    # workers keep the blocks they cached).
    assert st["files"] == 5 and st["snapshotGeneration"] == 2, st


def test_failed_dataset_recovers_once_the_cause_is_gone(team):
    kube.apply(dataset("late", secret="late-secret"))
    st = wait_phase("late", "Failed")
    assert st["reason"] == "NotFound" and "spec.secretRef" in st["message"], st
    assert st["lastError"]["reason"] == "NotFound", st
    assert [c["status"] for c in st["conditions"] if c["type"] == "Ready"] == ["False"], st
    wait_event("Dataset", "late", "an event naming spec.secretRef", lambda e: "spec.secretRef" in e)
    t0 = time.monotonic()
    kube.apply(kube.credentials_secret("late-secret", namespace=TEAM))
    st = wait_phase("late", "Ready", timeout=120)
    print(f"recovered_after_cause_gone_s={time.monotonic() - t0:.2f}")
    assert st["files"] == 5, st
    kube.kubectl("delete", "dataset", "late", "-n", TEAM, "--timeout=60s")


def credentials_ref(name):
    pb, stub = kube.meta_stub()
    return stub.GetDataset(pb.GetDatasetRequest(name=f"{TEAM}.{name}"), timeout=10).spec.credentials_ref


def wait_ready_for_spec(name):
    """Ready for the object's latest generation (a spec change acted on)."""
    return kube.wait_for(
        f"Dataset {name} Ready for its spec",
        lambda: (status(name) or {}).get("phase") == "Ready"
        and status(name).get("observedGeneration") ==
        kube.get("dataset", name, TEAM)["metadata"]["generation"] and status(name))


def set_secret_ref(name, secret):
    ref = {"name": secret} if secret else None
    kube.kubectl("patch", "dataset", name, "-n", TEAM, "--type=merge",
                 "-p", json.dumps({"spec": {"secretRef": ref}}))


def test_secret_ref_changed_on_a_ready_dataset_applies_at_once(team):
    # A Dataset Ready with Secret s3; secretRef then changed to a Secret the
    # store refuses, to another good one, removed, and added back. Each
    # change is acted on at once (no refresh asked): the registration is
    # made again with the new Secret's file as credentials_ref (the
    # source listed with it), or with none (the cluster's credentials).
    prefix = PREFIX + "-rotated"
    kube.upload_tfrecords(prefix, shards=1, shard_size="1MiB")
    kube.apply(kube.credentials_secret("s3-other", namespace=TEAM))
    kube.apply(kube.credentials_secret("s3-refused", namespace=TEAM,
                                       secret="not-the-secret-key-0123456789"))
    kube.apply(dataset("rotated", prefix=prefix))
    wait_phase("rotated", "Ready")
    assert credentials_ref("rotated").endswith(f"/{TEAM}.rotated/s3"), credentials_ref("rotated")
    t0 = time.monotonic()
    set_secret_ref("rotated", "s3-refused")
    st = kube.wait_for("Failed with the refused Secret",
                       lambda: (status("rotated") or {}).get("reason") == "PermissionDenied"
                       and status("rotated"), timeout=60)
    print(f"secret_ref_change_acted_on_s={time.monotonic() - t0:.2f}")
    assert st["phase"] == "Failed", st
    set_secret_ref("rotated", "s3-other")
    st = wait_ready_for_spec("rotated")
    assert st["files"] == 1, st
    assert credentials_ref("rotated").endswith(f"/{TEAM}.rotated/s3-other"), credentials_ref("rotated")
    set_secret_ref("rotated", None)
    wait_ready_for_spec("rotated")
    assert credentials_ref("rotated") == ""
    set_secret_ref("rotated", "s3")
    wait_ready_for_spec("rotated")
    assert credentials_ref("rotated").endswith(f"/{TEAM}.rotated/s3"), credentials_ref("rotated")
    assert any(e.startswith("Registered:") for e in kube.events(TEAM, "Dataset", "rotated"))
    kube.kubectl("delete", "dataset", "rotated", "-n", TEAM, "--timeout=60s")
    assert f"{TEAM}.rotated" not in meta_names()


def test_a_dataset_whose_claim_name_is_taken_stays_failed_until_it_is_free(team):
    # A claim of the Dataset's name that is someone else's (it names
    # another volume): the Dataset is Failed (Conflict) and stays so at its
    # retries, instead of reading Ready with no claim of its own (the
    # registration had succeeded); once the name is free, the next retry
    # makes the claim.
    kube.apply(json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "taken", "namespace": TEAM},
        "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "",
                 "volumeName": "granary-e2e-someone-elses",
                 "resources": {"requests": {"storage": "1Mi"}}}}))
    kube.apply(dataset("taken"))
    st = wait_phase("taken", "Failed")
    assert st["reason"] == "Conflict" and "PersistentVolumeClaim taken" in st["message"], st
    time.sleep(8)  # past the first retry (5 s)
    st = status("taken")
    assert st["phase"] == "Failed" and st["reason"] == "Conflict", st
    kube.kubectl("delete", "pvc", "taken", "-n", TEAM, "--timeout=60s")
    st = wait_phase("taken", "Ready", timeout=120)
    assert st["claim"] == "taken" and st["snapshotGeneration"] == 1, st
    claim = kube.get("pvc", "taken", TEAM)
    assert claim["spec"]["volumeName"] and claim["spec"]["storageClassName"] == "", claim
    kube.kubectl("delete", "dataset", "taken", "-n", TEAM, "--timeout=60s")


def test_a_refresh_asked_for_at_creation_lists_once(team):
    # The registration lists the source: the refresh the new Dataset asks
    # for is done by it, not by a second listing (generation 2).
    kube.apply(dataset("fresh", extra={"refresh": "at-creation"}))
    st = wait_phase("fresh", "Ready")
    time.sleep(3)  # a second listing would follow at once
    st = status("fresh")
    assert st["phase"] == "Ready" and st["refreshed"] == "at-creation", st
    assert st["snapshotGeneration"] == 1, st
    kube.kubectl("delete", "dataset", "fresh", "-n", TEAM, "--timeout=60s")


def test_deleting_a_dataset_in_use_waits_for_its_pods(team):
    wait_phase("imagenet", "Ready")
    # Only ds-user holds the claim (a pod of an earlier test that failed
    # midway would keep the claim after the Dataset).
    kube.delete("pod", "ds-reader", TEAM)
    kube.apply(kube.reader_pod("ds-user", "imagenet", ["sleep", "3600"], namespace=TEAM))
    kube.wait_for("user running", lambda: kube.pod_phase("ds-user", TEAM) == "Running",
                  timeout=120)
    kube.kubectl("delete", "dataset", "imagenet", "-n", TEAM, "--wait=false")
    kube.wait_for("InUse event",
                  lambda: any(e.startswith("InUse:") and "ds-user" in e
                              for e in kube.events(TEAM, "Dataset", "imagenet")), timeout=60)
    time.sleep(3)
    assert not gone("dataset", "imagenet", TEAM)
    assert f"{TEAM}.imagenet" in meta_names()
    kube.delete("pod", "ds-user", TEAM)
    kube.wait_for("Dataset gone", lambda: gone("dataset", "imagenet", TEAM), timeout=60)
    assert gone("pvc", "imagenet", TEAM)
    assert gone("pv", f"granary-{TEAM}.imagenet")
    assert f"{TEAM}.imagenet" not in meta_names()


def s3_pid():
    with open(os.path.join(kube.WORK, "s3", "pid")) as f:
        return int(f.read().strip())


def controller_pods():
    pods = json.loads(kube.kubectl("get", "pods", "-n", kube.NS, "-l",
                                   "app.kubernetes.io/component=controller", "-o", "json"))
    return {p["metadata"]["name"]: p for p in pods["items"]
            if not p["metadata"].get("deletionTimestamp")}


def leader():
    lease = kube.get("lease", "granary-meta", kube.NS)
    return lease["spec"].get("holderIdentity")


def test_leader_killed_mid_registration_loses_and_duplicates_nothing(team):
    kube.kubectl("scale", "deployment", "granary-controller", "-n", kube.NS, "--replicas=2")
    try:
        kube.wait_for("two controller pods",
                      lambda: len(controller_pods()) == 2 and all(
                          p["status"].get("phase") == "Running"
                          for p in controller_pods().values()), timeout=180)
        first = leader()
        assert first in controller_pods(), (first, list(controller_pods()))
        # The store stops answering: the registration stays in Listing.
        os.kill(s3_pid(), signal.SIGSTOP)
        try:
            kube.apply(dataset("failover"))
            wait_phase("failover", "Listing", timeout=60)
            kube.kubectl("delete", "pod", first, "-n", kube.NS, "--grace-period=0", "--force")
            t0 = time.monotonic()
        finally:
            os.kill(s3_pid(), signal.SIGCONT)
        kube.wait_for("a new leader", lambda: leader() not in (None, "", first), timeout=60)
        print(f"new_leader_after_s={time.monotonic() - t0:.2f}")
        st = wait_phase("failover", "Ready", timeout=180)
        print(f"ready_after_failover_s={time.monotonic() - t0:.2f}")
        assert st["files"] == 5 and st["snapshotGeneration"] == 1, st
        # The meta Service follows the new leader once its endpoints are
        # updated; until then a call may find nobody there.
        names = kube.wait_for("meta answering through its Service", meta_names_or_none,
                              timeout=60, interval=1)
        assert names.count(f"{TEAM}.failover") == 1, names
        kube.kubectl("delete", "dataset", "failover", "-n", TEAM, "--timeout=60s")
        assert f"{TEAM}.failover" not in meta_names()
    finally:
        kube.kubectl("scale", "deployment", "granary-controller", "-n", kube.NS,
                     "--replicas=1")
        kube.wait_for("one controller pod", lambda: len(controller_pods()) == 1, timeout=120)
