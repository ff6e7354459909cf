"""A dataset's whole life through Kubernetes: a StorageClass and a
ReadOnlyMany PVC bound by the real csi-provisioner (CreateVolume), pods that
read every record with its CRC checked, two pods sharing the node's one FUSE
daemon, and nothing left behind once the pods and the PVC are gone."""
import time

import pytest

import kube

PREFIX = "pvc-life"
SC = "granary-e2e-pvc"
CLAIM = "dataset"


@pytest.fixture(scope="module")
def dataset():
    records, size = kube.upload_tfrecords(PREFIX, shards=4, shard_size="8MiB")
    kube.apply(kube.credentials_secret("granary-s3-credentials"))
    kube.apply(kube.storage_class(SC, PREFIX))
    t0 = time.monotonic()
    kube.apply(kube.pvc(CLAIM, SC))
    kube.wait_for("PVC Bound", lambda: kube.pvc_phase(CLAIM) == "Bound", timeout=120)
    bound_s = time.monotonic() - t0
    print(f"pvc_bound_s={bound_s:.2f}")
    yield {"records": records, "bytes": size}
    for name in ("reader-a", "reader-b"):
        kube.delete("pod", name, "default")
    kube.delete("pvc", CLAIM, "default")
    kube.delete("storageclass", SC)


def volume_name():
    return kube.get("pvc", CLAIM, "default")["spec"]["volumeName"]


def run_reader(name, command, timeout=300):
    kube.apply(kube.reader_pod(name, CLAIM, command))
    kube.wait_for(f"pod {name} to finish",
                  lambda: kube.pod_phase(name) in ("Succeeded", "Failed"), timeout=timeout)
    return kube.pod_phase(name), kube.logs(name)


def test_pv_carries_the_dataset(dataset):
    pv = kube.get("pv", volume_name())
    csi = pv["spec"]["csi"]
    assert csi["driver"] == kube.DRIVER
    assert csi["volumeHandle"] == volume_name()
    assert pv["spec"]["accessModes"] == ["ReadOnlyMany"]
    pb, stub = kube.meta_stub()
    ds = stub.GetDataset(pb.GetDatasetRequest(name=volume_name()), timeout=10)
    assert ds.files == 4 and ds.bytes == dataset["bytes"], ds
    # kubectl get datasets lists the claim's dataset too (a Dataset of the
    # release namespace named after the volume).
    st = kube.wait_for("the volume's Dataset Ready",
                       lambda: (kube.get("dataset", volume_name(), kube.NS, check=False) or {})
                       .get("status", {}).get("phase") == "Ready"
                       and kube.get("dataset", volume_name(), kube.NS)["status"], timeout=60)
    assert st["files"] == 4 and st["bytes"] == dataset["bytes"], st
    assert "claim" not in st, st
    row = [l.split() for l in kube.kubectl("get", "datasets", "-A").splitlines()
           if volume_name() in l]
    assert row and row[0][:3] == [kube.NS, volume_name(), "Ready"], row


def test_pod_reads_every_record(dataset):
    phase, out = run_reader("reader-a", kube.tfrecord_read(threads=4, epochs=2))
    assert phase == "Succeeded", out
    epochs = kube.parse_read(out)
    assert len(epochs) == 2, out
    for e in epochs:
        assert e["records"] == dataset["records"] and e["bytes"] == dataset["bytes"], out
    kube.delete("pod", "reader-a", "default")


def test_two_pods_share_one_fuse_daemon(dataset):
    # Both pods wait for a start time the test hands them once both run
    # (the node's clock), read whole epochs for at least 6 s from then, so
    # that their reads overlap however long each took to start, and stay
    # up so that the node's mounts can be looked at.
    read = " ".join(kube.tfrecord_read(threads=2, epochs=1))
    script = ("set -e; while [ ! -s /tmp/start ]; do sleep 0.05; done; start=$(cat /tmp/start); "
              "while [ $(date +%s) -lt $start ]; do sleep 0.05; done; date +start=%s.%N; "
              f"while [ $(date +%s) -lt $((start + 6)) ]; do {read}; done; "
              "date +end=%s.%N; sleep 600")
    for name in ("reader-a", "reader-b"):
        kube.apply(kube.reader_pod(name, CLAIM, ["sh", "-c", script]))
    for name in ("reader-a", "reader-b"):
        kube.wait_for(f"{name} running", lambda n=name: kube.pod_phase(n) == "Running", timeout=120)
    start = int(time.time()) + 3
    for name in ("reader-a", "reader-b"):
        kube.kubectl("exec", name, "-n", "default", "--", "sh", "-c", f"echo {start} > /tmp/start")
    spans = {}
    for name in ("reader-a", "reader-b"):
        out = kube.wait_for(f"{name} to finish reading",
                            lambda n=name: "end=" in kube.logs(n) and kube.logs(n), timeout=300)
        assert kube.pod_phase(name) == "Running", out
        epochs = kube.parse_read(out)
        assert epochs, out
        for e in epochs:
            assert e["records"] == dataset["records"] and e["bytes"] == dataset["bytes"], out
        spans[name] = (float(out.split("start=")[1].split()[0]), float(out.split("end=")[1].split()[0]))
    a, b = spans["reader-a"], spans["reader-b"]
    assert a[0] < b[1] and b[0] < a[1], f"the readers did not overlap: {spans}"
    # One granary-fuse serves both pods: the dataset is staged once on the node.
    daemons = [d for d in kube.fuse_daemons() if any(volume_name() in arg for arg in d)]
    assert len(daemons) == 1, daemons
    # With the read-ahead the node plugin set (csi.yaml fuse_read_ahead,
    # 1 MiB), not the kernel's 128 KiB.
    assert kube.mount_read_ahead_kb(volume_name()) == 1024


def test_bound_volume_survives_meta_losing_its_registry(dataset):
    import grpc
    vol = volume_name()
    for name in ("reader-a", "reader-b"):
        kube.delete("pod", name, "default")
    kube.wait_for("volume unstaged",
                  lambda: not [d for d in kube.fuse_daemons() if any(vol in a for a in d)], timeout=60)
    # meta's data is on an emptyDir by default: a new controller pod starts
    # with an empty registry.
    old = kube.kubectl("-n", kube.NS, "get", "pods", "-l", "app.kubernetes.io/component=controller",
                       "-o", "jsonpath={.items[0].metadata.name}")
    kube.delete("pod", old, kube.NS)
    kube.kubectl("-n", kube.NS, "rollout", "status", "deploy/granary-controller", "--timeout=120s",
                 timeout=150)
    # The new leader registers it again from the claim's Dataset (the
    # Kubernetes objects are the truth), before any node stages it.
    def registered():
        try:
            pb, stub = kube.meta_stub()
            return stub.GetDataset(pb.GetDatasetRequest(name=vol), timeout=10)
        except (grpc.RpcError, grpc.FutureTimeoutError):
            return None
    ds = kube.wait_for("the new leader has the dataset", registered, timeout=60, interval=1)
    assert ds.files == 4 and ds.bytes == dataset["bytes"], ds
    # Without that Dataset too (deleting it unregisters the dataset), the
    # volume's attributes are enough: NodeStageVolume registers it again.
    kube.kubectl("delete", "dataset", vol, "-n", kube.NS, "--timeout=60s")
    pb, stub = kube.meta_stub()
    with pytest.raises(grpc.RpcError) as e:
        stub.GetDataset(pb.GetDatasetRequest(name=vol), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # A new pod on the still Bound PVC: NodeStageVolume registers the
    # dataset from the PV's attributes and the pod reads it all.
    assert kube.pvc_phase(CLAIM) == "Bound"
    phase, out = run_reader("reader-a", kube.tfrecord_read(threads=4))
    assert phase == "Succeeded", (out, kube.events("default", "Pod", "reader-a"))
    assert kube.parse_read(out)[0]["records"] == dataset["records"], out
    ds = stub.GetDataset(pb.GetDatasetRequest(name=vol), timeout=10)
    assert ds.files == 4 and ds.bytes == dataset["bytes"], ds


def test_deleting_pods_and_pvc_leaves_nothing(dataset):
    vol = volume_name()
    for name in ("reader-a", "reader-b"):
        kube.delete("pod", name, "default")
    # Unpublish: no pod's bind mount of the volume is left on the node.
    kube.wait_for("pod mounts gone",
                  lambda: not [m for m in kube.host_mounts() if "/pods/" in m and vol in m],
                  timeout=60)
    kube.delete("pvc", CLAIM, "default")
    kube.wait_for("PV deleted", lambda: not kube.get("pv", vol, check=False), timeout=120)
    pb, stub = kube.meta_stub()
    names = [d.spec.name for d in stub.ListDatasets(pb.ListDatasetsRequest(), timeout=10).datasets]
    assert vol not in names, names
    # Unstage: the FUSE daemon and its mount are gone from the node. The
    # node plugin unmounts once the daemon is gone (csi/node.c): polled.
    kube.wait_for("FUSE daemon gone",
                  lambda: not [d for d in kube.fuse_daemons() if any(vol in a for a in d)], timeout=60)
    seen = []

    def unmounted():
        seen[:] = kube.host_mounts()
        return not [m for m in seen if vol in m]

    try:
        kube.wait_for("the volume's mounts gone", unmounted, timeout=60)
    except AssertionError as e:
        raise AssertionError(f"{e}; mounts on the node: {seen}") from None
