"""What a user sees in kubectl when a dataset is declared wrongly: the PVC's
ProvisioningFailed event names the bad parameter or secret key, and a pod
whose volume cannot be staged gets an event that names the cause."""
import pytest

import kube

PREFIX = "errors"


@pytest.fixture(scope="module", autouse=True)
def data():
    kube.upload_tfrecords(PREFIX, shards=1, shard_size="1MiB")
    yield


def provisioning_failure(sc_name, claim, manifest_sc, secrets=()):
    for s in secrets:
        kube.apply(s)
    kube.apply(manifest_sc)
    kube.apply(kube.pvc(claim, sc_name))
    try:
        msgs = kube.wait_for(f"ProvisioningFailed on {claim}",
                             lambda: [m for m in kube.events("default", "PersistentVolumeClaim", claim)
                                      if m.startswith("ProvisioningFailed")], timeout=90)
        assert kube.pvc_phase(claim) == "Pending"
        described = kube.kubectl("describe", "pvc", claim, "-n", "default")
        return msgs, described
    finally:
        kube.delete("pvc", claim, "default")
        kube.delete("storageclass", sc_name)


def test_bad_block_size_names_the_parameter():
    msgs, described = provisioning_failure(
        "granary-e2e-badparam", "bad-param",
        kube.storage_class("granary-e2e-badparam", PREFIX, extra={"blockSize": "3MiB"}),
        [kube.credentials_secret("granary-s3-credentials")])
    assert any("blockSize" in m and "power of two" in m for m in msgs), msgs
    assert "blockSize" in described


def test_unknown_parameter_is_named():
    msgs, _ = provisioning_failure(
        "granary-e2e-unknown", "unknown-param",
        kube.storage_class("granary-e2e-unknown", PREFIX, extra={"blocksize": "4MiB"}),
        [kube.credentials_secret("granary-s3-credentials")])
    assert any("unknown parameter 'blocksize'" in m for m in msgs), msgs


def test_misspelt_secret_key_is_named():
    bad = kube.credentials_secret("granary-e2e-badkey").replace("accessKeyID", "accessKeyId")
    msgs, _ = provisioning_failure(
        "granary-e2e-badkey", "bad-key",
        kube.storage_class("granary-e2e-badkey", PREFIX, secret="granary-e2e-badkey"), [bad])
    assert any("accessKeyId" in m and "unknown" in m for m in msgs), msgs
    kube.delete("secret", "granary-e2e-badkey", kube.NS)


def test_wrong_secret_value_is_refused_by_the_store():
    wrong = kube.credentials_secret("granary-e2e-wrong", secret="not-the-secret-0123456789")
    msgs, _ = provisioning_failure(
        "granary-e2e-wrong", "wrong-secret",
        kube.storage_class("granary-e2e-wrong", PREFIX, secret="granary-e2e-wrong"), [wrong])
    # The store's refusal reaches the user, without the secret itself.
    assert any("s3://datasets/errors/" in m or "SignatureDoesNotMatch" in m or "denied" in m.lower()
               for m in msgs), msgs
    assert not any("not-the-secret" in m for m in msgs), msgs
    kube.delete("secret", "granary-e2e-wrong", kube.NS)


def test_pod_on_unstageable_volume_gets_an_event():
    # Provisioned with good keys; the node-stage secret has a misspelt key,
    # so NodeStageVolume refuses it.
    kube.apply(kube.credentials_secret("granary-s3-credentials"))
    kube.apply(kube.credentials_secret("granary-e2e-badstage").replace("secretAccessKey", "secretKey"))
    sc = kube.storage_class("granary-e2e-badstage", PREFIX, extra={
        "csi.storage.k8s.io/node-stage-secret-name": "granary-e2e-badstage"})
    kube.apply(sc)
    kube.apply(kube.pvc("bad-stage", "granary-e2e-badstage"))
    try:
        kube.wait_for("PVC Bound", lambda: kube.pvc_phase("bad-stage") == "Bound", timeout=90)
        kube.apply(kube.reader_pod("bad-stage-reader", "bad-stage", ["true"]))
        msgs = kube.wait_for("FailedMount on the pod",
                             lambda: [m for m in kube.events("default", "Pod", "bad-stage-reader")
                                      if m.startswith("FailedMount")], timeout=120)
        assert any("secretKey" in m for m in msgs), msgs
        assert kube.pod_phase("bad-stage-reader") == "Pending"
    finally:
        kube.delete("pod", "bad-stage-reader", "default")
        kube.delete("pvc", "bad-stage", "default")
        kube.delete("storageclass", "granary-e2e-badstage")
        kube.delete("secret", "granary-e2e-badstage", kube.NS)
