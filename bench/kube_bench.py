"""Figures of Granary in the local Kubernetes cluster (run by bench/kube.sh,
inside the cluster's network namespace, with the fixture of e2e/kube up):

  pvc_bound_s          PVC created -> Bound (csi-provisioner -> CreateVolume -> meta lists the prefix)
  pod_running_first_s  pod created -> Running, first pod of the dataset on the node (NodeStage + Publish)
  pod_running_second_s the same for a second pod (Publish only: the FUSE daemon is shared)
  epoch MB/s           granary-tfrecord read in a pod, two epochs, through the PVC and from
                       the node's local disk (hostPath) over the same files, page cache dropped
                       first: cold (PVC: from S3 through the node's worker), warm (the second
                       epoch in the same pod, as a training job reads), and for the PVC
                       restaged (a new pod after the volume was unstaged: a new granary-fuse,
                       the blocks in the node's cache)

Prints one `name=value` line per figure and the ratios against local disk.
"""
import argparse
import shutil
import subprocess
import time

import kube

PREFIX = "bench"
SC = "granary-bench"
CLAIM = "bench"
LOCAL = "/var/lib/granary-kube/bench-local"


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def pod_json(name, volume, command):
    import json
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "reader", "image": kube.IMAGE, "command": command,
                                 "volumeMounts": [{"name": "data", "mountPath": "/data",
                                                   "readOnly": True}]}],
                 "volumes": [dict(name="data", **volume)]}})


def time_to_running(name, volume, command):
    t0 = time.monotonic()
    kube.apply(pod_json(name, volume, command))
    kube.wait_for(f"{name} Running", lambda: kube.pod_phase(name) in ("Running", "Succeeded"),
                  timeout=180, interval=0.05)
    return time.monotonic() - t0


def epochs(name, volume, threads, n):
    """n epochs in a fresh pod; returns MB/s of each as granary-tfrecord measured it."""
    kube.apply(pod_json(name, volume, kube.tfrecord_read(threads=threads, epochs=n)))
    kube.wait_for(f"{name} done", lambda: kube.pod_phase(name) in ("Succeeded", "Failed"), timeout=900)
    out = kube.logs(name)
    assert kube.pod_phase(name) == "Succeeded", out
    kube.delete("pod", name, "default")
    return [e["mb_per_s"] for e in kube.parse_read(out)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--shard-mib", type=int, default=64)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()

    shutil.rmtree(LOCAL, ignore_errors=True)
    records, size = kube.upload_tfrecords(PREFIX, shards=args.shards,
                                          shard_size=f"{args.shard_mib}MiB", keep=LOCAL)
    print(f"dataset: {args.shards} shards x {args.shard_mib} MiB, {records} records, {size} bytes")

    kube.apply(kube.credentials_secret("granary-s3-credentials"))
    kube.apply(kube.storage_class(SC, PREFIX))
    t0 = time.monotonic()
    kube.apply(kube.pvc(CLAIM, SC))
    kube.wait_for("PVC Bound", lambda: kube.pvc_phase(CLAIM) == "Bound", timeout=300, interval=0.05)
    print(f"pvc_bound_s={time.monotonic() - t0:.2f}")

    pvc = {"persistentVolumeClaim": {"claimName": CLAIM, "readOnly": True}}
    local = {"hostPath": {"path": LOCAL, "type": "Directory"}}
    sleep = ["sleep", "3600"]
    print(f"pod_running_first_s={time_to_running('bench-first', pvc, sleep):.2f}")
    print(f"pod_running_second_s={time_to_running('bench-second', pvc, sleep):.2f}")
    print(f"pod_running_local_s={time_to_running('bench-local', local, sleep):.2f}")
    for n in ("bench-first", "bench-second", "bench-local"):
        kube.delete("pod", n, "default")

    res = {}
    drop_caches()
    res["local_cold"], res["local_warm"] = epochs("epoch-local", local, args.threads, 2)
    drop_caches()
    res["pvc_cold"], res["pvc_warm"] = epochs("epoch-pvc", pvc, args.threads, 2)
    # The pod is gone, so is the volume's granary-fuse: a new pod stages it again.
    kube.wait_for("volume unstaged", lambda: not kube.fuse_daemons(), timeout=60)
    res["pvc_restaged"], = epochs("epoch-pvc-restaged", pvc, args.threads, 1)
    for k, v in res.items():
        print(f"epoch_{k}_mb_per_s={v:.0f}")
    print(f"ratio_cold_pvc_to_local={res['pvc_cold'] / res['local_cold']:.2f}")
    print(f"ratio_warm_pvc_to_local={res['pvc_warm'] / res['local_warm']:.2f}")
    print(f"ratio_restaged_pvc_to_local_cold={res['pvc_restaged'] / res['local_cold']:.2f}")

    kube.delete("pvc", CLAIM, "default")
    kube.delete("storageclass", SC)
    shutil.rmtree(LOCAL, ignore_errors=True)


if __name__ == "__main__":
    main()
