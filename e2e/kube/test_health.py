"""Health that kubectl shows: a worker that cannot reach granary-meta is not
Ready and its pod's events say why; a mount whose granary-fuse hangs gets a
VolumeConditionAbnormal event on the pod that uses it (the kubelet's
CSIVolumeHealth, from NodeGetVolumeStats) and a granary_csi_volume_abnormal
sample on the node plugin's /metrics, and both clear once it serves again; a
container whose mount ended with every holder of its connection (a node
restart) reads again through the mount put in its place."""
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request

import pytest

import kube

PREFIX = "health"
SC = "granary-e2e-health"
CLAIM = "health-data"
READER = "health-reader"


def pod_of(component):
    """Granary's pods of one component (controller, node, worker)."""
    return [
        p for p in kube.get("pods", namespace=kube.NS)["items"]
        if p["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component]


def ready(p):
    conds = {c["type"]: c["status"] for c in p["status"].get("conditions", [])}
    return conds.get("Ready") == "True"


def worker_pod():
    pods = pod_of("worker")
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def scale_controller(replicas):
    kube.kubectl("-n", kube.NS, "scale", "deploy/granary-controller", f"--replicas={replicas}")


def test_worker_is_not_ready_while_meta_is_away_and_says_why():
    w = worker_pod()
    name = w["metadata"]["name"]
    assert ready(w), w["status"]
    restarts = w["status"]["containerStatuses"][0]["restartCount"]
    scale_controller(0)
    try:
        kube.wait_for("controller pod gone", lambda: not pod_of("controller"), timeout=120)
        # Past meta's heartbeat expiry (15 s) the worker is out of the
        # membership: not Ready, and the probe's event names meta.
        kube.wait_for("worker not Ready", lambda: not ready(worker_pod()), timeout=90)
        why = kube.wait_for(
            "a readiness event that names granary-meta",
            lambda: [e for e in kube.events(kube.NS, "Pod", name)
                     if e.startswith("Unhealthy: Readiness probe failed:") and "granary-meta" in e],
            timeout=30)
        assert "/readyz: 503: " in why[-1], why
    finally:
        scale_controller(1)
    kube.kubectl("-n", kube.NS, "rollout", "status", "deploy/granary-controller",
                 "--timeout=120s", timeout=150)
    kube.wait_for("worker Ready again", lambda: ready(worker_pod()), timeout=90)
    # Not ready is not dead: the liveness probe never restarted it.
    w = worker_pod()
    assert w["metadata"]["name"] == name
    assert w["status"]["containerStatuses"][0]["restartCount"] == restarts, w["status"]


@pytest.fixture
def reading_pod():
    records, _ = kube.upload_tfrecords(PREFIX, shards=2, shard_size="4MiB")
    kube.apply(kube.credentials_secret("granary-s3-credentials"))
    kube.apply(kube.storage_class(SC, PREFIX))
    kube.apply(kube.pvc(CLAIM, SC))
    kube.wait_for("PVC Bound", lambda: kube.pvc_phase(CLAIM) == "Bound", timeout=120)
    read = " ".join(kube.tfrecord_read(threads=2))
    kube.apply(kube.reader_pod(READER, CLAIM, ["sh", "-c", f"{read} && sleep 3600"]))
    kube.wait_for("first read", lambda: "epoch=" in kube.logs(READER), timeout=180)
    assert kube.parse_read(kube.logs(READER))[0]["records"] == records
    yield records
    kube.delete("pod", READER, "default")
    kube.delete("pvc", CLAIM, "default")
    kube.delete("storageclass", SC)


def abnormal_samples(volume):
    """granary_csi_volume_abnormal's value for volume on the node plugin's
    /metrics (the pod's IP, port 9808)."""
    ip = pod_of("node")[0]["status"]["podIP"]
    with urllib.request.urlopen(f"http://{ip}:9808/metrics", timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith("granary_csi_volume_abnormal{") and f'"{volume}"' in line:
            return float(line.split()[-1])
    return None


def test_a_hung_mount_shows_on_the_pod_and_in_metrics(reading_pod):
    vol = kube.get("pvc", CLAIM, "default")["spec"]["volumeName"]
    daemons = [d for d in kube.fuse_pids() if vol in " ".join(d[1])]
    assert len(daemons) == 1, daemons
    pid = daemons[0][0]
    assert abnormal_samples(vol) == 0
    os.kill(pid, signal.SIGSTOP)
    try:
        ev = kube.wait_for(
            "a VolumeConditionAbnormal event on the reader",
            lambda: [e for e in reader_events()
                     if e.startswith("VolumeConditionAbnormal:")],
            timeout=120, interval=1)
        assert "has not answered statfs" in ev[-1], ev
        assert abnormal_samples(vol) == 1
    finally:
        os.kill(pid, signal.SIGCONT)
    kube.wait_for("the volume serves again", lambda: abnormal_samples(vol) == 0, timeout=60,
                  interval=1)
    # The same daemon serves on: the pod reads every record again.
    assert [d for d in kube.fuse_pids() if vol in " ".join(d[1])][0][0] == pid
    out = kube.kubectl("exec", READER, "--", *kube.tfrecord_read(threads=2), timeout=180)
    assert kube.parse_read(out)[0]["records"] == reading_pod, out


def crictl(*args):
    return subprocess.run([os.path.join(kube.ENV["GRANARY_KUBE_BIN"], "crictl"), "--runtime-endpoint",
                           "unix://" + kube.ENV["GRANARY_KUBE_CONTAINERD_SOCK"], *args],
                          capture_output=True, text=True, check=True, timeout=60).stdout


def reader_events():
    """The reader pod's events: of this pod, not of an earlier one of its name."""
    uid = kube.get("pod", READER, "default")["metadata"]["uid"]
    return kube.events("default", "Pod", READER, uid=uid)


def container_of(pod, name):
    ids = crictl("ps", "-q", "--name", name, "--label",
                 f"io.kubernetes.pod.uid={pod['metadata']['uid']}").split()
    assert len(ids) == 1, ids
    return ids[0]


def test_pods_that_lost_their_mount_with_every_holder_get_it_back(reading_pod):
    # Both holders of the volume's FUSE connection stop at once, as on a
    # node that loses power: the node plugin's container and the volume's
    # mount pod's (each alone would end nothing: the other holds the
    # connection). The restarted plugin mounts the volume anew, repairs the
    # host's bind mounts and puts the new mount in place of the ended one
    # inside the running reader container: the same container reads the
    # whole dataset again, and the volume is normal again.
    vol = kube.get("pvc", CLAIM, "default")["spec"]["volumeName"]
    plugin = pod_of("node")[0]
    mount = [p for p in pod_of("mount")
             if p["metadata"].get("annotations", {}).get("granary.io/volume") == vol]
    assert len(mount) == 1, [p["metadata"]["name"] for p in pod_of("mount")]
    restarts = plugin["status"]["containerStatuses"][0]["restartCount"]
    reader = kube.get("pod", READER, "default")
    reader_restarts = reader["status"]["containerStatuses"][0]["restartCount"]
    t0 = time.monotonic()
    crictl("stop", "--timeout", "0", container_of(plugin, "granary-csi"),
           container_of(mount[0], "granary-mount"))

    def read_again():
        r = kube.kubectl_result("exec", READER, "--", *kube.tfrecord_read(threads=2), timeout=180)
        return r.returncode == 0 and r.stdout

    out = kube.wait_for("the same container reading the volume again", read_again, timeout=120,
                        interval=1)
    print(f"read_again_after_s={time.monotonic() - t0:.1f}")
    assert kube.parse_read(out)[0]["records"] == reading_pod, out
    assert kube.get("pod", READER, "default")["status"]["containerStatuses"][0]["restartCount"] \
        == reader_restarts
    assert pod_of("node")[0]["status"]["containerStatuses"][0]["restartCount"] > restarts
    kube.wait_for("the volume normal", lambda: abnormal_samples(vol) == 0, timeout=60, interval=1)


def ctr(*args, check=True):
    return subprocess.run(["ctr", "--address", kube.ENV["GRANARY_KUBE_CONTAINERD_SOCK"],
                           "--namespace", "k8s.io", *args], check=check, capture_output=True,
                          timeout=60)


def mount_pods_of(vol):
    return [p for p in pod_of("mount")
            if p["metadata"].get("annotations", {}).get("granary.io/volume") == vol]


def restart_node_plugin():
    old = pod_of("node")[0]["metadata"]["uid"]
    kube.delete("pod", pod_of("node")[0]["metadata"]["name"], kube.NS)
    kube.wait_for("the node plugin back and Ready",
                  lambda: [p for p in pod_of("node") if p["metadata"]["uid"] != old and ready(p)],
                  timeout=120, interval=1)


def plugin_log_lines(text):
    name = pod_of("node")[0]["metadata"]["name"]
    return [l for l in kube.logs(name, kube.NS, container="granary-csi").splitlines() if text in l]


def test_a_mount_pod_that_cannot_start_leaves_readers_waiting(reading_pod):
    # The mount pods' template names an image the node cannot pull (as a
    # registry that is down would). The upgraded pod does not start: the
    # old one keeps serving, and the plugin says why. Then the old pod is
    # deleted: the plugin holds the connection, reads wait instead of
    # failing, the volume is abnormal and says why; once the image can be
    # had, the new pod takes over and the waiting read completes whole.
    vol = kube.get("pvc", CLAIM, "default")["spec"]["volumeName"]
    cm = kube.get("configmap", "granary-node", kube.NS)
    good = cm["data"]["mount-pod.json"]
    template = json.loads(good)
    image = template["spec"]["containers"][0]["image"]
    # A tag of its own per run: containerd keeps images between clusters.
    missing = image.rsplit(":", 1)[0] + f":missing-{int(time.time())}"
    template["spec"]["containers"][0]["image"] = missing

    def set_template(text):
        kube.kubectl("-n", kube.NS, "patch", "configmap", "granary-node", "--type=merge",
                     "-p", json.dumps({"data": {"mount-pod.json": text}}))

    old_pods = [p["metadata"]["name"] for p in mount_pods_of(vol)]
    assert len(old_pods) == 1, old_pods
    set_template(json.dumps(template))
    try:
        restart_node_plugin()
        kube.wait_for("the plugin saying why the upgraded pod does not run",
                      lambda: [l for l in plugin_log_lines("the upgraded mount pod does not run")
                               if "ErrImagePull" in l or "ImagePullBackOff" in l],
                      timeout=90, interval=1)
        out = kube.kubectl("exec", READER, "--", *kube.tfrecord_read(threads=2), timeout=180)
        assert kube.parse_read(out)[0]["records"] == reading_pod, out

        # The old pod goes: only the plugin holds the connection.
        result = {}

        def read():
            t0 = time.monotonic()
            r = kube.kubectl_result("exec", READER, "--", *kube.tfrecord_read(threads=2),
                                    timeout=600)
            result.update(rc=r.returncode, out=r.stdout + r.stderr, s=time.monotonic() - t0)

        reader = threading.Thread(target=read)
        kube.delete("pod", old_pods[0], kube.NS)
        reader.start()
        kube.wait_for("the volume abnormal", lambda: abnormal_samples(vol) == 1, timeout=60,
                      interval=1)
        why = kube.wait_for("the plugin saying why nothing serves",
                            lambda: [l for l in plugin_log_lines("a mount pod does not run")
                                     if "ImagePull" in l or "ErrImage" in l],
                            timeout=60, interval=1)
        assert "rc" not in result, result  # the read waits
        # The image can be had again (as a registry back up).
        ctr("images", "tag", "--force", image, missing)
        reader.join(timeout=400)
        assert result.get("rc") == 0, result
        assert kube.parse_read(result["out"])[0]["records"] == reading_pod, result
        print(f"read_waited_s={result['s']:.1f}")
        kube.wait_for("the volume normal", lambda: abnormal_samples(vol) == 0, timeout=60,
                      interval=1)
    finally:
        set_template(good)
    # Back to the chart's template: the next upgrade replaces the pod.
    # The stand-in tag goes once no pod uses it.
    restart_node_plugin()
    kube.wait_for("a mount pod of the chart's image serving",
                  lambda: [p for p in mount_pods_of(vol)
                           if p["spec"]["containers"][0]["image"] == image and ready(p)]
                  and len(mount_pods_of(vol)) == 1, timeout=120, interval=1)
    ctr("images", "rm", missing, check=False)


def test_a_mount_pod_that_ended_for_good_is_made_again(reading_pod):
    # A graceful node shutdown leaves a bare pod Failed, its name taken:
    # creating the volume's mount pod again got 409 for ever. The plugin
    # deletes such a pod and makes it anew; reads go on.
    vol = kube.get("pvc", CLAIM, "default")["spec"]["volumeName"]
    old = mount_pods_of(vol)
    assert len(old) == 1, [p["metadata"]["name"] for p in old]
    label = f"io.kubernetes.pod.uid={old[0]['metadata']['uid']}"
    # Its container running (not between two runs), so that there is one
    # to stop below.
    running = kube.wait_for("the mount pod's container running",
                            lambda: crictl("ps", "-q", "--label", label).split(),
                            timeout=60, interval=0.5)
    kube.kubectl("-n", kube.NS, "patch", "pod", old[0]["metadata"]["name"], "--subresource=status",
                 "--type=merge", "-p", json.dumps({"status": {
                     "phase": "Failed", "reason": "Terminated",
                     "message": "Pod was terminated in response to imminent node shutdown."}}))
    # Its container stopped, as the shutdown did: the kubelet starts no
    # container of a Failed pod again.
    for cid in set(running) | set(crictl("ps", "-q", "--label", label).split()):
        crictl("stop", "--timeout", "0", cid)
    kube.wait_for("a new mount pod of the volume serving",
                  lambda: [p for p in mount_pods_of(vol)
                           if p["metadata"]["uid"] != old[0]["metadata"]["uid"] and ready(p)],
                  timeout=120, interval=1)
    out = kube.kubectl("exec", READER, "--", *kube.tfrecord_read(threads=2), timeout=180)
    assert kube.parse_read(out)[0]["records"] == reading_pod, out


def test_an_unstage_whose_mount_pod_cannot_be_deleted_waits_for_it(reading_pod):
    # The API refuses the node plugin the deletion of mount pods (its Role
    # without "delete", as an API that is away would): NodeUnstageVolume
    # fails and the kubelet retries it, the volume stays staged and its
    # mount pod keeps serving; once the pod can be deleted, the retry
    # unstages it and nothing is left.
    vol = kube.get("pvc", CLAIM, "default")["spec"]["volumeName"]
    assert len(mount_pods_of(vol)) == 1
    role = kube.get("role", "granary-node", kube.NS)
    rules = json.loads(json.dumps(role["rules"]))
    rules[0]["verbs"] = [v for v in rules[0]["verbs"] if v != "delete"]

    def set_rules(r):
        kube.kubectl("-n", kube.NS, "patch", "role", "granary-node", "--type=merge",
                     "-p", json.dumps({"rules": r}))

    # The kubelet's staging path is named by the volume handle's SHA-256.
    handle = kube.get("pv", vol)["spec"]["csi"]["volumeHandle"]
    digest = hashlib.sha256(handle.encode()).hexdigest()

    def staged():
        return [m for m in kube.host_mounts() if m.endswith(f"/{digest}/globalmount")]

    set_rules(rules)
    try:
        kube.delete("pod", READER, "default")
        kube.wait_for("the plugin refusing the unstage",
                      lambda: [l for l in plugin_log_lines("cannot unstage the volume yet")
                               if vol in l and "403" in l], timeout=60, interval=1)
        assert staged(), "the volume was unmounted while its mount pod could not be deleted"
        assert len(mount_pods_of(vol)) == 1
    finally:
        set_rules(role["rules"])
    kube.wait_for("the volume unstaged once its mount pod can go",
                  lambda: not staged() and not mount_pods_of(vol), timeout=120, interval=1)
