"""The examples under examples/, applied as docs/kubernetes.md tells a user
to: the only changes are the documented substitutions (the keys, the source
prefix and the endpoint of examples/imagenet-pvc.yaml and
examples/dataset-imagenet.yaml, and the namespace where two would clash)."""
import hashlib
import os
import tempfile

import pytest

import kube

EXAMPLES = os.path.join(kube.SRC, "examples")
PREFIX = "imagenet"


def example(name, subs=None):
    with open(os.path.join(EXAMPLES, name)) as f:
        text = f.read()
    for old, new in (subs or {}).items():
        assert old in text, f"{name} no longer has the documented placeholder {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def imagenet():
    """examples/imagenet-pvc.yaml with the four documented values filled in."""
    files = {}
    with tempfile.TemporaryDirectory() as d:
        for i in range(3):
            data = os.urandom(3 << 20) + bytes([i])
            path = os.path.join(d, f"train-{i:05d}.tar")
            with open(path, "wb") as f:
                f.write(data)
            files[os.path.basename(path)] = hashlib.sha256(data).hexdigest()
        kube.store("sync", d, f"s3://{kube.BUCKET}/{PREFIX}/")
    kube.apply(example("imagenet-pvc.yaml", {
        "REPLACE_WITH_ACCESS_KEY_ID": kube.ENV["GRANARY_S3_ACCESS_KEY"],
        "REPLACE_WITH_SECRET_ACCESS_KEY": kube.ENV["GRANARY_S3_SECRET_KEY"],
        "s3://my-bucket/imagenet/": f"s3://{kube.BUCKET}/{PREFIX}/",
        'endpoint: ""': f'endpoint: "{kube.ENV["GRANARY_S3_ENDPOINT"]}"',
    }))
    kube.wait_for("PVC imagenet Bound", lambda: kube.pvc_phase("imagenet") == "Bound", timeout=120)
    yield files
    kube.delete("pod", "imagenet-reader", "default")
    kube.delete("pvc", "imagenet", "default")
    kube.delete("storageclass", "granary-imagenet")


def test_example_without_endpoint_names_what_is_missing():
    # Shipped as is (no endpoint: AWS; placeholders for the keys), the claim
    # cannot bind here, and the event must say why in words a user can act on.
    kube.apply(example("imagenet-pvc.yaml").replace("name: imagenet\n", "name: imagenet-asis\n")
               .replace("name: granary-imagenet", "name: granary-imagenet-asis")
               .replace("storageClassName: granary-imagenet", "storageClassName: granary-imagenet-asis")
               .replace("name: granary-s3-credentials", "name: granary-s3-asis"))
    try:
        msgs = kube.wait_for("ProvisioningFailed",
                             lambda: [m for m in kube.events("default", "PersistentVolumeClaim", "imagenet-asis")
                                      if m.startswith("ProvisioningFailed")], timeout=120)
        # It names the value left empty, the bucket and the store's answer.
        assert any("parameter 'endpoint' is empty" in m and "'my-bucket'" in m for m in msgs), msgs
        assert not any("REPLACE_WITH_SECRET" in m for m in msgs), msgs
    finally:
        kube.delete("pvc", "imagenet-asis", "default")
        kube.delete("storageclass", "granary-imagenet-asis")
        kube.delete("secret", "granary-s3-asis", kube.NS)


def test_pod_example_reads_the_dataset(imagenet):
    kube.apply(example("pod-imagenet.yaml"))
    kube.wait_for("imagenet-reader Running", lambda: kube.pod_phase("imagenet-reader") == "Running",
                  timeout=120)
    out = kube.kubectl("exec", "imagenet-reader", "-n", "default", "--", "sh", "-c",
                       "cd /data && sha256sum *")
    got = {line.split()[1]: line.split()[0] for line in out.splitlines()}
    assert got == imagenet, (got, imagenet)
    err = kube.kubectl_result("exec", "imagenet-reader", "-n", "default", "--", "touch", "/data/x")
    assert err.returncode != 0 and "Read-only file system" in err.stderr, err.stderr


@pytest.fixture
def gpus():
    """Two nvidia.com/gpu on the node, advertised as an extended resource (the
    node status patch the Kubernetes docs describe), so that the TFJob's GPU
    requests schedule on a machine without GPUs."""
    path = "/status/capacity/nvidia.com~1gpu"
    kube.kubectl("patch", "node", kube.NODE, "--subresource=status", "--type=json",
                 "-p", f'[{{"op":"add","path":"{path}","value":"2"}}]')
    kube.wait_for("2 GPUs allocatable",
                  lambda: kube.get("node", kube.NODE)["status"]["allocatable"].get("nvidia.com/gpu") == "2",
                  timeout=60)
    yield
    kube.kubectl("patch", "node", kube.NODE, "--subresource=status", "--type=json",
                 "-p", f'[{{"op":"remove","path":"{path}"}}]')


def test_tfjob_example_reads_the_dataset(imagenet, gpus):
    # The TFJob that `arena submit tfjob --data=imagenet:/data` makes, with
    # the documented substitutions: an image that is here, and a command
    # that reads the dataset in place of train.py.
    kube.kubectl("-n", "kubeflow", "rollout", "status", "deploy/training-operator",
                 "--timeout=120s", timeout=150)
    kube.apply(example("tfjob-imagenet.yaml", {
        "registry.example.com/ml/resnet50-train:latest": kube.IMAGE,
        "python train.py --data_dir=/data": "cd /data && sha256sum * && echo TF_CONFIG=$TF_CONFIG",
    }))
    try:
        def succeeded():
            st = kube.get("tfjob", "imagenet-resnet50", "default").get("status", {})
            conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
            assert conds.get("Failed") != "True", st
            return conds.get("Succeeded") == "True"
        kube.wait_for("TFJob imagenet-resnet50 Succeeded", succeeded, timeout=240, interval=1)
        for i in range(2):
            out = kube.logs(f"imagenet-resnet50-worker-{i}", "default")
            got = {line.split()[1]: line.split()[0] for line in out.splitlines()
                   if not line.startswith("TF_CONFIG=")}
            assert got == imagenet, (i, out)
            # The operator made the pod: it names the worker's place in the job.
            assert '"type":"worker","index":%d' % i in out.replace(" ", ""), out
    finally:
        kube.delete("tfjob", "imagenet-resnet50", "default")


def test_dataset_example_is_mounted_by_the_pod_example(imagenet):
    # examples/dataset-imagenet.yaml with its documented values filled in,
    # in a namespace of its own (default already has the claim imagenet of
    # the StorageClass example); then the pod example in that namespace.
    ns = "examples-dataset"
    kube.kubectl("create", "namespace", ns, check=False)
    try:
        kube.apply(example("dataset-imagenet.yaml", {
            'accessKeyID: "REPLACE_ME"': f'accessKeyID: "{kube.ENV["GRANARY_S3_ACCESS_KEY"]}"',
            'secretAccessKey: "REPLACE_ME"':
                f'secretAccessKey: "{kube.ENV["GRANARY_S3_SECRET_KEY"]}"',
            "s3://my-bucket/imagenet/train/": f"s3://{kube.BUCKET}/{PREFIX}/",
            "https://s3.example.internal": kube.ENV["GRANARY_S3_ENDPOINT"],
            "namespace: default": f"namespace: {ns}",
        }))
        kube.wait_for("Dataset imagenet Ready", lambda: kube.get("dataset", "imagenet", ns)
                      .get("status", {}).get("phase") == "Ready", timeout=120)
        kube.apply(example("pod-imagenet.yaml", {"namespace: default": f"namespace: {ns}"}))
        kube.wait_for("imagenet-reader Running",
                      lambda: kube.pod_phase("imagenet-reader", ns) == "Running", timeout=120)
        out = kube.kubectl("exec", "imagenet-reader", "-n", ns, "--", "sh", "-c",
                           "cd /data && sha256sum *")
        got = {line.split()[1]: line.split()[0] for line in out.splitlines()}
        assert got == imagenet, (got, imagenet)
    finally:
        kube.delete("pod", "imagenet-reader", ns)
        kube.kubectl("delete", "dataset", "imagenet", "-n", ns, "--timeout=60s", check=False)
        kube.kubectl("delete", "namespace", ns, "--timeout=120s", check=False)
