"""Dataset mounts through restarts, upgrades and crashes of every Granary
part, measured while pods read continuously.

Reader pods (the Granary image running granary-readcheck: buffered and
O_DIRECT readers, several pods on one PVC) read a dataset whose every byte is
a function of its file name and offset, so each byte read is checked. Each
scenario starts from healthy readers, opens a new counting window in every
reader (SIGUSR1 to the reader process, found on the node through /proc),
disrupts one part, waits for it to be back, reads on, and then asserts that
no read failed, no byte was wrong, no ENOTCONN was seen, and that the
longest stall (the longest single read, or the longest gap without a
completed read) stayed under the target: 2 s for a killed FUSE daemon,
10 s for anything that restarts a pod. The figures of every scenario are
printed as a table at the end of the module (pytest -s shows it).

The readers' figures are read from the node: /proc/PID/root/tmp/readcheck.json
of each reader process, so they stay readable while kubectl exec is not
(the kubelet restarted).
"""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import kube

PREFIX = "survive"
SC = "granary-e2e-survive"
CLAIM = "survive-data"
FILES = 20
FILE_SIZE = "3MiB"
OUT = "/tmp/readcheck.json"
TOOLS = os.environ.get("GRANARY_TOOLS", os.path.expanduser("~/.cache/granary-tools"))
STATE_DIR = "/var/lib/granary-kube/granary/csi"   # node.stateDir of e2e/kube/cluster.sh
KUBE_RUN = "/run/granary-kube"                     # scripts/kube.sh's pid files
DAEMON_KILL_TARGET_S = 2.0
ROLLOUT_TARGET_S = 10.0
READ_ON_S = 3

# name -> granary-readcheck arguments after --dir /data
READERS = {
    "survive-buffered": ["--read_size", "1MiB", "--rate", "12MiB"],
    "survive-direct": ["--direct", "--read_size", "1MiB", "--rate", "12MiB"],
    "survive-direct-small": ["--direct", "--read_size", "128KiB", "--threads", "2", "--rate", "6MiB"],
}

RESULTS = []   # one dict per scenario, for the table at the end


# ---- the cluster's parts -----------------------------------------------------

def pods_of(component):
    return [p for p in kube.get("pods", namespace=kube.NS)["items"]
            if p["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
            and not p["metadata"].get("deletionTimestamp")]


def ready(p):
    conds = {c["type"]: c["status"] for c in p["status"].get("conditions", [])}
    return conds.get("Ready") == "True"


def all_granary_ready():
    pods = kube.get("pods", namespace=kube.NS)["items"]
    return pods and all(ready(p) and not p["metadata"].get("deletionTimestamp") for p in pods)


def rollout_status(kind_name, timeout=240):
    kube.kubectl("-n", kube.NS, "rollout", "status", kind_name, f"--timeout={timeout}s",
                 timeout=timeout + 30)


def crictl(*args, check=True):
    return subprocess.run([os.path.join(kube.ENV["GRANARY_KUBE_BIN"], "crictl"), "--runtime-endpoint",
                           "unix://" + kube.ENV["GRANARY_KUBE_CONTAINERD_SOCK"], *args],
                          capture_output=True, text=True, check=check, timeout=120).stdout


def ctr(*args):
    return subprocess.run(["ctr", "--address", kube.ENV["GRANARY_KUBE_CONTAINERD_SOCK"],
                           "--namespace", "k8s.io", *args],
                          capture_output=True, text=True, check=True, timeout=120).stdout


def helm(*args):
    return subprocess.run([os.path.join(TOOLS, "bin", "helm"), "--kubeconfig", kube.ENV["KUBECONFIG"],
                           *args], capture_output=True, text=True, check=True, timeout=600).stdout


def kube_sh(*args):
    """scripts/kube.sh: starts what is not running (the kubelet after a kill)."""
    return subprocess.run([os.path.join(kube.SRC, "scripts", "kube.sh"), *args],
                          capture_output=True, text=True, check=True, timeout=300)


def kubelet_pid():
    with open(os.path.join(KUBE_RUN, "kubelet.pid")) as f:
        return int(f.read().strip())


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].split()[0] != "Z"
    except OSError:
        return False


def volume_name():
    return kube.get("pvc", CLAIM, "default")["spec"]["volumeName"]


def in_cluster(pid):
    """The process runs in the test cluster (its cgroups are under the
    kubelet's cgroupRoot): other granary processes on this machine are not
    the node's."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return "/granary-kube/" in f.read()
    except OSError:
        return False


def cluster_fuse_pids():
    return [(pid, argv) for pid, argv in kube.fuse_pids() if in_cluster(pid)]


def cluster_mounts():
    """Granary's FUSE mounts on the node (under the kubelet's directory)."""
    return [m for m in kube.host_mounts() if m.startswith(kube.KUBELET_DIR + "/")]


def daemons_of(vol):
    return [pid for pid, argv in cluster_fuse_pids() if any(vol in a for a in argv)]


def cgroup_path(pid, controller):
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return path
    return None


# ---- the readers -------------------------------------------------------------

def reader_manifest(name, args):
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "survive-reader"}},
        "spec": {
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 1,
            "nodeName": kube.NODE,
            "containers": [{
                "name": "reader", "image": kube.IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["granary-readcheck", "--dir", "/data", "--out", OUT, *args],
                "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
            }],
            "volumes": [{"name": "data",
                         "persistentVolumeClaim": {"claimName": CLAIM, "readOnly": True}}],
        },
    })


def reader_pid(pod):
    """The host pid of the granary-readcheck process of the pod (by its pod
    UID in the process's cgroup), or None."""
    uid = pod["metadata"]["uid"]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if os.path.basename(argv[0].decode(errors="replace")) != "granary-readcheck":
                continue
            with open(f"/proc/{pid}/cgroup") as f:
                if uid in f.read():
                    return int(pid)
        except OSError:
            continue
    return None


def figures(pid):
    """The reader's last JSON figures, from its container's file system."""
    with open(f"/proc/{pid}/root{OUT}") as f:
        return json.loads(f.read())


class Reader:
    def __init__(self, name):
        self.name = name
        self.pod = kube.get("pod", name, "default")
        self.pid = reader_pid(self.pod)

    def restarts(self):
        st = self.pod["status"].get("containerStatuses") or [{}]
        return st[0].get("restartCount", 0)


def readers():
    return [Reader(n) for n in READERS]


def readers_healthy():
    """Every reader's process runs, and its last window read recently and
    without errors since the window began."""
    rs = readers()
    for r in rs:
        if not r.pid or kube.pod_phase(r.name) != "Running":
            return False
        try:
            f = figures(r.pid)
        except (OSError, ValueError):
            return False
        if f["files"] != FILES or f["gap_now_ms"] > 1500 or f["total_reads"] == 0:
            return False
    return rs


def new_window(rs):
    """SIGUSR1 to every reader; returns once each has written its new window."""
    before = {r.name: figures(r.pid)["window"] for r in rs}
    for r in rs:
        os.kill(r.pid, signal.SIGUSR1)
    kube.wait_for("new windows", lambda: all(figures(r.pid)["window"] > before[r.name] for r in rs),
                  timeout=10, interval=0.1)


def start_readers():
    for name, args in READERS.items():
        kube.apply(reader_manifest(name, args))
    for name in READERS:
        kube.wait_for(f"{name} Running", lambda n=name: kube.pod_phase(n) == "Running", timeout=90)


def delete_readers():
    """Deletes the readers; when their NodeUnpublishVolume does not finish
    (a wedged mount), says so and removes the pod objects by force, so that
    the next scenario can start."""
    p = kube.kubectl_result("delete", "pod", "-l", "app=survive-reader", "--ignore-not-found",
                            "--wait=true", "--timeout=60s", timeout=120)
    if p.returncode != 0:
        print(f"\nreaders not deleted in 60 s (NodeUnpublishVolume stuck?): {p.stderr.strip()}; "
              "deleting them by force")
        kube.kubectl("delete", "pod", "-l", "app=survive-reader", "--ignore-not-found",
                     "--grace-period=0", "--force", timeout=120)
        return False
    return True


def healthy_readers():
    """Readers that read without errors: the ones running, or fresh ones when
    an earlier scenario left them broken (each scenario starts clean)."""
    try:
        return kube.wait_for("readers healthy", readers_healthy, timeout=10, interval=0.5)
    except AssertionError:
        pass
    kube.wait_for("Granary pods Ready", all_granary_ready, timeout=180, interval=1)
    # The volume is unstaged once no pod uses it: fresh readers get a fresh
    # NodeStageVolume (which also registers the dataset with meta again).
    delete_readers()
    vol = volume_name()
    kube.wait_for("the volume unstaged", lambda: not daemons_of(vol)
                  and not [m for m in cluster_mounts() if vol in m], timeout=60, interval=0.5)
    start_readers()
    rs = kube.wait_for("fresh readers healthy", readers_healthy, timeout=60, interval=0.5)
    new_window(rs)   # a clean window for the check below
    time.sleep(2)
    check = [figures(r.pid) for r in rs]
    bad = [f for f in check if f["failed_reads"] or f["failed_opens"] or f["wrong_bytes"]]
    assert not bad, f"fresh readers on a healthy cluster fail: {bad}"
    return rs


# ---- a scenario --------------------------------------------------------------

def stall_s(f):
    return max(f["longest_read_ms"], f["longest_gap_ms"]) / 1000.0


def scenario(name, target_s, disrupt, recovered=None, recover_timeout=240, read_on=READ_ON_S):
    """Healthy readers, a new window, disrupt(), wait for recovered(), read on,
    then check every reader's window. Records the figures for the table."""
    rs = healthy_readers()
    new_window(rs)
    time.sleep(1)
    t0 = time.monotonic()
    row = {"scenario": name, "target_s": target_s, "readers": {}, "note": ""}
    RESULTS.append(row)
    try:
        note = disrupt()
        if note:
            row["note"] = note
        if recovered:
            kube.wait_for(f"{name}: recovery", recovered, timeout=recover_timeout, interval=0.5)
        row["recovery_s"] = time.monotonic() - t0
        time.sleep(read_on)
    finally:
        problems = collect(rs, row)
    print(f"\n{name}: " + "; ".join(f"{n}: {fmt(f)}" for n, f in row["readers"].items()))
    assert not problems, f"{name}: " + "; ".join(problems)


def collect(rs, row):
    problems = []
    for r in rs:
        now = Reader(r.name)
        if now.pid != r.pid:
            row["readers"][r.name] = {"gone": True}
            problems.append(f"{r.name}: its reader process is gone (pod {now.pod['metadata']['uid'] != r.pod['metadata']['uid'] and 'replaced' or 'container restarted'}; restarts {r.restarts()} -> {now.restarts()})")
            continue
        try:
            f = figures(r.pid)
        except (OSError, ValueError) as e:
            row["readers"][r.name] = {"gone": True}
            problems.append(f"{r.name}: figures unreadable: {e}")
            continue
        row["readers"][r.name] = f
        failed = f["failed_reads"] + f["failed_opens"]
        if failed or f["enotconn"] or f["wrong_bytes"] or f["short_files"]:
            problems.append(f"{r.name}: failed reads {f['failed_reads']}, failed opens "
                            f"{f['failed_opens']}, ENOTCONN {f['enotconn']}, errors {f['errors']}, "
                            f"wrong bytes {f['wrong_bytes']}, short files {f['short_files']}; "
                            f"last: {f['last_error']}")
        if f["gap_now_ms"] > 2000:
            problems.append(f"{r.name}: no read completed for {f['gap_now_ms']} ms at the end")
        if stall_s(f) > row["target_s"]:
            problems.append(f"{r.name}: longest stall {stall_s(f):.2f} s over the target "
                            f"{row['target_s']:.0f} s")
    row["ok"] = not problems
    return problems


def fmt(f):
    if f.get("gone"):
        return "reader gone"
    return (f"reads={f['reads']} failed={f['failed_reads'] + f['failed_opens']} "
            f"enotconn={f['enotconn']} wrong={f['wrong_bytes']} stall={stall_s(f):.2f}s")


# ---- the module's dataset, PVC and readers -------------------------------------

@pytest.fixture(scope="module", autouse=True)
def dataset():
    import tempfile
    with tempfile.TemporaryDirectory(prefix="granary-survive-") as tmp:
        subprocess.run([os.path.join(kube.BIN, "granary-readcheck"), "--generate", tmp,
                        "--files", str(FILES), "--size", FILE_SIZE],
                       capture_output=True, text=True, check=True)
        kube.store("sync", tmp, f"s3://{kube.BUCKET}/{PREFIX}/")
    kube.apply(kube.credentials_secret("granary-s3-credentials"))
    kube.apply(kube.storage_class(SC, PREFIX))
    kube.apply(kube.pvc(CLAIM, SC))
    kube.wait_for("PVC Bound", lambda: kube.pvc_phase(CLAIM) == "Bound", timeout=120)
    start_readers()
    kube.wait_for("readers healthy", readers_healthy, timeout=120, interval=0.5)
    yield
    delete_readers()
    kube.delete("pvc", CLAIM, "default")
    kube.delete("storageclass", SC)
    print_table()


def print_table():
    print("\n\nscenario                         target  result  recovery  "
          + "  ".join(f"{n:>34}" for n in READERS))
    for row in RESULTS:
        cells = []
        for n in READERS:
            f = row["readers"].get(n)
            if not f:
                cells.append(f"{'-':>34}")
            elif f.get("gone"):
                cells.append(f"{'reader gone':>34}")
            else:
                cells.append(f"{'stall %.2fs fail %d enotconn %d wrong %d' % (stall_s(f), f['failed_reads'] + f['failed_opens'], f['enotconn'], f['wrong_bytes']):>34}")
        rec = f"{row['recovery_s']:.1f}s" if "recovery_s" in row else "-"
        print(f"{row['scenario']:<32} {row['target_s']:>5.0f}s  {'PASS' if row.get('ok') else 'FAIL':<6}  "
              f"{rec:>8}  " + "  ".join(cells) + (f"  ({row['note']})" if row["note"] else ""))


# ---- scenarios -----------------------------------------------------------------

def test_fuse_daemon_sigkill():
    vol = volume_name()
    state = {}

    def disrupt():
        pids = daemons_of(vol)
        assert len(pids) == 1, pids
        state["old"] = pids[0]
        os.kill(pids[0], signal.SIGKILL)

    def replaced():
        pids = daemons_of(vol)
        return pids and state["old"] not in pids
    scenario("granary-fuse SIGKILL", DAEMON_KILL_TARGET_S, disrupt, replaced, recover_timeout=60)


def test_fuse_daemon_oom_killed():
    """The kernel OOM-kills granary-fuse at the memory limit of the cgroup
    that holds it: the limit is lowered to just above the cgroup's usage and a
    helper process in that cgroup asks for more; granary-fuse, with
    oom_score_adj 1000, is the kernel's victim."""
    vol = volume_name()
    state = {}

    def disrupt():
        pids = daemons_of(vol)
        assert len(pids) == 1, pids
        pid = state["old"] = pids[0]
        rel = cgroup_path(pid, "memory")
        v2 = rel is None
        if v2:
            rel = cgroup_path(pid, "")
            base = "/sys/fs/cgroup/unified" if os.path.exists("/sys/fs/cgroup/unified" + rel) else "/sys/fs/cgroup"
            cg = base + rel
            limit_file, usage_file = "memory.max", "memory.current"
        else:
            cg = "/sys/fs/cgroup/memory" + rel
            limit_file, usage_file = "memory.limit_in_bytes", "memory.usage_in_bytes"
        with open(os.path.join(cg, limit_file)) as f:
            old_limit = f.read().strip()
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write("1000")
        ooms_before = oom_kills(cg, v2)
        with open(os.path.join(cg, usage_file)) as f:
            usage = int(f.read())
        limit = usage + (8 << 20)
        # The helper joins the cgroup, then takes memory 1 MiB at a time
        # until granary-fuse is gone (or it is killed itself).
        helper = subprocess.Popen([sys.executable, "-c", f"""
import os, time
open({os.path.join(cg, 'cgroup.procs')!r}, 'w').write(str(os.getpid()))
hold = []
for i in range(512):
    try:
        os.kill({pid}, 0)
    except ProcessLookupError:
        break
    hold.append(b'\\x01' * (1 << 20))
    time.sleep(0.005)
"""])
        try:
            with open(os.path.join(cg, limit_file), "w") as f:
                f.write(str(limit))
            helper.wait(timeout=60)
            kube.wait_for("granary-fuse OOM-killed", lambda: not alive(pid), timeout=30)
        finally:
            if helper.poll() is None:
                helper.kill()
                helper.wait()
            with open(os.path.join(cg, limit_file), "w") as f:
                # The limit as it was (cgroup v1 refuses one above the
                # memory+swap limit the container also has).
                f.write(old_limit)
        ooms = oom_kills(cg, v2) - ooms_before
        assert ooms >= 1, f"no OOM kill counted in {cg} (granary-fuse died otherwise)"
        return f"cgroup {rel}: limit {limit >> 20} MiB, usage {usage >> 20} MiB, oom kills {ooms}"

    def replaced():
        pids = daemons_of(vol)
        return pids and state["old"] not in pids
    scenario("granary-fuse OOM-killed", DAEMON_KILL_TARGET_S, disrupt, replaced, recover_timeout=60)


def oom_kills(cg, v2):
    name = "memory.events" if v2 else "memory.oom_control"
    with open(os.path.join(cg, name)) as f:
        for line in f:
            k, v = line.split()
            if k == "oom_kill":
                return int(v)
    return 0


def test_worker_pod_deleted():
    def disrupt():
        old = pods_of("worker")[0]["metadata"]["name"]
        kube.delete("pod", old, kube.NS, wait=False)
        kube.wait_for("a new worker pod", lambda: [p for p in pods_of("worker")
                                                   if p["metadata"]["name"] != old],
                      timeout=120, interval=0.5)
    scenario("worker pod deleted", ROLLOUT_TARGET_S, disrupt, all_granary_ready)


def node_ready():
    n = kube.get("node", kube.NODE)
    return any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])


def restart_kubelet(sig=signal.SIGTERM):
    pid = kubelet_pid()
    os.kill(pid, sig)
    kube.wait_for("the kubelet to exit", lambda: not alive(pid), timeout=60)
    kube_sh("up")
    kube.wait_for("the kubelet back", lambda: alive(kubelet_pid()) and kubelet_pid() != pid,
                  timeout=60)


def test_worker_rollout_restart():
    def disrupt():
        kube.kubectl("-n", kube.NS, "rollout", "restart", "ds/granary-worker")
        rollout_status("ds/granary-worker")
    scenario("worker rollout restart", ROLLOUT_TARGET_S, disrupt, all_granary_ready)


def test_kubelet_restarted():
    def disrupt():
        restart_kubelet()
        kube.wait_for("node Ready", node_ready, timeout=120, interval=1)
    scenario("kubelet restarted", ROLLOUT_TARGET_S, disrupt, all_granary_ready)


# ---- a node reboot, simulated ----------------------------------------------------

def granary_processes():
    """(pid, name) of every Granary daemon on the node."""
    names = {"granary-csi", "granary-fuse", "granary-worker", "granary-meta"}
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv0 = os.path.basename(f.read().split(b"\0")[0].decode(errors="replace"))
        except OSError:
            continue
        if argv0 in names and alive(int(pid)) and in_cluster(int(pid)):
            found.append((int(pid), argv0))
    return found


def dead_mounts(vol):
    """Mount points of the volume on the node that no longer answer."""
    dead = []
    for m in cluster_mounts():
        if vol not in m:
            continue
        try:
            os.stat(m)
        except OSError as e:
            dead.append(f"{m}: {errno.errorcode.get(e.errno, e.errno)}")
    return dead


def test_node_plugin_container_killed_through_crictl():
    state = {}

    def disrupt():
        plugin = pods_of("node")[0]
        state["restarts"] = plugin["status"]["containerStatuses"][0]["restartCount"]
        ids = crictl("ps", "-q", "--name", "granary-csi", "--label",
                     f"io.kubernetes.pod.uid={plugin['metadata']['uid']}").split()
        assert len(ids) == 1, ids
        crictl("stop", "--timeout", "0", ids[0])

    def restarted():
        p = pods_of("node")
        return p and p[0]["status"]["containerStatuses"][0]["restartCount"] > state["restarts"] \
            and ready(p[0])
    scenario("node plugin container killed (crictl)", ROLLOUT_TARGET_S, disrupt, restarted)


def test_node_plugin_pod_deleted():
    # A volume directory that no record names (an unstage the plugin
    # missed): the new plugin removes it, and keeps the staged volume's.
    orphan = os.path.join(STATE_DIR, "node", "pvc-orphan-e2e")
    own = os.path.join(STATE_DIR, "node", volume_name())

    def disrupt():
        old = pods_of("node")[0]["metadata"]["name"]
        os.makedirs(orphan, exist_ok=True)
        with open(os.path.join(orphan, "init"), "w") as f:
            f.write("left over")
        kube.delete("pod", old, kube.NS, wait=False)
        kube.wait_for("a new node plugin pod", lambda: [p for p in pods_of("node")
                                                        if p["metadata"]["name"] != old],
                      timeout=120, interval=0.5)
    scenario("node plugin pod deleted", ROLLOUT_TARGET_S, disrupt, all_granary_ready)
    kube.wait_for("the orphan volume directory removed", lambda: not os.path.exists(orphan),
                  timeout=30, interval=0.5)
    assert os.path.exists(os.path.join(own, "keeper.sock")), os.listdir(own)


def test_a_mount_pod_sees_only_its_own_volume():
    """Each mount pod mounts its volume's directory of the plugin's state
    (its init state, node-stage credentials and keeper socket), not the
    directories of the other volumes staged on the node."""
    kube.wait_for("Granary pods Ready", all_granary_ready, timeout=180, interval=1)
    vol = volume_name()
    kube.apply(kube.pvc("survive-other", SC))
    kube.wait_for("PVC Bound", lambda: kube.pvc_phase("survive-other") == "Bound", timeout=120)
    other = kube.get("pvc", "survive-other", "default")["spec"]["volumeName"]
    kube.apply(kube.reader_pod("survive-other-reader", "survive-other", ["sleep", "600"]))
    try:
        kube.wait_for("the other volume staged",
                      lambda: os.path.exists(os.path.join(STATE_DIR, "node", other, "credentials")),
                      timeout=120, interval=0.5)
        mount_pod = [p["metadata"]["name"] for p in pods_of("mount")
                     if p["metadata"]["annotations"].get("granary.io/volume") == vol]
        assert len(mount_pod) == 1, mount_pod
        seen = kube.kubectl("-n", kube.NS, "exec", mount_pod[0], "--", "sh", "-c",
                            f"ls -A {STATE_DIR}; echo --; ls -A {STATE_DIR}/node; echo --; "
                            f"ls -A {STATE_DIR}/node/{vol}").split("--\n")
        assert seen[0].split() == ["node"], seen
        assert seen[1].split() == [vol], f"the mount pod of {vol} sees {seen[1].split()}"
        assert {"credentials", "init", "keeper.sock"} <= set(seen[2].split()), seen[2]
    finally:
        kube.delete("pod", "survive-other-reader", "default")
        kube.delete("pvc", "survive-other", "default")


def test_node_plugin_rollout_restart():
    def disrupt():
        kube.kubectl("-n", kube.NS, "rollout", "restart", "ds/granary-node")
        rollout_status("ds/granary-node")
    scenario("node plugin rollout restart", ROLLOUT_TARGET_S, disrupt,
             lambda: all_granary_ready())


def test_upgrade_to_a_new_image_tag():
    old_tag = kube.IMAGE.rsplit(":", 1)[1]
    new_tag = f"{old_tag}-upgrade"
    repo = kube.IMAGE.rsplit(":", 1)[0]
    ctr("images", "tag", "--force", kube.IMAGE, f"{repo}:{new_tag}")

    def disrupt():
        helm("upgrade", kube.ENV["GRANARY_KUBE_RELEASE"], os.path.join(kube.SRC, "helm", "granary"),
             "--namespace", kube.NS, "--reuse-values", "--set-string", f"image.tag={new_tag}",
             "--wait", "--timeout", "5m")
        for w in ("ds/granary-node", "ds/granary-worker", "deploy/granary-controller"):
            rollout_status(w)

    def upgraded():
        pods = kube.get("pods", namespace=kube.NS)["items"]
        images = {c["image"] for p in pods for c in p["spec"]["containers"]
                  if c["image"].startswith(repo + ":")}
        return images == {f"{repo}:{new_tag}"} and all_granary_ready()
    scenario("upgrade to a new image tag", ROLLOUT_TARGET_S, disrupt, upgraded)


def test_node_reboot_simulated():
    """Every Granary pod and process on the node killed, its FUSE mounts
    lazily unmounted, the kubelet restarted: the readers' volumes must come
    back by themselves (staged and published again), or Kubernetes must
    restart the readers with an event that says why; no orphaned mount or
    process is left."""
    rs = healthy_readers()
    vol = volume_name()
    before = {r.name: (r.pod["metadata"]["uid"], r.restarts(), r.pid) for r in rs}
    new_window(rs)
    time.sleep(1)
    row = {"scenario": "node reboot (simulated)", "target_s": 60.0, "readers": {}, "note": ""}
    RESULTS.append(row)
    t0 = time.monotonic()

    # The node goes down: the kubelet first (it would restart what dies),
    # then every Granary pod through the runtime, then whatever Granary
    # process is left, then the FUSE mounts.
    pid = kubelet_pid()
    os.kill(pid, signal.SIGKILL)
    kube.wait_for("the kubelet gone", lambda: not alive(pid), timeout=30)
    for sandbox in crictl("pods", "-q", "--namespace", kube.NS).split():
        crictl("stopp", sandbox, check=False)
    for p, _ in granary_processes():
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    kube.wait_for("no Granary process", lambda: not granary_processes(), timeout=30)
    for m in sorted(cluster_mounts(), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
    assert not cluster_mounts(), cluster_mounts()
    # The node comes back.
    kube_sh("up")
    kube.wait_for("node Ready", node_ready, timeout=120, interval=1)
    kube.wait_for("Granary pods Ready", all_granary_ready, timeout=180, interval=1)

    def back():
        """Each reader reads again: the same process after its window's
        errors, or a restarted one."""
        for r in rs:
            now = Reader(r.name)
            if not now.pid:
                return False
            try:
                f = figures(now.pid)
            except (OSError, ValueError):
                return False
            if f["gap_now_ms"] > 1500:
                return False
        return True

    outcome = []
    problems = []
    try:
        kube.wait_for("every reader reading again", back, timeout=120, interval=1)
        row["recovery_s"] = time.monotonic() - t0
    except AssertionError as e:
        problems.append(str(e))
    for r in rs:
        now = Reader(r.name)
        uid, restarts, pid0 = before[r.name]
        if now.pid == pid0:
            f = figures(now.pid)
            row["readers"][r.name] = f
            outcome.append(f"{r.name}: same process, {fmt(f)}")
            if f["gap_now_ms"] > 1500:
                problems.append(f"{r.name}: its volume did not come back (gap {f['gap_now_ms']} ms, "
                                f"ENOTCONN {f['enotconn']}, last: {f['last_error']}) and Kubernetes "
                                "did not restart it")
            # The container's own mount table: /data answers (the ended
            # mount is gone from it, not only from the host's).
            try:
                os.statvfs(f"/proc/{now.pid}/root/data")
            except OSError as e:
                problems.append(f"{r.name}: /data in the container: {os.strerror(e.errno)}")
        else:
            row["readers"][r.name] = {"gone": True}
            ev = kube.events("default", "Pod", r.name)
            outcome.append(f"{r.name}: restarted (restarts {restarts} -> {now.restarts()}); events: "
                           f"{ev[-4:]}")
            if not ev:
                problems.append(f"{r.name}: restarted without an event on the pod")
    kube.wait_for("Granary pods Ready", all_granary_ready, timeout=60, interval=1)
    dead = dead_mounts(vol)
    if dead:
        problems.append(f"mounts of the volume that do not answer: {dead}")
    daemons = daemons_of(vol)
    if len(daemons) != 1:
        problems.append(f"granary-fuse processes of the volume: {daemons} (want exactly 1)")
    row["ok"] = not problems
    row["note"] = "; ".join(o.split(":")[0] + (" same process" if "same process" in o else " restarted")
                            for o in outcome)
    print("\nnode reboot (simulated):\n  " + "\n  ".join(outcome))
    assert not problems, "node reboot: " + "; ".join(problems)


# ---- afterwards ------------------------------------------------------------------

def test_unpublish_and_unstage_leave_nothing():
    kube.wait_for("Granary pods Ready", all_granary_ready, timeout=180, interval=1)
    vol = volume_name()
    delete_readers()
    kube.wait_for("pod mounts gone",
                  lambda: not [m for m in cluster_mounts() if "/pods/" in m and vol in m],
                  timeout=90, interval=0.5)
    kube.delete("pvc", CLAIM, "default")
    kube.wait_for("PV deleted", lambda: not kube.get("pv", vol, check=False), timeout=120)
    kube.wait_for("no granary-fuse of the volume", lambda: not daemons_of(vol), timeout=90,
                  interval=0.5)
    # The node plugin unmounts and removes the volume's state record once
    # its daemon is gone (csi/node.c): polled.
    seen = {"mounts": [], "records": []}

    def nothing_left():
        records = []
        for root, dirs, files in os.walk(STATE_DIR):
            records += [os.path.join(root, f) for f in files + dirs if vol in f]
        seen["mounts"], seen["records"] = cluster_mounts(), records
        return not seen["mounts"] and not records

    try:
        kube.wait_for("no Granary FUSE mount nor state record of the volume", nothing_left,
                      timeout=60, interval=0.5)
    except AssertionError as e:
        left = [m for m in seen["mounts"] if vol in m]
        raise AssertionError(f"{e}; mounts left: {left}; Granary FUSE mounts left on the node: "
                             f"{seen['mounts']}; state records left: {seen['records']}") from None
    assert not cluster_fuse_pids(), f"granary-fuse left: {cluster_fuse_pids()}"
