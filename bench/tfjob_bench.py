"""The TFJob benchmark, in the local cluster (run by bench/tfjob.sh inside
the cluster's network namespace, with the fixture of e2e/kube up and the
image granary.local/granary-tf imported).

Kubeflow TFJobs of 1, 2 and 4 workers run bench/tf/train.py, a tf.data
pipeline with an emulated training step (a sleep of --compute-ms per batch),
over the same images three ways:

  synthetic  batches of random tensors made in memory: no I/O, no parsing
  granary    the TFRecord shards on a Granary PVC (a new claim for each
             job, so that the node's block cache starts empty)
  local      the same files on the node's disk (hostPath)

Each worker reads its share of the shards (file i goes to worker i % N)
for two epochs in the same pod: epoch 1 cold (page cache dropped, Granary's
cache empty), epoch 2 warm. A job's figure is the sum of its workers'
images/s. Prints `name=value` lines, then a table with the ratio of each
figure to synthetic at the same worker count and epoch.

While a job that reads files runs, the host samples every second the bytes
the volume's granary-fuse replied (wchar of /proc/PID/io) and the page
cache of each worker pod's memory cgroup (where a FUSE file's pages are
charged: to the reader that faulted them in), and prints for each epoch
how many bytes the daemon served and the pods' largest page cache against
their limit: a warm epoch served by the daemon rather than by the page
cache shows there.
"""
import argparse
import json
import os
import subprocess
import threading
import time

import kube

PREFIX = "tfbench"
SC = "granary-tfbench"
LOCAL = "/var/lib/granary-kube/tfbench-local"
MODES = ("synthetic", "granary", "local")


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def granary_proc_pids(names):
    """PIDs of the cluster's processes (its cgroups, /granary-kube) whose
    command name is in names."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                if "/granary-kube/" not in f.read():
                    continue
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() in names:
                    out.append(pid)
        except OSError:
            continue
    return out


def cpu_seconds():
    """CPU seconds used so far by the cluster's granary-fuse and
    granary-worker processes (the ones running now; other Granary processes
    on the machine are not counted), by name."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in granary_proc_pids(("granary-fuse", "granary-worker")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        name = st[st.index("(") + 1:st.rindex(")")]
        fields = st[st.rindex(")") + 2:].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def fuse_replied():
    """Bytes the cluster's granary-fuse processes have written so far (their
    replies to the kernel: what the daemon served)."""
    total = 0
    for pid in granary_proc_pids(("granary-fuse",)):
        try:
            with open(f"/proc/{pid}/io") as f:
                total += int(next(l for l in f if l.startswith("wchar:")).split()[1])
        except (OSError, StopIteration, ValueError):
            continue
    return total


def pod_memory():
    """{cgroup path: (page cache bytes, limit bytes, limit hits)} of the
    memory cgroups of the processes running train.py (the workers), for
    cgroup v1 and v2 alike."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"train.py" not in f.read():
                    continue
            with open(f"/proc/{pid}/cgroup") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        v1 = [l.split(":", 2)[2] for l in lines if l.split(":", 2)[1] == "memory"]
        if v1:
            d = "/sys/fs/cgroup/memory" + v1[0]
            files = ("memory.stat", "memory.limit_in_bytes", "memory.failcnt")
            cache_key = "cache"
        else:
            d = "/sys/fs/cgroup" + lines[0].split(":", 2)[2]
            files = ("memory.stat", "memory.max", "memory.events")
            cache_key = "file"
        try:
            with open(os.path.join(d, files[0])) as f:
                stat = dict(l.split() for l in f if len(l.split()) == 2)
            with open(os.path.join(d, files[1])) as f:
                limit = f.read().strip()
            with open(os.path.join(d, files[2])) as f:
                hits = f.read()
        except OSError:
            continue
        if not v1:
            hits = dict(l.split() for l in hits.splitlines()).get("max", "0")
        out[d] = (int(stat.get(cache_key, 0)), 0 if limit == "max" else int(limit), int(hits))
    return out


class Sampler(threading.Thread):
    """Samples fuse_replied() and pod_memory() every second until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.replied = []  # (time, bytes)
        self.pods = {}     # cgroup -> [max page cache, limit, limit hits]

    def run(self):
        while not self.stop.is_set():
            self.replied.append((time.time(), fuse_replied()))
            for d, (cache, limit, hits) in pod_memory().items():
                m = self.pods.setdefault(d, [0, limit, 0])
                m[0], m[2] = max(m[0], cache), max(m[2], hits)
            self.stop.wait(1.0)

    def replied_between(self, t0, t1):
        """Bytes replied from the last sample at or before t0 to the first
        at or after t1 (granary-fuse exits with the job: counters of a
        process gone are not subtracted)."""
        before = [b for t, b in self.replied if t <= t0] or [0]
        after = [b for t, b in self.replied if t >= t1] or [self.replied[-1][1]]
        return max(0, after[0] - before[-1])


def gen_dataset(image, shards, records):
    """The shards, written by train.py gen in a pod onto the node's disk;
    skipped when the same set is there."""
    data, stamp = os.path.join(LOCAL, "data"), os.path.join(LOCAL, f"done-{shards}x{records}")
    if not os.path.exists(stamp):
        subprocess.run(["rm", "-rf", LOCAL], check=True)
        os.makedirs(data)
        name = "tfbench-gen"
        kube.apply(json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "gen", "image": image, "imagePullPolicy": "Never",
                                     "command": ["python", "train.py", "gen", "/out",
                                                 "--shards", str(shards), "--records", str(records)],
                                     "volumeMounts": [{"name": "out", "mountPath": "/out"}]}],
                     "volumes": [{"name": "out", "hostPath": {"path": data, "type": "Directory"}}]}}))
        t0 = time.monotonic()
        kube.wait_for("dataset written", lambda: kube.pod_phase(name) in ("Succeeded", "Failed"),
                      timeout=900, interval=1)
        out = kube.logs(name)
        assert kube.pod_phase(name) == "Succeeded", out
        kube.delete("pod", name, "default")
        print(f"dataset_gen_s={time.monotonic() - t0:.1f}", flush=True)
        open(stamp, "w").close()
    t0 = time.monotonic()
    kube.store("sync", data, f"s3://{kube.BUCKET}/{PREFIX}/")
    print(f"dataset_upload_s={time.monotonic() - t0:.1f}", flush=True)
    size = sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data))
    return data, size


def tfjob(name, image, workers, volume, args):
    spec = {"containers": [{
        # The training operator looks for the container named tensorflow.
        "name": "tensorflow", "image": image, "imagePullPolicy": "Never",
        "command": ["python", "train.py", "run", *args],
        # Small requests: four workers fit a 2-CPU node beside Granary.
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"},
                      "limits": {"memory": "3Gi"}},
    }], "terminationGracePeriodSeconds": 1}
    if volume:
        spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data", "readOnly": True}]
        spec["volumes"] = [dict(name="data", **volume)]
    return json.dumps({
        "apiVersion": "kubeflow.org/v1", "kind": "TFJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"runPolicy": {"cleanPodPolicy": "None"},
                 "tfReplicaSpecs": {"Worker": {"replicas": workers, "restartPolicy": "Never",
                                               "template": {"spec": spec}}}}})


def parse(text, spans=None):
    """train.py's epoch lines -> {epoch: images_per_s}; spans (a dict), when
    given, gets each epoch's (start, end) wall-clock times, widened over
    calls."""
    out = {}
    for line in text.splitlines():
        if line.startswith("tfbench ") and " epoch=" in line:
            kv = dict(w.split("=", 1) for w in line.split()[1:])
            e = int(kv["epoch"])
            out[e] = float(kv["images_per_s"])
            if spans is not None and "start" in kv:
                s0, s1 = spans.get(e, (float(kv["start"]), float(kv["end"])))
                spans[e] = (min(s0, float(kv["start"])), max(s1, float(kv["end"])))
    return out


def run_job(name, image, workers, volume, args):
    """Runs the TFJob to the end; returns ({epoch: images/s summed over the
    workers}, seconds from creation to the last worker's exit)."""
    pods = [f"{name}-worker-{i}" for i in range(workers)]
    cpu0 = cpu_seconds()
    t0 = time.monotonic()
    sampler = Sampler()
    sampler.start()
    kube.apply(tfjob(name, image, workers, volume, args))

    def done():
        phases = []
        for p in pods:
            r = kube.kubectl_result("get", "pod", p, "-n", "default", "-o", "jsonpath={.status.phase}")
            phases.append(r.stdout if r.returncode == 0 else "")
        if "Failed" in phases:
            raise AssertionError(f"{name}: a worker failed: {phases}\n" +
                                 "\n".join(kube.logs(p) for p in pods))
        return all(ph == "Succeeded" for ph in phases)
    try:
        kube.wait_for(f"TFJob {name} done", done, timeout=900, interval=1)
    finally:
        sampler.stop.set()
        sampler.join()
    wall = time.monotonic() - t0
    # The volume's granary-fuse has exited by now (the pods ended, the
    # volume is unstaged): only the node's worker is counted.
    cpu = cpu_seconds()
    print("# cpu_s during the job: " + " ".join(
        f"{k}={v - cpu0.get(k, 0.0):.1f}" for k, v in sorted(cpu.items())), flush=True)
    total, spans = {}, {}
    for p in pods:
        per = parse(kube.logs(p), spans)
        for e, v in per.items():
            total[e] = total.get(e, 0.0) + v
        print(f"# {p}: " + " ".join(f"epoch{e}={v:.1f}" for e, v in sorted(per.items())), flush=True)
    if volume:
        # Who served each epoch: granary-fuse's replies (0 for a hostPath)
        # and the page cache the workers' cgroups held.
        for e, (s0, s1) in sorted(spans.items()):
            print(f"# {name} epoch{e}: granary-fuse replied "
                  f"{sampler.replied_between(s0, s1) / 1e9:.2f} GB in {s1 - s0:.0f} s", flush=True)
        for d, (cache, limit, hits) in sorted(sampler.pods.items()):
            print(f"# {name} pod cgroup ...{d[-40:]}: page cache at most {cache / 2**20:.0f} MiB, "
                  f"limit {limit / 2**20:.0f} MiB, limit reached {hits} times", flush=True)
    kube.delete("tfjob", name, "default")
    for p in pods:
        kube.delete("pod", p, "default")
    return total, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True, help="the granary-tf image (scripts/kube-images.sh tf)")
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--records", type=int, default=1152, help="records per shard (108 KiB images)")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--compute-ms", type=float, default=100)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    modes = args.modes.split(",")

    data, size = gen_dataset(args.image, args.shards, args.records)
    images = args.shards * args.records
    print(f"dataset: {args.shards} shards x {args.records} records (192x192x3 uint8), "
          f"{images} images, {size} bytes", flush=True)
    kube.apply(kube.credentials_secret("granary-s3-credentials"))
    kube.apply(kube.storage_class(SC, PREFIX))

    common = ["--batch", str(args.batch), "--compute_ms", str(args.compute_ms),
              "--epochs", "2", "--warmup", str(args.warmup)]
    res = {}
    for n in counts:
        for mode in modes:
            name = f"tfbench-{mode}-{n}"
            claim = None
            if mode == "synthetic":
                volume, extra = None, ["--synthetic", str(images)]
            elif mode == "granary":
                # A new claim is a new dataset: the node's cache has none of its blocks.
                claim = name
                kube.apply(kube.pvc(claim, SC))
                kube.wait_for("PVC Bound", lambda: kube.pvc_phase(claim) == "Bound", timeout=300)
                volume = {"persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
                extra = ["--data", "/data"]
            else:
                volume = {"hostPath": {"path": data, "type": "Directory"}}
                extra = ["--data", "/data"]
            drop_caches()
            try:
                per_epoch, wall = run_job(name, args.image, n, volume, extra + common)
            except AssertionError as e:
                # One failed job leaves a gap in the table, not the others unrun.
                print(f"# {name} failed: {e}", flush=True)
                kube.delete("tfjob", name, "default")
                per_epoch, wall = {}, 0.0
            res[(mode, n)] = per_epoch
            for e, v in sorted(per_epoch.items()):
                print(f"{mode}_workers{n}_epoch{e}_images_per_s={v:.1f}", flush=True)
            print(f"{mode}_workers{n}_job_s={wall:.1f}", flush=True)
            # The machine's load: other work on the same CPUs moves every figure.
            with open("/proc/loadavg") as f:
                print(f"# load after {name}: {' '.join(f.read().split()[:3])}", flush=True)
            if claim:
                kube.delete("pvc", claim, "default", timeout="300s")

    print()
    print(f"batch {args.batch}, {args.compute_ms:g} ms emulated compute a batch: at most "
          f"{args.batch / args.compute_ms * 1000:.0f} images/s a worker")
    print("| workers | mode | epoch 1 (cold) images/s | vs synthetic | epoch 2 (warm) images/s | vs synthetic |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in counts:
        syn = res.get(("synthetic", n), {})
        for mode in modes:
            r = res[(mode, n)]
            cells = []
            for e in (1, 2):
                v = r.get(e)
                cells.append(f"{v:,.0f}" if v else "failed" if not r else "-")
                cells.append(f"{v / syn[e]:.2f}" if v and syn.get(e) else "-")
            print(f"| {n} | {mode} | " + " | ".join(cells) + " |")
    kube.delete("storageclass", SC)


if __name__ == "__main__":
    main()
