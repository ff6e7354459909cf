"""The chart's ValidatingAdmissionPolicies. The node plugins' Role lets them
create and delete any pod of the release's namespace: one policy holds them
to the mount pods granary-csi makes. The controller's ClusterRole lets it
patch any pod (the cache gate): another lets it only remove the gate
granary.io/cache. Each request below is sent with a token of the service
account (as whoever took it would hold it) and --dry-run=server, which runs
admission and stores nothing."""
import base64
import copy
import json
import os
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request

import pytest

import kube


def node_plugin_pod():
    pods = kube.get("pods", namespace=kube.NS)["items"]
    return [p for p in pods
            if p["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "node"][0]


def apiserver():
    """The apiserver's URL and the path of its CA's certificate."""
    cfg = json.loads(kube.kubectl("config", "view", "--raw", "-o", "json"))
    cluster = cfg["clusters"][0]["cluster"]
    ca = os.path.join(tempfile.mkdtemp(prefix="granary-admission-"), "ca.crt")
    if "certificate-authority-data" in cluster:
        with open(ca, "wb") as f:
            f.write(base64.b64decode(cluster["certificate-authority-data"]))
    else:
        ca = cluster["certificate-authority"]
    return cluster["server"], ca


def kubectl_with(tokens):
    """kubectl as whoever holds tokens[key] (run(..., key=...))."""
    server, ca = apiserver()

    def run(*args, input=None, key=True):
        return subprocess.run([kube.KUBECTL, "--kubeconfig", os.devnull, "--server", server,
                               "--certificate-authority", ca, "--token", tokens[key], *args],
                              input=input, capture_output=True, text=True, timeout=60)
    return run


@pytest.fixture(scope="module")
def as_plugin():
    """kubectl with a token of the node plugin's service account: bound to
    its pod (so it names the pod's node, as the token the kubelet gives the
    pod does), or not bound to any (bound=False)."""
    pod = node_plugin_pod()
    sa = pod["spec"]["serviceAccountName"]
    run = kubectl_with({
        True: kube.kubectl("-n", kube.NS, "create", "token", sa, "--bound-object-kind", "Pod",
                           "--bound-object-name", pod["metadata"]["name"],
                           "--bound-object-uid", pod["metadata"]["uid"]).strip(),
        False: kube.kubectl("-n", kube.NS, "create", "token", sa).strip(),
    })
    return lambda *args, input=None, bound=True: run(*args, input=input, key=bound)


def mount_pod():
    """A mount pod as the plugin makes one from the chart's template."""
    cm = kube.get("configmap", "granary-node", kube.NS)
    pod = json.loads(cm["data"]["mount-pod.json"])
    pod["metadata"]["name"] = "granary-mount-admission-test"
    pod["spec"]["nodeName"] = kube.NODE
    for v in pod["spec"]["volumes"]:
        if v["name"] == "state-dir":
            v["hostPath"]["path"] += "/admission-test"
    return pod


def create(as_plugin, pod, bound=True):
    return as_plugin("-n", kube.NS, "create", "--dry-run=server", "-f", "-",
                     input=json.dumps(pod), bound=bound)


def test_the_plugin_may_create_a_mount_pod_of_its_node(as_plugin):
    r = create(as_plugin, mount_pod())
    assert r.returncode == 0, r.stderr
    # As a node plugin of a chart before 0.2.3 makes one while the rollout
    # has not replaced it yet: the TLS client items of the one Secret of
    # then, which the chart keeps without meta's items.
    old = mount_pod()
    for v in old["spec"]["volumes"]:
        if v.get("secret", {}).get("secretName") == "granary-tls-client":
            v["secret"]["secretName"] = "granary-tls"
    assert old != mount_pod(), "the mount pod names no granary-tls-client"
    r = create(as_plugin, old)
    assert r.returncode == 0, r.stderr


def refused(as_plugin, pod, why, bound=True):
    r = create(as_plugin, pod, bound=bound)
    assert r.returncode != 0, f"created: {r.stdout}"
    assert "denied request" in r.stderr and why in r.stderr, r.stderr


def test_pods_beyond_a_mount_pod_of_its_node_are_refused(as_plugin):
    pod = mount_pod()
    other = copy.deepcopy(pod)
    other["spec"]["nodeName"] = "another-node"
    refused(as_plugin, other, "mount pods of its own node only, not of 'another-node'")

    worker = copy.deepcopy(pod)
    worker["metadata"]["labels"]["app.kubernetes.io/component"] = "worker"
    refused(as_plugin, worker, "only mount pods of release granary")

    priv = copy.deepcopy(pod)
    priv["spec"]["containers"][0]["securityContext"]["privileged"] = True
    del priv["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"]
    refused(as_plugin, priv, "containers are unprivileged")

    caps = copy.deepcopy(pod)
    caps["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = ["SYS_ADMIN"]
    refused(as_plugin, caps, "containers are unprivileged")

    host = copy.deepcopy(pod)
    host["spec"]["hostPID"] = True
    refused(as_plugin, host, "shares none of the host's namespaces")

    sa = copy.deepcopy(pod)
    sa["spec"]["serviceAccountName"] = "granary-controller"
    sa["spec"]["automountServiceAccountToken"] = True
    refused(as_plugin, sa, "default service account, without its token")

    root = copy.deepcopy(pod)
    root["spec"]["volumes"].append({"name": "host-root", "hostPath": {"path": "/"}})
    refused(as_plugin, root, "a mount pod's volumes are")

    every = copy.deepcopy(pod)
    for v in every["spec"]["volumes"]:
        if v["name"] == "state-dir":
            v["hostPath"]["path"] = v["hostPath"]["path"].rsplit("/", 1)[0]
    refused(as_plugin, every, "a mount pod's volumes are")

    keys = copy.deepcopy(pod)
    keys["spec"]["volumes"].append({"name": "keys", "secret": {"secretName": "granary-meta-keys"}})
    refused(as_plugin, keys, "a mount pod's volumes are")
    # Meta's TLS key, even as the items a mount pod mounts: the node's
    # kubelet could then read the whole Secret.
    meta_tls = copy.deepcopy(pod)
    for v in meta_tls["spec"]["volumes"]:
        if v.get("secret", {}).get("secretName") == "granary-tls-client":
            v["secret"]["secretName"] = "granary-tls-meta"
            v["secret"]["items"] = [{"key": "ca.crt", "path": "ca.crt"}]
    assert meta_tls != pod, "the mount pod names no granary-tls-client"
    refused(as_plugin, meta_tls, "a mount pod's volumes are")

    # A Secret by the environment or as a pull Secret (the node's kubelet
    # may read whatever its pods name).
    env = copy.deepcopy(pod)
    env["spec"]["containers"][0]["env"] = [{"name": "K", "valueFrom": {"secretKeyRef": {
        "name": "granary-meta-keys", "key": "csi"}}}]
    refused(as_plugin, env, "takes no Secret by its environment")
    env_from = copy.deepcopy(pod)
    env_from["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": "granary-meta-keys"}}]
    refused(as_plugin, env_from, "takes no Secret by its environment")
    pull = copy.deepcopy(pod)
    pull["spec"]["imagePullSecrets"] = [{"name": "granary-meta-keys"}]
    refused(as_plugin, pull, "only the chart's image pull Secrets")

    # A token that names no node (not bound to the plugin's pod).
    refused(as_plugin, pod, "names no node", bound=False)


def test_the_plugin_may_not_delete_other_pods(as_plugin):
    worker = [p for p in kube.get("pods", namespace=kube.NS)["items"]
              if p["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "worker"][0]
    r = as_plugin("-n", kube.NS, "delete", "pod", worker["metadata"]["name"], "--dry-run=server")
    assert r.returncode != 0 and "denied request" in r.stderr, (r.stdout, r.stderr)
    assert "may delete only mount pods" in r.stderr, r.stderr


GATED = "admission-gated"


@pytest.fixture
def gated_pod():
    """A pod of the default namespace that waits on the cache gate and on
    a gate of someone else's."""
    kube.apply(json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": GATED, "namespace": "default", "labels": {"app": "reader"}},
        "spec": {"schedulingGates": [{"name": "granary.io/cache"}, {"name": "example.com/other"}],
                 "containers": [{"name": "c", "image": kube.IMAGE, "command": ["true"]}]}}))
    yield
    kube.delete("pod", GATED, "default")


def test_the_controller_may_only_remove_the_cache_gate(gated_pod):
    """JSON patches as granary-meta sends them (the controller may patch
    pods, not get them, so not through kubectl patch)."""
    server, ca = apiserver()
    token = kube.kubectl("-n", kube.NS, "create", "token", "granary-controller").strip()
    tls = ssl.create_default_context(cafile=ca)

    def patch(ops):
        req = urllib.request.Request(
            f"{server}/api/v1/namespaces/default/pods/{GATED}?dryRun=All", method="PATCH",
            data=json.dumps(ops).encode(),
            headers={"Authorization": f"Bearer {token}",
                     "Content-Type": "application/json-patch+json"})
        try:
            with urllib.request.urlopen(req, context=tls, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
    status, body = patch([{"op": "test", "path": "/spec/schedulingGates/0/name",
                           "value": "granary.io/cache"},
                          {"op": "remove", "path": "/spec/schedulingGates/0"}])
    assert status == 200, body
    for ops, why in (
            ([{"op": "remove", "path": "/spec/schedulingGates/1"}],
             "may only remove a pod's scheduling gate granary.io/cache"),
            ([{"op": "remove", "path": "/spec/schedulingGates/0"},
              {"op": "add", "path": "/metadata/labels/app", "value": "other"}],
             "may change nothing of a pod but remove"),
            ([{"op": "remove", "path": "/spec/schedulingGates/0"},
              {"op": "replace", "path": "/spec/containers/0/image", "value": "evil:1"}],
             "may change nothing of a pod but remove"),
            ([{"op": "remove", "path": "/spec/schedulingGates/0"},
              {"op": "add", "path": "/spec/nodeSelector",
               "value": {"kubernetes.io/hostname": "taken-node"}}],
             "may change nothing of a pod but remove"),
            ([{"op": "remove", "path": "/spec/schedulingGates/0"},
              {"op": "add", "path": "/metadata/ownerReferences", "value": [{
                  "apiVersion": "v1", "kind": "ConfigMap", "name": "gone",
                  "uid": "00000000-0000-0000-0000-000000000000"}]}],
             "may change nothing of a pod but remove"),
            ([{"op": "remove", "path": "/spec/schedulingGates/0"},
              {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/stuck"]}],
             "may change nothing of a pod but remove")):
        status, body = patch(ops)
        assert status == 403 and "denied request" in body and why in body, (ops, status, body)
