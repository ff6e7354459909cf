"""The Helm install as a user gets it: every pod Ready, the node plugin
registered with the kubelet by itself (no node-driver-registrar), workers
joined to granary-meta, cluster DNS serving the chart's Service names, and
meta and the workers serving TLS only (the cluster runs with tls.enabled),
their certificates in one Secret per role, kept by upgrades."""
import base64
import json
import os
import subprocess

import pytest

import kube


def test_every_granary_pod_is_ready():
    # The chart's own pods. Mount pods come and go with the volumes staged
    # on the node (one that just ended is not Ready while the node plugin
    # deletes it), whatever suite ran before this one.
    pods = [p for p in kube.get("pods", namespace=kube.NS)["items"]
            if p["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "mount"]
    names = sorted(p["metadata"]["name"] for p in pods)
    assert any(n.startswith("granary-controller-") for n in names), names
    assert any(n.startswith("granary-node-") for n in names), names
    assert any(n.startswith("granary-worker-") for n in names), names
    for p in pods:
        ready = [c for c in p["status"].get("conditions", []) if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", (p["metadata"]["name"], p["status"])


def test_node_plugin_registered_with_kubelet():
    # The kubelet lists a driver in the node's CSINode only after the
    # plugin-registration handshake over <kubelet>/plugins_registry succeeded.
    csinode = kube.wait_for("csi.granary.io in CSINode",
                            lambda: [d for d in (kube.get("csinode", kube.NODE)["spec"].get("drivers") or [])
                                     if d["name"] == kube.DRIVER], timeout=60)
    assert csinode[0]["nodeID"] == kube.NODE


def test_chart_lists_only_the_sidecars_it_needs():
    images = set()
    for kind in ("deployments", "daemonsets"):
        for obj in kube.get(kind, namespace=kube.NS)["items"]:
            for c in obj["spec"]["template"]["spec"]["containers"]:
                images.add(c["image"])
    assert not [i for i in images if "node-driver-registrar" in i or "livenessprobe" in i], images


def test_workers_joined_meta():
    pb, stub = kube.meta_stub()
    workers = kube.wait_for("a worker in meta's membership",
                            lambda: list(stub.ListWorkers(pb.ListWorkersRequest(), timeout=10).workers))
    ids = [w.id for w in workers]
    assert kube.NODE in ids, ids
    worker = [w for w in workers if w.id == kube.NODE][0]
    pods = kube.get("pods", namespace=kube.NS)["items"]
    worker_ips = [p["status"]["podIP"] for p in pods if p["metadata"]["name"].startswith("granary-worker-")]
    # Peers dial the advertised address: the worker pod's IP, not a hostname.
    assert worker.address.split(":")[0] in worker_ips, (worker.address, worker_ips)


def test_cluster_dns_resolves_the_meta_service():
    out = kube.kubectl("-n", kube.NS, "exec", "deploy/granary-controller", "-c", "granary-csi", "--",
                       "getent", "hosts", f"granary-meta.{kube.NS}.svc.cluster.local")
    svc = kube.get("service", "granary-meta", kube.NS)
    assert out.split()[0] == svc["spec"]["clusterIP"], out


def upgrade(*args):
    """helm upgrade of the installed release with its values; its output."""
    helm = os.path.join(os.environ.get("GRANARY_TOOLS", os.path.expanduser("~/.cache/granary-tools")),
                        "bin", "helm")
    p = subprocess.run([helm, "--kubeconfig", kube.ENV["KUBECONFIG"], "upgrade",
                        kube.ENV["GRANARY_KUBE_RELEASE"], os.path.join(kube.SRC, "helm", "granary"),
                        "-n", kube.NS, "--reuse-values", *args],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_notes_say_when_meta_needs_a_default_storage_class():
    # This cluster has no StorageClass marked default: with persistence on
    # and no class named, the install's notes must say why the controller
    # pod would stay Pending, before anything is created.
    classes = kube.get("storageclass")["items"]
    assert not [c for c in classes if c["metadata"].get("annotations", {}).get(
        "storageclass.kubernetes.io/is-default-class") == "true"], classes

    def notes(*values):
        # A dry run of an upgrade of the installed release: nothing changes.
        return upgrade("--dry-run=client", *values).split("NOTES:", 1)[1]

    assert "names no StorageClass" in notes("--set", "meta.persistence.enabled=true")
    assert "names no StorageClass" not in notes(
        "--set", "meta.persistence.enabled=true", "--set", "meta.persistence.storageClassName=fast")
    assert "names no StorageClass" not in notes()


def test_meta_and_workers_speak_only_tls_with_the_charts_certificates():
    # The cluster runs with tls.enabled (e2e/kube/cluster.sh): a plaintext
    # caller reaches neither meta's gRPC nor a worker's HTTP, and a TLS
    # caller with the release's CA and client certificate is served.
    import http.client
    import ssl
    import tempfile
    import urllib.request

    import grpc
    data = kube.tls_files()
    assert data, "no Secret granary-tls: the cluster runs without tls.enabled"
    svc = kube.get("service", "granary-meta", kube.NS)
    target = f"{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"
    with pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(grpc.insecure_channel(target)).result(timeout=5)
    # TLS without a client certificate: meta asks for one (mutual TLS).
    bare = grpc.secure_channel(target, grpc.ssl_channel_credentials(data["ca.crt"]), options=[
        ("grpc.ssl_target_name_override", kube.META_TLS_NAME)])
    with pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(bare).result(timeout=5)
    pb, stub = kube.meta_stub()   # the release's client certificate
    assert stub.ListWorkers(pb.ListWorkersRequest(), timeout=10).workers

    pods = kube.get("pods", namespace=kube.NS)["items"]
    ip = [p["status"]["podIP"] for p in pods
          if p["metadata"]["name"].startswith("granary-worker-")][0]
    port = kube.get("daemonset", "granary-worker", kube.NS)["spec"]["template"]["spec"][
        "containers"][0]["ports"][0]["containerPort"]
    with pytest.raises((OSError, http.client.HTTPException)):   # no HTTP on the TLS port
        urllib.request.urlopen(f"http://{ip}:{port}/healthz", timeout=5).read()
    with tempfile.NamedTemporaryFile(suffix=".crt") as ca:
        ca.write(data["ca.crt"])
        ca.flush()
        ctx = ssl.create_default_context(cafile=ca.name)
        # The worker's certificate names the release's worker Service name,
        # not the pod IP: clients connect by IP and check that name.
        ctx.check_hostname = False
        with urllib.request.urlopen(f"https://{ip}:{port}/healthz", context=ctx,
                                    timeout=10) as r:
            assert r.status == 200
        cert = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((ip, port)))
        assert f"granary-worker.{kube.NS}.svc".encode() in cert


def test_tls_secrets_are_one_per_role_and_kept_from_the_single_secret_before():
    # A node's kubelet may read every Secret a pod of that node names,
    # whole: meta's key is in the Secret only the controller pod names.
    # An upgrade keeps the certificates, and one from a chart that kept them
    # all in <fullname>-tls makes the roles' Secrets from that one, so
    # running pods and new ones still trust each other.
    before = kube.tls_secrets()
    assert sorted(before) == sorted(kube.TLS_ROLES), before.keys()
    assert sorted(before["meta"]) == ["ca.crt", "meta.crt", "meta.key"]
    assert sorted(before["worker"]) == ["ca.crt", "client.crt", "client.key", "worker.crt", "worker.key"]
    assert sorted(before["client"]) == ["ca.crt", "client.crt", "client.key"]
    naming = [p["metadata"]["name"] for p in kube.get("pods", namespace=kube.NS)["items"]
              for v in p["spec"].get("volumes", [])
              if v.get("secret", {}).get("secretName") == "granary-tls-meta"]
    assert naming and all(n.startswith("granary-controller-") for n in naming), naming

    merged = kube.tls_files()
    for role in kube.TLS_ROLES:
        kube.kubectl("-n", kube.NS, "delete", "secret", f"granary-tls-{role}")
    old = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": "granary-tls", "namespace": kube.NS},
           "data": {k: base64.b64encode(v).decode() for k, v in merged.items()}}
    try:
        kube.kubectl("apply", "-f", "-", input=json.dumps(old))
        upgrade()
        assert kube.tls_secrets() == before, "the roles' Secrets differ from the single one's items"
    finally:
        kube.kubectl("-n", kube.NS, "delete", "secret", "granary-tls", "--ignore-not-found")
        if sorted(kube.tls_secrets()) != sorted(kube.TLS_ROLES):
            upgrade()   # the cluster's other suites need them
    # Kept by an upgrade with the roles' Secrets in place; the one Secret of
    # the charts before stays for their pods, without meta's items.
    upgrade()
    assert kube.tls_secrets() == before
    legacy = kube.get("secret", "granary-tls", kube.NS)["data"]
    assert sorted(legacy) == sorted(before["worker"]), sorted(legacy)


def test_the_controller_reads_secrets_by_name_only():
    # The controller's ClusterRole gets the Secrets that StorageClasses
    # and Datasets name (csi-provisioner, granary-meta); it may not list
    # them, which would hand over every Secret of the cluster.
    sa = f"system:serviceaccount:{kube.NS}:granary-controller"

    def can(*args):
        r = kube.kubectl_result("auth", "can-i", *args, "--as", sa)
        assert r.stdout.strip() in ("yes", "no"), r.stdout + r.stderr
        return r.stdout.strip() == "yes"
    assert can("get", "secrets", "-n", "default")
    assert not can("list", "secrets", "-n", "default")
    assert not can("list", "secrets", "--all-namespaces")
    assert not can("watch", "secrets", "-n", "default")
