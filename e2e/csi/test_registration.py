"""granary-csi's kubelet registration and health endpoint, from outside.

The node plugin replaces the node-driver-registrar and livenessprobe
sidecars: it serves the kubelet's pluginregistration.Registration API on
registration_socket and /healthz, /readyz, /metrics on health_address.
Each test starts the built granary-csi (no meta, no S3, no root: the node
role needs none of them to register or to be live) and talks to it as the
kubelet would: a grpcio client with stubs compiled at test time from
api/pluginregistration.proto (e2e/grpc_stubs.py), and curl.

Environment (set by run_registration_test.sh):
  GRANARY_BIN_DIR     the built binaries
  GRANARY_PROTO_DIR   the api/ directory of the source tree
"""
import os
import signal
import socket
import stat
import subprocess
import tempfile
import time

import grpc
import pytest

from grpc_stubs import compile_stubs

DRIVER = "csi.granary.io"
KUBELET_ENDPOINT = "/var/lib/kubelet/plugins/csi.granary.io/csi.sock"


@pytest.fixture(scope="module")
def pb():
    return compile_stubs("pluginregistration")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def curl(url, method="GET"):
    """(status, body, headers) of one request, through the curl binary."""
    r = subprocess.run(
        ["curl", "-sS", "-X", method, "-D", "-", "--max-time", "10", url],
        capture_output=True, check=True)
    head, _, body = r.stdout.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, body, headers


def wait_for(cond, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def is_socket(path):
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


class Plugin:
    """A granary-csi process with its sockets under a temporary directory."""

    def __init__(self, mode, register=False):
        self.dir = tempfile.mkdtemp(prefix="granary-csi-reg-")
        self.csi_sock = os.path.join(self.dir, "csi", "csi.sock")
        self.reg_sock = os.path.join(self.dir, "plugins_registry", f"{DRIVER}-reg.sock")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.dir, "csi.log")
        self.argv = [
            os.path.join(os.environ["GRANARY_BIN_DIR"], "granary-csi"),
            "--mode", mode,
            "--endpoint", f"unix://{self.csi_sock}",
            "--state_dir", os.path.join(self.dir, "state"),
            "--allowed_roots", self.dir,
            "--meta.address", f"unix://{self.dir}/no-meta.sock",
            "--health_address", f":{self.port}",
        ]
        if register:
            self.argv += ["--registration_socket", self.reg_sock,
                          "--kubelet_endpoint", KUBELET_ENDPOINT]
        self.start()

    def start(self):
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_serving(self):
        def answers():
            assert self.proc.poll() is None, f"granary-csi exited:\n{self.logs()}"
            try:
                curl(f"{self.url}/healthz")
                return True
            except subprocess.CalledProcessError:
                return False
        wait_for(answers, "the health endpoint")

    def logs(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        self.log.close()
        return rc


@pytest.fixture
def node():
    p = Plugin("node", register=True)
    p.wait_serving()
    wait_for(lambda: is_socket(p.reg_sock), "the registration socket")
    yield p
    assert p.stop() == 0, f"granary-csi did not exit 0 after SIGTERM:\n{p.logs()}"


def registration_stub(pb, path):
    channel = grpc.insecure_channel(f"unix:{path}")
    grpc.channel_ready_future(channel).result(timeout=15)
    return channel, pb[1].RegistrationStub(channel)


def test_get_info_tells_the_kubelet_driver_and_host_socket(pb, node):
    channel, stub = registration_stub(pb, node.reg_sock)
    with channel:
        info = stub.GetInfo(pb[0].InfoRequest(), timeout=10)
    assert info.type == "CSIPlugin"
    assert info.name == DRIVER
    assert info.endpoint == KUBELET_ENDPOINT
    assert list(info.supported_versions) == ["1.0.0"]
    # CSI is on its own socket; the kubelet's directory holds one socket only
    # (the hidden name it was bound at is gone).
    assert is_socket(node.csi_sock)
    assert os.listdir(os.path.dirname(node.reg_sock)) == [os.path.basename(node.reg_sock)]


def test_readyz_follows_the_kubelets_verdict(pb, node):
    status, body, _ = curl(f"{node.url}/healthz")
    assert (status, body) == (200, "ok\n")
    status, body, _ = curl(f"{node.url}/readyz")
    assert status == 503
    assert "not registered with the kubelet yet" in body

    channel, stub = registration_stub(pb, node.reg_sock)
    with channel:
        stub.NotifyRegistrationStatus(pb[0].RegistrationStatus(plugin_registered=True),
                                      timeout=10)
        assert curl(f"{node.url}/readyz")[:2] == (200, "ok\n")

        refusal = "RegisterPlugin error -- plugin name csi.granary.io already registered"
        stub.NotifyRegistrationStatus(
            pb[0].RegistrationStatus(plugin_registered=False, error=refusal), timeout=10)
        status, body, _ = curl(f"{node.url}/readyz")
        assert status == 503
        assert body == f"the kubelet refused the registration: {refusal}\n"
        # Liveness does not depend on the kubelet's verdict.
        assert curl(f"{node.url}/healthz")[:2] == (200, "ok\n")

        stub.NotifyRegistrationStatus(pb[0].RegistrationStatus(plugin_registered=True),
                                      timeout=10)
        assert curl(f"{node.url}/readyz")[0] == 200
    logs = node.logs()
    assert 'level=info msg="registered with the kubelet"' in logs
    assert 'level=error msg="the kubelet refused the registration"' in logs
    assert refusal in logs


def test_metrics_count_the_staged_volumes(node):
    status, body, headers = curl(f"{node.url}/metrics")
    assert status == 200
    assert headers.get("content-type", "").startswith("text/plain; version=0.0.4")
    assert "\ngranary_csi_volumes_staged 0\n" in body
    assert "# TYPE granary_csi_volume_abnormal gauge\n" in body


def test_other_paths_and_methods_are_refused(node):
    status, body, _ = curl(f"{node.url}/debug")
    assert status == 404
    assert "no such route '/debug' (known: /healthz, /readyz, /metrics)" in body
    status, body, headers = curl(f"{node.url}/healthz", method="POST")
    assert status == 405
    assert headers.get("allow") == "GET"
    status, _, _ = curl(f"{node.url}/readyz", method="DELETE")
    assert status == 405


def test_removed_registration_socket_is_made_anew(pb, node):
    channel, stub = registration_stub(pb, node.reg_sock)
    with channel:
        stub.NotifyRegistrationStatus(pb[0].RegistrationStatus(plugin_registered=True),
                                      timeout=10)
    assert curl(f"{node.url}/readyz")[0] == 200
    os.unlink(node.reg_sock)
    wait_for(lambda: is_socket(node.reg_sock), "a new registration socket")
    assert "the registration socket is gone, making it anew" in node.logs()
    # The kubelet took the removal as the plugin leaving: not ready until
    # it registers the new socket.
    status, body, _ = curl(f"{node.url}/readyz")
    assert status == 503
    assert "not registered with the kubelet yet" in body
    channel, stub = registration_stub(pb, node.reg_sock)
    with channel:
        assert stub.GetInfo(pb[0].InfoRequest(), timeout=10).name == DRIVER
        stub.NotifyRegistrationStatus(pb[0].RegistrationStatus(plugin_registered=True),
                                      timeout=10)
    assert curl(f"{node.url}/readyz")[0] == 200


def test_socket_of_another_plugin_is_left_alone(node):
    # A newer plugin (a rolling update with surge) took the path: the old
    # one must neither take it back nor remove it when it stops.
    os.unlink(node.reg_sock)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(node.reg_sock)
    try:
        wait_for(lambda: "another process replaced the registration socket" in node.logs(),
                 "the plugin to notice the other socket")
        assert "making it anew" not in node.logs()
        ino = os.lstat(node.reg_sock).st_ino
        assert node.stop() == 0
        assert is_socket(node.reg_sock)
        assert os.lstat(node.reg_sock).st_ino == ino
    finally:
        other.close()


def test_sigterm_removes_the_registration_socket(node):
    assert is_socket(node.reg_sock)
    assert node.stop() == 0
    assert os.listdir(os.path.dirname(node.reg_sock)) == []


def test_stale_registration_socket_is_replaced(pb, node):
    # A plugin killed with SIGKILL leaves its socket; the next one binds anyway.
    node.proc.kill()
    node.proc.wait()
    assert is_socket(node.reg_sock)
    node.log.close()
    node.start()
    node.wait_serving()
    channel, stub = registration_stub(pb, node.reg_sock)
    with channel:
        assert stub.GetInfo(pb[0].InfoRequest(), timeout=10).endpoint == KUBELET_ENDPOINT


def test_controller_is_live_without_meta_and_ready_only_with_it():
    # Meta is another container with its own probes: a liveness probe that
    # restarted the controller for a meta outage would mend nothing.
    p = Plugin("controller")
    try:
        p.wait_serving()
        status, body, _ = curl(f"{p.url}/healthz")
        assert (status, body) == (200, "ok\n"), body
        status, body, _ = curl(f"{p.url}/readyz")
        assert status == 503
        assert body.startswith("granary-meta does not answer: "), body
    finally:
        assert p.stop() == 0


@pytest.mark.parametrize("extra, key", [
    (["--mode", "controller", "--registration_socket", "/tmp/x-reg.sock",
      "--kubelet_endpoint", KUBELET_ENDPOINT], "key 'registration_socket'"),
    (["--mode", "node", "--registration_socket", "/tmp/x-reg.sock"], "key 'kubelet_endpoint'"),
    (["--mode", "node", "--health_address", "9808"], "key 'health_address'"),
])
def test_bad_settings_exit_2_naming_the_key(extra, key):
    r = subprocess.run([os.path.join(os.environ["GRANARY_BIN_DIR"], "granary-csi"), *extra],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert key in r.stderr
