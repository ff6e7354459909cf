"""What the cluster tests share: kubectl, waiting, the dataset in the store,
reader pods, and what the node shows (mounts, FUSE daemons).

The tests run inside the test cluster's network namespace (ctest starts
them through `scripts/kube.sh exec`), so they reach Service and pod IPs as a
pod would, and the S3 server at the host's address on the cluster network.
Settings come from the fixture's env file (e2e/kube/cluster.sh up).
"""
import base64
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORK = os.environ.get("GRANARY_KUBE_WORK", "/tmp/granary-kube-e2e")
BIN = os.environ.get("GRANARY_BIN_DIR", os.path.join(SRC, "build", "bin"))
BUCKET = "datasets"
DRIVER = "csi.granary.io"


def _load_env():
    env = {}
    with open(os.path.join(WORK, "env")) as f:
        for line in f:
            line = line.strip()
            if "=" in line:
                k, v = line.split("=", 1)
                env[k] = v
    return env


ENV = _load_env()
NS = ENV["GRANARY_KUBE_NAMESPACE"]
IMAGE = ENV["GRANARY_KUBE_IMAGE"]
NODE = ENV["GRANARY_KUBE_NODE"]
KUBELET_DIR = ENV["GRANARY_KUBE_KUBELET_DIR"]
KUBECTL = os.path.join(ENV["GRANARY_KUBE_BIN"], "kubectl")


def kubectl_result(*args, input=None, timeout=120):
    """Runs kubectl; returns the CompletedProcess (returncode, stdout, stderr)."""
    return subprocess.run([KUBECTL, "--kubeconfig", ENV["KUBECONFIG"], *args], input=input,
                          capture_output=True, text=True, timeout=timeout)


def kubectl(*args, input=None, check=True, timeout=120):
    """Runs kubectl; returns stdout. Raises with stderr when check fails."""
    p = kubectl_result(*args, input=input, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def apply(manifest, namespace=None):
    args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    return kubectl(*args, input=manifest)


def delete(kind, name, namespace=None, wait=True, timeout="120s"):
    args = ["delete", kind, name, "--ignore-not-found", f"--wait={str(wait).lower()}",
            f"--timeout={timeout}"]
    if namespace:
        args += ["-n", namespace]
    kubectl(*args, timeout=180)


def get(kind, name=None, namespace=None, check=True):
    args = ["get", kind] + ([name] if name else []) + ["-o", "json"]
    if namespace:
        args += ["-n", namespace]
    out = kubectl(*args, check=check)
    return json.loads(out) if out else None


def wait_for(what, fn, timeout=120, interval=0.2):
    """Polls fn until it returns something true; returns it, or fails the test."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = fn()
        except RuntimeError as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last})")


def events(namespace, kind, name, uid=None):
    """Messages of the events about one object, oldest first, as 'Reason: message'.
    With uid, only those of that object, not of an earlier one of the same name."""
    out = get("events", namespace=namespace)
    items = [e for e in out["items"]
             if e["involvedObject"].get("kind") == kind and e["involvedObject"].get("name") == name
             and (uid is None or e["involvedObject"].get("uid") == uid)]
    items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return [f"{e['reason']}: {e['message']}" for e in items]


def pvc_phase(name, namespace="default"):
    return get("pvc", name, namespace)["status"].get("phase")


def pod_phase(name, namespace="default"):
    return get("pod", name, namespace)["status"].get("phase")


def logs(pod, namespace="default", container=None):
    args = ["logs", pod, "-n", namespace] + (["-c", container] if container else [])
    return kubectl(*args)


def store(*args):
    """granary-store against the test S3 server, with its credentials."""
    return subprocess.run([os.path.join(BIN, "granary-store"),
                           "--store.endpoint", ENV["GRANARY_S3_ENDPOINT"],
                           "--store.credentials_file", ENV["GRANARY_S3_CREDENTIALS"], *args],
                          capture_output=True, text=True, check=True).stdout


def upload_tfrecords(prefix, shards=4, shard_size="8MiB", keep=None):
    """Writes TFRecord shards (real framing and CRCs) under s3://datasets/PREFIX/;
    returns (records, bytes) as the generator counted them. With keep, the
    shards also stay in that (new) directory."""
    with tempfile.TemporaryDirectory(prefix="granary-kube-data-") as tmp:
        d = keep or tmp
        out = subprocess.run([os.path.join(BIN, "granary-tfrecord"), "gen", d,
                              "--shards", str(shards), "--shard_size", shard_size],
                             capture_output=True, text=True, check=True).stdout
        records = int(out.split("records=")[1].split()[0])
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        store("sync", d, f"s3://{BUCKET}/{prefix}/")
    return records, size


def credentials_secret(name, namespace=NS, key=None, secret=None):
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {namespace}}}
type: Opaque
stringData:
  accessKeyID: "{key or ENV['GRANARY_S3_ACCESS_KEY']}"
  secretAccessKey: "{secret or ENV['GRANARY_S3_SECRET_KEY']}"
"""


def storage_class(name, prefix, secret="granary-s3-credentials", extra=None):
    params = {
        "source": f"s3://{BUCKET}/{prefix}/",
        "endpoint": ENV["GRANARY_S3_ENDPOINT"],
        "region": "us-east-1",
        "csi.storage.k8s.io/provisioner-secret-name": secret,
        "csi.storage.k8s.io/provisioner-secret-namespace": NS,
        "csi.storage.k8s.io/node-stage-secret-name": secret,
        "csi.storage.k8s.io/node-stage-secret-namespace": NS,
    }
    params.update(extra or {})
    lines = "\n".join(f'  {k}: "{v}"' for k, v in params.items())
    return f"""
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {name}}}
provisioner: {DRIVER}
reclaimPolicy: Delete
volumeBindingMode: Immediate
parameters:
{lines}
"""


def pvc(name, storage_class_name, namespace="default"):
    return f"""
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  storageClassName: {storage_class_name}
  accessModes: [ReadOnlyMany]
  resources: {{requests: {{storage: 1Gi}}}}
"""


def reader_pod(name, claim, command, namespace="default"):
    """A pod of the Granary image that runs COMMAND (a list) once over /data."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "reader", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": command,
                "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
            }],
            "volumes": [{"name": "data",
                         "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
        },
    })


def tfrecord_read(threads=4, epochs=1):
    return ["granary-tfrecord", "read", "/data", "--threads", str(threads), "--epochs", str(epochs)]


def parse_read(text):
    """granary-tfrecord read's lines -> list of dicts (one per epoch)."""
    out = []
    for line in text.splitlines():
        if line.startswith("epoch="):
            out.append({k: float(v) for k, v in (w.split("=") for w in line.split())})
    return out


def _fuse_mounts():
    """(mount point, major:minor, mountinfo line) of each FUSE mount in the
    node's (the host's) mount table."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[parts.index("-") + 1].startswith("fuse"):
                yield parts[4], parts[2], line


def host_mounts():
    """Mount points on the node (the host's mount table) of Granary's FUSE
    mounts and of the pods' bind mounts of them."""
    return [point for point, _, line in _fuse_mounts() if "granary" in line]


def mount_read_ahead_kb(part):
    """The kernel read-ahead (KiB, its bdi's read_ahead_kb) of the FUSE
    mount on the node whose mount point contains part; None when none."""
    for point, dev, _ in _fuse_mounts():
        if part in point:
            with open(f"/sys/class/bdi/{dev}/read_ahead_kb") as ra:
                return int(ra.read())
    return None


def fuse_pids():
    """(pid, argv) of each granary-fuse process running on the node."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0].decode(errors="replace")) == "granary-fuse":
            found.append((int(pid), [a.decode(errors="replace") for a in argv if a]))
    return found


def fuse_daemons():
    """Command lines of the granary-fuse processes running on the node."""
    return [argv for _, argv in fuse_pids()]


_pb = None


def meta_key(role):
    """The key of granary-meta's role "csi" or "worker" (bytes), from the
    release's Secret granary-meta-keys."""
    return base64.b64decode(get("secret", "granary-meta-keys", NS)["data"][role])


# The name meta's certificate carries (the chart's granary.metaTLSName).
META_TLS_NAME = f"granary-meta.{NS}.svc"


TLS_ROLES = ("meta", "worker", "client")


def tls_secrets():
    """The release's TLS Secrets (tls.enabled), one per role, as
    {role: {key: bytes}}; a role without its Secret is left out."""
    out = {}
    for role in TLS_ROLES:
        s = get("secret", f"granary-tls-{role}", NS, check=False)
        if s:
            out[role] = {k: base64.b64decode(v) for k, v in s.get("data", {}).items()}
    return out


def tls_files():
    """Every item of the release's TLS Secrets as {key: bytes}, or None."""
    merged = {}
    for items in tls_secrets().values():
        merged.update(items)
    return merged or None


def meta_plain_stub():
    """(granary_pb2, an unsigned granary.v1.Meta stub) through the meta
    Service's cluster IP: the caller signs (grpc_stubs.meta_auth)."""
    global _pb
    import grpc
    from grpc_tools import protoc
    if _pb is None:
        out = tempfile.mkdtemp(prefix="granary-pb-")
        api = os.path.join(SRC, "api")
        assert protoc.main(["protoc", f"-I{api}", f"--python_out={out}",
                            f"--grpc_python_out={out}", os.path.join(api, "granary.proto")]) == 0
        sys.path.insert(0, out)
        _pb = (importlib.import_module("granary_pb2"), importlib.import_module("granary_pb2_grpc"))
    svc = get("service", "granary-meta", NS)
    port = svc["spec"]["ports"][0]["port"]
    target = f"{svc['spec']['clusterIP']}:{port}"
    # Short connection attempts: right after meta's pod changes, the
    # Service may still lead to the old pod's address for a moment, and
    # gRPC's default first attempt there (20 s) outlasts the wait below.
    options = [("grpc.min_reconnect_backoff_ms", 1000),
               ("grpc.initial_reconnect_backoff_ms", 200),
               ("grpc.max_reconnect_backoff_ms", 2000)]
    data = tls_files()
    if data:
        # The release serves meta over mutual TLS (tls.enabled): the
        # clients' certificate from its Secret, meta's name checked.
        creds = grpc.ssl_channel_credentials(data["ca.crt"], data["client.key"],
                                             data["client.crt"])
        channel = grpc.secure_channel(target, creds, options=options + [
            ("grpc.ssl_target_name_override", META_TLS_NAME)])
    else:
        channel = grpc.insecure_channel(target, options=options)
    grpc.channel_ready_future(channel).result(timeout=15)
    return _pb[0], _pb[1].MetaStub(channel)


def wait_worker_joined(timeout=60):
    """Waits until granary-meta lists this node's worker: after meta restarts
    (test_pvc deletes its pod) the worker joins again at its next heartbeat,
    and a mount staged before that reads from the store, not through it."""
    import grpc

    def joined():
        try:
            pb, stub = meta_stub()
            return NODE in [w.id for w in stub.ListWorkers(pb.ListWorkersRequest(),
                                                           timeout=10).workers]
        except (grpc.RpcError, grpc.FutureTimeoutError):
            return False
    wait_for("this node's worker in meta's membership", joined, timeout=timeout)


def meta_stub():
    """A gRPC client of granary-meta (stubs compiled from api/granary.proto at
    test time), through the meta Service's cluster IP, every call signed with
    the csi role's key from the release's Secret granary-meta-keys."""
    pb, plain = meta_plain_stub()
    sys.path.insert(0, os.path.join(SRC, "e2e"))
    from grpc_stubs import SignedMeta
    return pb, SignedMeta(plain, "csi", meta_key("csi"))
